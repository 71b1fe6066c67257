"""UCI handwritten digits (shipped inside scikit-learn) → 32×32 grayscale shards.

1,797 images of 8×8 pixels (values 0–16), 10 classes. The data set is by E. Alpaydin and
C. Kaynak (UCI Machine Learning Repository, CC BY 4.0). scikit-learn is needed only here.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from distgan.data.shards import Sample, write_shards
from distgan.data.sources._common import add_shard_size_arguments

CLASS_NAMES = [str(d) for d in range(10)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=32, help="output resolution in pixels")
    parser.add_argument("--shards", type=int, default=8, help="number of shards (≥ ranks×workers)")
    add_shard_size_arguments(parser)


def load_images(size: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit(
            "distgan: the digits converter needs scikit-learn: pip install scikit-learn"
        ) from None
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    resized = np.stack(
        [np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in images]
    )
    return resized, digits.target.astype(np.int64)


def convert(args: argparse.Namespace) -> dict[str, Any]:
    images, labels = load_images(args.size)
    order = np.random.default_rng(0).permutation(len(images))  # mix classes across shards
    per_shard = getattr(args, "samples_per_shard", None) or -(-len(images) // args.shards)
    samples = (
        Sample(key=f"digits-{int(i):05d}", image=images[i], label=int(labels[i])) for i in order
    )
    return write_shards(
        samples,
        Path(args.out),
        samples_per_shard=per_shard,
        max_shard_bytes=getattr(args, "shard_bytes", None),
        overwrite=getattr(args, "overwrite", False),
        meta={
            "source": "digits",
            "split": "all",
            "resolution": args.size,
            "channels": 1,
            "class_names": CLASS_NAMES,
            "license": "CC BY 4.0 — E. Alpaydin, C. Kaynak, UCI ML Repository (via scikit-learn)",
        },
    )
