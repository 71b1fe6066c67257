"""The trackers a run's figures go to besides the console and ``metrics.jsonl`` (rank 0 only):

* W&B: :func:`wandb_init_args` turns the ``log.*`` keys into ``wandb.init`` arguments, passing
  only the keys that are set, so W&B's own environment variables (``WANDB_PROJECT``,
  ``WANDB_NAME``, ``WANDB_ENTITY``, ``WANDB_RUN_GROUP``, ``WANDB_TAGS``, ``WANDB_NOTES``) still
  work; :func:`log_artifact` uploads a file (``log.artifacts``; offline runs keep it for
  ``wandb sync``).
* TensorBoard (``log.trackers=[wandb, tensorboard]``): :class:`TensorBoard`, PyTorch's own
  ``SummaryWriter`` in ``run.dir/tensorboard/``; a resumed run purges the killed run's later
  events, so every step appears once.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from distgan.errors import ConfigError

if TYPE_CHECKING:
    from distgan.config.sections import LogConfig

DEFAULT_PROJECT = "distgan"


def wandb_init_args(log: LogConfig, recipe: str) -> dict[str, Any]:
    """``wandb.init``'s project, name, entity, group, tags and notes: each ``log.*`` key that is
    set; else W&B's environment variable (by leaving the argument out); else, for the project
    and the name only, "distgan" and the recipe's name."""
    env = os.environ
    args: dict[str, Any] = {
        key: value
        for key, value in {
            "project": log.project,
            "name": log.name,
            "entity": log.entity,
            "group": log.group,
            "tags": log.tags,
            "notes": log.notes,
        }.items()
        if value is not None
    }
    if "project" not in args and not env.get("WANDB_PROJECT"):
        args["project"] = DEFAULT_PROJECT
    if "name" not in args and not env.get("WANDB_NAME"):
        args["name"] = recipe
    return args


def wandb_run_id(kept: str | None) -> str:
    """The W&B run id: the checkpoint's (a resumed run continues its W&B run), else the one a
    W&B sweep agent assigned to this trial (``WANDB_RUN_ID``), else a new one."""
    if kept:
        return kept
    from wandb.sdk.lib.runid import generate_id

    return os.environ.get("WANDB_RUN_ID") or generate_id()


def log_artifact(run: Any, path: Path, kind: str, aliases: list[str]) -> None:
    """``path`` as a W&B artifact named after the run (``<run id>-<file stem>``)."""
    import wandb

    artifact = wandb.Artifact(f"{run.id}-{path.stem}", type=kind)
    artifact.add_file(str(path))
    run.log_artifact(artifact, aliases=aliases)


def check_trackers(log: LogConfig) -> None:
    """Before any process starts: a tracker whose package is missing is one line (every rank
    finds the same), not a traceback on rank 0 while the others wait."""
    if "tensorboard" in log.trackers and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "log.trackers: tensorboard is not installed; pip install tensorboard (or distgan's "
            "'[tensorboard]' extra), or drop it from log.trackers"
        )


class TensorBoard:
    """Scalars, preview grids and evaluation figures as TensorBoard events, by step."""

    def __init__(self, folder: Path, start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events of steps after the checkpoint (a killed run's) are dropped
        self.writer = SummaryWriter(str(folder), purge_step=start_step + 1, flush_secs=30)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def image(self, step: int, tag: str, grid: torch.Tensor) -> None:
        """``grid``: C×H×W floats in [0, 1]."""
        self.writer.add_image(tag, grid.clamp(0, 1), step)

    def close(self) -> None:
        self.writer.close()
