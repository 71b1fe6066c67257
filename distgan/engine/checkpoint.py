"""Checkpoints: one file per step, written atomically, the last ``k`` kept, loaded safely.

A checkpoint holds everything an exact resume needs, in one versioned schema (``SCHEMA``):

* ``networks``: every network and EMA copy (``<name>_ema``);
* ``optimizers``: the parallel strategy's optimizer and grad-scaler states (``sharded``: one per
  rank under DeepSpeed);
* per rank: ``rng`` (python, numpy, torch, the noise generator), ``data`` (each stream's exact
  position) and ``family`` (the family's own state, e.g. image pools);
* ``step``, ``images_seen``, the resolved ``config``, ``data_info`` (each stream's shape, so
  ``distgan sample`` needs no shards) and the W&B run id.

It is written by rank 0 to ``<name>.tmp``, fsynced and renamed, so a crash never leaves a half
file under a checkpoint's name. Loading uses ``torch.load(weights_only=True)``: no pickled code
runs. Files of schema 1 (distgan before the family contract v2) are migrated when loaded.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from distgan.engine.runtime import check_ranks_in_sync, gather
from distgan.errors import CheckpointError

if TYPE_CHECKING:
    from distgan.engine.build import Run

log = logging.getLogger("distgan")

PATTERN = re.compile(r"^step-(\d{8})\.pt$")
SCHEMA = 2


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step-{step:08d}.pt"


# ----------------------------------------------------------------------------- RNG states


def capture_rng(noise: torch.Generator) -> dict[str, Any]:
    """This process's random states, as tensors and plain values (loadable with weights_only)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
        "noise": noise.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any], noise: torch.Generator) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    noise.set_state(state["noise"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ----------------------------------------------------------------------------- files


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def prune(run_dir: Path, keep_last: int) -> None:
    for old in list_checkpoints(run_dir)[:-keep_last]:
        old.unlink(missing_ok=True)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if PATTERN.match(p.name))


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (migrated to the current schema); any problem becomes one
    :class:`CheckpointError` line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, wrong format, unsafe pickle …
        text = str(err).strip()
        if "Weights only load failed" in text:
            raise CheckpointError(
                f"'{path}' was refused: it is not a plain-tensor checkpoint (it holds pickled "
                "code or objects, which distgan never loads)"
            ) from None
        reason = text.splitlines()[0][:160] if text else type(err).__name__
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt or truncated ({reason}); delete it to resume from "
            "an earlier one"
        ) from None
    if isinstance(state, dict) and "schema" not in state and "models" in state:
        state = _migrate_schema_1(state)
    if not isinstance(state, dict) or "networks" not in state or "step" not in state:
        raise CheckpointError(f"'{path}' is not a distgan checkpoint (no 'networks'/'step')")
    if state["schema"] > SCHEMA:
        raise CheckpointError(
            f"'{path}' has checkpoint schema {state['schema']}, newer than this distgan's "
            f"{SCHEMA}; upgrade distgan to read it"
        )
    return state


def _migrate_schema_1(state: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 (one G, one D) → 2. Its grad scalers were keyed by the network an optimizer
    trains; schema 2 keys them by phase, and the two-player families name each phase after the
    network it trains, so the keys carry over. ``train.lr_g``/… in its config are shorthands."""
    ranks = len(state["rng"])
    return {
        "schema": SCHEMA,
        "step": state["step"],
        "images_seen": state["images_seen"],
        "networks": state["models"],
        "optimizers": state["parallel"],
        "sharded": state["parallel_sharded"],
        "rng": state["rng"],
        "data": [{"": position} for position in state["data"]],
        "family": [{} for _ in range(ranks)],
        "config": state["config"],
        "data_info": {"": state["data_info"]},
        "wandb_id": state.get("wandb_id"),
    }


# ----------------------------------------------------------------------------- the run's state


def collect(run: Run) -> dict[str, Any] | None:
    """The checkpoint of ``run`` (on rank 0; None elsewhere). Every rank must call it: it
    gathers each rank's random, data and family states and checks the ranks are in sync."""
    check_ranks_in_sync(all_networks(run), run.step)
    rng = gather(capture_rng(run.noise))
    data = gather(run.data.state_dict() if run.data else {})
    family = gather(run.family.state_dict())
    optimizers = run.strategy.state_dict()
    if run.strategy.sharded:
        optimizers = gather(optimizers)
    if not run.is_main:
        return None
    networks = {name: m.state_dict() for name, m in all_networks(run).items()}
    return {
        "schema": SCHEMA,
        "step": run.step,
        "images_seen": run.images_seen,
        "networks": networks,
        "optimizers": optimizers,
        "sharded": run.strategy.sharded,
        "rng": rng,
        "data": data,
        "family": family,
        "config": run.cfg.model_dump(mode="json"),
        "data_info": {name: dataclasses.asdict(i) for name, i in run.family.stream_info.items()},
        "wandb_id": run.wandb_id,
    }


def all_networks(run: Run) -> dict[str, torch.nn.Module]:
    """The networks and their EMA copies, by their names in checkpoints."""
    return {**run.networks, **{f"{name}_ema": m for name, m in run.ema.items()}}


def restore(run: Run, state: dict[str, Any], source: Path) -> None:
    """Put ``run`` back where the checkpoint ``state`` (from ``source``) left it."""
    try:
        for name, module in all_networks(run).items():
            module.load_state_dict(state["networks"][name])
    except (KeyError, RuntimeError) as err:
        raise CheckpointError(
            f"checkpoint '{source}' does not fit recipe '{run.cfg.name}' "
            f"({str(err).splitlines()[0][:120]}); use another run.dir or resume=never"
        ) from None
    sharded = state["sharded"]
    if sharded != run.strategy.sharded or (sharded and len(state["optimizers"]) != run.world):
        raise CheckpointError(
            f"checkpoint '{source}' was written by another parallel setup (DDP vs DeepSpeed, "
            "or another number of DeepSpeed ranks); resume it with the launch that wrote it"
        )
    run.strategy.load_state_dict(state["optimizers"][run.rank] if sharded else state["optimizers"])
    if len(state["rng"]) == run.world:
        restore_rng(state["rng"][run.rank], run.noise)
        if run.data is not None:
            run.data.load_state_dict(state["data"][run.rank])
        run.family.load_state_dict(state["family"][run.rank])
    else:
        log.warning(
            "checkpoint was written by %d processes, this run has %d: weights and optimizers "
            "resume exactly; random streams, data order and the family's own state start afresh",
            len(state["rng"]),
            run.world,
        )
    run.step, run.images_seen = state["step"], state["images_seen"]
    run.wandb_id = state.get("wandb_id")


def save(run: Run) -> None:
    """Write ``run``'s checkpoint (rank 0) and keep the last ``run.keep_last``; all ranks call."""
    checkpoint = collect(run)
    if checkpoint is not None:
        run_dir = run.cfg.run_dir
        save_atomic(checkpoint, checkpoint_path(run_dir, run.step))
        prune(run_dir, run.cfg.run.keep_last)
    run.accelerator.wait_for_everyone()


def latest_valid(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of ``run_dir`` that loads; broken newer ones are reported, skipped."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load(path)
        except CheckpointError as err:
            log.warning("skipping %s", err)
    return None
