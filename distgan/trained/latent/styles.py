"""StyleGAN2's per-layer styles: ``distgan latent mix`` (the style-mixing figure of
stylegan2-ada-pytorch's ``style_mixing.py``) and ``distgan latent project`` (an image's w, see
:mod:`distgan.trained.latent.projection`).

A seed's w is the mapping of ``Model.latents(1, seed)`` (so a column image is exactly
``model.sample(1, label, seed, truncation)``), broadcast to every layer's style, with the
constant noise inputs. Mixing takes the row seed's ws and replaces those of ``--layers`` with the
column seed's.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress
from torch import nn

from distgan.errors import ConfigError
from distgan.trained.files import plan_outputs, read_pixels, refuse_existing, write_png
from distgan.trained.latent import figures, projection
from distgan.trained.model import Model, load
from distgan.trained.outputs import check_out, save_npz

# style_mixing.py's default --styles 0-6 of 18 ws at 1024 px: the coarse 7/18 of the layers
COARSE_FRACTION = 7 / 18


def coarse_layers(num_ws: int) -> range:
    """The default ``--layers``: the first round(7/18 · num_ws) ws (0–2 of 8 at 32 px)."""
    return range(max(1, round(num_ws * COARSE_FRACTION)))


def parse_layers(text: str, num_ws: int) -> list[int]:
    """``A-B`` (inclusive), ``A,B,C`` or ``A`` → layer indices, each in 0 … num_ws − 1."""
    layers: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            start, _, stop = part.partition("-")
            layers += range(int(start), int(stop or start) + 1)
    except ValueError:
        raise ConfigError(f"--layers {text}: give A-B or A,B,C (layer indices)") from None
    if not layers or min(layers) < 0 or max(layers) >= num_ws:
        raise ConfigError(f"--layers {text}: this model's layers are 0–{num_ws - 1}")
    return sorted(set(layers))


def generator(model: Model) -> nn.Module:
    """G of a StyleGAN2 model (one line naming the family otherwise)."""
    G = model.nets["G"] if "G" in model.nets else None  # noqa: SIM401 (Nets has no get)
    if G is None or not hasattr(G, "synthesis") or not hasattr(G, "num_ws"):
        raise ConfigError(
            f"family {model.cfg.family} has no style layers: latent mix/project need stylegan2"
        )
    return G


def _label(model: Model, label: int | None, default: int | None = 0) -> int | None:
    if not model.num_classes:
        if label is not None:
            raise ConfigError(f"--label: recipe {model.cfg.name} is not class-conditional")
        return None
    if label is not None and not 0 <= label < model.num_classes:
        raise ConfigError(f"--label {label}: this model's classes are 0–{model.num_classes - 1}")
    return default if label is None else label


# ----------------------------------------------------------------------------- mixing


@torch.no_grad()
def seed_ws(model: Model, seed: int, label: int | None, truncation: float = 1.0) -> torch.Tensor:
    """The ws [1, num_ws, w_dim] of ``seed`` (its w at every layer)."""
    G = generator(model)
    z = model.latents(1, seed).to(model.device)
    labels = None if label is None else torch.tensor([label], device=model.device)
    return G.ws(z, labels, truncation=truncation)


@torch.no_grad()
def synthesize(model: Model, ws: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (CPU) from ws, with the constant noise inputs."""
    images = generator(model).synthesis(ws, noise_mode="const")
    return (images.float().clamp(-1, 1).cpu() + 1) / 2


def mix(row_ws: torch.Tensor, column_ws: torch.Tensor, layers: list[int] | range) -> torch.Tensor:
    """The row's ws with those of ``layers`` taken from the column's."""
    mixed = row_ws.clone()
    mixed[:, list(layers)] = column_ws[:, list(layers)]
    return mixed


def mixing_grid(
    model: Model,
    rows: list[int],
    columns: list[int],
    layers: list[int] | range,
    label: int | None = None,
    truncation: float = 1.0,
) -> torch.Tensor:
    """The figure's images [(R + 1)·(C + 1), C, H, W]: a blank corner, the column seeds' images
    along the top, and each row: its seed's image, then the mixes with every column."""
    row_ws = [seed_ws(model, s, label, truncation) for s in rows]
    column_ws = [seed_ws(model, s, label, truncation) for s in columns]
    top = [synthesize(model, ws) for ws in column_ws]
    cells = [torch.ones_like(top[0]), *top]
    for ws in row_ws:
        cells.append(synthesize(model, ws))
        cells += [synthesize(model, mix(ws, other, layers)) for other in column_ws]
    return torch.cat(cells)


def cmd_mix(args: argparse.Namespace) -> int:
    out = check_out(Path(args.out), (".png",), "PNG")
    refuse_existing([out], args.force)
    model = load(args.ckpt, args.device, args.weights)
    G = generator(model)
    layers = coarse_layers(G.num_ws) if args.layers is None else parse_layers(args.layers, G.num_ws)
    label = _label(model, args.label)
    if min(args.rows + args.cols) < 0:
        raise ConfigError("--rows/--cols: seeds are integers ≥ 0")
    grid = mixing_grid(model, args.rows, args.cols, layers, label, args.truncation)
    figures.save_grid(grid, out, len(args.cols) + 1)
    chosen = ",".join(map(str, layers))
    print(f"distgan: wrote a style-mixing grid (layers {chosen} of 0–{G.num_ws - 1}) to {out}",
          file=sys.stderr)  # fmt: skip
    if args.wandb:
        figures.log_to_wandb(model, "mix", [out])
    return 0


# ----------------------------------------------------------------------------- projection


def read_target(path: Path, channels: int, resolution: int) -> torch.Tensor:
    """An image file as the model sees it: [1, C, R, R] in [-1, 1] — centre-cropped to a square
    (as the reference), resized (Lanczos), gray ↔ RGB as the model's channels."""
    from PIL import Image

    try:
        pixels = read_pixels(path)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ConfigError(f"{path}: not a readable image ({err})") from None
    if pixels.dtype != np.uint8:  # 16/32-bit gray in [0, 1]
        pixels = (pixels * 255).round().astype(np.uint8)
    image = Image.fromarray(pixels)
    image = image.convert("L" if channels == 1 else "RGB")
    w, h = image.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
    image = image.crop(box).resize((resolution, resolution), Image.LANCZOS)
    array = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
    array = array[None] if array.dim() == 2 else array.permute(2, 0, 1)
    return (array / 127.5 - 1)[None]


def cmd_project(args: argparse.Namespace) -> int:
    out = Path(args.out)
    images = plan_outputs(args.images, out, args.force)  # DIR/<stem>.png, checked
    arrays = [p.with_suffix(".npz") for p in images]
    refuse_existing(arrays, args.force)
    if args.steps < 1:
        raise ConfigError(f"--steps {args.steps}: at least 1")
    distance_file = projection.check_vgg16(args.lpips) if args.lpips else None
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        raise ConfigError(f"{missing[0]} does not exist")
    model = load(args.ckpt, args.device, args.weights)
    G = generator(model)
    label = _label(model, args.label, default=None)
    if distance_file is None and "D" not in model.networks:
        raise ConfigError(
            f"--ckpt {args.ckpt} holds no discriminator, which the default loss uses: give the "
            "run's checkpoint, or --lpips VGG16_FILE"
        )
    data = model.family.data
    targets = [read_target(Path(p), data.channels, data.resolution) for p in args.images]
    lpips_net = projection.lpips_vgg(str(distance_file), model.device) if distance_file else None
    w_avg, w_std = projection.w_stats(G, label)
    out.mkdir(parents=True, exist_ok=True)
    for source, target, png, npz in zip(args.images, targets, images, arrays, strict=True):
        target = target.to(model.device)
        if lpips_net is not None:
            distance = projection.lpips_distance(lpips_net, target)
        else:
            distance = projection.pixel_and_discriminator(model.networks["D"], target)
        with Progress(transient=True) as progress:  # ~20 ms a step at 32 px on a CPU core
            task = progress.add_task(f"projecting {Path(source).name}", total=args.steps)
            advance = functools.partial(progress.advance, task)
            result = projection.project(G, distance, args.steps, w_avg, w_std, args.seed, advance)
        unit = (result.image.clamp(-1, 1).cpu() + 1) / 2
        pixels = (unit[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        write_png(pixels[..., 0] if pixels.shape[2] == 1 else pixels, png)
        saved = {f"noise{i}": n[0, 0].cpu().numpy() for i, n in enumerate(result.noise)}
        saved["w"] = result.w.unsqueeze(1).expand(-1, G.num_ws, -1).cpu().numpy()
        if model.num_classes:  # the class started from (-1: the mean over all classes)
            saved["label"] = np.asarray(-1 if label is None else label)
        save_npz(npz, **saved)
        psnr = _psnr(unit, (target.cpu() + 1) / 2)
        print(f"distgan: {source} → {png} ({psnr:.1f} dB)", file=sys.stderr)
    if args.wandb:
        figures.log_to_wandb(model, "project", images)
    return 0


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a - b).square().mean())
    return 10 * np.log10(1 / max(mse, 1e-12))


# ----------------------------------------------------------------------------- parsers


def add_parsers(tools) -> None:
    """``mix`` and ``project`` under ``distgan latent``."""

    def common(t: argparse.ArgumentParser) -> None:
        t.add_argument("--ckpt", required=True, help="checkpoint file or run folder")
        t.add_argument("--weights", choices=["ema", "raw"], default=None)
        t.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 …")
        t.add_argument("--force", action="store_true", help="replace existing output files")
        t.add_argument("--wandb", action="store_true", help="also log to the run's W&B")

    t = tools.add_parser("mix", help="StyleGAN2 style-mixing grid (rows × columns of seeds)")
    common(t)
    t.add_argument("--rows", type=_seeds, required=True, help="row seeds: 1,2,3 or 1-3")
    t.add_argument("--cols", type=_seeds, required=True, help="column seeds")
    t.add_argument(
        "--layers",
        default=None,
        help="layers whose styles come from the column seed: A-B or A,B,C (default: the "
        "coarse 7/18 of the layers, as the reference's 0-6 of 18 at 1024 px: 0-2 at 32 px)",
    )
    t.add_argument("--label", type=int, default=None, help="class (conditional models; 0)")
    t.add_argument("--truncation", type=float, default=1.0, metavar="PSI", help="ψ (1: none)")
    t.add_argument("--out", required=True, help=".png file")
    t.set_defaults(func=cmd_mix)

    t = tools.add_parser(
        "project",
        help="StyleGAN2: find the w of each image (stylegan2-ada-pytorch's projector)",
        description="Optimise one w (all layers) and the noise maps per image, from the mean w "
        "(the reference's schedule). Images are centre-cropped to a square and resized "
        "(Lanczos) to the model's resolution and channels. Loss: pixel MSE plus the distance "
        "between the run's own discriminator's block activations (unit-normalised per "
        "position), nothing downloaded; with --lpips: LPIPS-VGG only, as the reference. Both "
        "compare the synthesis clamped to black/white where the target is black/white. Writes "
        "OUT/<stem>.png and OUT/<stem>.npz (w [1, num_ws, w_dim]; noise0…: the noise maps; "
        "label: the class started from, -1: all, conditional models).",
    )
    common(t)
    t.add_argument("images", nargs="+", metavar="IMG", help="image files of any size and mode")
    t.add_argument("--out", required=True, help="folder for OUT/<stem>.png and .npz")
    t.add_argument("--steps", type=int, default=1000, help="optimisation steps (1000)")
    t.add_argument("--seed", type=int, default=0, help="noise seed (0)")
    t.add_argument(
        "--label", type=int, default=None, help="conditional: start at this class's mean w "
        "(default: the mean over all classes)"
    )  # fmt: skip
    t.add_argument(
        "--lpips",
        default=None,
        metavar="VGG16_FILE",
        help=f"LPIPS-VGG distance with torchvision's {projection.VGG16_FILE} (sha256 "
        f"{projection.VGG16_SHA256[:16]}…, never downloaded)",
    )
    t.set_defaults(func=cmd_project)


def _seeds(text: str) -> list[int]:
    try:
        seeds: list[int] = []
        for part in (p.strip() for p in text.split(",") if p.strip()):
            start, _, stop = part.partition("-")
            seeds += range(int(start), int(stop or start) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: seeds as 1,2,3 or 1-3") from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"{text!r}: at least one seed")
    return seeds
