"""The training stream: WebDataset shards → batches, split by rank and by loader worker,
shuffled, deterministic for a seed, and resumable to the exact batch.

How determinism and resume work
-------------------------------
* Epoch ``e`` permutes the shard list with ``seed`` and ``e``; rank ``r`` of ``R`` takes every
  R-th shard of it, and loader worker ``w`` of ``W`` every W-th shard of those. So the ranks'
  workers partition the data set in every epoch.
* Each worker runs an endless chain of its own epochs: read its shards → shuffle buffer (seeded
  by seed, epoch, rank, worker) → decode → batches of ``batch_size`` (the remainder of an epoch is
  dropped). Each batch therefore comes from exactly one worker, which tags it.
* ``torch.utils.data.DataLoader`` takes batches from workers strictly round-robin. The position of
  a rank is thus ``consumed[w]`` (batches taken from each logical worker) plus the next worker
  in turn. On resume, worker ``w`` skips ``consumed[w]`` batches — whole epochs are skipped by
  arithmetic on the manifest's counts, the rest without decoding — and physical worker 0 plays the
  logical worker that was next, so the resumed run sees exactly the batches the uninterrupted
  run would have seen.
"""

from __future__ import annotations

import io
import logging
import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from distgan.data.shards import ShardError, read_manifest, verify_shards

log = logging.getLogger("distgan.data")

IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")


@dataclass(frozen=True)
class DatasetInfo:
    """What a recipe needs to know about the data to build its networks."""

    resolution: int
    channels: int
    class_names: list[str]
    total: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def dataset_info(manifest: dict[str, Any]) -> DatasetInfo:
    return DatasetInfo(
        resolution=int(manifest["resolution"]),
        channels=int(manifest["channels"]),
        class_names=list(manifest.get("class_names") or []),
        total=int(manifest.get("total", sum(s["count"] for s in manifest["shards"]))),
    )


def decode_sample(sample: dict[str, Any], channels: int) -> dict[str, Any]:
    """Raw tar members → ``{"image": float[C,H,W] in [-1,1], "key": str, "label": int}``."""
    data = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
    if data is None:
        raise ValueError(f"no image member (one of {', '.join(IMAGE_KEYS)})")
    with Image.open(io.BytesIO(data)) as pil:
        pil = pil.convert("L" if channels == 1 else "RGB")
        array = np.asarray(pil, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    image = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
    out: dict[str, Any] = {"image": image, "key": sample["__key__"]}
    if "cls" in sample:
        out["label"] = int(sample["cls"])
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
    ) -> None:
        self.shard_dir = Path(shard_dir)
        self.manifest = read_manifest(self.shard_dir)
        if verify:
            verify_shards(self.shard_dir, self.manifest)
        self.info = dataset_info(self.manifest)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_workers = max(num_workers, 1)
        self.shuffle_buffer = shuffle_buffer
        # Set by ResumableLoader before the workers start:
        self.skip_batches = [0] * self.num_workers
        self.worker_offset = 0
        needed = world_size * self.num_workers
        if len(self.manifest["shards"]) < needed:
            raise ShardError(
                f"'{self.shard_dir}' has {len(self.manifest['shards'])} shards but "
                f"{world_size} ranks × {self.num_workers} loader workers need at least {needed}; "
                f"lower data.num_workers or re-create the shards with more, smaller shards"
            )

    # -- which shards a worker reads in an epoch
    def worker_shards(self, epoch: int, worker: int) -> list[dict[str, Any]]:
        shards = list(self.manifest["shards"])
        random.Random(f"{self.seed}/shards/{epoch}").shuffle(shards)
        return shards[self.rank :: self.world_size][worker :: self.num_workers]

    def batches_in_epoch(self, epoch: int, worker: int) -> int:
        return sum(s["count"] for s in self.worker_shards(epoch, worker)) // self.batch_size

    # -- the worker's stream
    def _raw_samples(self, shards: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for shard in shards:
            path = self.shard_dir / shard["file"]
            try:
                stream = open(path, "rb")  # noqa: SIM115 — closed below
            except OSError as err:
                raise ShardError(f"cannot read shard '{path}': {err}") from None
            with stream:
                source = [{"url": str(path), "stream": stream}]
                members = wds.tariterators.tar_file_expander(source)
                for sample in wds.tariterators.group_by_keys(members):
                    sample["__shard__"] = shard["file"]
                    yield sample

    def _epoch_batches(self, epoch: int, worker: int, skip: int) -> Iterator[dict[str, Any]]:
        rng = random.Random(f"{self.seed}/buffer/{epoch}/{self.rank}/{worker}")
        samples = _shuffled(
            self._raw_samples(self.worker_shards(epoch, worker)), self.shuffle_buffer, rng
        )
        for _ in range(skip * self.batch_size):  # already trained on: skip without decoding
            next(samples, None)
        pending: list[dict[str, Any]] = []
        bad = 0
        for raw in samples:
            try:
                pending.append(decode_sample(raw, self.info.channels))
            except Exception as err:  # a corrupt image must not stop a long run
                bad += 1
                log.warning(
                    "skipping sample '%s' in shard '%s': %s",
                    raw.get("__key__"),
                    raw.get("__shard__"),
                    err,
                )
                continue
            if len(pending) == self.batch_size:
                yield self._collate(pending, worker, bad)
                pending, bad = [], 0

    def _collate(self, items: list[dict[str, Any]], worker: int, bad: int) -> dict[str, Any]:
        batch: dict[str, Any] = {
            "image": torch.stack([it["image"] for it in items]),
            "key": [it["key"] for it in items],
        }
        if "label" in items[0]:
            batch["label"] = torch.tensor([it["label"] for it in items], dtype=torch.long)
        batch["_worker"] = worker
        batch["_bad"] = bad
        return batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        physical = info.id if info is not None else 0
        worker = (physical + self.worker_offset) % self.num_workers
        if info is None and self.num_workers > 1:
            raise RuntimeError("ShardStream with several logical workers needs DataLoader workers")
        skip = self.skip_batches[worker]
        epoch = 0
        while True:  # whole epochs already consumed are skipped by arithmetic
            in_epoch = self.batches_in_epoch(epoch, worker)
            if in_epoch == 0:
                raise ShardError(
                    f"rank {self.rank} worker {worker} gets fewer than one batch per epoch from "
                    f"'{self.shard_dir}'; lower train.batch_size or data.num_workers"
                )
            if skip < in_epoch:
                break
            skip -= in_epoch
            epoch += 1
        while True:
            yield from self._epoch_batches(epoch, worker, skip)
            skip = 0
            epoch += 1


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGTERM/SIGUSR1/Ctrl-C to the trainer, which stops them cleanly
    after writing its checkpoint (they exit on their own if the trainer dies)."""
    for name in ("SIGTERM", "SIGUSR1", "SIGINT"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)


class ResumableLoader:
    """A DataLoader over :class:`ShardStream` that knows its exact position (``state_dict``)."""

    def __init__(self, stream: ShardStream, num_workers: int, pin_memory: bool = False) -> None:
        self.stream = stream
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.consumed = [0] * stream.num_workers
        self.next_worker = 0
        self.bad_samples = 0
        self._iterator: Iterator[dict[str, Any]] | None = None

    def _start(self) -> None:
        self.stream.skip_batches = list(self.consumed)
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

    def __iter__(self) -> ResumableLoader:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._iterator is None:
            self._start()
        batch = next(self._iterator)
        worker = int(batch.pop("_worker"))
        self.bad_samples += int(batch.pop("_bad"))
        self.consumed[worker] += 1
        self.next_worker = (worker + 1) % self.stream.num_workers
        return batch

    def close(self) -> None:
        """Stop the worker processes now. (They ignore SIGTERM, so leaving them to Python's exit
        handlers after an error would hang the process at exit.)"""
        shutdown = getattr(self._iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._iterator = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "consumed": list(self.consumed),
            "next_worker": self.next_worker,
            "bad_samples": self.bad_samples,
            "num_workers": self.stream.num_workers,
            "batch_size": self.stream.batch_size,
            "world_size": self.stream.world_size,
            "seed": self.stream.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = {
            "num_workers": self.stream.num_workers,
            "batch_size": self.stream.batch_size,
            "world_size": self.stream.world_size,
            "seed": self.stream.seed,
        }
        changed = {k: (state.get(k), v) for k, v in expected.items() if state.get(k) != v}
        if changed:
            what = ", ".join(f"{k} {old}→{new}" for k, (old, new) in changed.items())
            log.warning(
                "data position not restored exactly (%s changed since the checkpoint); "
                "the stream restarts from the beginning",
                what,
            )
            return
        self.consumed = list(state["consumed"])
        self.next_worker = int(state["next_worker"])
        self.bad_samples = int(state.get("bad_samples", 0))
        self._iterator = None
