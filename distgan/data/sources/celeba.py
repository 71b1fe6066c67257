"""CelebA (`img_align_celeba.zip` or the extracted folder + attribute/partition lists) → shards.

``--src`` is the folder holding ``img_align_celeba.zip`` (or ``img_align_celeba/``),
``list_attr_celeba.txt`` and ``list_eval_partition.txt`` (also found under ``Anno/`` and
``Eval/`` as in the Google Drive layout), or the zip itself with the lists next to it.
Faces are cropped to the central ``--crop`` square (178 px: the usual crop of the 178×218 aligned
images) and resized to ``--size``. The 40 attributes (±1 in the file) are stored per sample as
``json`` ``{"attrs": [0/1 × 40]}``; their names are the manifest's ``attribute_names``.
Credit: Z. Liu et al., *Deep Learning Face Attributes in the Wild*, ICCV 2015 (non-commercial
research use only).
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path
from typing import Any

from distgan.data.shards import ShardError
from distgan.data.sources._common import (
    Item,
    Options,
    ZipMember,
    add_common_arguments,
    convert_items,
)

PARTITIONS = {"train": "0", "val": "1", "test": "2"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, size=64)
    parser.add_argument("--crop", type=int, default=178, help="central square side in px (178)")


def find_list(root: Path, name: str) -> Path:
    for folder in (root, root / "Anno", root / "Eval", root / "list"):
        if (folder / name).is_file():
            return folder / name
    raise ShardError(f"'{name}' not found in '{root}' (or its Anno/, Eval/); it comes with CelebA")


def read_attributes(path: Path) -> tuple[list[str], dict[str, list[int]]]:
    """``list_attr_celeba.txt``: a count line, a line of 40 names, then ``FILE ±1 × 40``."""
    lines = path.read_text().splitlines()
    names = lines[1].split()
    table = {}
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(names) + 1 or any(v not in ("1", "-1") for v in fields[1:]):
            raise ShardError(f"'{path}' line {number}: expected a file name and {len(names)} ±1")
        table[fields[0]] = [int(v == "1") for v in fields[1:]]
    return names, table


def read_partition(path: Path) -> dict[str, str]:
    """``list_eval_partition.txt``: ``FILE 0|1|2`` (train, val, test)."""
    return dict(line.split() for line in path.read_text().splitlines() if line.strip())


def image_sources(src: Path) -> tuple[Path, dict[str, Any]]:
    """(folder of the lists, file name → where its pixels are) for the zip or the folder."""
    zip_path = src if src.is_file() else src / "img_align_celeba.zip"
    root = src.parent if src.is_file() else src
    if zip_path.is_file():
        with zipfile.ZipFile(zip_path) as archive:
            names = [n for n in archive.namelist() if n.lower().endswith(".jpg")]
        return root, {Path(n).name: ZipMember(str(zip_path), n) for n in names}
    for folder in (src / "img_align_celeba", src / "Img" / "img_align_celeba"):
        if folder.is_dir():
            return root, {p.name: str(p) for p in folder.glob("*.jpg")}
    raise ShardError(f"neither img_align_celeba.zip nor img_align_celeba/ found in '{src}'")


def convert(args: argparse.Namespace) -> dict[str, Any]:
    root, files = image_sources(Path(args.src))
    attr_names, attrs = read_attributes(find_list(root, "list_attr_celeba.txt"))
    partition = read_partition(find_list(root, "list_eval_partition.txt"))
    wanted = set(PARTITIONS.values()) if args.split == "all" else {PARTITIONS[args.split]}
    items = []
    for name in sorted(partition):
        if partition[name] not in wanted:
            continue
        if name not in files:
            raise ShardError(f"'{name}' is listed in list_eval_partition.txt but not in the images")
        if name not in attrs:
            raise ShardError(f"'{name}' has no row in list_attr_celeba.txt")
        key = Path(name).stem
        items.append(Item(key=key, image=files[name], extra={"attrs": attrs[name]}))
    opts = Options(
        size=args.size, crop_px=args.crop, image_format=args.format, quality=args.quality
    )
    meta = {
        "source": "celeba",
        "split": args.split,
        "class_names": [],
        "attribute_names": attr_names,
    }
    return convert_items(items, args, opts, meta)
