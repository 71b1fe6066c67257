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
  a rank is thus each logical worker's (epoch, samples read) plus the next worker in turn. Fewer
  loader processes than logical workers (``data.loader_processes``; 0: the trainer reads) play
  them in the same round-robin order, so they change the speed, never the batches. On
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
import itertools
import json
import logging
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

try:  # deprecated since torchvision 0.29 (for TorchCodec, which needs a system FFmpeg)
    from torchvision.io import decode_image
except ImportError:  # a torchvision without it: Pillow decodes everything
    decode_image = None

from distgan.data.shards import iter_samples, read_manifest, verify_shards
from distgan.data.transforms import Transforms
from distgan.errors import ShardError

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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) read from the image's header, without decoding its pixels."""
    if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    with Image.open(io.BytesIO(data)) as pil:  # reads the header only
        return pil.size


def _pixels(data: bytes, channels: int, resolution: int | None = None) -> torch.Tensor:
    """Encoded image → uint8 [C,H,W] (decoding fully, so truncation is caught here). With
    ``resolution``, an image of another size is refused from its header, before decoding (a
    20000×20000 PNG of a few hundred KB would otherwise take GBs).

    torchvision's libpng/libjpeg decoders straight into a tensor are faster than Pillow for
    shard-sized images (README, "Speed"), with identical pixels; Pillow handles the rest
    (a colour conversion, e.g. RGB shards read as grayscale, or a format torchvision lacks) and
    raises for an image that is really broken."""
    if resolution is not None:
        width, height = image_size(data)
        if (width, height) != (resolution, resolution):
            raise ValueError(f"image is {width}×{height} px, the shards are {resolution} px")
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
    resolution: int | None = None,
) -> dict[str, Any]:
    """Raw tar members → ``{"image": uint8 [C,H,W], "key"}`` plus ``label`` / ``attrs`` /
    ``target`` if present, after the random crop/flip (colour comes per batch in ``collate``);
    images of another size than ``resolution`` are refused."""
    key = sample["__key__"]
    data = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
    if data is None:
        raise ValueError(f"no image member (one of {', '.join(IMAGE_KEYS)})")
    images = [_pixels(data, channels, resolution)]
    target = next((sample[f"target.{k}"] for k in IMAGE_KEYS if f"target.{k}" in sample), None)
    if target is not None:
        images.append(_pixels(target, channels, resolution))
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


def _check_against(item: dict[str, Any], info: DatasetInfo) -> None:
    """What the manifest promises of every sample: a label in range, the attributes, the pair."""
    classes = info.num_classes
    if classes:
        if "label" not in item:
            raise ValueError(f"no .cls label (the shards have {classes} classes)")
        if not 0 <= item["label"] < classes:
            raise ValueError(f"label {item['label']} is outside 0–{classes - 1}")
    attributes = len(info.attribute_names)
    if attributes and ("attrs" not in item or item["attrs"].shape != (attributes,)):
        raise ValueError(f"no .json attrs list of {attributes} values")
    if info.paired and "target" not in item:
        raise ValueError("no .target image (the shards hold pairs)")


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
        seed: int | str,
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

    def epoch_samples(self, epoch: int, worker: int) -> Iterator[dict[str, Any]]:
        """The raw samples logical worker ``worker`` reads in ``epoch``, in their shuffled order."""
        rng = random.Random(f"{self.seed}/buffer/{epoch}/{self.rank}/{worker}")
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
        bad = 0
        while True:
            samples = self.epoch_samples(epoch, worker)
            from_start = read == 0
            for _ in range(read):  # already trained on: skip without decoding
                next(samples, None)
            good = 0
            for raw in samples:
                read += 1
                item = self.decode(raw, epoch)
                if item is None:
                    bad += 1
                    continue
                good += 1
                pending.append(item)
                if len(pending) == self.batch_size:
                    batch = self.collate(pending)
                    batch.update(_worker=worker, _position=(epoch, read), _bad=bad)
                    yield batch
                    pending, bad = [], 0
            if good == 0 and from_start:
                raise ShardError(
                    f"rank {self.rank} worker {worker} found no decodable sample in its shards "
                    f"of '{self.shard_dir}' in epoch {epoch}; check them with data.verify=true"
                )
            epoch, read = epoch + 1, 0

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Decoded samples → one batch (the colour transform runs here, once per batch)."""
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
) -> Iterator[dict[str, Any]]:
    """The first ``n`` samples of a shard folder in a fixed order (seeded shuffle of epoch 0),
    dealt in blocks of ``batch_size``: rank ``r`` takes blocks ``b ≡ r (mod world_size)``, one
    batch each, ``index`` (long[B]) their places in that order. Read here, with random streams of
    its own (the training stream is untouched); an undecodable sample is skipped (logged)."""
    stream = ShardStream(
        shard_dir,
        batch_size=batch_size,
        seed=seed,
        shuffle_buffer=min(n, 1000),
        transforms=transforms,
    )
    samples = enumerate(itertools.islice(stream.epoch_samples(0, 0), n))
    for block, raws in itertools.groupby(samples, key=lambda pair: pair[0] // batch_size):
        if block % world_size != rank:
            continue
        taken = [(i, item) for i, raw in raws if (item := stream.decode(raw, 0)) is not None]
        if taken:
            batch = stream.collate([item for _, item in taken])
            yield {**batch, "index": torch.tensor([i for i, _ in taken], dtype=torch.long)}
