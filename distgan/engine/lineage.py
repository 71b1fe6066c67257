"""One lineage model for every way a run starts from a checkpoint (``resume=auto``, ``resume=PATH``
to a file or a run folder, a copied folder, a single checkpoint copied elsewhere).

A checkpoint *continues* its lineage (same ``run_id``, same W&B run) only when it lies in this
run's ``checkpoints/`` folder **and** was written in this very folder. Otherwise the run is a
*child*: a new ``run_id`` and W&B run, with the ``parent`` (checkpoint, run id, W&B id, step,
folder) recorded in every checkpoint and in the W&B config.

"Written in this folder" is decided from what every checkpoint records (``folder``): the run
folder's resolved path and its inode number (``os.stat().st_ino``). The same folder seen under
another mount path (a requeue on another node) or renamed keeps its inode; a copy (``cp -r``,
``rsync``, one file copied) is a new directory with a new inode, at another path. So: same path
or same inode → the same folder; both differ → a copy. A marker file inside the folder could not
tell (a copy copies it too), and ``st_dev`` differs between the nodes that mount one file system,
so it is not compared. Two corner cases, documented in README "Resuming": a copy placed at the
very path of the original (another machine) continues the run, as a migration would; a copy that
by chance gets the original's inode number on another file system at another path would too.
Checkpoints older than this record continue as before (by location only).
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("distgan")


@dataclass
class Plan:
    """How a run starts: fresh, or from ``source``; its lineage and W&B run."""

    run_id: str
    source: Path | None = None
    parent: dict[str, Any] | None = None  # a child lineage: where it started from
    same_wandb_run: bool = False  # continue the source's W&B run (its own folder only)
    init: Path | None = None  # a fresh run's init.from checkpoint (engine/transfer.py)


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def folder_identity(run_dir: Path) -> dict[str, Any]:
    """What a checkpoint records of the folder it is written in."""
    return {"path": str(Path(run_dir).resolve()), "inode": os.stat(run_dir).st_ino}


def written_here(state: dict[str, Any], run_dir: Path) -> bool:
    """Whether the checkpoint ``state`` was written in ``run_dir`` (not in a folder it was
    copied from): the same resolved path or the same inode (see the module's docstring)."""
    recorded = state.get("folder")
    if not isinstance(recorded, dict):
        return True  # written before folders were recorded: judged by its location alone
    try:
        here = folder_identity(run_dir)
    except OSError:
        return False
    return recorded.get("path") == here["path"] or recorded.get("inode") == here["inode"]


def in_folder(source: Path, run_dir: Path) -> bool:
    """Whether the checkpoint file ``source`` lies in ``run_dir/checkpoints``."""
    return source.resolve().parent == (run_dir / "checkpoints").resolve()


def plan_for(source: Path, state: dict[str, Any], run_dir: Path) -> Plan:
    """Continue the lineage of ``source`` (its own folder), or start a child of it."""
    if in_folder(source, run_dir) and written_here(state, run_dir):
        return Plan(state.get("run_id") or new_id(), source, same_wandb_run=True)
    recorded = state.get("folder") if isinstance(state.get("folder"), dict) else {}
    parent = {
        "checkpoint": str(source),
        "run_id": state.get("run_id"),
        "wandb_id": state.get("wandb_id"),
        "step": state["step"],
        "folder": recorded.get("path", str(source.resolve().parent.parent)),
    }
    if in_folder(source, run_dir):
        log.warning(
            "%s was written in '%s': this folder is a copy of that run, so it continues as a "
            "new lineage and W&B run (parent %s recorded)",
            source,
            parent["folder"],
            parent["run_id"],
        )
    return Plan(new_id(), source, parent=parent)
