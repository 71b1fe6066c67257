"""Checkpoints: one file per step, written atomically, the last ``k`` kept, loaded safely.

A checkpoint holds everything an exact resume needs: every network (and the EMA copy), every
optimizer and grad scaler, the step and images seen, each rank's RNG states (python, numpy,
torch, the noise generator) and data position, the resolved config and the W&B run id. It is
written by rank 0 to ``<name>.tmp``, fsynced and renamed, so a crash never leaves a half file
under a checkpoint's name. Loading uses ``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger("distgan")

PATTERN = re.compile(r"^step-(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used (names the file and what to do)."""


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
    """Load a checkpoint safely; any problem becomes one :class:`CheckpointError` line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, wrong format, unsafe pickle …
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt or truncated ({reason}); delete it to resume from "
            "an earlier one"
        ) from None
    if not isinstance(state, dict) or "models" not in state or "step" not in state:
        raise CheckpointError(f"'{path}' is not a distgan checkpoint (no 'models'/'step')")
    return state


def latest_valid(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of ``run_dir`` that loads; broken newer ones are reported, skipped."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load(path)
        except CheckpointError as err:
            log.warning("skipping %s", err)
    return None
