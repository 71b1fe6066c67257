"""Checkpoints: one file per step, written atomically, the last ``k`` kept, loaded safely.

A checkpoint holds everything an exact resume needs, in one versioned schema (``SCHEMA``):

* ``networks``: every network and EMA copy (``<name>_ema``);
* ``optimizers``: the parallel strategy's optimizer and grad-scaler states (``sharded``: one per
  rank under DeepSpeed);
* per rank: ``rng`` (python, numpy, torch, the noise generator), ``data`` (each stream's exact
  position), ``family`` (the family's own state, e.g. image pools) and ``tallies`` (statistics
  not yet summed into the run-wide state);
* ``run_state``: the run-wide state of the family and the augmentation stage (equal on every
  rank, saved once; engine/run_state.py);
* ``step``, ``images_seen``, the resolved ``config``, ``data_info`` (each stream's shape, so
  ``distgan sample`` needs no shards), the W&B run id, the ``run_id`` of its lineage (and the
  ``parent`` of a child lineage; ``init_from``: the checkpoint a transfer run took its weights
  from, engine/transfer.py), and the ``folder`` it was written in (path and inode: a copied
  folder starts a child lineage; see engine/lineage.py).

It is written by rank 0 to ``<name>.tmp``, fsynced and renamed, so a crash never leaves a half
file under a checkpoint's name; a failed write (a full disk) removes the temporary file, leaves
the earlier checkpoints alone and stops every rank with one line. A checkpoint is never written
with inf/NaN weights: the run stops instead, and the newest finite checkpoint stays. Loading
uses ``torch.load(weights_only=True)``: no pickled code runs. Files of schema 1 (distgan before
the family contract v2) and 2 (before contract v3: no run-wide state) are migrated when loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from accelerate.utils import broadcast_object_list

from distgan.engine import elastic, lineage, resume_checks, run_state
from distgan.engine.runtime import check_ranks_in_sync, gather, gather_to_main
from distgan.errors import CheckpointError, TrainingDiverged

if TYPE_CHECKING:
    from distgan.engine.build import Run

log = logging.getLogger("distgan")

PATTERN = re.compile(r"^step-(\d{8})\.pt$")
SCHEMA = 3


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
    try:
        noise.set_state(state["noise"])
    except RuntimeError:  # saved by a generator of another device type (a CPU run → a GPU)
        saved = state["noise"].numpy().tobytes()
        noise.manual_seed(int.from_bytes(hashlib.sha256(saved).digest()[:8], "little"))
        log.warning(
            "the checkpoint's noise stream comes from a %d-byte %s generator state, this run's "
            "generator is on %s: its noise continues from a seed derived from that state "
            "(weights, optimizers and data resume exactly; the noise does not)",
            len(saved),
            "CPU" if len(saved) > 16 else "CUDA",
            noise.device,
        )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ----------------------------------------------------------------------------- files


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not stay full of a half checkpoint
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def prune(run_dir: Path, keep_last: int, run_id: str) -> None:
    """Keep the newest ``keep_last`` checkpoints of the lineage ``run_id`` (others stay)."""
    mine = [p for p in list_checkpoints(run_dir) if run_id_of(p) == run_id]
    for old in mine[:-keep_last]:
        old.unlink(missing_ok=True)


def run_id_of(path: Path) -> str | None:
    """A checkpoint's lineage, read cheaply (memory-mapped: its tensors are not read)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("run_id")
    except Exception:
        return None


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
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # torch.save writes a zip archive
            raise CheckpointError(
                f"'{path}' is not a checkpoint file; resume= and --ckpt take a "
                "run.dir/checkpoints/step-*.pt file"
            )
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
    if isinstance(state, dict) and state.get("schema") == 2:
        state = _migrate_schema_2(state)
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
    return _migrate_schema_2(
        {
            "schema": 2,
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
    )


def _migrate_schema_2(state: dict[str, Any]) -> dict[str, Any]:
    """Schema 2 → 3: no run-wide family state and no pending tallies yet."""
    ranks = len(state["rng"])
    return {
        **state,
        "schema": SCHEMA,
        "run_state": {"family": {}},
        "tallies": [{} for _ in range(ranks)],
    }


# ----------------------------------------------------------------------------- the run's state


def collect(run: Run) -> dict[str, Any] | None:
    """The checkpoint of ``run`` (on rank 0; None elsewhere). Every rank must call it: it
    gathers each rank's random, data and family states and checks the ranks are in sync."""
    check_ranks_in_sync(all_networks(run), run.step)
    rng = gather_to_main(capture_rng(run.noise))
    data = gather_to_main(run.data.state_dict() if run.data else {})
    family = gather_to_main(run.family.state_dict())
    tallies = gather_to_main(run.ctx.tallies)
    optimizers = run.strategy.state_dict()
    if run.strategy.sharded:
        optimizers = gather_to_main(optimizers)
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
        "tallies": tallies,
        "run_state": run_state.state_dict(run),
        "config": run.cfg.model_dump(mode="json"),
        "data_info": {name: dataclasses.asdict(i) for name, i in run.family.stream_info.items()},
        "wandb_id": run.wandb_id,
        "run_id": run.run_id,
        "parent": run.parent,
        "init_from": run.init_from,  # a transfer run: where its weights came from
        "folder": lineage.folder_identity(run.cfg.run_dir),  # tells a copied folder (lineage.py)
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
        detail = resume_checks.describe_mismatch(all_networks(run), state, run.cfg)
        raise CheckpointError(
            f"checkpoint '{source}' does not fit recipe '{run.cfg.name}' "
            f"({detail or str(err).splitlines()[0][:120]}); resume with the checkpoint's "
            "settings, or use another run.dir or resume=never"
        ) from None
    sharded = state["sharded"]
    if sharded != run.strategy.sharded:
        raise CheckpointError(
            f"checkpoint '{source}' was written by another parallel setup (DDP vs DeepSpeed); "
            "resume it with the launch that wrote it"
        )
    if sharded and len(state["optimizers"]) != run.world:
        raise CheckpointError(
            f"checkpoint '{source}' holds DeepSpeed optimizer partitions of "
            f"{len(state['optimizers'])} processes; resume it with {len(state['optimizers'])} "
            f"processes (this launch has {run.world}), or under DDP from a DDP checkpoint"
        )
    run.strategy.load_state_dict(state["optimizers"][run.rank] if sharded else state["optimizers"])
    for name, optimizer in run.optimizers.items():  # the recipe's betas (lazy-corrected), not
        for group in optimizer.param_groups:  # those the checkpoint's param groups carried
            group["betas"] = run.base_betas[name]
    if len(state["rng"]) == run.world:
        restore_rng(state["rng"][run.rank], run.noise)
        if run.data is not None:
            run.data.load_state_dict(state["data"][run.rank])
        run.family.load_state_dict(state["family"][run.rank])
        run.ctx.tallies = {
            name: value.to(run.device) for name, value in state["tallies"][run.rank].items()
        }
    else:
        elastic.restore_per_rank(run, state)
    run_state.load_state_dict(run, state["run_state"])
    run.step, run.images_seen = state["step"], state["images_seen"]
    run.init_from = state.get("init_from")


def nonfinite(modules: dict[str, torch.nn.Module]) -> list[str]:
    """Names of the networks with an inf/NaN parameter or buffer."""
    return [name for name, module in modules.items() if not _finite(module.state_dict())]


def save(run: Run, path: Path | None = None, extra: dict[str, Any] | None = None) -> None:
    """Write ``run``'s checkpoint (rank 0) and keep the last ``run.keep_last`` of its lineage;
    all ranks call it, and all raise the same one-line error if it cannot be written. ``path``:
    another file than ``checkpoints/step-N.pt`` (e.g. ``best.pt``: then nothing is pruned), with
    ``extra`` entries in it."""
    run_dir = run.cfg.run_dir
    bad = sorted(set().union(*gather(nonfinite(all_networks(run)))))
    if bad:
        kept = list_checkpoints(run_dir)
        raise TrainingDiverged(
            f"the weights of {', '.join(bad)} became inf/NaN by step {run.step}: no checkpoint "
            f"written ({'the newest finite one is ' + kept[-1].name if kept else 'none so far'}"
            "); lower the learning rates, or resume from an earlier checkpoint"
        )
    state = collect(run)
    failure = None
    if state is not None:
        target = path or checkpoint_path(run_dir, run.step)
        try:
            save_atomic({**state, **(extra or {})}, target)
            if path is None:
                prune(run_dir, run.cfg.run.keep_last, run.run_id)
        except (OSError, RuntimeError) as err:
            failure = _write_failure(target, err)
    failure = broadcast_object_list([failure])[0]
    if failure is not None:
        raise CheckpointError(failure)


def _write_failure(path: Path, err: Exception) -> str:
    reason = getattr(err, "strerror", None) or str(err).strip().splitlines()[0][:160]
    free = shutil.disk_usage(path.parent).free
    if free < 64 * 2**20:  # torch's writer does not say why; a full disk is the usual cause
        reason = f"its disk is full: {free / 2**20:.1f} MB free"
    return (
        f"could not write checkpoint '{path}' ({reason}); the earlier checkpoints are intact: "
        "free space and continue with resume=auto"
    )


def latest_valid(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of ``run_dir`` that loads and holds finite weights; broken newer
    ones are reported and skipped."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            state = load(path)
        except CheckpointError as err:
            log.warning("skipping %s", err)
            continue
        bad = [n for n, sd in state["networks"].items() if not _finite(sd)]
        if bad:
            log.warning("skipping checkpoint '%s': inf/NaN weights in %s", path, ", ".join(bad))
            continue
        return path, state
    return None


def _finite(state_dict: dict[str, torch.Tensor]) -> bool:
    return all(not t.is_floating_point() or torch.isfinite(t).all() for t in state_dict.values())
