"""Fixed training subsets: ``data.subset=N`` (few-shot runs without re-converting) and
``data.exclude=[KEY, …]`` (samples never trained on, e.g. leave-one-out), and their complement,
which the evaluation reads as its reference when it reads the training shards.

How the N samples are chosen (a pure function of the sample keys, labels and
``data.subset_seed``, so the same for any ``train.seed``, world size, loader workers, shard order
and resume):

* The keys and labels of all samples are read once per process from the tar headers and the small
  ``KEY.cls`` members (images are skipped unread); nothing is cached in the shard folder. Where
  each sample lies in its tar is noted too, so an epoch of a subset reads only its samples.
* Keys in ``data.exclude`` are removed first (each must name a sample).
* Stratified when every sample has a label: N is split over the classes as equally as possible.
  Each class gets ⌊N / C⌋; the N mod C left over go to the first classes in class order (N = 105
  on the digits: classes 0–4 get 11, 5–9 get 10). A class with fewer samples than its share
  gives all it has, and the rest is split the same way over the other classes.
* Within a class (or among all samples, when unlabelled), samples are ranked by
  blake2b(``subset_seed``/key) and the first ones taken.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from distgan.data.shards import _tar_members, split_member
from distgan.errors import ConfigError, ShardError

log = logging.getLogger("distgan.data")
SHOW_PROGRESS = 20_000  # samples from which reading the keys gets a progress bar


class Entry(NamedTuple):
    """One sample of a shard: its key, label (None: unlabelled) and byte span in the tar."""

    key: str
    label: int | None
    start: int
    end: int


Index = list[list[Entry]]
"""Per shard (in manifest order), its samples in tar order."""

_indexes: dict[tuple[str, str], Index] = {}  # per process: (folder, manifest digest) → index


@dataclass(frozen=True)
class Selection:
    """Which samples of a shard folder a stream reads: the training ones (``data.subset``
    without ``data.exclude``), or with ``complement`` the others (the evaluation's reference)."""

    subset: int | None = None
    seed: int = 0
    exclude: tuple[str, ...] = ()
    complement: bool = False

    @classmethod
    def of(cls, data: Any, complement: bool = False) -> Selection | None:
        """From a ``data:`` section; None when it trains on every sample."""
        if data.subset is None and not data.exclude:
            return None
        return cls(data.subset, data.subset_seed, tuple(data.exclude), complement)

    def tag(self) -> str:
        """What the selection depends on, short (checkpoint data positions, cache names)."""
        excluded = hashlib.sha256(json.dumps(sorted(self.exclude)).encode()).hexdigest()[:8]
        text = f"n{self.subset}-s{self.seed}" if self.subset is not None else "all"
        return text + (f"-x{excluded}" if self.exclude else "") + ("-c" if self.complement else "")

    def describe(self) -> str:
        """The training selection in config words, e.g. ``data.subset=100``."""
        parts = []
        if self.subset is not None:
            seed = f" (data.subset_seed={self.seed})" if self.seed else ""
            parts.append(f"data.subset={self.subset}{seed}")
        if self.exclude:
            parts.append(f"data.exclude ({len(self.exclude)} keys)")
        return " and ".join(parts)


def read_index(shard_dir: Path, manifest: dict[str, Any]) -> Index:
    """Every sample's (key, label), per shard; read once per process (headers and ``.cls``)."""
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    memo = (str(Path(shard_dir).resolve()), digest)
    if memo not in _indexes:
        shards = manifest["shards"]
        total = sum(shard["count"] for shard in shards)
        from rich.progress import Progress

        show = total >= SHOW_PROGRESS and sys.stderr.isatty()
        with Progress(transient=True, disable=not show) as progress:
            what = f"reading the keys of {total} samples for data.subset/exclude"
            _indexes[memo] = [
                _shard_index(Path(shard_dir) / shard["file"])
                for shard in progress.track(shards, description=what)
            ]
    return _indexes[memo]


def _shard_index(path: Path) -> list[Entry]:
    """A shard's samples; a sample's span runs from the end of the previous member (its own
    PAX/GNU headers included) to the end of its last member."""
    samples: list[list[Any]] = []
    try:
        with open(path, "rb", buffering=1 << 20) as stream:
            end = 0
            for name, data in _tar_members(stream, lambda n: n.lower().endswith(".cls")):
                key, suffix = split_member(name)
                if not samples or samples[-1][0] != key:
                    samples.append([key, None, end, end])
                if suffix == "cls" and data is not None:
                    samples[-1][1] = int(data.decode().strip())
                end = samples[-1][3] = stream.tell()
    except (OSError, ValueError) as err:
        raise ShardError(
            f"shard '{path}' is unreadable ({err}); copy it again or re-create the shards"
        ) from None
    return [Entry(*sample) for sample in samples]


def read_spans(path: Path, spans: Sequence[tuple[int, int]]) -> Iterator[dict[str, Any]]:
    """The samples at ``spans`` of a shard (as :func:`~distgan.data.shards.iter_samples` gives
    them), read by seeking to each."""
    try:
        with open(path, "rb") as stream:
            for start, end in spans:
                stream.seek(start)
                sample: dict[str, Any] = {}
                for name, data in _tar_members(io.BytesIO(stream.read(end - start))):
                    key, suffix = split_member(name)
                    sample["__key__"] = key
                    sample[suffix] = data
                yield sample
    except (OSError, ValueError) as err:
        raise ShardError(
            f"shard '{path}' is unreadable ({err}); copy it again or re-create the shards"
        ) from None


def rank_key(seed: int, key: str) -> bytes:
    """A sample's place in the seeded order (independent of where it lies in the shards)."""
    return hashlib.blake2b(f"{seed}/{key}".encode(), digest_size=8).digest()


def quotas(sizes: dict[int, int], n: int) -> dict[int, int]:
    """``n`` split over classes of ``sizes`` samples as equally as possible (module docstring)."""
    share = dict.fromkeys(sizes, 0)
    remaining = n
    open_classes = sorted(c for c in sizes if sizes[c])
    while remaining and open_classes:
        each, extra = divmod(remaining, len(open_classes))
        for place, label in enumerate(open_classes):
            give = min(each + (place < extra), sizes[label] - share[label])
            share[label] += give
            remaining -= give
        open_classes = [c for c in open_classes if share[c] < sizes[c]]
    return share


def choose(index: Index, selection: Selection, where: str | Path) -> frozenset[str]:
    """The keys a stream with ``selection`` reads; bad settings are one line (ConfigError)."""
    samples = [sample for shard in index for sample in shard]
    keys = {sample.key for sample in samples}
    unknown = [key for key in selection.exclude if key not in keys]
    if unknown:
        raise ConfigError(
            f"data.exclude names '{unknown[0]}', which is no sample key of '{where}' (keys look "
            f"like '{samples[0].key}'); list only keys of the training shards"
        )
    excluded = set(selection.exclude)
    pool = [(sample.key, sample.label) for sample in samples if sample.key not in excluded]
    if not pool:
        raise ConfigError(f"data.exclude leaves no sample of '{where}' to train on")
    trained = {key for key, _ in pool}
    if selection.subset is not None:
        trained = _subset(pool, selection, where)
    return frozenset(keys - trained if selection.complement else trained)


def _subset(
    pool: Sequence[tuple[str, int | None]], selection: Selection, where: str | Path
) -> set[str]:
    n = selection.subset
    minus = " not in data.exclude" if selection.exclude else ""
    if n > len(pool):
        raise ConfigError(
            f"data.subset={n} is more than the {len(pool)} samples{minus} of '{where}'; "
            f"give at most {len(pool)}"
        )
    stratified = all(label is not None for _, label in pool)
    groups: dict[int, list[str]] = {}
    for key, label in pool:
        groups.setdefault(label if stratified else 0, []).append(key)
    if stratified and n < len(groups):
        raise ConfigError(
            f"data.subset={n} is fewer than the {len(groups)} classes of '{where}' (a subset is "
            f"stratified by class); give at least {len(groups)}"
        )
    share = quotas({label: len(members) for label, members in groups.items()}, n)
    chosen: set[str] = set()
    for label, members in groups.items():
        members.sort(key=lambda key: (rank_key(selection.seed, key), key))
        chosen.update(members[: share[label]])
    return chosen


def selected_shards(
    shard_dir: Path, manifest: dict[str, Any], selection: Selection
) -> list[dict[str, Any]]:
    """The manifest's shard entries that hold selected samples, each with ``count`` and
    ``spans`` (in tar order) of those samples only: what the stream deals instead of shards."""
    index = read_index(shard_dir, manifest)
    keep = choose(index, selection, shard_dir)
    shards = []
    for shard, samples in zip(manifest["shards"], index, strict=True):
        spans = [(sample.start, sample.end) for sample in samples if sample.key in keep]
        if spans:
            shards.append({**shard, "count": len(spans), "spans": spans})
    return shards
