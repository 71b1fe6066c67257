"""Writing WebDataset tar shards and their ``manifest.json``; reading the manifest back.

A shard folder holds ``<prefix>-000000.tar …`` plus ``manifest.json`` (source, split, resolution,
class names, and per shard: sample count, bytes, sha256). Writing is deterministic: the same
samples in the same order give byte-identical shards (fixed tar mtime/owner, sorted members).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
from PIL import Image

MANIFEST = "manifest.json"
FORMAT = "distgan-shards/1"


class ShardError(RuntimeError):
    """A missing, unreadable or inconsistent shard folder (names the file and what to do)."""


@dataclass
class Sample:
    """One training example before encoding. ``image`` is uint8 HxW (gray) or HxWxC."""

    key: str
    image: np.ndarray
    label: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def encode_image(image: np.ndarray, fmt: str = "png", quality: int = 95) -> bytes:
    buf = io.BytesIO()
    pil = Image.fromarray(image)
    if fmt == "png":
        pil.save(buf, format="PNG", optimize=False, compress_level=6)
    elif fmt in ("jpg", "jpeg"):
        pil.save(buf, format="JPEG", quality=quality)
    else:
        raise ValueError(f"unknown image format '{fmt}' (use png or jpg)")
    return buf.getvalue()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_shards(
    samples: Iterable[Sample],
    out_dir: Path,
    *,
    samples_per_shard: int,
    meta: dict[str, Any],
    image_format: str = "png",
    prefix: str = "shard",
) -> dict[str, Any]:
    """Write ``samples`` (in the given order) into tar shards and a manifest; return the manifest.

    ``meta`` holds source, split, resolution, channels, class_names and anything else worth
    keeping. Existing ``<prefix>-*.tar`` files in ``out_dir`` are replaced, so re-running is safe.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(f"{prefix}-*.tar"):
        old.unlink()
    ext = "jpg" if image_format in ("jpg", "jpeg") else "png"
    shards: list[dict[str, Any]] = []
    writer: wds.TarWriter | None = None
    stream = None

    def close() -> None:
        nonlocal writer, stream
        if writer is not None:
            writer.close()
            stream.close()
            path = out_dir / shards[-1]["file"]
            shards[-1]["bytes"] = path.stat().st_size
            shards[-1]["sha256"] = sha256_of(path)
        writer = stream = None

    for index, sample in enumerate(samples):
        if index % samples_per_shard == 0:
            close()
            name = f"{prefix}-{len(shards):06d}.tar"
            stream = open(out_dir / name, "wb")  # noqa: SIM115 — closed in close()
            writer = wds.TarWriter(stream, user="distgan", group="distgan", mtime=0.0)
            shards.append({"file": name, "count": 0})
        record: dict[str, Any] = {"__key__": sample.key, ext: encode_image(sample.image, ext)}
        if sample.label is not None:
            record["cls"] = str(int(sample.label)).encode()
        if sample.extra:
            record["json"] = json.dumps(sample.extra, sort_keys=True).encode()
        writer.write(record)
        shards[-1]["count"] += 1
    close()
    if not shards:
        raise ShardError(f"no samples were written to {out_dir}: the source is empty")

    from distgan import __version__

    manifest = {
        "format": FORMAT,
        **meta,
        "image_format": ext,
        "total": sum(s["count"] for s in shards),
        "shards": shards,
        "distgan_version": __version__,
    }
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out_dir / MANIFEST)
    return manifest


def read_manifest(shard_dir: str | Path) -> dict[str, Any]:
    """Load and sanity-check ``manifest.json``; every error names the folder or file and a fix."""
    shard_dir = Path(shard_dir)
    if not shard_dir.is_dir():
        raise ShardError(
            f"shard folder '{shard_dir}' does not exist; set data.shards=DIR to a folder made by "
            "`distgan shards …`"
        )
    path = shard_dir / MANIFEST
    if not path.is_file():
        raise ShardError(
            f"'{path}' is missing; is '{shard_dir}' a shard folder made by `distgan shards …`?"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ShardError(f"'{path}' is not readable JSON ({err}); re-create the shards") from None
    for key in ("shards", "resolution", "channels"):
        if key not in manifest:
            raise ShardError(f"'{path}' has no '{key}' field; re-create the shards")
    for shard in manifest["shards"]:
        file = shard_dir / shard["file"]
        if not file.is_file():
            raise ShardError(
                f"shard '{file}' listed in {MANIFEST} is missing; copy it back or re-create the "
                "shards"
            )
    return manifest


def verify_shards(shard_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Compare every shard's sha256 with the manifest (``data.verify=true``)."""
    for shard in manifest["shards"]:
        file = Path(shard_dir) / shard["file"]
        digest = sha256_of(file)
        if digest != shard["sha256"]:
            raise ShardError(
                f"shard '{file}' is corrupt: sha256 {digest[:12]}… differs from the manifest's "
                f"{shard['sha256'][:12]}…; copy it again or re-create the shards"
            )
