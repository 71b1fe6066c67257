"""Colour photos shipped inside scikit-image (public domain / CC0) → random square crops, the
embedded data of the colorization demo (``photos-colorize``). scikit-image is needed only here.

Each photo is scaled so that its short side is 4 × ``--size``; training crops come from its left
three quarters, held-out (``--split test``) crops from its right quarter, so the two never share
a pixel. A crop's side is drawn from [size, 2·size], its place uniformly, then it is resized to
``--size`` (Lanczos). Deterministic: the same arguments give byte-identical shards.
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
    add_shard_size_arguments(parser)


def load_photo(name: str) -> np.ndarray:
    try:
        import skimage.data
    except ImportError:
        raise SystemExit(
            "distgan: the photos converter needs scikit-image: pip install scikit-image"
        ) from None
    return getattr(skimage.data, name)()[..., :3]


def crops(photo: np.ndarray, size: int, count: int, split: str, seed: int) -> list[np.ndarray]:
    height, width = photo.shape[:2]
    scale = 4 * size / min(height, width)
    image = Image.fromarray(photo).resize(
        (round(width * scale), round(height * scale)), Image.LANCZOS
    )
    cut = round(image.width * (1 - HELD_OUT))
    left, right = (0, cut) if split == "train" else (cut, image.width)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        side = int(rng.integers(size, min(2 * size, right - left, image.height) + 1))
        x = int(rng.integers(left, right - side + 1))
        y = int(rng.integers(0, image.height - side + 1))
        crop = image.crop((x, y, x + side, y + side)).resize((size, size), Image.LANCZOS)
        out.append(np.asarray(crop))
    return out


def convert(args: argparse.Namespace) -> dict[str, Any]:
    count = args.crops or (240 if args.split == "train" else 24)
    shards = args.shards or (8 if args.split == "train" else 2)
    samples = []
    for number, name in enumerate(PHOTOS):
        seed = 1000 * number + (0 if args.split == "train" else 1)
        for i, crop in enumerate(crops(load_photo(name), args.size, count, args.split, seed)):
            samples.append(Sample(key=f"{name}-{args.split}-{i:04d}", image=crop))
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
            "license": "each photo public domain or CC0 (see 'photos'); via scikit-image",
        },
    )
