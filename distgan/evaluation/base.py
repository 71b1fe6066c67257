"""The evaluator interface and the one pass over the held-out data that feeds every evaluator.

An evaluator accumulates, on each rank, statistics of the outputs and the real images of that
rank's held-out batches (``update``), then sums them over the ranks with one all-reduce and
turns them into figures named ``eval/…`` (``finish``), the same on every rank.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager

import torch

from distgan.config import Config
from distgan.families.base import Batch, Family, Nets


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over all ranks (in place; a no-op with one process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(tensor)
    return tensor


class Evaluator:
    """``cfg``: the run's configuration (``eval:`` and the held-out shards), ``family``: the
    family whose outputs are judged."""

    def __init__(self, cfg: Config, family: Family, device: torch.device) -> None:
        self.cfg = cfg
        self.family = family
        self.device = device

    def update(self, outputs: torch.Tensor, references: torch.Tensor, batch: Batch) -> None:
        """One batch: ``outputs`` of the family for it and the real ``references``, both RGB (or
        gray) float32 images in [-1, 1]."""
        raise NotImplementedError

    def finish(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """The figures, after summing this rank's statistics over all ranks with ``reduce``."""
        raise NotImplementedError


def evaluate(
    evaluators: list[Evaluator],
    family: Family,
    nets: Nets,
    batches: Iterable[tuple[Batch, torch.Generator]],
    autocast: Callable[[], AbstractContextManager],
    reduce: Callable[[torch.Tensor], torch.Tensor] = all_reduce_sum,
) -> dict[str, float]:
    """Sample once per held-out batch, from the generator that comes with it (``nets`` in eval
    mode, no grad), and feed every evaluator; every rank must call it (the evaluators'
    reductions are collectives). :func:`distgan.evaluation.protocol.run` supplies the batches."""
    for batch, generator in batches:
        references = family.reference(batch).float()
        with autocast():
            outputs = family.sample(nets, references.shape[0], generator, batch)
        for evaluator in evaluators:
            evaluator.update(outputs.float(), references, batch)
    figures: dict[str, float] = {}
    for evaluator in evaluators:
        figures.update(evaluator.finish(reduce))
    return figures
