"""The training stream: WebDataset shards → batches, split by rank and by loader worker,
shuffled, deterministic for a seed, and resumable to the exact batch.

How determinism and resume work
-------------------------------
* Each loader worker reads an endless chain of its own *worker epochs*. Which shards a worker
  reads in epoch ``e`` depends on ``data.mode``:

  - ``epoch``: epoch ``e`` permutes the shard list with ``seed`` and ``e``; rank ``r`` of ``R``
    takes every R-th shard of it, and loader worker ``w`` of ``W`` every W-th shard of those. So
    the ranks' workers partition the data set in every epoch: every sample is seen exactly once
    per epoch. With fewer shards than R × W, each shard is cut into contiguous sample
    ranges (:func:`pieces_for`) dealt instead: 8 shards serve 8 GPUs × 2 loader workers.
  - ``resampled``: worker ``w`` of rank ``r`` draws ``max(1, shards // (R·W))`` shards *with
    replacement* (seeded by seed, e, r, w). Any number of shards works, and every rank's stream
    is endless with full batches (the usual cure for uneven-shard hangs in DDP).
  - With ``data.subset``/``data.exclude`` (:mod:`distgan.data.subset`), the shards are dealt as
    if they held only the selected samples: shards without any are left out and ranges count
    selected samples, so no worker is left without samples.

* A worker epoch: its shards' samples → shuffle buffer (seeded by seed, epoch, rank, worker) →
  decode (an image that fails to decode is skipped, counted and logged with shard and key) →
  transforms (:mod:`distgan.data.transforms`, random choices a pure function of seed, epoch and
  key) → batches of ``batch_size``. Batches run on across epoch boundaries: no sample is
  dropped, every batch is full, and a batch may hold the end of one epoch and the start of the
  next. Each batch comes from exactly one worker, which tags it with its position: the epoch and
  the number of raw samples (decodable or not) read in that epoch so far.
* ``torch.utils.data.DataLoader`` takes batches from workers strictly round-robin. The position of
  a rank is thus each logical worker's (epoch, samples read) plus the next worker in turn. Fewer
  loader processes than logical workers (``data.loader_processes``; 0: the trainer reads) play
  them in the same round-robin order, so they change the speed, never the batches. On
  resume, worker ``w`` starts at its epoch and skips the samples already read, without decoding
  them, and physical worker 0 plays the logical worker that was next, so the resumed run sees
  exactly the batches the uninterrupted run would have seen. A resume on another world size
  (or number of workers) first deals the interrupted epochs' unseen samples over the new ranks'
  workers as *catch-up epochs* (:mod:`distgan.data.elastic`), then epochs continue as above.

Batches (dicts)
---------------
``image`` float[B,C,H,W] in [-1, 1] (or scaled L*a*b* with ``data.lab``), ``key`` list[str], and
when the shards have them: ``label`` long[B] (``cls``), ``attrs`` float[B,A] of 0/1 (CelebA's
attributes, names in ``info.attribute_names``), ``target`` float[B,C,H,W] (the second image of a
pix2pix pair, transformed like ``image``).
"""

from __future__ import annotations

import collections
import copy
import itertools
import logging
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from torch.utils.data import IterableDataset, get_worker_info

from distgan.data.decode import _check_against, decode_sample
from distgan.data.elastic import CatchUpReads, ElasticPlan
from distgan.data.info import dataset_info
from distgan.data.shards import iter_samples, read_manifest, verify_shards
from distgan.data.subset import Selection, read_spans, selected_shards
from distgan.data.transforms import Transforms
from distgan.errors import ConfigError, ShardError

log = logging.getLogger("distgan.data")

Mode = Literal["epoch", "resampled"]
Item = TypeVar("Item")


def _shuffled(items: Iterator[Item], bufsize: int, rng: random.Random) -> Iterator[Item]:
    """Reservoir-style shuffle buffer (what WebDataset's ``shuffle`` does, with our own rng).
    Its draws do not depend on the items: replayed on sample indices it gives the read order
    (distgan/data/elastic.py)."""
    buffer: list[Item] = []
    for item in items:
        if len(buffer) < bufsize:
            buffer.append(item)
            continue
        index = rng.randrange(bufsize)
        buffer[index], item = item, buffer[index]
        yield item
    rng.shuffle(buffer)
    yield from buffer


def pieces_for(shards: list[dict[str, Any]], needed: int) -> list[dict[str, Any]]:
    """What epoch mode deals to the ranks' workers: the shards themselves when there are at least
    ``needed`` (ranks × workers), else each shard cut into up to ⌈needed / shards⌉ contiguous
    sample ranges (``start``, ``count``), so that every rank × worker still reads a disjoint part
    and the epoch still holds every sample once (a worker reads past the samples of its shard
    that are not its own, without decoding them)."""
    if len(shards) >= needed:
        return list(shards)
    cuts = -(-needed // len(shards))
    pieces = []
    for shard in shards:
        parts = min(cuts, shard["count"])
        bounds = [shard["count"] * i // parts for i in range(parts + 1)]
        for start, stop in itertools.pairwise(bounds):
            pieces.append({**shard, "start": start, "count": stop - start})
    return pieces


class ShardStream(CatchUpReads, IterableDataset):
    """Endless, per-worker-deterministic batches from a shard folder (see the module docstring)."""

    def __init__(
        self,
        shard_dir: str | Path,
        *,
        batch_size: int,
        seed: int | str,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        shuffle_buffer: int = 1000,
        verify: bool = False,
        mode: Mode = "epoch",
        transforms: Transforms | None = None,
        resolution: int | None = None,
        colour_in_batches: bool = True,
        decode_threads: int = 1,
        selection: Selection | None = None,
    ) -> None:
        """``colour_in_batches=False``: batches keep uint8 images (a quarter of float32's bytes
        through shared memory and to the device), the consumer applies ``transforms.colour``
        (the trainer does it on the device: distgan/engine/build.py). ``selection``: only those
        samples (``data.subset``/``data.exclude``, or their complement; distgan/data/subset.py)
        are dealt, as if the shards held no others."""
        self.shard_dir = Path(shard_dir)
        self.colour_in_batches = colour_in_batches
        self.decode_threads = decode_threads
        self.manifest = read_manifest(self.shard_dir)
        if verify:
            verify_shards(self.shard_dir, self.manifest)
        if mode not in ("epoch", "resampled"):
            raise ValueError(f"data.mode='{mode}': use epoch or resampled")
        self.transforms = transforms or Transforms()
        self.info = dataset_info(self.manifest, self.transforms)
        if resolution is not None and self.info.resolution != resolution:
            raise ShardError(
                f"'{self.shard_dir}' holds {self.info.resolution} px images but the recipe is "
                f"built for {resolution} px (data.resolution); convert the data with "
                f"`distgan shards … --size {resolution}`, or set data.resolution=null to build "
                "the networks for the shards' size"
            )
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_workers = max(num_workers, 1)
        self.shuffle_buffer = shuffle_buffer
        self.mode = mode
        # Set by ResumableLoader before the workers start: per logical worker (epoch, samples read)
        self.start_positions = [(0, 0)] * self.num_workers
        self.worker_offset = 0
        self.plan: ElasticPlan | None = None  # set on a resume on another world size
        self.selection = selection
        self.shards = self.manifest["shards"]
        if selection is not None:
            self.shards = selected_shards(self.shard_dir, self.manifest, selection)
            if not self.shards:
                raise ConfigError(
                    f"{selection.describe()} leaves no other sample of '{self.shard_dir}' for the "
                    "evaluation's reference; set eval.shards to held-out images"
                )
        self.pieces = self.shards
        if mode == "epoch":
            self.pieces = pieces_for(self.shards, world_size * self.num_workers)
            if len(self.pieces) < world_size * self.num_workers:
                total = sum(shard["count"] for shard in self.shards)
                chosen = f" ({selection.describe()})" if selection else ""
                raise ShardError(
                    f"'{self.shard_dir}' holds {total} samples{chosen}, fewer than {world_size} "
                    f"ranks × {self.num_workers} loader workers; lower data.num_workers or use "
                    "fewer processes"
                )

    # -- which shards a worker reads in an epoch
    def worker_shards(self, epoch: int, worker: int) -> list[dict[str, Any]]:
        shards = list(self.shards)
        if self.mode == "resampled":
            rng = random.Random(f"{self.seed}/resampled/{epoch}/{self.rank}/{worker}")
            per_worker = max(1, len(shards) // (self.world_size * self.num_workers))
            return [rng.choice(shards) for _ in range(per_worker)]
        pieces = list(self.pieces)
        random.Random(f"{self.seed}/shards/{epoch}").shuffle(pieces)
        return pieces[self.rank :: self.world_size][worker :: self.num_workers]

    def samples_in_epoch(self, epoch: int, worker: int) -> int:
        return sum(s["count"] for s in self.worker_shards(epoch, worker))

    def batches_in_epoch(self, epoch: int, worker: int) -> int:
        """Whole batches' worth of samples (batches run on across epochs, so this is a floor)."""
        return self.samples_in_epoch(epoch, worker) // self.batch_size

    def in_geometry(self, rank: int, world: int, workers: int, buffer: int) -> ShardStream:
        """A copy of this stream as rank ``rank`` of another world would read it (to replay
        an old world's reads: distgan/data/elastic.py); it shares the manifest."""
        other = copy.copy(self)
        other.rank, other.world_size, other.num_workers = rank, world, workers
        other.shuffle_buffer = buffer
        other.pieces = pieces_for(self.shards, world * workers)
        return other

    def read_order(self, epoch: int, worker: int) -> list[int]:
        """The samples in the order the worker reads them in ``epoch`` (after its buffer)."""
        rng = random.Random(f"{self.seed}/buffer/{epoch}/{self.rank}/{worker}")
        return list(_shuffled(iter(self.sample_order(epoch, worker)), self.shuffle_buffer, rng))

    # -- the worker's stream
    def _raw_samples(self, shards: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for shard in shards:
            if "spans" in shard:  # selected samples (data.subset): ranges of those
                start = shard.get("start", 0)
                spans = shard["spans"][start : start + shard["count"]]
                samples = read_spans(self.shard_dir / shard["file"], spans)
            else:
                samples = iter_samples(self.shard_dir / shard["file"])
            if "start" in shard and "spans" not in shard:  # a piece of a shard (see pieces_for)
                samples = itertools.islice(samples, shard["start"], shard["start"] + shard["count"])
            for sample in samples:
                sample["__shard__"] = shard["file"]
                yield sample

    def epoch_samples(self, epoch: int, worker: int) -> Iterator[dict[str, Any]]:
        """The raw samples logical worker ``worker`` reads in ``epoch``, in their shuffled order."""
        rng = random.Random(f"{self.seed}/buffer/{epoch}/{self.rank}/{worker}")
        if self.catching_up(epoch):
            raw = self.samples_at(self.sample_order(epoch, worker))
        else:
            raw = self._raw_samples(self.worker_shards(epoch, worker))
        return _shuffled(raw, self.shuffle_buffer, rng)

    def decode(self, raw: dict[str, Any], epoch: int) -> dict[str, Any] | None:
        """A raw sample decoded and transformed, or None (logged) if it cannot be decoded."""
        try:
            info = self.info
            item = decode_sample(
                raw, info.channels, self.transforms, self.seed, epoch, info.resolution
            )
            _check_against(item, info)
            return item
        except Exception as err:  # a corrupt or odd sample must not stop a long run
            log.warning(
                "skipping sample '%s' in shard '%s': %s",
                raw.get("__key__"),
                raw.get("__shard__"),
                err,
            )
            return None

    def _worker_batches(self, worker: int) -> Iterator[dict[str, Any]]:
        epoch, read = self.start_positions[worker]
        pending: list[dict[str, Any]] = []
        epochs: list[int] = []  # each pending sample's epoch (a batch may hold two)
        bad = 0
        while True:
            samples = self.epoch_samples(epoch, worker)
            from_start = read == 0
            for _ in range(read):  # already trained on: skip without decoding
                next(samples, None)
            good = 0
            for item in self._decoded(samples, epoch):
                read += 1
                if item is None:
                    bad += 1
                    continue
                good += 1
                pending.append(item)
                epochs.append(epoch)
                if len(pending) == self.batch_size:
                    batch = self.collate(pending)
                    batch.update(_worker=worker, _position=(epoch, read), _bad=bad)
                    batch["_epochs"] = epochs
                    yield batch
                    pending, epochs, bad = [], [], 0
            if good == 0 and from_start and not self.catching_up(epoch):
                raise ShardError(
                    f"rank {self.rank} worker {worker} found no decodable sample in its shards "
                    f"of '{self.shard_dir}' in epoch {epoch}; check them with data.verify=true"
                )
            epoch, read = epoch + 1, 0

    def _decoded(
        self, samples: Iterator[dict[str, Any]], epoch: int
    ) -> Iterator[dict[str, Any] | None]:
        """Each raw sample decoded (None: undecodable), in order; with ``decode_threads`` > 1
        decoded by that many threads a little ahead of the consumer (the decoders release the
        GIL), so one logical worker uses several cores and the batches stay the same."""
        if self.decode_threads <= 1:
            for raw in samples:
                yield self.decode(raw, epoch)
            return
        with ThreadPoolExecutor(self.decode_threads) as pool:
            window: collections.deque = collections.deque()
            for raw in samples:
                window.append(pool.submit(self.decode, raw, epoch))
                if len(window) >= 4 * self.decode_threads:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Decoded samples → one batch (the colour transform runs here, once per batch)."""
        colour = self.transforms.colour if self.colour_in_batches else lambda images: images
        batch: dict[str, Any] = {
            "image": colour(torch.stack([it["image"] for it in items])),
            "key": [it["key"] for it in items],
        }
        if all("target" in it for it in items):
            batch["target"] = colour(torch.stack([it["target"] for it in items]))
        if all("label" in it for it in items):
            batch["label"] = torch.tensor([it["label"] for it in items], dtype=torch.long)
        if all("attrs" in it for it in items):
            batch["attrs"] = torch.stack([it["attrs"] for it in items])
        return batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """This loader process's batches. ``P`` processes (0: the trainer's own) may play the
        ``W`` logical workers, P dividing W: process ``p`` plays logical workers p, p + P, … in
        turn, so with the DataLoader's round-robin over processes the batches come in exactly
        the order of W processes — the data order never depends on how many processes read."""
        info = get_worker_info()
        physical, processes = (info.id, info.num_workers) if info is not None else (0, 1)
        if self.num_workers % processes:
            raise ValueError(
                f"{processes} loader processes cannot play {self.num_workers} logical workers "
                "(data.loader_processes must divide data.num_workers)"
            )
        played = range(physical, self.num_workers, processes)
        streams = [
            self._worker_batches((w + self.worker_offset) % self.num_workers) for w in played
        ]
        while True:
            for stream in streams:
                yield next(stream)


def held_out_batches(
    shard_dir: str | Path,
    *,
    n: int,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    transforms: Transforms | None = None,
    selection: Selection | None = None,
) -> Iterator[dict[str, Any]]:
    """The first ``n`` samples of a shard folder in a fixed order (seeded shuffle of epoch 0),
    dealt in blocks of ``batch_size``: rank ``r`` takes blocks ``b ≡ r (mod world_size)``, one
    batch each, ``index`` (long[B]) their places in that order. Read here, with random streams of
    its own (the training stream is untouched); an undecodable sample is skipped (logged).
    ``selection``: of those samples only (the complement of ``data.subset``)."""
    stream = ShardStream(
        shard_dir,
        batch_size=batch_size,
        seed=seed,
        shuffle_buffer=min(n, 1000),
        transforms=transforms,
        selection=selection,
    )
    samples = enumerate(itertools.islice(stream.epoch_samples(0, 0), n))
    for block, raws in itertools.groupby(samples, key=lambda pair: pair[0] // batch_size):
        if block % world_size != rank:
            continue
        taken = [(i, item) for i, raw in raws if (item := stream.decode(raw, 0)) is not None]
        if taken:
            batch = stream.collate([item for _, item in taken])
            yield {**batch, "index": torch.tensor([i for i, _ in taken], dtype=torch.long)}
