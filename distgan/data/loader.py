"""Loading training batches: :class:`ResumableLoader` (a DataLoader over one
:class:`~distgan.data.stream.ShardStream` that knows its exact position) and
:class:`TrainingData` (the run's streams: one, or several named ones such as a CycleGAN's
unpaired domains ``{A: DIR, B: DIR}``, each with its own workers and position).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from distgan.data.elastic import ElasticPlan, plan_from, unseen_counts
from distgan.data.info import DatasetInfo
from distgan.data.stream import ShardStream
from distgan.errors import ConfigError, ShardError

log = logging.getLogger("distgan.data")


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

    def __init__(
        self, stream: ShardStream, processes: int, pin_memory: bool = False, name: str = ""
    ) -> None:
        """``processes``: loader processes playing the stream's logical workers (0: this one)."""
        self.stream = stream
        self.name = name
        # the shards themselves, as their manifest describes them (counts, sha256 of each shard)
        manifest = json.dumps(stream.manifest, sort_keys=True).encode()
        self.manifest_hash = hashlib.sha256(manifest).hexdigest()[:16]
        self.processes = processes
        self.pin_memory = pin_memory
        self.consumed = [0] * stream.num_workers
        self.positions = [(0, 0)] * stream.num_workers
        self.next_worker = 0
        self.bad_samples = 0
        self._batches_logged = 0
        self._iterator: Iterator[dict[str, Any]] | None = None
        self._finalizer: weakref.finalize | None = None

    def _start(self) -> None:
        self.stream.start_positions = list(self.positions)
        self.stream.worker_offset = self.next_worker
        loader = DataLoader(
            self.stream,
            batch_size=None,
            num_workers=self.processes,
            pin_memory=self.pin_memory,
            prefetch_factor=4 if self.processes else None,
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
            # from a worker, wrapped in its traceback: keep the one line that names the shard
            lines = [ln for ln in str(err).splitlines() if "ShardError: " in ln]
            raise ShardError(lines[-1].split("ShardError: ", 1)[1] if lines else str(err)) from None
        worker = int(batch.pop("_worker"))
        self.positions[worker] = tuple(int(v) for v in batch.pop("_position"))
        self.bad_samples += int(batch.pop("_bad"))
        epochs = batch.pop("_epochs")
        if os.environ.get(KEY_LOG):
            self._log_keys(batch["key"], epochs)
        self.consumed[worker] += 1
        self.next_worker = (worker + 1) % self.stream.num_workers
        return batch

    def _log_keys(self, keys: list[str], epochs: list[int]) -> None:
        """Tests' accounting: one line per sample trained on (batch number in this process,
        epoch, key) in ``$DISTGAN_KEY_LOG/<stream>keys-rank<R>-<pid>.tsv``."""
        name = f"{self.name}keys-rank{self.stream.rank}-{os.getpid()}.tsv"
        with open(Path(os.environ[KEY_LOG]) / name, "a") as f:
            for epoch, key in zip(epochs, keys, strict=True):
                f.write(f"{self._batches_logged}\t{epoch}\t{key}\n")
        self._batches_logged += 1

    def close(self) -> None:
        """Stop the worker processes now (also done on a stream error, and at exit)."""
        if self._finalizer is not None:
            self._finalizer()
        self._finalizer = None
        self._iterator = None

    def _fingerprint(self) -> dict[str, Any]:
        s = self.stream
        return {
            "manifest": self.manifest_hash,
            "num_workers": s.num_workers,
            "batch_size": s.batch_size,
            "world_size": s.world_size,
            "seed": s.seed,
            "mode": s.mode,
            "subset": s.selection.tag() if s.selection else None,  # data.subset/exclude
        }

    def state_dict(self) -> dict[str, Any]:
        state = {
            "consumed": list(self.consumed),
            "positions": [list(p) for p in self.positions],
            "next_worker": self.next_worker,
            "bad_samples": self.bad_samples,
            "shuffle_buffer": self.stream.shuffle_buffer,
            **self._fingerprint(),
        }
        plan = self.stream.plan
        if plan is not None and min(e for e, _ in self.positions) < plan.first_epoch:
            state["elastic"] = plan.state_dict()  # still catching up (distgan/data/elastic.py)
        return state

    def load_elastic(self, saved: list[dict[str, Any]]) -> str:
        """Continue from every old rank's position of this stream, saved by another world
        size or number of workers: the open epochs' unseen samples first (data/elastic.py).
        Returns what happened, for the console."""
        expected = self._fingerprint()
        same = [k for k in expected if k not in ("world_size", "num_workers", "batch_size")]
        changed = [k for k in same if any(s.get(k) != expected[k] for s in saved)]
        old = [s for s in saved if "positions" in s]
        if self.stream.mode != "epoch" or changed or not saved or len(old) < len(saved):
            why = f"{', '.join(changed)} changed" if changed else "no epoch accounting saved"
            if self.stream.mode != "epoch":
                why = "data.mode=resampled has no epochs to account for"
            self.positions = [(0, 0)] * self.stream.num_workers
            return f"starts afresh ({why})"
        plan = plan_from(self.stream, saved)
        self.stream.plan = plan
        first = min(plan.seen, default=plan.first_epoch)
        self.positions = [(first, 0)] * self.stream.num_workers
        self.consumed = [0] * self.stream.num_workers
        self.next_worker = 0
        self.close()
        counts = ", ".join(f"{n} of epoch {e}" for e, n in unseen_counts(plan).items())
        return f"reads the unseen samples first ({counts or 'none'}), then epoch {plan.first_epoch}"

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = self._fingerprint()
        if state.get("manifest", expected["manifest"]) != expected["manifest"]:
            log.warning(
                "the shards in '%s' changed since the checkpoint (their manifest.json differs): "
                "the data order restarts from the beginning",
                self.stream.shard_dir,
            )
            return
        expected.pop("manifest")  # (older checkpoints have none)
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
        self.stream.plan = ElasticPlan.from_state(state["elastic"]) if "elastic" in state else None
        self.close()  # the next batch starts workers at the restored position


KEY_LOG = "DISTGAN_KEY_LOG"  # a folder: every sample trained on is logged there (tests)
AUTO_INLINE_CORES = 2  # cores per rank up to which `auto` reads in the trainer's process


def resolve_loader_processes(asked: int | str, num_workers: int, cores_per_rank: int) -> int:
    """How many processes read a rank's ``num_workers`` logical workers. ``auto``: on a rank
    with few cores, loader processes take cores from the compute threads (measured with the
    default job, README "Speed"), so the trainer reads itself; with more cores, one process
    per logical worker."""
    workers = max(num_workers, 1)
    if asked == "auto":
        return 0 if cores_per_rank <= AUTO_INLINE_CORES else num_workers
    if asked and workers % asked:
        raise ConfigError(
            f"data.loader_processes={asked} must divide data.num_workers={num_workers} "
            "(each process plays the same number of logical workers); or use auto"
        )
    return int(asked)


def resolve_decode_threads(asked: int | str, loader_processes: int, cores_per_rank: int) -> int:
    """Threads decoding images in each process that reads (``data.decode_threads``). ``auto``:
    the rank's cores shared by its reading processes (the trainer itself when 0), so a GPU rank
    with many cores is fed by all of them; 1 where the cores are few and the compute threads
    need them (the default job on 2 cores)."""
    if asked != "auto":
        return int(asked)
    if cores_per_rank <= AUTO_INLINE_CORES:
        return 1
    return max(1, cores_per_rank // max(loader_processes, 1))


class TrainingData:
    """The training streams of one rank. ``shards``: a folder (batches are the stream's dicts)
    or ``{name: folder}`` (batches are ``{name: dict}``, one batch of each stream per step)."""

    def __init__(
        self,
        shards: str | dict[str, str],
        *,
        batch_size: int,
        seed: int,
        rank: int,
        world_size: int,
        num_workers: int,
        loader_processes: int | None = None,
        pin_memory: bool = False,
        **stream_options: Any,
    ) -> None:
        """``num_workers``: logical workers (the data order); ``loader_processes``: how many
        processes read them (a divisor of ``num_workers``, 0: this process; default: one each)."""
        self.named = isinstance(shards, dict)
        folders = shards if isinstance(shards, dict) else {"": shards}
        self.loaders: dict[str, ResumableLoader] = {}
        for name, folder in folders.items():
            stream = ShardStream(
                Path(folder),
                batch_size=batch_size,
                seed=f"{seed}/{name}" if name else seed,  # named streams: their own orders
                rank=rank,
                world_size=world_size,
                num_workers=num_workers,
                **stream_options,
            )
            processes = num_workers if loader_processes is None else loader_processes
            self.loaders[name] = ResumableLoader(stream, processes, pin_memory, name)

    @property
    def info(self) -> dict[str, DatasetInfo]:
        return {name: loader.stream.info for name, loader in self.loaders.items()}

    def __next__(self) -> dict[str, Any]:
        if not self.named:
            return next(self.loaders[""])
        return {name: next(loader) for name, loader in self.loaders.items()}

    @property
    def bad_samples(self) -> int:
        return sum(loader.bad_samples for loader in self.loaders.values())

    def state_dict(self) -> dict[str, Any]:
        return {name: loader.state_dict() for name, loader in self.loaders.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, loader in self.loaders.items():
            if name in state:
                loader.load_state_dict(state[name])
            else:
                log.warning("no saved position for data stream '%s': it starts afresh", name)

    def load_elastic(self, saved: list[dict[str, Any]]) -> None:
        """Every old rank's positions (another world size): see ResumableLoader.load_elastic."""
        for name, loader in self.loaders.items():
            what = loader.load_elastic([state[name] for state in saved if name in state])
            if loader.stream.rank == 0:
                log.warning("data%s: %s", f" stream '{name}'" if name else "", what)

    def close(self) -> None:
        for loader in self.loaders.values():
            loader.close()
