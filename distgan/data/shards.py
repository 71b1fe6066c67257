"""Writing WebDataset tar shards and their ``manifest.json``; reading the manifest back.

A shard folder holds ``<prefix>-000000.tar …`` plus ``manifest.json`` (source, split, resolution,
class names, and per shard: sample count, bytes, sha256). Writing is deterministic: the same
samples in the same order give byte-identical shards (fixed tar mtime/owner, sorted members).

Members of one sample (WebDataset groups them by the key before the first dot):

* ``KEY.png`` (or ``.jpg``): the image at the target resolution;
* ``KEY.cls``: the class index as decimal text (labelled data sets);
* ``KEY.json``: anything else, e.g. ``{"attrs": [0, 1, …]}`` (CelebA, names in the manifest's
  ``attribute_names``) or the original file name;
* ``KEY.target.png``: the second image of a pair (pix2pix: ``png`` is the input, ``target.png``
  the image to produce).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np
import webdataset as wds
from PIL import Image

from distgan.data.shard_folder import MANIFEST, replacing
from distgan.errors import ShardError

TAR_END = 1024  # two zero blocks end a tar; files are then padded to 10 KiB (tarfile.RECORDSIZE)
FORMAT = "distgan-shards/1"


@dataclass
class Sample:
    """One training example before encoding. ``image`` is uint8 HxW (gray) or HxWxC."""

    key: str
    image: np.ndarray
    label: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    target: np.ndarray | None = None  # the second image of a pair


Record = dict[str, Any]
"""One encoded sample as written to the tar: ``{"__key__": key, "png": bytes, …}``."""


def encode_image(image: np.ndarray, fmt: str = "png", quality: int = 95) -> bytes:
    buf = io.BytesIO()
    pil = Image.fromarray(image)
    if fmt == "png":
        pil.save(buf, format="PNG", optimize=False, compress_level=6)
    elif fmt in ("jpg", "jpeg"):
        pil.save(buf, format="JPEG", quality=quality)
    else:
        raise ValueError(f"unknown image format '{fmt}' (use png or jpg)")
    return buf.getvalue()


def encode_sample(sample: Sample, image_format: str = "png", quality: int = 95) -> Record:
    """A :class:`Sample` → tar members (the layout in the module docstring)."""
    if "." in sample.key:
        raise ValueError(f"sample key '{sample.key}' contains a dot (WebDataset splits keys there)")
    ext = "jpg" if image_format in ("jpg", "jpeg") else "png"
    record: Record = {"__key__": sample.key, ext: encode_image(sample.image, ext, quality)}
    if sample.label is not None:
        record["cls"] = str(int(sample.label)).encode()
    if sample.extra:
        record["json"] = json.dumps(sample.extra, sort_keys=True).encode()
    if sample.target is not None:
        record[f"target.{ext}"] = encode_image(sample.target, ext, quality)
    return record


def record_bytes(record: Record) -> int:
    """The size a record takes in a tar: per member a 512-byte header and the data padded to
    512 bytes."""
    sizes = [len(v) for k, v in record.items() if not k.startswith("__")]
    return sum(512 + -(-n // 512) * 512 for n in sizes)


def parse_size(text: str) -> int:
    """``"64MB"`` / ``"1.5GB"`` / ``"200000"`` → bytes (for ``--shard-bytes``)."""
    units = {"KB": 1e3, "MB": 1e6, "GB": 1e9, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "B": 1}
    upper = text.strip().upper()
    for unit, factor in units.items():
        if upper.endswith(unit) and upper[: -len(unit)].strip():
            return int(float(upper[: -len(unit)]) * factor)
    return int(upper)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_shards(
    samples: Iterable[Sample | Record],
    out_dir: Path,
    *,
    samples_per_shard: int | None = None,
    max_shard_bytes: int | None = None,
    meta: dict[str, Any],
    image_format: str = "png",
    quality: int = 95,
    prefix: str = "shard",
    overwrite: bool = False,
    skipped: list[str] | None = None,
) -> dict[str, Any]:
    """Write ``samples`` (in the given order) into tar shards and a manifest; return the manifest.

    ``samples`` are :class:`Sample` objects or records already encoded by :func:`encode_sample`
    (converters encode in worker processes). A shard is closed when it holds
    ``samples_per_shard`` samples or when the next sample would take it past ``max_shard_bytes``
    (before tar's padding of the file to a multiple of 10 KiB).
    ``meta`` holds source, split, resolution, channels, class_names and anything else worth
    keeping. ``skipped`` (source files left out, as ``"PATH: why"``), which the caller may fill
    while ``samples`` is consumed, is listed in the manifest's ``skipped_sources``.

    The folder is replaced as a whole once everything is written (:mod:`shard_folder`): a folder
    that already holds shards only with ``overwrite=True``, and a failed or killed conversion
    leaves the old folder as it was.
    """
    if not samples_per_shard and not max_shard_bytes:
        raise ValueError("give samples_per_shard or max_shard_bytes")
    with replacing(Path(out_dir), overwrite, prefix) as staging:
        shards = _write_tars(
            samples, staging, samples_per_shard, max_shard_bytes, image_format, quality, prefix
        )
        if not shards:
            raise ShardError(f"no samples were written to {out_dir}: the source is empty")

        from distgan.version import __version__

        manifest = {
            "format": FORMAT,
            **meta,
            "image_format": "jpg" if image_format in ("jpg", "jpeg") else "png",
            "total": sum(s["count"] for s in shards),
            "shards": shards,
            "distgan_version": __version__,
        }
        if skipped:
            manifest["skipped_sources"] = list(skipped)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _write_tars(
    samples: Iterable[Sample | Record],
    out_dir: Path,
    samples_per_shard: int | None,
    max_shard_bytes: int | None,
    image_format: str,
    quality: int,
    prefix: str,
) -> list[dict[str, Any]]:
    """The tar files of :func:`write_shards`; returns their manifest entries."""
    ext = "jpg" if image_format in ("jpg", "jpeg") else "png"
    shards: list[dict[str, Any]] = []
    writer: wds.TarWriter | None = None
    stream = None
    shard_bytes = 0
    keys: set[str] = set()

    def close() -> None:
        nonlocal writer, stream
        if writer is not None:
            writer.close()
            stream.close()
            path = out_dir / shards[-1]["file"]
            shards[-1]["bytes"] = path.stat().st_size
            shards[-1]["sha256"] = sha256_of(path)
        writer = stream = None

    try:
        for sample in samples:
            record = sample if isinstance(sample, dict) else encode_sample(sample, ext, quality)
            if record["__key__"] in keys:
                key = record["__key__"]
                raise ShardError(f"sample key '{key}' occurs twice; keys must be unique")
            keys.add(record["__key__"])
            size = record_bytes(record)
            full = writer is not None and (
                (samples_per_shard and shards[-1]["count"] >= samples_per_shard)
                or (max_shard_bytes and shard_bytes + size + TAR_END > max_shard_bytes)
            )
            if writer is None or full:
                close()
                name = f"{prefix}-{len(shards):06d}.tar"
                stream = open(out_dir / name, "wb")  # noqa: SIM115 — closed in close()
                # an int mtime: a float one costs every member a PAX header (slower to read)
                writer = wds.TarWriter(stream, user="distgan", group="distgan", mtime=0)
                shards.append({"file": name, "count": 0})
                shard_bytes = 0
            writer.write(record)
            shards[-1]["count"] += 1
            shard_bytes += size
    except BaseException:  # a full disk, a refused sample: drop the half-written shard quietly
        if writer is not None:
            # tarfile and its stream buffer flush again when collected: a second error
            writer.tarstream.closed = writer.tarstream.fileobj.closed = True
            with contextlib.suppress(OSError):
                stream.close()
        raise
    close()
    return shards


def read_manifest(shard_dir: str | Path) -> dict[str, Any]:
    """Load and sanity-check ``manifest.json``; every error names the folder or file and a fix."""
    shard_dir = Path(shard_dir)
    if not shard_dir.is_dir():
        raise ShardError(
            f"shard folder '{shard_dir}' does not exist; set data.shards=DIR to a folder made by "
            "`distgan shards …`"
        )
    path = shard_dir / MANIFEST
    if not path.is_file():
        raise ShardError(
            f"'{path}' is missing; is '{shard_dir}' a shard folder made by `distgan shards …`?"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ShardError(f"'{path}' is not readable JSON ({err}); re-create the shards") from None
    _check_manifest(manifest, path)
    for shard in manifest["shards"]:
        file = shard_dir / shard["file"]
        if not file.is_file():
            raise ShardError(
                f"shard '{file}' listed in {MANIFEST} is missing; copy it back or re-create the "
                "shards"
            )
    return manifest


def _check_manifest(manifest: Any, path: Path) -> None:
    """The fields the stream relies on, each with the type it needs; shard files must lie in the
    shard folder itself (a manifest cannot make distgan read any other file)."""

    def bad(what: str) -> ShardError:
        return ShardError(f"'{path}': {what}; re-create the shards with `distgan shards …`")

    if not isinstance(manifest, dict):
        raise bad(f"a manifest is a JSON object, not {type(manifest).__name__}")
    for key in ("shards", "resolution", "channels"):
        if key not in manifest:
            raise bad(f"no '{key}' field")
    resolution, channels = manifest["resolution"], manifest["channels"]
    if not (type(resolution) is int and resolution > 0):
        raise bad(f"'resolution' must be a positive integer, not {resolution!r}")
    if channels not in (1, 3) or type(channels) is not int:
        raise bad(f"'channels' must be 1 or 3, not {channels!r}")
    for key in ("class_names", "attribute_names"):
        names = manifest.get(key)
        if names is not None and not (
            isinstance(names, list) and all(isinstance(n, str) for n in names)
        ):
            raise bad(f"'{key}' must be a list of names")
    shards = manifest["shards"]
    if not isinstance(shards, list) or not shards:
        raise bad("'shards' must be a non-empty list of {file, count} entries")
    for index, shard in enumerate(shards):
        if not (isinstance(shard, dict) and isinstance(shard.get("file"), str)):
            raise bad(f"shard entry {index} has no 'file' name")
        if type(shard.get("count")) is not int or shard["count"] < 0:
            raise bad(f"shard entry {index} ('{shard['file']}') has no valid 'count'")
        name = PurePosixPath(shard["file"])
        if name.is_absolute() or ".." in name.parts or len(name.parts) != 1:
            raise bad(
                f"shard entry {index} names '{shard['file']}', which is not a file of the "
                "shard folder itself; refused"
            )


ZERO_BLOCK = bytes(512)


def _tar_members(
    stream: BinaryIO, wanted: Callable[[str], bool] | None = None
) -> Iterator[tuple[str, bytes | None]]:
    """(name, data) of the regular files of a tar, in order: a lean ustar/PAX/GNU reader (about
    twice as fast as ``tarfile`` per member, which matters for small images). Members whose
    name ``wanted`` refuses come with data None, their bytes skipped (seek, not read)."""
    long_name: str | None = None
    while True:
        header = stream.read(512)
        if not header or header == ZERO_BLOCK:
            return
        if len(header) < 512:
            raise ValueError("truncated header")
        stored = int(header[148:156].rstrip(b"\0 ").strip() or b"0", 8)
        if stored != sum(header[:148]) + 256 + sum(header[156:]):  # chksum field read as spaces
            raise ValueError("bad header checksum")
        size = int(header[124:136].rstrip(b"\0 ").strip() or b"0", 8)
        kind = header[156:157]
        if wanted is not None and kind in (b"0", b"\0") and not long_name:
            name = _member_name(header)
            if not wanted(name):
                stream.seek(size + -size % 512, 1)
                yield name, None
                continue
        data = stream.read(size)
        if len(data) < size:
            raise ValueError("unexpected end of data")
        stream.read(-size % 512)
        if kind == b"x":  # PAX extended header: its "path" names the next member
            for record in data.decode("utf-8").splitlines():
                if " path=" in record:
                    long_name = record.split(" path=", 1)[1]
        elif kind == b"L":  # GNU long name
            long_name = data.rstrip(b"\0").decode("utf-8")
        elif kind in (b"0", b"\0"):
            yield long_name or _member_name(header), data
            long_name = None


def _member_name(header: bytes) -> str:
    name = header[:100].rstrip(b"\0").decode("utf-8")
    prefix = header[345:500].rstrip(b"\0").decode("utf-8")
    return f"{prefix}/{name}" if prefix else name


def split_member(name: str) -> tuple[str, str]:
    """A member name → (sample key, lower-cased suffix): the key ends at the first dot of the
    file name, as in WebDataset."""
    folder, _, base = name.rpartition("/")
    stem, _, suffix = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), suffix.lower()


def iter_samples(path: Path) -> Iterator[dict[str, Any]]:
    """The samples of one shard as WebDataset groups them: ``{"__key__": …, "png": bytes, …}``
    (key = the member name up to the first dot of its file name; suffixes lower-cased).
    A missing, truncated or corrupt shard raises :class:`ShardError` naming it."""
    sample: dict[str, Any] = {}
    try:
        with open(path, "rb", buffering=1 << 20) as stream:
            for name, data in _tar_members(stream):
                key, suffix = split_member(name)
                if sample and sample["__key__"] != key:
                    yield sample
                    sample = {}
                sample.setdefault("__key__", key)
                sample[suffix] = data
    except (OSError, ValueError) as err:
        raise ShardError(
            f"shard '{path}' is unreadable ({err}); copy it again or re-create the shards"
        ) from None
    if sample:
        yield sample


def verify_shards(shard_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Compare every shard's sha256 with the manifest (``data.verify=true``)."""
    for shard in manifest["shards"]:
        file = Path(shard_dir) / shard["file"]
        if not isinstance(shard.get("sha256"), str):
            raise ShardError(
                f"data.verify=true, but '{Path(shard_dir) / MANIFEST}' has no sha256 for shard "
                f"'{shard['file']}'; re-create the shards, or set data.verify=false"
            )
        digest = sha256_of(file)
        if digest != shard["sha256"]:
            raise ShardError(
                f"shard '{file}' is corrupt: sha256 {digest[:12]}… differs from the manifest's "
                f"{shard['sha256'][:12]}…; copy it again or re-create the shards"
            )
