"""Paired images for pix2pix → shards whose samples hold an input and a target image.

Two layouts, as the pix2pix data sets ship them:

* side by side: ``SRC/train/*.jpg`` (or ``SRC/*.jpg``), each image ``A|B`` (facades, maps): the
  left half is A, the right half B;
* two folders with matching file names: ``SRC/A/train/`` + ``SRC/B/train/`` (or ``SRC/A`` +
  ``SRC/B``).

``--direction AtoB`` (default) stores A as the sample's image (``png``, the input) and B as its
``target.png``; ``BtoA`` swaps them. Batches carry them as ``image`` and ``target``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from distgan.data.shards import ShardError
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
    add_common_arguments(parser, size=256)
    parser.add_argument("--direction", choices=["AtoB", "BtoA"], default="AtoB", help="(AtoB)")


def split_folders(root: Path, split: str) -> list[tuple[str, Path]]:
    """(split name, folder) pairs to read: ``root/<split>`` if present, else ``root`` itself."""
    if split == "all":
        found = [(s, root / s) for s in ("train", "val", "test") if (root / s).is_dir()]
        return found or [("all", root)]
    return [(split, root / split)] if (root / split).is_dir() else [(split, root)]


def side_by_side(src: Path, split: str, swap: bool, skipped: list[str]) -> list[Item]:
    items = []
    for name, folder in split_folders(src, split):
        for path in image_files(folder, skipped):
            if path.parent != folder:
                skipped.append(f"{path}: in a subfolder (pairs lie directly in '{folder}')")
                continue
            key = f"{name}-{sanitize_key(path.stem)}"
            items.append(Item(key=key, image=str(path), halves="BA" if swap else "AB"))
    return items


def two_folders(src: Path, split: str, swap: bool, skipped: list[str]) -> list[Item]:
    items = []
    for name, folder_a in split_folders(src / "A", split):
        folder_b = src / "B" / folder_a.relative_to(src / "A")
        by_stem = {p.stem: p for p in image_files(require(folder_b, "the B images"), skipped)}
        for a in image_files(folder_a, skipped):
            if a.stem not in by_stem:
                raise ShardError(f"'{a}' has no partner named '{a.stem}.*' in '{folder_b}'")
            b = by_stem[a.stem]
            image, target = (str(b), str(a)) if swap else (str(a), str(b))
            items.append(Item(key=f"{name}-{sanitize_key(a.stem)}", image=image, target=target))
        stems_a = {a.stem for a in image_files(folder_a)}
        unused = [b for stem, b in by_stem.items() if stem not in stems_a]
        skipped += [f"{b}: no partner in '{folder_a}'" for b in unused]
    return items


def convert(args: argparse.Namespace) -> dict[str, Any]:
    src = require(Path(args.src), "--src is the pix2pix data set folder")
    swap = args.direction == "BtoA"
    skipped: list[str] = []
    if (src / "A").is_dir() and (src / "B").is_dir():
        items, layout = two_folders(src, args.split, swap, skipped), "two-folders"
    else:
        items, layout = side_by_side(src, args.split, swap, skipped), "side-by-side"
    opts = Options(size=args.size, image_format=args.format, quality=args.quality)
    meta = {
        "source": "paired",
        "split": args.split,
        "class_names": [],
        "paired": True,
        "layout": layout,
        "direction": args.direction,
    }
    return convert_items(items, args, opts, meta, skipped)
