"""``distgan shards inspect DIR``: what a shard folder holds, and a contact sheet to look at.

The sheet shows random samples (seeded) at their stored resolution, each captioned with its
class name (or its key), pairs shown as input | target side by side.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from distgan.data.decode import IMAGE_KEYS
from distgan.data.shards import MANIFEST, iter_samples, read_manifest
from distgan.errors import ConfigError

CAPTION = 12  # px of caption under each tile


def summary(manifest: dict[str, Any]) -> list[str]:
    counts = [s["count"] for s in manifest["shards"]]
    size = sum(s.get("bytes", 0) for s in manifest["shards"])
    classes = manifest.get("class_names") or []
    lines = [
        f"source      {manifest.get('source')} (split {manifest.get('split')})",
        f"images      {manifest['total']} at {manifest['resolution']} px, "
        f"{manifest['channels']} channel(s), {manifest.get('image_format', 'png')}",
        f"shards      {len(counts)} ({min(counts)}–{max(counts)} samples, {size / 1e6:.1f} MB)",
        f"classes     {len(classes)}" + (f": {', '.join(classes[:12])}" if classes else ""),
    ]
    if len(classes) > 12:
        lines[-1] += ", …"
    if manifest.get("attribute_names"):
        names = manifest["attribute_names"]
        lines.append(f"attributes  {len(names)}: {', '.join(names[:8])}, …")
    if manifest.get("paired"):
        lines.append(f"pairs       image → target ({manifest.get('direction', 'AtoB')})")
    if manifest.get("skipped_sources"):
        lines.append(f"skipped     {len(manifest['skipped_sources'])} source files")
    lines.append(f"written by  distgan {manifest.get('distgan_version')}")
    return lines


def pick_samples(shard_dir: Path, manifest: dict[str, Any], n: int, seed: int) -> list[dict]:
    """``n`` random samples (raw tar members), reading only the shards they are in."""
    total = manifest["total"]
    wanted = sorted(random.Random(seed).sample(range(total), min(n, total)))
    out, start = [], 0
    for shard in manifest["shards"]:
        inside = {i - start for i in wanted if start <= i < start + shard["count"]}
        start += shard["count"]
        if not inside:
            continue
        for index, sample in enumerate(iter_samples(shard_dir / shard["file"])):
            if index in inside:
                out.append(sample)
    return out


def tile(sample: dict, manifest: dict[str, Any]) -> tuple[Image.Image, str]:
    image = next(Image.open(io.BytesIO(sample[k])) for k in IMAGE_KEYS if k in sample)
    image = image.convert("RGB")
    target = next((sample[f"target.{k}"] for k in IMAGE_KEYS if f"target.{k}" in sample), None)
    if target is not None:
        both = Image.new("RGB", (image.width * 2, image.height))
        both.paste(image, (0, 0))
        both.paste(Image.open(io.BytesIO(target)).convert("RGB"), (image.width, 0))
        image = both
    classes = manifest.get("class_names") or []
    if "cls" in sample and classes:
        caption = classes[int(sample["cls"])]
    elif "json" in sample and "attrs" in json.loads(sample["json"]):
        names = manifest.get("attribute_names") or []
        on = [n for n, v in zip(names, json.loads(sample["json"])["attrs"], strict=False) if v]
        caption = ",".join(on[:2]) or sample["__key__"]
    else:
        caption = sample["__key__"]
    return image, caption


def contact_sheet(samples: list[dict], manifest: dict[str, Any], columns: int = 8) -> Image.Image:
    tiles = [tile(s, manifest) for s in samples]
    scale = max(1, 64 // max(t.height for t, _ in tiles))  # make 32 px tiles readable
    width = max(t.width for t, _ in tiles) * scale
    height = max(t.height for t, _ in tiles) * scale + CAPTION
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * width, rows * height), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (image, caption) in enumerate(tiles):
        x, y = (index % columns) * width, (index // columns) * height
        sheet.paste(image.resize((image.width * scale, image.height * scale)), (x, y))
        draw.text((x + 2, y + height - CAPTION), caption[: width // 6], fill="black")
    return sheet


def inspect(
    shard_dir: str | Path, out: str | Path | None, n: int = 32, seed: int = 0, force: bool = False
) -> Path:
    """Print the manifest summary; write the contact sheet (default
    ``./<DIR's name>-contact-sheet.png``)."""
    shard_dir = Path(shard_dir)
    manifest = read_manifest(shard_dir)
    path = sheet_path(shard_dir, out, force)
    print("\n".join(summary(manifest)))
    contact_sheet(pick_samples(shard_dir, manifest, n, seed), manifest).save(path, format="PNG")
    print(f"contact sheet: {path}")
    return path


def sheet_path(shard_dir: Path, out: str | Path | None, force: bool) -> Path:
    """Where the sheet goes: never into a shard folder (a later ``distgan shards folder`` of it
    would take the sheet for a training image), never over a file without ``force``."""
    path = Path(out) if out else Path(f"{shard_dir.resolve().name}-contact-sheet.png")
    if (path.parent / MANIFEST).exists():
        raise ConfigError(
            f"--out {path}: '{path.parent}' is a shard folder; write the contact sheet elsewhere"
        )
    if path.exists() and not force:
        raise ConfigError(f"--out {path} exists; pass --force to replace it, or choose another")
    if not path.parent.is_dir():
        raise ConfigError(f"--out {path}: the folder '{path.parent}' does not exist")
    return path
