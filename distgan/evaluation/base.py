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
from distgan.errors import EvaluationFailed
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
    reductions are collectives). :func:`distgan.evaluation.protocol.run` supplies the batches.
    Adds ``eval/n``: the samples evaluated, over all ranks.

    An error on any rank raises :class:`EvaluationFailed` on every rank, once the ranks have
    agreed on it, so that none is left waiting in a collective: after the local pass (sampling
    and ``update``, no collectives) and after ``finish`` (whose maths run alike on every rank
    once the sums are reduced; rank 0's cache write never raises)."""
    count, failure = 0, None
    try:
        for batch, generator in batches:
            references = family.reference(batch).float()
            with autocast():
                outputs = family.sample(nets, references.shape[0], generator, batch)
            for evaluator in evaluators:
                evaluator.update(outputs.float(), references, batch)
            count += references.shape[0]
    except Exception as err:  # any fault: the ranks must agree before the next collective
        failure = err
    _agree(failure)
    figures: dict[str, float] = {}
    try:
        for evaluator in evaluators:
            figures.update(evaluator.finish(reduce))
    except Exception as err:
        failure = err
    _agree(failure)
    figures["eval/n"] = reduce(_on_backend(torch.tensor([float(count)]))).item()
    return figures


def _on_backend(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` where the process group's collectives take it (CUDA under NCCL)."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and torch.distributed.get_backend() != "gloo":
        return tensor.cuda()
    return tensor


def _agree(failure: Exception | None) -> None:
    """Raise :class:`EvaluationFailed`, naming the first failed rank and its error, on every
    rank if ``failure`` happened on any (a collective: every rank calls it at the same point)."""
    what = None
    if failure is not None:
        what = (f"{type(failure).__name__}: {failure}".strip().splitlines() or ["?"])[0]
    whats = [what]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        whats = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(whats, what)
    for rank, message in enumerate(whats):
        if message is not None:
            where = f" on rank {rank}" if len(whats) > 1 else ""
            raise EvaluationFailed(f"{message}{where}") from failure
