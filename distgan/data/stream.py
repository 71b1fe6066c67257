"""The training stream: WebDataset shards → batches, split by rank and by loader worker,
shuffled, deterministic for a seed, and resumable to the exact batch.

How determinism and resume work
-------------------------------
* Each loader worker reads an endless chain of its own *worker epochs*. Which shards a worker
  reads in epoch ``e`` depends on ``data.mode``:

  - ``epoch``: epoch ``e`` permutes the shard list with ``seed`` and ``e``; rank ``r`` of ``R``
    takes every R-th shard of it, and loader worker ``w`` of ``W`` every W-th shard of those. So
    the ranks' workers partition the data set in every epoch: every sample is seen exactly once
    per epoch. It needs at least R × W shards (a clear error says how many otherwise).
  - ``resampled``: worker ``w`` of rank ``r`` draws ``max(1, shards // (R·W))`` shards *with
    replacement* (seeded by seed, e, r, w). Any number of shards works, and every rank's stream
    is endless with full batches (the usual cure for uneven-shard hangs in DDP).

* A worker epoch: its shards' samples → shuffle buffer (seeded by seed, epoch, rank, worker) →
  decode (an image that fails to decode is skipped, counted and logged with shard and key) →
  transforms (:mod:`distgan.data.transforms`, random choices a pure function of seed, epoch and
  key) → batches of ``batch_size``. Batches run on across epoch boundaries: no sample is
  dropped, every batch is full, and a batch may hold the end of one epoch and the start of the
  next. Each batch comes from exactly one worker, which tags it with its position: the epoch and
  the number of raw samples (decodable or not) read in that epoch so far.
* ``torch.utils.data.DataLoader`` takes batches from workers strictly round-robin. The position of
  a rank is thus each logical worker's (epoch, samples read) plus the next worker in turn. On
  resume, worker ``w`` starts at its epoch and skips the samples already read, without decoding
  them, and physical worker 0 plays the logical worker that was next, so the resumed run sees
  exactly the batches the uninterrupted run would have seen.

Batches (dicts)
---------------
``image`` float[B,C,H,W] in [-1, 1] (or scaled L*a*b* with ``data.lab``), ``key`` list[str], and
when the shards have them: ``label`` long[B] (``cls``), ``attrs`` float[B,A] of 0/1 (CelebA's
attributes, names in ``info.attribute_names``), ``target`` float[B,C,H,W] (the second image of a
pix2pix pair, transformed like ``image``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import random
import signal
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

try:  # deprecated since torchvision 0.29 (for TorchCodec, which needs a system FFmpeg)
    from torchvision.io import decode_image
except ImportError:  # a torchvision without it: Pillow decodes everything
    decode_image = None

from distgan.data.shards import ShardError, iter_samples, read_manifest, verify_shards
from distgan.data.transforms import Transforms

log = logging.getLogger("distgan.data")

IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")
Mode = Literal["epoch", "resampled"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a recipe needs to know about the data to build its networks."""

    resolution: int
    channels: int
    class_names: list[str]
    total: int
    attribute_names: list[str] = field(default_factory=list)
    paired: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def dataset_info(manifest: dict[str, Any], transforms: Transforms | None = None) -> DatasetInfo:
    channels = int(manifest["channels"])
    return DatasetInfo(
        resolution=int(manifest["resolution"]),
        channels=transforms.channels(channels) if transforms else channels,
        class_names=list(manifest.get("class_names") or []),
        total=int(manifest.get("total", sum(s["count"] for s in manifest["shards"]))),
        attribute_names=list(manifest.get("attribute_names") or []),
        paired=bool(manifest.get("paired", False)),
    )


def _pixels(data: bytes, channels: int) -> torch.Tensor:
    """Encoded image → uint8 [C,H,W] (decoding fully, so truncation is caught here).

    torchvision's libpng/libjpeg decoders straight into a tensor are 1.4× (PNG) to 2.3× (JPEG)
    faster than Pillow for shard-sized images, with identical pixels; Pillow handles the rest
    (a colour conversion, e.g. RGB shards read as grayscale, or a format torchvision lacks) and
    raises for an image that is really broken."""
    if decode_image is not None:
        with contextlib.suppress(RuntimeError):
            image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8))
            if image.shape[0] == channels and image.dtype == torch.uint8:  # (16-bit PNG: no)
                return image
    with Image.open(io.BytesIO(data)) as pil:
        mode = "L" if channels == 1 else "RGB"
        array = np.array(pil if pil.mode == mode else pil.convert(mode), dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1)


def decode_sample(
    sample: dict[str, Any],
    channels: int,
    transforms: Transforms | None = None,
    seed: int = 0,
    epoch: int = 0,
) -> dict[str, Any]:
    """Raw tar members → ``{"image": uint8 [C,H,W], "key"}`` plus ``label`` / ``attrs`` /
    ``target`` if present, after the random crop/flip (colour comes per batch in ``_collate``)."""
    key = sample["__key__"]
    data = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
    if data is None:
        raise ValueError(f"no image member (one of {', '.join(IMAGE_KEYS)})")
    images = [_pixels(data, channels)]
    target = next((sample[f"target.{k}"] for k in IMAGE_KEYS if f"target.{k}" in sample), None)
    if target is not None:
        images.append(_pixels(target, channels))
    images = (transforms or Transforms()).geometry(images, seed, epoch, key)
    out: dict[str, Any] = {"image": images[0], "key": key}
    if target is not None:
        out["target"] = images[1]
    if "cls" in sample:
        out["label"] = int(sample["cls"])
    if "json" in sample:
        extra = json.loads(sample["json"])
        if "attrs" in extra:
            out["attrs"] = torch.tensor(extra["attrs"], dtype=torch.float32)
    return out


def _shuffled(items: Iterator[dict], bufsize: int, rng: random.Random) -> Iterator[dict]:
    """Reservoir-style shuffle buffer (what WebDataset's ``shuffle`` does, with our own rng)."""
    buffer: list[dict] = []
    for item in items:
        if len(buffer) < bufsize:
            buffer.append(item)
            continue
        index = rng.randrange(bufsize)
        buffer[index], item = item, buffer[index]
        yield item
    rng.shuffle(buffer)
    yield from buffer


class ShardStream(IterableDataset):
    """Endless, per-worker-deterministic batches from a shard folder (see the module docstring)."""

    def __init__(
        self,
        shard_dir: str | Path,
        *,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        shuffle_buffer: int = 1000,
        verify: bool = False,
        mode: Mode = "epoch",
        transforms: Transforms | None = None,
        resolution: int | None = None,
    ) -> None:
        self.shard_dir = Path(shard_dir)
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
        needed = world_size * self.num_workers
        if mode == "epoch" and len(self.manifest["shards"]) < needed:
            raise ShardError(
                f"'{self.shard_dir}' has {len(self.manifest['shards'])} shards but "
                f"{world_size} ranks × {self.num_workers} loader workers need at least {needed}; "
                f"lower data.num_workers, re-create the shards with more, smaller shards "
                f"(--samples-per-shard), or use data.mode=resampled"
            )

    # -- which shards a worker reads in an epoch
    def worker_shards(self, epoch: int, worker: int) -> list[dict[str, Any]]:
        shards = list(self.manifest["shards"])
        if self.mode == "resampled":
            rng = random.Random(f"{self.seed}/resampled/{epoch}/{self.rank}/{worker}")
            per_worker = max(1, len(shards) // (self.world_size * self.num_workers))
            return [rng.choice(shards) for _ in range(per_worker)]
        random.Random(f"{self.seed}/shards/{epoch}").shuffle(shards)
        return shards[self.rank :: self.world_size][worker :: self.num_workers]

    def samples_in_epoch(self, epoch: int, worker: int) -> int:
        return sum(s["count"] for s in self.worker_shards(epoch, worker))

    def batches_in_epoch(self, epoch: int, worker: int) -> int:
        """Whole batches' worth of samples (batches run on across epochs, so this is a floor)."""
        return self.samples_in_epoch(epoch, worker) // self.batch_size

    # -- the worker's stream
    def _raw_samples(self, shards: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for shard in shards:
            for sample in iter_samples(self.shard_dir / shard["file"]):
                sample["__shard__"] = shard["file"]
                yield sample

    def _epoch_samples(self, epoch: int, worker: int) -> Iterator[dict[str, Any]]:
        rng = random.Random(f"{self.seed}/buffer/{epoch}/{self.rank}/{worker}")
        raw = self._raw_samples(self.worker_shards(epoch, worker))
        return _shuffled(raw, self.shuffle_buffer, rng)

    def _decode(self, raw: dict[str, Any], epoch: int) -> dict[str, Any] | None:
        try:
            return decode_sample(raw, self.info.channels, self.transforms, self.seed, epoch)
        except Exception as err:  # a corrupt image must not stop a long run
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
        bad = 0
        while True:
            samples = self._epoch_samples(epoch, worker)
            from_start = read == 0
            for _ in range(read):  # already trained on: skip without decoding
                next(samples, None)
            good = 0
            for raw in samples:
                read += 1
                item = self._decode(raw, epoch)
                if item is None:
                    bad += 1
                    continue
                good += 1
                pending.append(item)
                if len(pending) == self.batch_size:
                    yield self._collate(pending, worker, (epoch, read), bad)
                    pending, bad = [], 0
            if good == 0 and from_start:
                raise ShardError(
                    f"rank {self.rank} worker {worker} found no decodable sample in its shards "
                    f"of '{self.shard_dir}' in epoch {epoch}; check them with data.verify=true"
                )
            epoch, read = epoch + 1, 0

    def _collate(
        self, items: list[dict[str, Any]], worker: int, position: tuple[int, int], bad: int
    ) -> dict[str, Any]:
        colour = self.transforms.colour
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
        batch["_worker"] = worker
        batch["_position"] = position
        batch["_bad"] = bad
        return batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        physical = info.id if info is not None else 0
        if info is None and self.num_workers > 1:
            raise RuntimeError("ShardStream with several logical workers needs DataLoader workers")
        yield from self._worker_batches((physical + self.worker_offset) % self.num_workers)


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGTERM/SIGUSR1/Ctrl-C to the trainer, which stops them cleanly
    after writing its checkpoint (they exit on their own if the trainer dies)."""
    for name in ("SIGTERM", "SIGUSR1", "SIGINT"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)


def _shut_down(iterator: Iterator[dict[str, Any]]) -> None:
    """Ask a DataLoader iterator's workers to exit and join them (no-op without workers)."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


class ResumableLoader:
    """A DataLoader over :class:`ShardStream` that knows its exact position (``state_dict``)."""

    def __init__(self, stream: ShardStream, num_workers: int, pin_memory: bool = False) -> None:
        self.stream = stream
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.consumed = [0] * stream.num_workers
        self.positions = [(0, 0)] * stream.num_workers
        self.next_worker = 0
        self.bad_samples = 0
        self._iterator: Iterator[dict[str, Any]] | None = None
        self._finalizer: weakref.finalize | None = None

    def _start(self) -> None:
        self.stream.start_positions = list(self.positions)
        self.stream.worker_offset = self.next_worker
        loader = DataLoader(
            self.stream,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            prefetch_factor=4 if self.num_workers else None,
            generator=torch.Generator(),  # never touch the global RNG (exact resume)
            worker_init_fn=_ignore_stop_signals,
        )
        self._iterator = iter(loader)
        # Workers ignore SIGTERM, so multiprocessing's exit handler (terminate, then join) would
        # wait for them forever: a loader that is never closed is closed at exit instead.
        self._finalizer = weakref.finalize(self, _shut_down, self._iterator)

    def __iter__(self) -> ResumableLoader:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._iterator is None:
            self._start()
        try:
            batch = next(self._iterator)
        except BaseException as err:  # stop the workers first: they would outlive the error
            self.close()
            if not isinstance(err, ShardError):
                raise
            # from a worker: keep the one line that names the shard
            lines = [ln for ln in str(err).splitlines() if ln.startswith(ShardError.__name__)]
            raise ShardError(lines[-1].split(": ", 1)[1] if lines else str(err)) from None
        worker = int(batch.pop("_worker"))
        self.positions[worker] = tuple(int(v) for v in batch.pop("_position"))
        self.bad_samples += int(batch.pop("_bad"))
        self.consumed[worker] += 1
        self.next_worker = (worker + 1) % self.stream.num_workers
        return batch

    def close(self) -> None:
        """Stop the worker processes now (also done on a stream error, and at exit)."""
        if self._finalizer is not None:
            self._finalizer()
        self._finalizer = None
        self._iterator = None

    def _fingerprint(self) -> dict[str, Any]:
        s = self.stream
        return {
            "num_workers": s.num_workers,
            "batch_size": s.batch_size,
            "world_size": s.world_size,
            "seed": s.seed,
            "mode": s.mode,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "consumed": list(self.consumed),
            "positions": [list(p) for p in self.positions],
            "next_worker": self.next_worker,
            "bad_samples": self.bad_samples,
            **self._fingerprint(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = self._fingerprint()
        changed = {k: (state.get(k), v) for k, v in expected.items() if state.get(k) != v}
        if changed or "positions" not in state:
            what = ", ".join(f"{k} {old}→{new}" for k, (old, new) in changed.items())
            log.warning(
                "data position not restored exactly (%s); the stream restarts from the beginning",
                f"{what} changed since the checkpoint" if what else "an older checkpoint format",
            )
            return
        self.consumed = list(state["consumed"])
        self.positions = [tuple(p) for p in state["positions"]]
        self.next_worker = int(state["next_worker"])
        self.bad_samples = int(state.get("bad_samples", 0))
        self.close()  # the next batch starts workers at the restored position
