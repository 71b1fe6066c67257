"""Places365-Standard, small (256×256) images → shards, with the 365 scene categories as labels.

``--src`` is a folder holding ``categories_places365.txt`` (lines ``/a/airfield 0``) and one of
the official layouts:

* small-image folders: ``train_256/`` (or ``data_256/``, as the train tar extracts) with
  ``a/airfield/00000001.jpg`` …, optionally ``places365_train_standard.txt``
  (``/a/airfield/00000001.jpg 0``); ``val_256/`` with ``places365_val.txt``
  (``Places365_val_00000001.jpg 165``);
* the easy format: ``places365standard_easyformat.tar`` (read in place, not extracted) or its
  extracted ``places365_standard/``, with ``train.txt`` / ``val.txt`` listing
  ``train/airfield/00000001.jpg`` (optionally followed by the label).

Credit: B. Zhou et al., *Places: A 10 million Image Database for Scene Recognition*, TPAMI 2017.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from distgan.data.shards import ShardError
from distgan.data.sources._common import (
    Item,
    Options,
    PixelSource,
    add_common_arguments,
    convert_items,
    read_bytes,
    require,
    sanitize_key,
    tar_index,
)

EASY_TAR = "places365standard_easyformat.tar"
EASY_DIR = "places365_standard"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, size=64, splits=("train", "val", "all"))


def read_categories(root: Path) -> tuple[list[str], dict[str, int]]:
    """Class names (``airfield``, ``apartment_building/outdoor`` …) and a lookup from every
    spelling of a category folder (``/a/airfield``, ``airfield``, ``apartment_building-outdoor``).
    """
    path = require(root / "categories_places365.txt", "it comes with the Places365 file lists")
    names, lookup = [], {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        category, index = line.split()
        name = category[3:] if category[2:3] == "/" else category.lstrip("/")
        names.append(name)
        for spelling in (category, name, name.replace("/", "-"), name.replace("/", "_")):
            lookup[spelling] = int(index)
    return names, lookup


def label_of(path: str, lookup: dict[str, int]) -> int:
    """Category from a path's folders: ``/a/airfield/1.jpg`` or ``train/airfield/1.jpg``."""
    parts = path.strip("/").split("/")[:-1]
    for start in range(len(parts)):
        for spelling in ("/" + "/".join(parts[start:]), "/".join(parts[start:])):
            if spelling in lookup:
                return lookup[spelling]
    raise ShardError(f"no category in categories_places365.txt matches '{path}'")


def read_list(text: str, lookup: dict[str, int]) -> list[tuple[str, int]]:
    """File-list lines ``PATH [LABEL]`` → (path, label)."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if fields:
            label = int(fields[1]) if len(fields) > 1 else label_of(fields[0], lookup)
            out.append((fields[0].lstrip("/"), label))
    return out


def easy_format(
    src: Path, split: str, lookup: dict[str, int]
) -> list[tuple[str, int, PixelSource]]:
    if (src / EASY_TAR).is_file():
        index = {k.removeprefix(EASY_DIR + "/"): v for k, v in tar_index(src / EASY_TAR).items()}
        if f"{split}.txt" not in index:
            raise ShardError(f"'{src / EASY_TAR}' has no {EASY_DIR}/{split}.txt")
        listed = read_list(read_bytes(index[f"{split}.txt"]).decode(), lookup)
        missing = [p for p, _ in listed if p not in index]
        if missing:
            raise ShardError(f"'{missing[0]}' is in {split}.txt but not in '{src / EASY_TAR}'")
        return [(p, label, index[p]) for p, label in listed]
    folder = src / EASY_DIR if (src / EASY_DIR).is_dir() else src
    listed = read_list(
        require(folder / f"{split}.txt", "the easy-format file list").read_text(), lookup
    )
    return [(p, label, str(folder / p)) for p, label in listed]


def small_images(
    src: Path, split: str, lookup: dict[str, int]
) -> list[tuple[str, int, PixelSource]]:
    if split == "val":
        folder = require(src / "val_256", "the validation images (val_256.tar extracted)")
        listed = read_list(
            require(src / "places365_val.txt", "the validation labels").read_text(), lookup
        )
        return [(p, label, str(folder / p)) for p, label in listed]
    folder = next((src / d for d in ("train_256", "data_256") if (src / d).is_dir()), None)
    if folder is None:
        raise ShardError(f"no train_256/ or data_256/ (nor {EASY_TAR}) in '{src}'")
    file_list = src / "places365_train_standard.txt"
    if file_list.is_file():
        listed = read_list(file_list.read_text(), lookup)
    else:
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg"))
        listed = [(p, label_of(p, lookup)) for p in files]
    return [(p, label, str(folder / p)) for p, label in listed]


def convert(args: argparse.Namespace) -> dict[str, Any]:
    src = Path(args.src)
    root = src.parent if src.is_file() else src
    if src.is_file():  # --src places365standard_easyformat.tar
        src = root
    class_names, lookup = read_categories(root)
    easy = (src / EASY_TAR).is_file() or (src / EASY_DIR).is_dir() or (src / "train.txt").is_file()
    items = []
    for split in ["train", "val"] if args.split == "all" else [args.split]:
        entries = (easy_format if easy else small_images)(src, split, lookup)
        for path, label, pixels in entries:
            key = f"{split}-{sanitize_key(path.rsplit('.', 1)[0])}"
            items.append(Item(key=key, image=pixels, label=label))
    opts = Options(size=args.size, image_format=args.format, quality=args.quality)
    meta = {"source": "places365", "split": args.split, "class_names": class_names}
    return convert_items(items, args, opts, meta)
