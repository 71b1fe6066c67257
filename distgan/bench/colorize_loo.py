"""Leave-one-photo-out for the colorization demo: train on six photos, colorize the seventh.

For each of the 7 embedded photos (``--photos`` picks some): shards of the six others (crops of
the whole photos) and of the seventh (tiles covering it whole) from ``distgan shards photos
--leave-out NAME``, a ``distgan train`` of the recipe on the six, then its last checkpoint (never
one chosen on the held-out photo) colorizes the tiles. A fold passes when its a*b* L1 is at most
the gray baseline's (a = b = 0) and its colourfulness lies between half the real photo's and the
real photo's: a model that outputs gray fails, and so does one that paints too much colour.

Everything goes under ``--out`` (default: a new temporary folder), never into ``shards/``:
``NAME/shards/{train,test}`` (reused when there), ``NAME/run``, ``NAME/train.log``, and the
table (``colorize-loo.md``, ``.json``) with a picture of every fold: gray | model | real. Runs
and tables already there are replaced only with ``--force``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from distgan.data.sources import photos as photos_source
from distgan.errors import ConfigError, DistganError

FIGURES = ("ab_l1", "ab_l1_gray", "colorfulness", "colorfulness_real")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", default="photos-colorize")
    parser.add_argument("--out", default=None, help="folder for everything (default: temporary)")
    parser.add_argument(
        "--photos", default=None, help="comma-separated photo names (default: all 7)"
    )
    parser.add_argument("--crops", type=int, default=None, help="training crops per photo (240)")
    parser.add_argument(
        "--force", action="store_true", help="replace the folds' runs and the table under --out"
    )
    parser.add_argument("overrides", nargs="*", help="recipe overrides for every fold, key=value")


def verdict(figures: dict[str, float]) -> bool:
    """A fold passes: a*b* L1 ≤ gray's, and ½ real ≤ colourfulness ≤ real."""
    real = figures["colorfulness_real"]
    return figures["ab_l1"] <= figures["ab_l1_gray"] and real / 2 <= figures["colorfulness"] <= real


def photo_names(text: str | None) -> list[str]:
    names = list(photos_source.PHOTOS) if not text else [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in photos_source.PHOTOS]
    if unknown or not names:
        raise ConfigError(f"--photos {text}: name photos among {', '.join(photos_source.PHOTOS)}")
    return names


def build_fold_shards(name: str, folder: Path, size: int, crops: int | None) -> None:
    """``folder/{train,test}`` of the fold that leaves ``name`` out (kept if already there)."""
    for split in ("train", "test"):
        if (folder / split / "manifest.json").is_file():
            continue
        args = argparse.Namespace(
            size=size, split=split, crops=crops if split == "train" else None, shards=None,
            leave_out=name, out=str(folder / split), samples_per_shard=None, shard_bytes=None,
            overwrite=False,
        )  # fmt: skip
        photos_source.convert(args)


def train_fold(recipe: str, fold: Path, tiles: int, overrides: list[str]) -> Path:
    """``distgan train`` on the six photos (a fresh process, its output in ``train.log``);
    returns the last checkpoint. The fold's own evaluation is off: its figures would come from
    the held-out photo, and nothing may be chosen on it. A run already there (``--force``) is
    moved aside and trained afresh, never resumed: it may come from other settings."""
    command = [
        sys.executable, "-m", "distgan", "train", recipe,
        f"data.shards={fold / 'shards' / 'train'}", f"eval.shards={fold / 'shards' / 'test'}",
        "eval.every=0", "eval.best=null", f"eval.n={tiles}", f"run.dir={fold / 'run'}",
        "resume=never", "run.overwrite=true", "log.wandb=disabled", *overrides,
    ]  # fmt: skip
    with open(fold / "train.log", "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = " ".join((fold / "train.log").read_text().strip().splitlines()[-1:])
        raise DistganError(f"the fold {fold.name} did not train ({fold / 'train.log'}): {tail}")
    checkpoints = sorted((fold / "run" / "checkpoints").glob("step-*.pt"))
    return checkpoints[-1]


def lab_batch(pieces: list[np.ndarray]) -> torch.Tensor:
    """RGB uint8 tiles → the stream's scaled L*a*b* (L/50 − 1, a/110, b/110)."""
    from distgan.data.transforms import rgb_to_lab

    rgb = torch.from_numpy(np.stack(pieces)).permute(0, 3, 1, 2).double() / 255
    lab = rgb_to_lab(rgb)
    return torch.cat([lab[:, :1] / 50 - 1, lab[:, 1:] / 110], 1).float()


def measure(model, pieces: list[np.ndarray]) -> tuple[dict[str, float], torch.Tensor]:
    """The fold's figures on the tiles (the evaluators' definitions) and the RGB images of
    gray | model | real, [3, N, 3, H, W] in [-1, 1]."""
    from distgan.evaluation.colorfulness import colorfulness
    from distgan.evaluation.colorization import ab_of

    lab = lab_batch(pieces)
    family = model.family
    outputs = torch.cat(list(model.outputs(len(lab), inputs={"image": lab})))
    real = family.to_image(lab[:, :1], lab[:, 1:]).float()
    gray = family.input_image(lab[:, :1]).float()
    real_ab, model_ab = ab_of(real), ab_of(outputs)
    figures = {
        "ab_l1": ((model_ab - real_ab).abs().mean() / 110).item(),
        "ab_l1_gray": (real_ab.abs().mean() / 110).item(),
        "colorfulness": colorfulness(outputs).mean().item(),
        "colorfulness_real": colorfulness(real).mean().item(),
    }
    return figures, torch.stack([gray, outputs, real])


def assemble(images: torch.Tensor, photo: np.ndarray, size: int) -> np.ndarray:
    """Tiles [N, 3, s, s] in [-1, 1], in ``photos.tiles`` order, put back into the photo."""
    height, width = np.asarray(photos_source.scaled(photo, size)).shape[:2]
    canvas = np.zeros((height, width, 3), np.uint8)
    ys = sorted({*range(0, height - size + 1, size), height - size})
    xs = sorted({*range(0, width - size + 1, size), width - size})
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    for tile, (y, x) in zip(pixels, [(y, x) for y in ys for x in xs], strict=True):
        canvas[y : y + size, x : x + size] = tile
    return canvas


def picture(rows: list[list[np.ndarray]], path: Path, gap: int = 4) -> None:
    """One row per fold: gray | model | real, on white."""
    height = max(r[0].shape[0] for r in rows)
    width = max(sum(im.shape[1] for im in r) + gap * (len(r) - 1) for r in rows)
    canvas = np.full((len(rows) * (height + gap) - gap, width, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        x = 0
        for im in row:
            y = i * (height + gap)
            canvas[y : y + im.shape[0], x : x + im.shape[1]] = im
            x += im.shape[1] + gap
    Image.fromarray(canvas).save(path)


def markdown(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| held-out photo | ab L1 model | ab L1 gray | colourfulness model | ½ real | real "
        "| pass |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, f in results.items():
        lines.append(
            f"| {name} | {f['ab_l1']:.4f} | {f['ab_l1_gray']:.4f} | {f['colorfulness']:.1f} | "
            f"{f['colorfulness_real'] / 2:.1f} | {f['colorfulness_real']:.1f} | "
            f"{'yes' if f['passed'] else 'NO'} |"
        )
    passed = sum(f["passed"] for f in results.values())
    return "\n".join([*lines, "", f"{passed} of {len(results)} folds pass"]) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from distgan.recipe import load_recipe
    from distgan.trained.model import load

    names = photo_names(args.photos)
    cfg = load_recipe(args.recipe, list(args.overrides))
    if cfg.family != "colorize":
        raise ConfigError(f"--recipe {args.recipe}: a colorize recipe (family '{cfg.family}')")
    size = cfg.data.resolution or 32
    out = Path(args.out or tempfile.mkdtemp(prefix="distgan-colorize-loo-"))
    outputs = [out / n / "run" for n in names]
    outputs += [out / f"colorize-loo.{suffix}" for suffix in ("md", "json", "png")]
    existing = [path for path in outputs if path.exists()]
    if existing and not args.force:
        raise ConfigError(f"{existing[0]} exists: give another --out, or --force to replace it")
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    rows = []
    for name in names:
        fold = out / name
        build_fold_shards(name, fold / "shards", size, args.crops)
        photo = photos_source.load_photo(name)
        pieces = photos_source.tiles(photo, size)
        print(f"distgan: fold {name}: training on the six other photos", file=sys.stderr)
        ckpt = train_fold(args.recipe, fold, len(pieces), list(args.overrides))
        figures, images = measure(load(ckpt), pieces)
        results[name] = {**figures, "passed": verdict(figures), "checkpoint": str(ckpt)}
        rows.append([assemble(part, photo, size) for part in images])
        print(f"distgan: fold {name}: " + markdown({name: results[name]}).splitlines()[2])
    (out / "colorize-loo.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "colorize-loo.md").write_text(markdown(results))
    picture(rows, out / "colorize-loo.png")
    print(markdown(results), end="")
    print(f"distgan: table, figures and picture in {out}", file=sys.stderr)
    return {"out": str(out), "passed": sum(r["passed"] for r in results.values()), **results}
