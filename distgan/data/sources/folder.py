"""An image folder → shards: flat (no labels) or one subfolder per class (labelled).

Classes are the subfolder names, sorted (as torchvision's ``ImageFolder`` does). If ``--src``
has a subfolder named like ``--split`` (``train/``, ``val/`` …) that one is read. Images are
cropped to their central square and resized to ``--size``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from distgan.data.sources._common import (
    Item,
    Options,
    add_common_arguments,
    convert_items,
    image_files,
    require,
    sanitize_key,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, size=64, split="all")
    parser.add_argument("--gray", action="store_true", help="store 1-channel images")


def convert(args: argparse.Namespace) -> dict[str, Any]:
    src = require(Path(args.src), "--src is the image folder")
    if (src / args.split).is_dir():
        src = src / args.split
    classes = sorted(d.name for d in src.iterdir() if d.is_dir() and image_files(d))
    flat = [p for p in image_files(src) if p.parent == src]
    if flat or not classes:  # images directly in --src: an unlabelled folder
        classes = []
    items, skipped = [], []
    for path in image_files(src, skipped):
        relative = path.relative_to(src)
        label = classes.index(relative.parts[0]) if classes else None
        key = sanitize_key(relative.with_suffix("").as_posix())
        items.append(Item(key=key, image=str(path), label=label))
    opts = Options(
        size=args.size,
        channels=1 if args.gray else 3,
        image_format=args.format,
        quality=args.quality,
    )
    meta = {"source": "folder", "split": args.split, "class_names": classes}
    return convert_items(items, args, opts, meta, skipped)
