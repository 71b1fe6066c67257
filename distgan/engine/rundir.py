"""The run folder: one trainer at a time, one lineage of checkpoints, nothing of an older run lost.

* **Lock.** Rank 0 holds an exclusive ``flock`` on ``run.dir/.lock`` for the whole run; a second
  trainer on the same folder stops with one line naming the holder. The kernel releases the lock
  when the process ends, however it ends, so a crashed run leaves no stale lock.
* **Lineage.** Every checkpoint carries the ``run_id`` of the run that wrote it; a run resumed in
  its own folder keeps it. Resuming (``resume=auto``) and pruning consider only the checkpoints of
  that lineage.
* **Nothing lost.** ``resume=never`` (or a checkpoint of another folder) into a folder that holds a
  run refuses unless ``run.overwrite=true``, which first moves the old run aside to
  ``<run.dir>.replaced-<time>``. If checkpoints exist but none is usable, the run refuses to start
  rather than silently starting again from step 0. A run continued from another folder's
  checkpoint is a new lineage and a new W&B run, which records its parent.

Decisions are taken on rank 0 and shared, so every rank raises the same one-line error.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from distgan import errors
from distgan.config import Config
from distgan.engine import checkpoint
from distgan.errors import CheckpointError, ConfigError, DistganError


@dataclass
class Plan:
    """How a run starts: fresh, or from ``source``; its lineage and W&B run."""

    run_id: str
    source: Path | None = None
    parent: dict[str, Any] | None = None  # a run continued from another folder's checkpoint
    same_wandb_run: bool = False  # continue the source's W&B run (its own folder only)


class RunDirLock:
    """An exclusive lock on ``run_dir/.lock`` for as long as this object lives (rank 0)."""

    def __init__(self, run_dir: Path) -> None:
        path = run_dir / ".lock"
        try:
            self.file = open(path, "a+")  # noqa: SIM115 — held open for the whole run
        except OSError as err:
            raise DistganError(f"run.dir '{run_dir}' is not writable ({err.strerror})") from None
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise DistganError(
                f"run.dir '{run_dir}' is in use by another trainer ({holder}); wait for it to "
                "finish or use another run.dir"
            ) from None
        self.file.seek(0)
        self.file.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        self.file.write(f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n")
        self.file.flush()

    def release(self) -> None:
        if not self.file.closed:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()

    def __enter__(self) -> RunDirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def prepare(
    cfg: Config, accelerator: Accelerator
) -> tuple[Plan, RunDirLock | contextlib.nullcontext]:
    """Lock the run folder and decide how the run starts (rank 0), the same on every rank.
    Returns the plan and the lock (a context manager; a no-op one on the other ranks)."""
    lock, plan, failure = None, None, None
    if accelerator.is_main_process:
        try:
            run_dir = _usable_folder(cfg.run_dir)
            lock = RunDirLock(run_dir)
            for half_written in checkpoint.checkpoint_dir(run_dir).glob("*.pt.tmp"):
                half_written.unlink()  # left by a trainer killed while writing (we hold the lock)
            plan = _decide(cfg, run_dir)
        except DistganError as err:
            failure = (type(err).__name__, str(err))
            if lock is not None:
                lock.release()
    plan, failure = broadcast_object_list([plan, failure])
    if failure is not None:
        raise getattr(errors, failure[0])(failure[1])
    return plan, lock or contextlib.nullcontext()


def _usable_folder(run_dir: Path) -> Path:
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run.dir '{run_dir}' is a file, not a folder; choose another run.dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DistganError(f"run.dir '{run_dir}' cannot be created ({err.strerror})") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise DistganError(f"run.dir '{run_dir}' is not writable (permission denied)")
    return run_dir


def _decide(cfg: Config, run_dir: Path) -> Plan:
    existing = checkpoint.list_checkpoints(run_dir)
    if cfg.resume == "auto" and existing:
        found = checkpoint.latest_valid(run_dir)
        if found is None:
            raise CheckpointError(
                f"none of the {len(existing)} checkpoints in "
                f"'{checkpoint.checkpoint_dir(run_dir)}' is usable (see the warnings above); "
                "restore one, or start afresh with resume=never run.overwrite=true (the old run "
                "is moved aside)"
            )
        path, state = found
        return Plan(state.get("run_id") or _new_id(), path, same_wandb_run=True)
    if cfg.resume not in ("auto", "never"):
        source = Path(cfg.resume)
        if source.resolve().parent == checkpoint.checkpoint_dir(run_dir).resolve():
            state = checkpoint.load(source)  # its own folder: the same lineage and W&B run
            return Plan(state.get("run_id") or _new_id(), source, same_wandb_run=True)
        state = checkpoint.load(source)
        parent = {
            "checkpoint": str(source),
            "run_id": state.get("run_id"),
            "wandb_id": state.get("wandb_id"),
            "step": state["step"],
        }
        _make_room(cfg, run_dir, existing)
        return Plan(_new_id(), source, parent=parent)
    _make_room(cfg, run_dir, existing)
    return Plan(_new_id())


def _make_room(cfg: Config, run_dir: Path, existing: list[Path]) -> None:
    """A fresh lineage needs a folder without another run's checkpoints: refuse, or with
    ``run.overwrite=true`` move the old run aside. Without checkpoints, an abandoned run's
    metrics are restarted (there is nothing to continue)."""
    if existing:
        if not cfg.run.overwrite:
            raise ConfigError(
                f"run.dir '{run_dir}' already holds a run (checkpoints up to "
                f"{existing[-1].name}); continue it with resume=auto, use another run.dir, or "
                "replace it with run.overwrite=true (the old run is moved aside)"
            )
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        aside.mkdir()
        for item in run_dir.iterdir():
            if item.name != ".lock":
                shutil.move(str(item), aside / item.name)
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)


def _new_id() -> str:
    return uuid.uuid4().hex[:12]


def trim_metrics(run_dir: Path, step: int) -> None:
    """Keep the rows of ``metrics.jsonl`` up to ``step`` (a resumed run logs the rest again)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if 0 <= _step_of(ln) <= step]
    if len(kept) != len(lines):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return -1  # a line cut short by a crash: dropped
