"""The evaluation protocol in one place: which held-out samples, with which transforms, on which
rank, and which noise each output is drawn from. Training's Evaluate action, ``distgan eval``,
``distgan eval ref``, ``distgan sample`` (the inputs of image-to-image models) and the latent tools
all read held-out data through here, so they cannot drift apart.

* **Samples**: the first N of ``eval.shards`` (default ``data.shards``) in the fixed order of a
  shuffle seeded with ``train.seed``, with the run's colour conversion (gray, L*a*b*) and no random
  crop or flip. When they are the training shards and the run trains on part of them
  (``data.subset``, ``data.exclude``), only the samples it never trains on (the complement): a
  reference holding the training samples would reward memorising them.
* **Dealing**: blocks of ``eval.batch_size`` consecutive samples; rank r of R takes blocks r,
  r + R, r + 2R, … (one batch each). A rank may get none (N < ``eval.batch_size`` × R): it still
  takes part in the evaluators' reductions, with empty sums.
* **Noise**: the outputs of block k are drawn from a generator seeded by (``train.seed``, k) alone
  (labels and images come from the held-out samples), so every sample gets the same noise, and the
  figures are the same, on any number of processes. ``eval.batch_size`` sets the blocks, so it is
  part of the protocol.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch

from distgan.data.shards import read_manifest
from distgan.data.stream import held_out_batches
from distgan.data.subset import Selection, selected_shards
from distgan.data.transforms import Transforms
from distgan.errors import ConfigError
from distgan.evaluation.base import Evaluator, evaluate
from distgan.families.base import Batch, Family, Nets

log = logging.getLogger("distgan")
_warned: set[tuple[str, int]] = set()  # (shards, eval.n) already warned about (per process)

SEEDING = (
    "held-out samples dealt to the ranks in blocks of eval.batch_size; the noise of block k "
    "is drawn from a generator seeded by (train.seed, k) alone: the same for any number of "
    "processes"
)


def shards_of(cfg, shards: str | dict[str, str] | None = None) -> str | dict[str, str]:
    """The held-out shard folder(s): ``shards`` if given, else ``eval.shards``, else
    ``data.shards`` (named folders for families that read several streams)."""
    return shards or cfg.eval.shards or cfg.data.shards


def reference_selection(cfg, folder: str | dict[str, str]) -> Selection | None:
    """The complement of the run's training samples when ``folder`` is its training shard
    folder and it trains on part of it (``data.subset``/``data.exclude``); else None (all)."""
    shards = cfg.data.shards
    if not (isinstance(folder, str) and isinstance(shards, str)):
        return None
    if Path(folder).resolve() != Path(shards).resolve():
        return None
    return Selection.of(cfg.data, complement=True)


def reference_pool(cfg) -> str | None:
    """``"1697 samples not in data.subset=100"`` when the reference is a complement (none
    left: ConfigError)."""
    folder = shards_of(cfg)
    selection = reference_selection(cfg, folder)
    if selection is None:
        return None
    shards = selected_shards(Path(folder), read_manifest(folder), selection)
    if not shards:
        raise ConfigError(
            f"{selection.describe()} leaves no other sample of '{folder}' for the evaluation's "
            "reference; set eval.shards to held-out images, or eval.every=0"
        )
    return f"{sum(s['count'] for s in shards)} samples not in {selection.describe()}"


def transforms_of(cfg) -> Transforms:
    """The run's colour conversion, without the training stream's random crop and flip."""
    return Transforms(grayscale=cfg.data.grayscale, lab=cfg.data.lab)


def held_out(
    cfg,
    n: int,
    batch_size: int,
    rank: int = 0,
    world: int = 1,
    shards: str | dict[str, str] | None = None,
) -> Iterator[Batch]:
    """This rank's batches (on the CPU) of the first ``n`` held-out samples, in blocks of
    ``batch_size``; ``{name: batch}`` for named streams. Each batch's ``index`` holds its
    samples' places among the ``n``."""
    folders = shards_of(cfg, shards)
    named = isinstance(folders, dict)
    streams = {
        name: held_out_batches(
            folder,
            n=n,
            batch_size=batch_size,
            seed=cfg.train.seed,
            rank=rank,
            world_size=world,
            transforms=transforms_of(cfg),
            selection=reference_selection(cfg, folder),
        )
        for name, folder in (folders.items() if named else [("", folders)])
    }
    for batches in zip(*streams.values(), strict=False):
        batch = dict(zip(streams, batches, strict=True))
        yield batch if named else batch[""]


def sample_indices(batch: Batch) -> torch.Tensor:
    """The places of a held-out batch's samples among the first N (named streams: the first
    stream's)."""
    if "index" not in batch:
        batch = next(iter(batch.values()))
    return batch["index"]


def block_seed(seed: int, block: int) -> int:
    """The seed of held-out block ``block``'s noise: a function of (``train.seed``, block) only,
    never equal to the training noise's seed in practice (a hash, not ``seed + block``)."""
    return random.Random(f"{seed}/evaluation/{block}").getrandbits(63)


def noise(cfg, batch: Batch, device: torch.device) -> torch.Generator:
    """The generator a held-out batch's outputs are drawn from (see the module docstring)."""
    block = int(sample_indices(batch)[0]) // cfg.eval.batch_size
    return torch.Generator(device).manual_seed(block_seed(cfg.train.seed, block))


def run(
    cfg,
    evaluators: list[Evaluator],
    family: Family,
    nets: Nets,
    device: torch.device,
    rank: int,
    world: int,
    prepare: Callable[[Batch], Batch] = lambda batch: batch,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> dict[str, float]:
    """The figures of ``evaluators`` on ``eval.n`` held-out samples (every rank calls it: the
    reductions are collectives). ``nets`` in eval mode; ``prepare`` puts a batch on the device
    in the networks' memory format."""
    e = cfg.eval
    batches = (
        (prepare(batch), noise(cfg, batch, device))
        for batch in held_out(cfg, e.n, e.batch_size, rank, world)
    )
    figures = evaluate(evaluators, family, nets, batches, autocast)
    n = int(figures["eval/n"])
    if n < e.n and rank == 0 and (str(shards_of(cfg)), e.n) not in _warned:
        _warned.add((str(shards_of(cfg)), e.n))
        pool = reference_pool(cfg)
        log.warning(
            "eval.n=%d, but %s holds only %d samples%s: the figures are of those %d (recorded "
            "as n)",
            e.n,
            shards_of(cfg),
            n,
            f" ({pool})" if pool else "",
            n,
        )
    return figures


def on_training_images(cfg) -> bool:
    """True when the reference images are the training images (``eval.shards`` unset or equal
    to ``data.shards``, all of it trained on): the figures then measure fit to the training
    set, not generalisation."""
    same = cfg.eval.shards is None or cfg.eval.shards == cfg.data.shards
    return same and reference_selection(cfg, shards_of(cfg)) is None


def describe(cfg, processes: int, n: int | None = None) -> dict[str, Any]:
    """The protocol as recorded next to the figures (``eval/step-N.json``): ``n`` is the number
    of samples evaluated (``eval.n`` or fewer, when the shards hold fewer)."""
    n = cfg.eval.n if n is None else n
    training = " (the training images)" if on_training_images(cfg) else ""
    pool = reference_pool(cfg)
    if pool:
        training = f", of its {pool} (never trained on)"
    return {
        "n": n,
        "n_asked": cfg.eval.n,
        "reference": f"the first {n} held-out samples of {shards_of(cfg)}{training} "
        f"(seed {cfg.train.seed})",
        "reference_is_training_data": on_training_images(cfg),
        "batch_size": cfg.eval.batch_size,
        "seeding": SEEDING,
        "processes": processes,
        "metrics": cfg.eval.metrics,
    }
