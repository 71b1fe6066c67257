"""Data stream speed: distgan's shard stream vs torchvision ImageFolder on the original files.

Both read the same images with the same loader workers and batch size and end with the same
tensors (central square, bicubic resize to the shards' resolution, [-1, 1]); the stream reads the
pre-resized PNGs from the shards, ImageFolder decodes and resizes every original file each time.
``--make-fixture N`` builds N CelebA-sized (178×218) JPEGs and their shards first, so the
benchmark runs with no download. Figures are images/s after a warm-up; compare the ratio, not the
absolute figures, on a shared machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", default=None, help="shard folder (made from --images)")
    parser.add_argument("--images", default=None, help="the original image folder (ImageFolder)")
    parser.add_argument(
        "--make-fixture",
        type=int,
        default=0,
        metavar="N",
        help="first write N random 178×218 JPEGs and convert them to 64 px shards",
    )
    parser.add_argument("--work", default=None, help="folder for the fixture (a temporary one)")
    parser.add_argument(
        "--shard-format",
        choices=["png", "jpg"],
        default="png",
        help="image format of the fixture's shards (jpg: as `distgan shards … --format jpg`)",
    )
    parser.add_argument("--workers", type=int, default=2, help="loader workers for both (2)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (64)")
    parser.add_argument("--warmup", type=int, default=3, help="batches not timed (3)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per reader (3)")
    parser.add_argument(
        "--decode-threads",
        type=int,
        default=0,
        metavar="N",
        help="also time the trainer's reader: uint8 batches (colour on the device) decoded by "
        "N threads per worker (data.decode_threads)",
    )


# ----------------------------------------------------------------------------- the fixture


def make_fixture(work: Path, n: int, workers: int, fmt: str = "png") -> tuple[Path, Path]:
    """N photo-like JPEGs (smooth colour fields plus grain, 178×218, quality 90) in
    ``work/images/faces/`` and their 64 px shards in ``work/shards`` (``distgan shards folder``)."""
    from distgan.data.sources import folder

    images = work / "images" / "faces"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 256, (14, 12, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(small).resize((178, 218), Image.BICUBIC), np.int16)
        grain = rng.integers(-12, 13, smooth.shape, dtype=np.int16)
        pixels = np.clip(smooth + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"{i:06d}.jpg", quality=90)
    args = argparse.Namespace(
        src=str(work / "images"),
        out=str(work / "shards"),
        size=64,
        split="all",
        workers=workers,
        format=fmt,
        quality=95,
        samples_per_shard=max(1, -(-n // (4 * workers))),
        shard_bytes=None,
        gray=False,
    )
    folder.convert(args)
    return work / "images", work / "shards"


# ----------------------------------------------------------------------------- the two readers


class CenterSquare:
    """The converters' crop: the central square of the short side (picklable for workers)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        return image.crop((left, top, left + side, top + side))


def imagefolder_batches(images: Path, size: int, batch: int, workers: int):
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            CenterSquare(),
            transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )
    dataset = datasets.ImageFolder(str(images), transform=transform)
    generator = torch.Generator().manual_seed(0)
    while True:
        loader = DataLoader(
            dataset, batch_size=batch, shuffle=True, num_workers=workers, generator=generator,
            drop_last=True, persistent_workers=False,
        )  # fmt: skip
        for images_, _ in loader:
            yield images_


def stream_batches(shards: Path, batch: int, workers: int, threads: int = 1, colour: bool = True):
    from distgan.data.loader import ResumableLoader
    from distgan.data.stream import ShardStream

    stream = ShardStream(
        shards, batch_size=batch, seed=0, num_workers=workers, decode_threads=threads,
        colour_in_batches=colour,
    )  # fmt: skip
    loader = ResumableLoader(stream, workers)
    while True:
        yield next(loader)["image"]


def measure(readers: dict[str, Any], count: int, warmup: int, rounds: int) -> dict[str, dict]:
    """images/s of each reader: ``warmup`` untimed batches (worker start-up), then ``rounds``
    rounds of ``count`` batches with the readers taking turns, so that a busy moment of a shared
    machine hits both; the median round counts."""
    for batches in readers.values():
        for _ in range(warmup):
            next(batches)
    rates: dict[str, list[float]] = {name: [] for name in readers}
    for _ in range(rounds):
        for name, batches in readers.items():
            start = time.perf_counter()
            images = sum(next(batches).shape[0] for _ in range(count))
            rates[name].append(images / (time.perf_counter() - start))
    return {
        name: {"images_per_s": statistics.median(r), "rounds": r, "images_per_round": images}
        for name, r in rates.items()
    }


# ----------------------------------------------------------------------------- the command


def run(args: argparse.Namespace) -> dict[str, Any]:
    from distgan.data.shards import read_manifest

    with tempfile.TemporaryDirectory(prefix="distgan-bench-") as tmp:
        if args.make_fixture:
            images, shards = make_fixture(
                Path(args.work or tmp), args.make_fixture, args.workers, args.shard_format
            )
        elif args.images and args.shards:
            images, shards = Path(args.images), Path(args.shards)
        else:
            raise SystemExit(
                "distgan bench data: give --shards DIR --images DIR, or --make-fixture N"
            )
        manifest = read_manifest(shards)
        size = int(manifest["resolution"])
        count = max(1, manifest["total"] // args.batch // 2)  # about half a pass per round
        readers = {
            "stream": stream_batches(shards, args.batch, args.workers),
            "imagefolder": imagefolder_batches(images, size, args.batch, args.workers),
        }
        if args.decode_threads:
            readers["trainer"] = stream_batches(
                shards, args.batch, args.workers, args.decode_threads, colour=False
            )
        figures = measure(readers, count, args.warmup, args.rounds)
    result = {
        "resolution": size,
        "workers": args.workers,
        "batch": args.batch,
        **figures,
        "ratio": figures["stream"]["images_per_s"] / figures["imagefolder"]["images_per_s"],
        "decode_threads": args.decode_threads,
    }
    print_table(result)
    return result


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    title = (
        f"data → {result['resolution']} px, {result['workers']} workers, batch {result['batch']}"
    )
    table = Table(title=title)
    table.add_column("reader")
    table.add_column("images/s (median)", justify="right")
    table.add_column("rounds", justify="right")
    names = {
        "stream": "distgan shard stream (float batches, 1 thread per worker)",
        "imagefolder": "ImageFolder + DataLoader",
        "trainer": f"trainer's stream (uint8 batches, {result['decode_threads']} decode threads)",
    }
    for key, name in names.items():
        if key not in result:
            continue
        row = result[key]
        rounds = " ".join(f"{r:.0f}" for r in row["rounds"])
        table.add_row(name, f"{row['images_per_s']:.0f}", rounds)
    Console().print(table)
    Console().print(f"stream / ImageFolder = {result['ratio']:.1f}× (same workers, same resize)")
