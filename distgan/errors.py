"""The errors a user can cause, in one leaf module that imports nothing of distgan's.

The command line prints each of them as one line (no traceback) and exits with ``exit_code``:
2 for a configuration mistake, 1 for files, processes and faults.
"""

from __future__ import annotations


class DistganError(Exception):
    """A problem the user can fix; its message names the file, key or value and what to do."""

    exit_code = 1


class ConfigError(DistganError, ValueError):
    """A mistake in a recipe name, key or value."""

    exit_code = 2


class ShardError(DistganError, RuntimeError):
    """A missing, unreadable or inconsistent shard folder."""


class CheckpointError(DistganError, RuntimeError):
    """A checkpoint file that cannot be used."""


class LaunchError(DistganError, RuntimeError):
    """The processes started are not the ones that were asked for."""


class TrainingDiverged(DistganError, RuntimeError):
    """A loss became inf/NaN outside fp16's skipped steps."""


class OutOfMemory(DistganError, RuntimeError):
    """The device ran out of memory for the per-process batch."""


class EvaluationFailed(DistganError, RuntimeError):
    """An evaluation that raised on some rank (every rank raises it, after agreeing)."""
