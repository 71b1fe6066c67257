"""A trained model applied to image files of any size and mode: ``distgan colorize`` and
``distgan translate`` (each writes ``OUT/<input stem>.png`` at the input's size).

* Reading: gray, RGB, RGBA/LA (composited over white), palette, 16-bit and CMYK files are all
  read as sRGB in [0, 1] (EXIF orientation applied); an unreadable file is named and skipped.
* Colorize: L* of the input at full resolution; the model sees L* resized (bilinear, antialiased)
  to its resolution and predicts a*b* there, which is upsampled to the input's size. Colours
  outside the sRGB gamut are brought in by reducing chroma only (a*, b* scaled toward 0 per
  pixel), never by clipping RGB, so the output keeps the input's L* up to uint8 rounding.
* Translate: the image is resized to the model's resolution, translated (``--direction``), and
  resized back to the input's size (bilinear). Tiling at full resolution is not done.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from distgan.data.transforms import lab_to_rgb, rgb_to_lab
from distgan.errors import ConfigError
from distgan.trained.model import Model, load


def read_rgb(path: Path) -> torch.Tensor:
    """sRGB [3, H, W] float64 in [0, 1] from any image file Pillow reads."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode.startswith("I"):  # 16/32-bit gray
            gray = np.asarray(image, dtype=np.float64)
            gray = gray / (65535.0 if gray.max() > 255 else 255.0)
            return torch.from_numpy(gray).clamp(0, 1)[None].expand(3, -1, -1).clone()
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
        rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    return torch.from_numpy(rgb).permute(2, 0, 1)


def write_rgb(rgb: torch.Tensor, path: Path) -> None:
    array = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def fit_gamut(L: torch.Tensor, ab: torch.Tensor, steps: int = 14) -> torch.Tensor:
    """sRGB [1, 3, H, W] of (L, s·ab) with, per pixel, the largest s ∈ [0, 1] that stays in
    gamut (bisection; s = 0, the gray of lightness L, always does): lightness is kept, chroma
    gives way. ``L``: [1, 1, H, W], ``ab``: [1, 2, H, W], unscaled L*a*b* (float64)."""
    rgb = lab_to_rgb(torch.cat([L, ab], 1))
    outside = ((rgb < 0) | (rgb > 1)).any(1)[0]  # [H, W]
    if not outside.any():
        return rgb
    lightness, a, b = L[0, 0][outside], ab[0, 0][outside], ab[0, 1][outside]

    def rgb_at(scale: torch.Tensor) -> torch.Tensor:  # [3, pixels]
        lab = torch.stack([lightness, a * scale, b * scale])[None, :, :, None]
        return lab_to_rgb(lab)[0, :, :, 0]

    low, high = torch.zeros_like(lightness), torch.ones_like(lightness)
    for _ in range(steps):
        middle = (low + high) / 2
        colours = rgb_at(middle)
        inside = ((colours >= 0) & (colours <= 1)).all(0)
        low, high = torch.where(inside, middle, low), torch.where(inside, high, middle)
    rgb = rgb.clone()
    rgb[0][:, outside] = rgb_at(low).clamp(0, 1)  # (the clamp only removes float noise)
    return rgb


@torch.no_grad()
def colorize(model: Model, rgb: torch.Tensor) -> torch.Tensor:
    """The colorized sRGB [3, H, W] of an image (only its L* is used)."""
    G = model.nets.G
    L = rgb_to_lab(rgb[None])[:, :1]  # [1, 1, H, W], 0 … 100, float64
    res = model.family.data.resolution
    small = _resize((L / 50 - 1).float(), (res, res)).to(model.device)
    ab = _resize(G(small).float().cpu(), tuple(rgb.shape[-2:])).double() * 110
    return fit_gamut(L, ab)[0]


@torch.no_grad()
def translate(model: Model, rgb: torch.Tensor, direction: str) -> torch.Tensor:
    """The translated sRGB [3, H, W] of an image."""
    res, channels = model.family.data.resolution, model.family.data.channels
    x = rgb[None].float()
    if channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True)
    x = _resize(x, (res, res)) * 2 - 1
    y = model.family.translate(model.nets, x.to(model.device), direction).float().cpu()
    y = _resize((y + 1) / 2, tuple(rgb.shape[-2:])).clamp(0, 1)[0]
    return y.expand(3, -1, -1) if y.shape[0] == 1 else y


def apply_to_files(
    paths: list[str],
    out_dir: Path,
    convert: Callable[[torch.Tensor], torch.Tensor],
    what: str,
) -> list[str]:
    """``convert`` every readable image into ``out_dir/<stem>.png`` with a progress bar;
    returns one line per file that failed (named, skipped)."""
    from rich.progress import Progress

    stems = [Path(p).stem for p in paths]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise ConfigError(f"several inputs would write {twice[0]}.png; give them distinct names")
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    with Progress(transient=True) as progress:
        for path in progress.track([Path(p) for p in paths], description=what):
            try:
                rgb = read_rgb(path)
            except (OSError, ValueError, Image.DecompressionBombError) as err:
                failed.append(f"{path}: not a readable image ({err}); skipped")
                continue
            write_rgb(convert(rgb), out_dir / f"{path.stem}.png")
    return failed


def _apply_command(args: argparse.Namespace, family: str, convert_with) -> int:
    """Run ``convert_with(model)`` over the input files (colorize, translate); exit 1 if a file
    failed."""
    model = load(args.ckpt)
    if family and model.cfg.family != family:
        raise ConfigError(
            f"--ckpt {args.ckpt} is a '{model.cfg.family}' model; `distgan {args.command}` "
            f"takes a '{family}' one"
        )
    failed = apply_to_files(args.images, Path(args.out), convert_with(model), args.command)
    for line in failed:
        print(f"distgan: {line}", file=sys.stderr)
    done = len(args.images) - len(failed)
    print(f"distgan: wrote {done} images to {args.out}", file=sys.stderr)
    return 1 if failed else 0


def colorize_command(args: argparse.Namespace) -> int:
    """``distgan colorize --ckpt C IMG … --out DIR`` (a colorize model)."""
    return _apply_command(args, "colorize", lambda model: lambda rgb: colorize(model, rgb))


def translate_command(args: argparse.Namespace) -> int:
    """``distgan translate --ckpt C IMG … --out DIR [--direction AtoB|BtoA]``."""

    def convert_with(model: Model) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda rgb: translate(model, rgb, args.direction)

    return _apply_command(args, "", convert_with)
