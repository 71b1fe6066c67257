"""Colour photos shipped inside scikit-image (public domain / CC0) → random square crops, the
embedded data of the colorization demo (``photos-colorize``). scikit-image is needed only here.

Each photo is scaled so that its short side is 4 × ``--size``; training crops come from its left
three quarters, held-out (``--split test``) crops from its right quarter, so the two never share
a pixel. A crop's side is drawn from [size, 2·size], its place uniformly, then it is resized to
``--size`` (Lanczos). Deterministic: the same arguments give byte-identical shards.

``--leave-out NAME`` builds one fold of a leave-one-photo-out measure (``distgan bench
colorize-loo``): ``--split train`` then crops the whole of the six other photos, ``--split test``
tiles the whole of photo NAME (``--size`` squares in rows and columns, the last ones flush with
the edges) and nothing else, so no pixel of NAME is ever trained on.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from distgan.data.shards import Sample, write_shards
from distgan.data.sources._common import add_shard_size_arguments

# scikit-image's loader name → licence, as scikit-image's data module states it
PHOTOS = {
    "astronaut": "public domain (NASA; Eileen Collins)",
    "chelsea": "CC0 (photographer Stefan van der Walt)",
    "coffee": "CC0 (photographer Rachel Michetti)",
    "rocket": "public domain (SpaceX; DSCOVR launch)",
    "retina": "CC0 (Mikael Häggström, via Wikimedia Commons)",
    "hubble_deep_field": "public domain (NASA)",
    "immunohistochemistry": "no known copyright restrictions (CMMI)",
}
HELD_OUT = 0.25  # the right quarter of each photo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=32, help="crop side in pixels (32)")
    parser.add_argument("--split", choices=["train", "test"], default="train", help="(train)")
    parser.add_argument("--crops", type=int, default=None, help="per photo (train 240, test 24)")
    parser.add_argument("--shards", type=int, default=None, help="(train 8, test 2)")
    parser.add_argument(
        "--leave-out",
        choices=list(PHOTOS),
        default=None,
        help="train: the six other photos whole; test: tiles of this photo only",
    )
    add_shard_size_arguments(parser)


def load_photo(name: str) -> np.ndarray:
    try:
        import skimage.data
    except ImportError:
        raise SystemExit(
            "distgan: the photos converter needs scikit-image: pip install scikit-image"
        ) from None
    return getattr(skimage.data, name)()[..., :3]


def scaled(photo: np.ndarray, size: int) -> Image.Image:
    """The photo with its short side 4 × ``size`` (Lanczos)."""
    height, width = photo.shape[:2]
    scale = 4 * size / min(height, width)
    return Image.fromarray(photo).resize(
        (round(width * scale), round(height * scale)), Image.LANCZOS
    )


def crops(photo: np.ndarray, size: int, count: int, split: str, seed: int) -> list[np.ndarray]:
    """Random crops of the train part (``split="all"``: of the whole photo) or the test part."""
    image = scaled(photo, size)
    cut = round(image.width * (1 - HELD_OUT))
    left, right = {"train": (0, cut), "test": (cut, image.width), "all": (0, image.width)}[split]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        side = int(rng.integers(size, min(2 * size, right - left, image.height) + 1))
        x = int(rng.integers(left, right - side + 1))
        y = int(rng.integers(0, image.height - side + 1))
        crop = image.crop((x, y, x + side, y + side)).resize((size, size), Image.LANCZOS)
        out.append(np.asarray(crop))
    return out


def tiles(photo: np.ndarray, size: int) -> list[np.ndarray]:
    """``size`` squares covering the whole scaled photo, row by row; the last row and column
    are flush with the edges (they overlap their neighbours where the side is not a multiple)."""
    image = np.asarray(scaled(photo, size))
    height, width = image.shape[:2]

    def starts(side: int) -> list[int]:
        return sorted({*range(0, side - size + 1, size), side - size})

    return [image[y : y + size, x : x + size] for y in starts(height) for x in starts(width)]


def photo_samples(args: argparse.Namespace) -> list[Sample]:
    """The samples of ``--split``, of all photos or of one fold (``--leave-out``)."""
    count = args.crops or (240 if args.split == "train" else 24)
    leave_out = getattr(args, "leave_out", None)
    if leave_out and args.split == "test":
        pieces = tiles(load_photo(leave_out), args.size)
        return [Sample(key=f"{leave_out}-tile-{i:04d}", image=t) for i, t in enumerate(pieces)]
    samples = []
    for number, name in enumerate(PHOTOS):
        if name == leave_out:
            continue
        seed = 1000 * number + (0 if args.split == "train" else 1)
        split = "all" if leave_out else args.split
        for i, crop in enumerate(crops(load_photo(name), args.size, count, split, seed)):
            samples.append(Sample(key=f"{name}-{args.split}-{i:04d}", image=crop))
    return samples


def convert(args: argparse.Namespace) -> dict[str, Any]:
    shards = args.shards or (8 if args.split == "train" else 2)
    samples = photo_samples(args)
    leave_out = getattr(args, "leave_out", None)
    order = np.random.default_rng(7).permutation(len(samples))  # mix photos across shards
    return write_shards(
        (samples[i] for i in order),
        Path(args.out),
        samples_per_shard=getattr(args, "samples_per_shard", None) or -(-len(samples) // shards),
        max_shard_bytes=getattr(args, "shard_bytes", None),
        overwrite=getattr(args, "overwrite", False),
        meta={
            "source": "photos",
            "split": args.split,
            "resolution": args.size,
            "channels": 3,
            "photos": PHOTOS,
            **({"leave_out": leave_out} if leave_out else {}),
            "license": "each photo public domain or CC0 (see 'photos'); via scikit-image",
        },
    )
