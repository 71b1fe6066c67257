"""What an evaluator gets from the engine, and what it returns."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import torch

from distgan.families.base import Batch, Family, Nets


@dataclass
class EvalContext:
    """One evaluation on one rank.

    ``batches()`` yields this rank's share of the first ``eval.n`` held-out samples (every sample
    on exactly one rank; the same samples at every evaluation); ``generator`` is this rank's,
    seeded alike at every evaluation; ``nets`` are the networks outputs come from (EMA copies
    where the family keeps them), in eval mode under ``torch.no_grad``.
    """

    family: Family
    nets: Nets
    batches: Callable[[], Iterator[Batch]]
    generator: torch.Generator
    device: torch.device
    autocast: Callable[[], AbstractContextManager]

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over all ranks (in place; a no-op with one process)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(tensor)
        return tensor


class Evaluator(Protocol):
    """Called on every rank; returns figures named ``eval/…``, equal on every rank."""

    def __call__(self, ctx: EvalContext) -> dict[str, float]: ...
