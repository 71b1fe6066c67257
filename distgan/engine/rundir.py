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
  checkpoint, or in a copied folder, is a new lineage and a new W&B run, which records its parent
  (engine/lineage.py). A ``best.pt`` or ``metrics.jsonl`` of another run is set aside under a
  name of its own with a warning, never adopted and never deleted.
* **No links followed.** ``.lock`` is opened with ``O_NOFOLLOW`` and ``config.yaml`` (like
  ``metrics.jsonl`` when trimmed) is written to a temporary file and renamed over, so a symbolic
  link planted in the folder never has its target overwritten.

Decisions are taken on rank 0 and shared, so every rank raises the same one-line error.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from distgan import errors
from distgan.config import Config
from distgan.engine import checkpoint, lineage, resume_checks
from distgan.engine.lineage import Plan
from distgan.errors import CheckpointError, ConfigError, DistganError

log = logging.getLogger("distgan")

__all__ = ["Plan", "RunDirLock", "prepare", "trim_metrics", "write_replacing"]


class RunDirLock:
    """An exclusive lock on ``run_dir/.lock`` for as long as this object lives (rank 0)."""

    def __init__(self, run_dir: Path) -> None:
        path = run_dir / ".lock"
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            descriptor = os.open(path, flags, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise DistganError(
                    f"run.dir '{run_dir}': '.lock' is a symbolic link; refused (distgan never "
                    "writes through a link in a run folder): remove it"
                ) from None
            raise DistganError(f"run.dir '{run_dir}' is not writable ({err.strerror})") from None
        self.file = os.fdopen(descriptor, "r+")  # held open for the whole run
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
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            self.file.seek(0)
            self.file.truncate()
            self.file.write(f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n")
            self.file.flush()
        except OSError as err:  # a full disk, a quota
            self.release()
            raise DistganError(
                f"could not write '{path}' ({err.strerror or err}); free space on its disk"
            ) from None

    def release(self) -> None:
        if not self.file.closed:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):  # (a buffered write that failed is dropped)
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
    for_sweep_trial(cfg)
    lock, plan, failure = None, None, None
    if accelerator.is_main_process:
        try:
            run_dir = _usable_folder(cfg.run_dir)
            lock = RunDirLock(run_dir)
            for half_written in checkpoint.checkpoint_dir(run_dir).glob("*.pt.tmp"):
                half_written.unlink()  # left by a trainer killed while writing (we hold the lock)
            plan = _decide(cfg, run_dir)
            _set_aside_foreign_best(run_dir, plan.run_id)
        except DistganError as err:
            failure = (type(err).__name__, str(err))
            if lock is not None:
                lock.release()
    plan, failure = broadcast_object_list([plan, failure])
    if failure is not None:
        raise getattr(errors, failure[0])(failure[1])
    return plan, lock or contextlib.nullcontext()


def for_sweep_trial(cfg: Config) -> None:
    """Under a W&B sweep agent (``WANDB_SWEEP_ID`` and the trial's ``WANDB_RUN_ID`` set), the
    default run.dir becomes ``runs/{name}-<trial id>``: with one folder for all trials, each
    trial would resume the one before (``resume=auto``). A run.dir set by hand is kept."""
    trial = os.environ.get("WANDB_RUN_ID", "")
    default = type(cfg.run).model_fields["dir"].default
    in_sweep = os.environ.get("WANDB_SWEEP_ID") and re.fullmatch(r"[\w-]+", trial)
    if in_sweep and cfg.run.dir == default:
        cfg.run.dir = f"{default}-{trial}"
        log.info("W&B sweep trial %s: run.dir %s", trial, cfg.run_dir)


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
        resume_checks.check_steps(cfg, state, path)
        return lineage.plan_for(path, state, run_dir)
    if cfg.resume not in ("auto", "never"):
        source, state = _resume_source(Path(cfg.resume))
        resume_checks.check_steps(cfg, state, source)
        if not lineage.in_folder(source, run_dir):
            _make_room(cfg, run_dir, existing)
        return lineage.plan_for(source, state, run_dir)
    _make_room(cfg, run_dir, existing)
    return Plan(lineage.new_id(), init=_init_source(cfg))


def _init_source(cfg: Config) -> Path | None:
    """The checkpoint file of ``init.from`` (a run folder: its newest usable checkpoint)."""
    if cfg.init.from_ is None:
        return None
    path = Path(cfg.init.from_)
    if path.is_dir():
        return _resume_source(path, "init.from")[0]
    if not path.is_file():
        raise ConfigError(f"init.from={path}: no such checkpoint file or run folder")
    return path


def _resume_source(path: Path, key: str = "resume") -> tuple[Path, dict[str, Any]]:
    """``resume=`` a checkpoint file, or a run folder (its newest usable checkpoint)."""
    if not path.is_dir():
        return path, checkpoint.load(path)
    folder = path.parent if path.name == "checkpoints" else path
    found = checkpoint.latest_valid(folder)
    if found is None:
        raise CheckpointError(
            f"{key}={path}: no usable checkpoint in '{checkpoint.checkpoint_dir(folder)}'; give "
            "a step-*.pt file or a run folder that has one"
        )
    return found


def _make_room(cfg: Config, run_dir: Path, existing: list[Path]) -> None:
    """A fresh lineage needs a folder without another run's checkpoints: refuse, or with
    ``run.overwrite=true`` move the old run aside. Without checkpoints, an abandoned run's
    ``metrics.jsonl`` is renamed (with a warning), never deleted."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if existing:
        if not cfg.run.overwrite:
            raise ConfigError(
                f"run.dir '{run_dir}' already holds a run (checkpoints up to "
                f"{existing[-1].name}); continue it with resume=auto, use another run.dir, or "
                "replace it with run.overwrite=true (the old run is moved aside)"
            )
        folder = run_dir.resolve()  # (run.dir=. has no name to put a suffix on)
        if not folder.name:
            raise ConfigError(f"run.dir '{run_dir}' is the file system's root; choose a folder")
        aside = folder.with_name(f"{folder.name}.replaced-{stamp}")
        try:
            aside.mkdir()
            for item in folder.iterdir():
                if item.name != ".lock":
                    shutil.move(str(item), aside / item.name)
        except OSError as err:
            raise DistganError(
                f"could not move the old run in '{run_dir}' aside to '{aside}' "
                f"({err.strerror or err}); move it yourself or use another run.dir"
            ) from None
        log.warning("run.overwrite=true: the old run of '%s' is now in '%s'", run_dir, aside)
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size:
        kept = run_dir / f"metrics.replaced-{stamp}.jsonl"
        os.replace(metrics, kept)
        log.warning(
            "'%s' held the metrics of an earlier run without checkpoints: kept as %s",
            metrics,
            kept.name,
        )
    metrics.unlink(missing_ok=True)


def _set_aside_foreign_best(run_dir: Path, run_id: str) -> None:
    """``checkpoints/best.pt`` is the best of this lineage only: one of another run (an older
    run in this folder, the original of a copied folder) is renamed ``best-<its run_id>.pt``."""
    best = checkpoint.checkpoint_dir(run_dir) / "best.pt"
    if not best.is_file():
        return
    owner = checkpoint.run_id_of(best)
    if owner == run_id:
        return
    name = re.sub(r"[^A-Za-z0-9_-]", "", str(owner or "unknown"))[:40] or "unknown"
    aside = best.with_name(f"best-{name}.pt")
    if aside.exists():
        aside = best.with_name(f"best-{name}-{time.strftime('%Y%m%d-%H%M%S')}.pt")
    os.replace(best, aside)
    log.warning(
        "%s is the best checkpoint of run %s, not of this run (%s): kept as %s; this run keeps "
        "its own best.pt",
        best,
        owner,
        run_id,
        aside.name,
    )


def write_replacing(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file and a rename: a symbolic link planted at
    ``path`` is replaced, its target never written."""
    descriptor, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def trim_metrics(run_dir: Path, step: int) -> None:
    """Keep the rows of ``metrics.jsonl`` up to ``step`` (a resumed run logs the rest again)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if 0 <= _step_of(ln) <= step]
    if len(kept) != len(lines):
        write_replacing(path, "".join(kept))


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return -1  # a line cut short by a crash: dropped
