"""CIFAR-10 (the official `cifar-10-python.tar.gz` or its `cifar-10-batches-py/`) → shards.

The Python version of the download holds pickled batches (``data_batch_1`` … ``data_batch_5``,
``test_batch``): ``data`` is uint8 N×3072 (1024 red, then green, then blue values, rows first),
``labels`` and ``filenames``; ``batches.meta`` has the ``label_names``. ``--classes horse,dog``
keeps a subset (labels renumbered in the order given). Credit: A. Krizhevsky, *Learning Multiple
Layers of Features from Tiny Images*, 2009.
"""

from __future__ import annotations

import argparse
import io
import pickle
import tarfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from distgan.data.shards import ShardError
from distgan.data.sources._common import Item, Options, add_common_arguments, convert_items

FOLDER = "cifar-10-batches-py"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, size=32, splits=("train", "test", "all"))
    parser.add_argument("--classes", default=None, help="keep only these, e.g. horse or horse,dog")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what the real CIFAR-10 files hold: dicts, lists, byte strings, ints and
    numpy arrays. Any other class or function named in the file (``os.system`` …) is refused,
    never imported or called."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),  # arrays, as pickled by numpy 1 (the original)
        ("numpy._core.multiarray", "_reconstruct"),  # … and by numpy 2
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # byte strings in protocol-2 pickles written by Python 3
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        return super().find_class(module, name)


def read_batches(src: Path, names: list[str]) -> dict[str, dict[bytes, Any]]:
    """Unpickle the named batch files from the tar.gz or the extracted folder."""

    def unpickle(data: bytes, name: str) -> dict[bytes, Any]:
        try:
            # written by Python 2: byte-string keys
            batch = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
        except Exception as err:
            raise ShardError(
                f"'{src}': {name} is not a CIFAR-10 pickle ({err}); the file was not loaded"
            ) from None
        if not isinstance(batch, dict):
            raise ShardError(f"'{src}': {name} is not a CIFAR-10 batch (not a dict)")
        return batch

    out = {}
    if src.is_file():
        try:
            with tarfile.open(src, "r:*") as tar:
                for name in names:
                    member = tar.extractfile(f"{FOLDER}/{name}")
                    out[name] = unpickle(member.read(), name)
        except (tarfile.TarError, KeyError) as err:
            raise ShardError(
                f"'{src}' is not the official cifar-10-python.tar.gz ({err}); "
                f"expected {FOLDER}/{names[0]} inside"
            ) from None
        return out
    folder = src / FOLDER if (src / FOLDER).is_dir() else src
    for name in names:
        path = folder / name
        if not path.is_file():
            raise ShardError(f"'{path}' not found; --src is cifar-10-python.tar.gz or {FOLDER}/")
        out[name] = unpickle(path.read_bytes(), name)
    return out


def pick_classes(all_names: list[str], wanted: str | None) -> list[str]:
    if not wanted:
        return all_names
    names = [w.strip() for w in wanted.split(",") if w.strip()]
    unknown = [n for n in names if n not in all_names]
    if unknown:
        raise ShardError(f"--classes: unknown {', '.join(unknown)}; valid: {', '.join(all_names)}")
    return names


def convert(args: argparse.Namespace) -> dict[str, Any]:
    src = Path(args.src)
    splits = ["train", "test"] if args.split == "all" else [args.split]
    names = [b for s in splits for b in BATCHES[s]]
    batches = read_batches(src, ["batches.meta", *names])
    try:
        all_classes = [n.decode() for n in batches["batches.meta"][b"label_names"]]
        items, classes = _items(args, names, batches, all_classes)
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise ShardError(
            f"'{src}' does not hold CIFAR-10 batches as the official download does ({err!r}); "
            "use cifar-10-python.tar.gz or its cifar-10-batches-py/ folder"
        ) from None
    opts = Options(size=args.size, crop="none", image_format=args.format, quality=args.quality)
    meta = {"source": "cifar10", "split": args.split, "class_names": classes}
    if classes != all_classes:
        meta["class_subset_of"] = all_classes
    return convert_items(items, args, opts, meta)


def _items(
    args: argparse.Namespace,
    names: list[str],
    batches: dict[str, dict[bytes, Any]],
    all_classes: list[str],
) -> tuple[list[Item], list[str]]:
    classes = pick_classes(all_classes, args.classes)
    new_label = {all_classes.index(n): i for i, n in enumerate(classes)}

    items = []
    for name in names:
        batch = batches[name]
        images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        images = images.transpose(0, 2, 3, 1)  # N×H×W×C
        for i, (label, filename) in enumerate(
            zip(batch[b"labels"], batch[b"filenames"], strict=True)
        ):
            if label in new_label:
                items.append(
                    Item(
                        key=f"{name}-{i:05d}",
                        image=np.ascontiguousarray(images[i]),
                        label=new_label[label],
                        extra={"file": filename.decode()},
                    )
                )
    return items, classes
