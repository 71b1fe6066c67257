"""Unpaired images for CycleGAN (``trainA/ trainB/ testA/ testB/``) → shards of two domains.

With ``--domain A`` (or ``B``) one domain goes into the shard folder: what CycleGAN reads, one
stream per domain (``data.shards: {A: DIR, B: DIR}``). With ``--domain both`` (the default) both
go into one folder and the label is the domain (0 = A, 1 = B; ``class_names`` ``["A", "B"]``).
Images are cropped to their central square and resized to ``--size``.
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

DOMAINS = ["A", "B"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, size=256, splits=("train", "test", "all"))
    parser.add_argument(
        "--domain",
        choices=["A", "B", "both"],
        default="both",
        help="one domain, or both (labelled)",
    )


def convert(args: argparse.Namespace) -> dict[str, Any]:
    src = Path(args.src)
    items, skipped = [], []
    for split in ["train", "test"] if args.split == "all" else [args.split]:
        for label, domain in enumerate(DOMAINS):
            if args.domain not in ("both", domain):
                continue
            folder = require(src / f"{split}{domain}", "CycleGAN data sets have trainA/ trainB/ …")
            for path in image_files(folder, skipped):
                name = path.relative_to(folder).with_suffix("").as_posix()
                key = f"{split}{domain}-{sanitize_key(name)}"
                items.append(Item(key=key, image=str(path), label=label))
    opts = Options(size=args.size, image_format=args.format, quality=args.quality)
    meta: dict[str, Any] = {"source": "unpaired", "split": args.split}
    if args.domain == "both":
        meta["class_names"] = DOMAINS
    else:
        meta["domain"] = args.domain
        items = [Item(key=i.key, image=i.image) for i in items]  # one domain: no label
    return convert_items(items, args, opts, meta, skipped)
