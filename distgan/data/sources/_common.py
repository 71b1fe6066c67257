"""What every converter shares: its command-line options, reading images from files, zips and
tars, cropping/resizing, and the parallel, deterministic encode → write pipeline.

A converter lists its samples as :class:`Item` objects (key, where the pixels are, label, JSON
extras) in a fixed order; :func:`convert_items` decodes, crops, resizes and encodes them in a
``multiprocessing.Pool`` with ordered ``imap`` (so the output does not depend on the number of
workers) and writes shards with :func:`distgan.data.shards.write_shards`.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import tarfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from distgan.data.shards import Record, Sample, ShardError, encode_sample, parse_size, write_shards

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


# ----------------------------------------------------------------------------- options


def add_common_arguments(
    parser: argparse.ArgumentParser,
    *,
    size: int,
    split: str = "train",
    splits: Sequence[str] = ("train", "test", "val", "all"),
) -> None:
    """The options every converter has (``--out`` is added by the CLI)."""
    parser.add_argument("--src", required=True, help="the download: archive or extracted folder")
    parser.add_argument("--size", type=int, default=size, help=f"output side in px ({size})")
    parser.add_argument("--split", choices=list(splits), default=split, help=f"({split})")
    parser.add_argument(
        "--workers", type=int, default=min(4, os.cpu_count() or 1), help="encoding processes"
    )
    parser.add_argument("--format", choices=["png", "jpg"], default="png", help="(png)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality (95)")
    add_shard_size_arguments(parser, samples_per_shard=1000)


def add_shard_size_arguments(
    parser: argparse.ArgumentParser, samples_per_shard: int | None = None
) -> None:
    """``--samples-per-shard`` and ``--shard-bytes`` (the embedded sets default to ``--shards``)."""
    default = f"({samples_per_shard})" if samples_per_shard else "(default: from --shards)"
    parser.add_argument(
        "--samples-per-shard",
        type=positive_int,
        default=samples_per_shard,
        help=f"shard size in samples {default}",
    )
    parser.add_argument(
        "--shard-bytes",
        type=parse_size,
        default=None,
        help="also close a shard before it exceeds this size, e.g. 64MB",
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: give a positive number")
    return value


# ----------------------------------------------------------------------------- reading pixels


@dataclass(frozen=True)
class ZipMember:
    archive: str
    name: str


@dataclass(frozen=True)
class TarMember:
    """A member of an uncompressed tar, read by offset (workers need random access)."""

    archive: str
    offset: int
    size: int
    name: str


PixelSource = str | ZipMember | TarMember | np.ndarray
"""A file path, a member of a zip or tar, or pixels already decoded (CIFAR batches)."""


@dataclass(frozen=True)
class Item:
    """One sample to convert. ``target`` is the second image of a pair; ``halves="AB"`` cuts the
    image into its left (image) and right (target) half (pix2pix ``A|B`` files), ``"BA"`` the
    other way round."""

    key: str
    image: PixelSource
    label: int | None = None
    extra: dict[str, Any] | None = None
    target: PixelSource | None = None
    halves: str | None = None


@dataclass(frozen=True)
class Options:
    size: int
    channels: int = 3
    crop: str = "center"  # center: central square (side `crop_px` or the short side); none
    crop_px: int | None = None
    image_format: str = "png"
    quality: int = 95


_zips: dict[str, zipfile.ZipFile] = {}  # one open handle per archive and process


def read_bytes(source: str | ZipMember | TarMember) -> bytes:
    if isinstance(source, ZipMember):
        if source.archive not in _zips:
            _zips[source.archive] = zipfile.ZipFile(source.archive)
        return _zips[source.archive].read(source.name)
    if isinstance(source, TarMember):
        with open(source.archive, "rb") as f:
            f.seek(source.offset)
            return f.read(source.size)
    return Path(source).read_bytes()


def load_image(source: PixelSource) -> Image.Image:
    if isinstance(source, np.ndarray):
        return Image.fromarray(source)
    pil = Image.open(io.BytesIO(read_bytes(source)))
    pil.load()
    return pil


def fit(pil: Image.Image, opts: Options) -> np.ndarray:
    """Crop (central square) and resize to ``opts.size``, in the output's colour mode."""
    pil = pil.convert("L" if opts.channels == 1 else "RGB")
    if opts.crop == "center":
        side = min(pil.width, pil.height, opts.crop_px or 1 << 30)
        left, top = (pil.width - side) // 2, (pil.height - side) // 2
        pil = pil.crop((left, top, left + side, top + side))
    if pil.size != (opts.size, opts.size):
        pil = pil.resize((opts.size, opts.size), Image.BICUBIC)
    return np.asarray(pil)


def source_name(source: PixelSource | None) -> str:
    if isinstance(source, ZipMember | TarMember):
        return f"{source.archive}:{source.name}"
    return "pixels" if isinstance(source, np.ndarray) else str(source)


def prepare(item: Item, opts: Options) -> Record | str:
    """Item → encoded record (runs in a worker). A source image that cannot be read is
    reported back as a message instead of stopping a conversion of 200,000 files."""
    try:
        pil = load_image(item.image)
        target = load_image(item.target) if item.target is not None else None
        if item.halves:
            half = pil.width // 2
            left, right = (
                pil.crop((0, 0, half, pil.height)),
                pil.crop((half, 0, 2 * half, pil.height)),
            )
            pil, target = (left, right) if item.halves == "AB" else (right, left)
    except Exception as err:  # corrupt or unreadable source file
        return f"{source_name(item.image)}: {describe_error(err)}"
    sample = Sample(
        key=item.key,
        image=fit(pil, opts),
        label=item.label,
        extra=item.extra or {},
        target=fit(target, opts) if target is not None else None,
    )
    return encode_sample(sample, opts.image_format, opts.quality)


def describe_error(err: Exception) -> str:
    """Why a source image was not read, the same on every run: Pillow names the buffer it read
    by its repr (``<_io.BytesIO object at 0x7f…>``), which would make manifests differ."""
    if isinstance(err, UnidentifiedImageError):
        return "not an image Pillow can identify"
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "<…>", str(err)) or type(err).__name__


# ----------------------------------------------------------------------------- the pipeline


def convert_items(
    items: Sequence[Item],
    args: argparse.Namespace,
    opts: Options,
    meta: dict[str, Any],
    skipped: Sequence[str] = (),
) -> dict[str, Any]:
    """Encode ``items`` with ``args.workers`` processes (order kept) and write the shards.
    ``skipped``: the files the converter left out while listing (:func:`image_files`); the
    manifest lists them with the images that cannot be read."""
    if not items:
        raise ShardError(f"no images found for split '{args.split}' in '{args.src}'")
    refuse_duplicate_keys(items)
    skipped = list(skipped)

    def records(results: Iterator[Record | str]) -> Iterator[Record]:
        for result in results:
            if isinstance(result, str):
                skipped.append(result)
            else:
                yield result

    work = partial(prepare, opts=opts)
    with progress_bar(len(items), f"{meta['source']} {meta['split']}") as advance:
        if args.workers <= 1:
            results: Iterator[Record | str] = map(work, items)
            return write_shards(
                advance(records(results)), Path(args.out), **_writer_args(args, opts, meta, skipped)
            )
        with Pool(args.workers) as pool:
            results = pool.imap(work, items, chunksize=16)
            return write_shards(
                advance(records(results)), Path(args.out), **_writer_args(args, opts, meta, skipped)
            )


def refuse_duplicate_keys(items: Sequence[Item]) -> None:
    """Two sources with one key (``x.png`` and ``x.jpg`` both give ``x``) are refused before
    anything is written: renaming one of them silently would make keys depend on the listing."""
    first: dict[str, Item] = {}
    for item in items:
        if item.key in first:
            raise ShardError(
                f"'{source_name(first[item.key].image)}' and '{source_name(item.image)}' both "
                f"give the sample key '{item.key}'; rename or remove one of them"
            )
        first[item.key] = item


def _writer_args(
    args: argparse.Namespace, opts: Options, meta: dict[str, Any], skipped: list[str]
) -> dict[str, Any]:
    return {
        "samples_per_shard": args.samples_per_shard,
        "max_shard_bytes": args.shard_bytes,
        "meta": {"resolution": opts.size, "channels": opts.channels, **meta},
        "image_format": opts.image_format,
        "quality": opts.quality,
        "overwrite": getattr(args, "overwrite", False),
        "skipped": skipped,
    }


class progress_bar:
    """A rich progress bar on stderr; ``advance(iterable)`` ticks once per item passing through."""

    def __init__(self, total: int, description: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.task = self.progress.add_task(description, total=total)

    def __enter__(self):
        self.progress.start()

        def advance(iterable):
            for item in iterable:
                yield item
                self.progress.advance(self.task)

        return advance

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:  # the error's one line alone, no half-full bar above it
            self.progress.live.transient = True
        self.progress.stop()


# ----------------------------------------------------------------------------- small helpers


def sanitize_key(text: str) -> str:
    """A file path → a WebDataset key (no dots, no slashes)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")


def image_files(folder: Path, skipped: list[str] | None = None) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted, so that conversion is deterministic.
    Other files (``.gif``, ``.txt`` …) are appended to ``skipped``, if given, with the reason."""
    images = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        elif skipped is not None and path.is_file():
            suffix = path.suffix or "no suffix"
            skipped.append(f"{path}: not an image file distgan reads ({suffix})")
    return images


def tar_index(path: Path) -> dict[str, TarMember]:
    """Member name → its data's offset and size in an uncompressed tar (one pass, no extract)."""
    index: dict[str, TarMember] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if member.isfile():
                    index[member.name.removeprefix("./")] = TarMember(
                        str(path), member.offset_data, member.size, member.name
                    )
    except tarfile.ReadError as err:
        raise ShardError(f"'{path}' is not an uncompressed tar ({err}); extract it first") from None
    return index


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise ShardError(f"'{path}' not found: {what}")
    return path
