"""Resume on another world size in ``data.mode=epoch`` without losing the epoch's accounting.

What "seen" means
-----------------
A sample counts as *seen* in epoch ``e`` once a batch holding it has been handed to the trainer
(the positions a checkpoint saves: per rank × logical worker, the epoch and the number of raw
samples read in it, undecodable ones included). Samples still in a shuffle buffer, in a batch
being filled or in a batch prefetched by a loader process are *unseen*. Workers of one rank may
be in different epochs (batches run on across epoch boundaries): a worker past epoch ``e`` has
seen all of its share of ``e``, a worker in ``e`` the first ``read`` samples of its shuffled
order, a worker before ``e`` none of it.

The plan
--------
A resume on another world size (or another ``data.num_workers``) replays, from the saved
positions alone, which samples every old rank × worker had read: a worker's read order is a
pure function of the seed, the epoch, its rank and its share of the shards (the shuffle buffer
draws the same random numbers whatever the samples hold), so no shard is read for it. For each
*open* epoch (from the oldest to the newest epoch any old worker is in) it records the seen
samples as a mask over the data set. The new run's ranks × workers first read the *unseen*
samples of each open epoch, oldest first, dealt as contiguous runs of the data set's order
(a worker reads few shards) and shuffled by its buffer, then continue with normal epochs from
the one after the newest open epoch. So every sample the interrupted epochs had not yet seen is
trained on exactly once, spread over the new ranks. A run that is still catching up saves its
plan with its positions, so it resumes exactly, or elastically again.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from distgan.data.shards import iter_samples
from distgan.data.subset import read_spans


class Stream(Protocol):
    """What the plan needs of a :class:`~distgan.data.stream.ShardStream` (not imported: the
    stream imports this module)."""

    plan: ElasticPlan | None

    def dealt(self) -> list[dict[str, Any]]: ...

    def in_geometry(self, rank: int, world: int, workers: int, buffer: int) -> Stream: ...

    def read_order(self, epoch: int, worker: int) -> list[int]: ...


@dataclass
class ElasticPlan:
    """Open epochs ``seen`` (epoch → bool mask over the data set's samples, manifest order)
    whose unseen samples are read first; normal epochs start at ``first_epoch``."""

    first_epoch: int
    seen: dict[int, np.ndarray]

    def catch_up(self, epoch: int, slot: int, slots: int) -> list[int]:
        """The unseen samples of ``epoch`` that reader ``slot`` of ``slots`` reads (a contiguous
        run of the unseen ones, so that it touches few shards)."""
        mask = self.seen.get(epoch)
        if mask is None:
            return []
        unseen = np.flatnonzero(~mask)
        lo, hi = len(unseen) * slot // slots, len(unseen) * (slot + 1) // slots
        return unseen[lo:hi].tolist()

    def state_dict(self) -> dict[str, Any]:
        packed = {str(e): torch.from_numpy(np.packbits(m)) for e, m in self.seen.items()}
        sizes = {str(e): len(m) for e, m in self.seen.items()}
        return {"first_epoch": self.first_epoch, "seen": packed, "sizes": sizes}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ElasticPlan:
        seen = {
            int(e): np.unpackbits(bits.numpy())[: state["sizes"][e]].astype(bool)
            for e, bits in state["seen"].items()
        }
        return cls(int(state["first_epoch"]), seen)


class CatchUpReads:
    """What :class:`~distgan.data.stream.ShardStream` reads by sample index: a worker's
    samples of an epoch in data set order (the catch-up epochs' from the plan), and the reading
    of given samples."""

    plan: ElasticPlan | None
    rank: int
    world_size: int
    num_workers: int
    shard_dir: Path
    shards: list[dict[str, Any]]
    worker_shards: Callable[[int, int], list[dict[str, Any]]]

    def dealt(self) -> list[dict[str, Any]]:
        """The shards the epochs deal, in the data set's order: what the plan's sample
        indices count (with ``data.subset``: the selected samples only)."""
        return self.shards

    def catching_up(self, epoch: int) -> bool:
        """Whether ``epoch`` is one whose unseen samples an elastic resume deals out."""
        return self.plan is not None and epoch < self.plan.first_epoch

    def sample_order(self, epoch: int, worker: int) -> list[int]:
        """The samples (indices in the data set's order) a worker reads in ``epoch``, before
        its shuffle buffer (epoch mode)."""
        if self.plan is not None and epoch < self.plan.first_epoch:
            slots = self.world_size * self.num_workers
            return self.plan.catch_up(epoch, self.rank * self.num_workers + worker, slots)
        offsets = sample_offsets(self.dealt())
        order: list[int] = []
        for piece in self.worker_shards(epoch, worker):
            start = offsets[piece["file"]] + piece.get("start", 0)
            order.extend(range(start, start + piece["count"]))
        return order

    def samples_at(self, indices: list[int]) -> Iterator[dict[str, Any]]:
        """The raw samples at ``indices`` (ascending, data set order), each shard read once."""
        offsets = sample_offsets(self.dealt())
        for shard in self.dealt():
            start = offsets[shard["file"]]
            lo = bisect.bisect_left(indices, start)
            hi = bisect.bisect_left(indices, start + shard["count"])
            if lo < hi:
                yield from self._places_of(shard, {i - start for i in indices[lo:hi]})

    def _places_of(self, shard: dict[str, Any], places: set[int]) -> Iterator[dict[str, Any]]:
        """The samples at ``places`` of a dealt shard, in one pass over it (with ``data.subset``:
        places among its selected samples, read by seeking to them)."""
        path = self.shard_dir / shard["file"]
        if "spans" in shard:
            samples = read_spans(path, [shard["spans"][place] for place in sorted(places)])
        else:
            samples = (s for place, s in enumerate(iter_samples(path)) if place in places)
        for sample in samples:
            sample["__shard__"] = shard["file"]
            yield sample


def sample_offsets(shards: list[dict[str, Any]]) -> dict[str, int]:
    """Each shard's first sample in the data set's order (``ShardStream.dealt``'s)."""
    starts = itertools.accumulate((shard["count"] for shard in shards), initial=0)
    return {shard["file"]: start for shard, start in zip(shards, starts, strict=False)}


def old_reader(stream: Stream, saved: dict[str, Any], rank: int) -> Stream:
    """A copy of ``stream`` in the geometry of old rank ``rank`` (its world, workers, buffer
    and plan), to replay what it read; it never opens a shard."""
    buffer = int(saved.get("shuffle_buffer", getattr(stream, "shuffle_buffer", 1000)))
    old = stream.in_geometry(rank, int(saved["world_size"]), int(saved["num_workers"]), buffer)
    old.plan = ElasticPlan.from_state(saved["elastic"]) if saved.get("elastic") else None
    return old


def plan_from(stream: Stream, saved: list[dict[str, Any]]) -> ElasticPlan:
    """The plan of a new geometry from every old rank's saved position of this stream."""
    readers = [old_reader(stream, state, rank) for rank, state in enumerate(saved)]
    positions = [
        (reader, worker, int(epoch), int(read))
        for reader, state in zip(readers, saved, strict=True)
        for worker, (epoch, read) in enumerate(state["positions"])
    ]
    first = min(epoch for _, _, epoch, _ in positions)
    last = max(epoch for _, _, epoch, _ in positions)
    total = sum(shard["count"] for shard in stream.dealt())
    old_plan = next((r.plan for r in readers if r.plan is not None), None)
    seen: dict[int, np.ndarray] = {}
    for epoch in range(first, last + 1):
        mask = np.zeros(total, dtype=bool)
        if old_plan is not None and epoch < old_plan.first_epoch:
            mask |= old_plan.seen.get(epoch, np.ones(total, dtype=bool))
        for reader, worker, at_epoch, read in positions:
            if at_epoch < epoch:
                continue
            reader.plan = old_plan
            order = reader.read_order(epoch, worker)
            mask[order if at_epoch > epoch else order[:read]] = True
        seen[epoch] = mask
    return ElasticPlan(last + 1, seen)


def unseen_counts(plan: ElasticPlan) -> dict[int, int]:
    """Per open epoch, how many samples the new ranks read first (for the console)."""
    return {epoch: int((~mask).sum()) for epoch, mask in plan.seen.items()}
