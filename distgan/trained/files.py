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
* Outputs are checked before any work: never an input (even with ``--force``), never an existing
  file without ``--force``; images above :data:`WHOLE_IMAGE_PIXELS` are colorized in row bands;
  a file that runs out of memory or cannot be written is named and skipped, the others go on.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from distgan.data.transforms import lab_to_rgb, rgb_to_lab
from distgan.errors import ConfigError
from distgan.trained.model import Model, load

# Larger images are colorized in row bands (float64 at most a band at a time): the whole-image
# path needs about 330 bytes per pixel, 700 MB at this size.
WHOLE_IMAGE_PIXELS = 2**21


def read_pixels(path: Path) -> np.ndarray:
    """The pixels of any image file Pillow reads, kept small: uint8 H×W (gray) or H×W×3 (sRGB),
    or float64 H×W in [0, 1] (16/32-bit gray); :func:`to_rgb` turns rows of them into floats.
    Up to 179 million pixels (Pillow's decompression-bomb limit; more is refused, named)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # read in bands below
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode.startswith("I"):  # 16/32-bit gray
                gray = np.asarray(image, dtype=np.float64)
                return np.clip(gray / (65535.0 if gray.max() > 255 else 255.0), 0, 1)
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
            if image.mode == "L":
                return np.asarray(image)
            return np.asarray(image.convert("RGB"))


def to_rgb(pixels: np.ndarray, rows: slice = slice(None)) -> torch.Tensor:
    """sRGB [3, h, W] float64 in [0, 1] of ``rows`` of :func:`read_pixels`' array."""
    part = pixels[rows]
    if part.dtype == np.float64:  # (already in [0, 1])
        return torch.from_numpy(part)[None].expand(3, -1, -1).clone()
    rgb = torch.from_numpy(part.astype(np.float64) / 255.0)
    return rgb[None].expand(3, -1, -1).clone() if rgb.dim() == 2 else rgb.permute(2, 0, 1)


def read_rgb(path: Path) -> torch.Tensor:
    """sRGB [3, H, W] float64 in [0, 1] from any image file Pillow reads."""
    return to_rgb(read_pixels(path))


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """sRGB [3, H, W] in [0, 1] → uint8 H×W×3 (the rounding the written files have)."""
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def write_rgb(rgb: torch.Tensor, path: Path) -> None:
    write_png(to_uint8(rgb), path)


def write_png(array: np.ndarray, path: Path) -> None:
    """A uint8 H×W×3 array as a PNG, renamed into place once complete (a crash or a full disk
    never leaves half a file where the user's was)."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        Image.fromarray(array).save(partial, format="PNG")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


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


def colorize_pixels(model: Model, pixels: np.ndarray) -> np.ndarray:
    """The colorized uint8 H×W×3 of :func:`read_pixels`' array: whole up to
    :data:`WHOLE_IMAGE_PIXELS`, in row bands beyond."""
    if pixels.shape[0] * pixels.shape[1] <= WHOLE_IMAGE_PIXELS:
        return to_uint8(colorize(model, to_rgb(pixels)))
    return colorize_in_bands(model, pixels)


@torch.no_grad()
def colorize_in_bands(model: Model, pixels: np.ndarray, band: int = 2**18) -> np.ndarray:
    """:func:`colorize` of a large image, about ``band`` pixels at a time: the model sees L*
    box-averaged to at most ~1024 px a side, then resized (bilinear, antialiased) to its
    resolution; its a*b* are upsampled bilinearly band by band. The input's L* is kept."""
    height, width = pixels.shape[:2]
    factor = max(1, max(height, width) // 1024)
    rows = max(factor, band // width // factor * factor)
    spans = [slice(top, min(top + rows, height)) for top in range(0, height, rows)]

    def lightness(span: slice) -> torch.Tensor:  # [1, 1, h, W] float64
        return rgb_to_lab(to_rgb(pixels, span)[None])[:, :1]

    pooled = [
        F.avg_pool2d((lightness(span) / 50 - 1).float(), factor, ceil_mode=True) for span in spans
    ]
    res = model.family.data.resolution
    small = _resize(torch.cat(pooled, 2), (res, res)).to(model.device)
    ab = model.nets.G(small).float().cpu()  # [1, 2, res, res]
    left, right, across = _bilinear(ab.shape[-1], width, 0, width)
    out = np.empty((height, width, 3), np.uint8)
    for span in spans:
        top, bottom, down = _bilinear(ab.shape[-2], height, span.start, span.stop)
        band_ab = ab[:, :, top] * (1 - down)[:, None] + ab[:, :, bottom] * down[:, None]
        band_ab = band_ab[..., left] * (1 - across) + band_ab[..., right] * across
        out[span] = to_uint8(fit_gamut(lightness(span), band_ab.double() * 110)[0])
    return out


def _bilinear(
    size_in: int, size_out: int, start: int, stop: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weights of outputs ``start…stop`` of a bilinear resize (half-pixel
    centres, as ``F.interpolate(align_corners=False)``)."""
    centre = (torch.arange(start, stop, dtype=torch.float64) + 0.5) * size_in / size_out - 0.5
    centre = centre.clamp(0, size_in - 1)
    low = centre.floor().long()
    high = (low + 1).clamp_max(size_in - 1)
    return low, high, (centre - low).float()


def plan_outputs(paths: list[str], out_dir: Path, force: bool) -> list[Path]:
    """``out_dir/<stem>.png`` of each input, checked before any work: never an input (whatever
    ``force`` says), never an existing file unless ``force``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder; give a folder")
    stems = [Path(p).stem for p in paths]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise ConfigError(f"several inputs would write {twice[0]}.png; give them distinct names")
    targets = [out_dir / f"{stem}.png" for stem in stems]
    inputs = [Path(p) for p in paths]
    resolved = {p.resolve() for p in inputs}
    for source, target in zip(inputs, targets, strict=True):
        clash = target.resolve() in resolved or any(
            target.exists() and p.exists() and os.path.samefile(target, p) for p in inputs
        )
        if clash:
            raise ConfigError(
                f"--out {out_dir}: {target} is an input ({source}); choose another --out"
            )
    folders = [t for t in targets if t.is_dir()]
    if folders:
        raise ConfigError(f"--out {out_dir}: {folders[0]} is a folder; choose another --out")
    refuse_existing(targets, force)
    return targets


def refuse_existing(paths: list[Path], force: bool) -> None:
    """One line if any of ``paths`` exists (a link too) and ``force`` is not given."""
    existing = [p for p in paths if p.exists() or p.is_symlink()]
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise ConfigError(
            f"{existing[0]} exists{more}; pass --force to replace it, or choose another --out"
        )


def _out_of_memory(err: BaseException) -> bool:
    return isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError) and "alloc" in str(err).lower()
    )


def apply_to_files(
    paths: list[str],
    targets: list[Path],
    convert: Callable[[np.ndarray], np.ndarray],
    what: str,
) -> list[str]:
    """``convert`` every readable image into its target with a progress bar; returns one line
    per file that failed (named, skipped: unreadable, too large for memory, not writable)."""
    from rich.progress import Progress

    if targets:
        targets[0].parent.mkdir(parents=True, exist_ok=True)
    failed = []
    with Progress(transient=True) as progress:
        jobs = list(zip([Path(p) for p in paths], targets, strict=True))
        for path, target in progress.track(jobs, description=what):
            try:
                pixels = read_pixels(path)
            except Image.DecompressionBombError as err:
                failed.append(f"{path}: too large ({err}); skipped")
                continue
            except (OSError, ValueError) as err:
                failed.append(f"{path}: not a readable image ({err}); skipped")
                continue
            except MemoryError:
                failed.append(f"{path}: out of memory while reading it; skipped")
                continue
            size = f"{pixels.shape[1]}×{pixels.shape[0]}"
            try:
                result = convert(pixels)
                del pixels
                write_png(result, target)
            except (MemoryError, RuntimeError) as err:
                if not _out_of_memory(err):
                    raise
                failed.append(f"{path}: out of memory at {size} pixels; skipped")
            except OSError as err:
                failed.append(f"{path}: could not write {target} ({err}); skipped")
    return failed


def _apply_command(args: argparse.Namespace, family: str, convert_with) -> int:
    """Run ``convert_with(model)`` over the input files (colorize, translate); exit 1 if a file
    failed. The outputs are checked before the model is loaded."""
    targets = plan_outputs(args.images, Path(args.out), args.force)
    model = load(args.ckpt)
    if family and model.cfg.family != family:
        raise ConfigError(
            f"--ckpt {args.ckpt} is a '{model.cfg.family}' model; `distgan {args.command}` "
            f"takes a '{family}' one"
        )
    failed = apply_to_files(args.images, targets, convert_with(model), args.command)
    for line in failed:
        print(f"distgan: {line}", file=sys.stderr)
    done = len(args.images) - len(failed)
    print(f"distgan: wrote {done} images to {args.out}", file=sys.stderr)
    return 1 if failed else 0


def colorize_command(args: argparse.Namespace) -> int:
    """``distgan colorize --ckpt C IMG … --out DIR [--force]`` (a colorize model)."""
    return _apply_command(
        args, "colorize", lambda model: lambda pixels: colorize_pixels(model, pixels)
    )


def translate_command(args: argparse.Namespace) -> int:
    """``distgan translate --ckpt C IMG … --out DIR [--direction AtoB|BtoA] [--force]``."""

    def convert_with(model: Model) -> Callable[[np.ndarray], np.ndarray]:
        return lambda pixels: to_uint8(translate(model, to_rgb(pixels), args.direction))

    return _apply_command(args, "", convert_with)
