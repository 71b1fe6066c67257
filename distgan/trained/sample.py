"""``distgan sample``: a trained model's outputs as a PNG grid or uint8 arrays (.npz), through
the model's one sampling path (:meth:`Model.outputs`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from distgan.errors import ConfigError, ShardError
from distgan.evaluation import protocol
from distgan.trained.model import Model, load
from distgan.trained.outputs import check_fits, check_out, save_npz

OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".npz")


def conditioning(
    model: Model, n: int, label: int | None, shards: str | None
) -> tuple[dict[str, Any] | None, torch.Tensor | None]:
    """(inputs, labels) of ``n`` samples: the first ``n`` held-out samples of ``shards`` (default:
    the run's ``eval.shards``, else ``data.shards``) for families that translate data; labels for
    conditional models (all ``label``, or 0, 1, … in turn)."""
    if "sample_batch" in model.family.needs:
        folder = protocol.shards_of(model.cfg, shards)
        try:
            return next(protocol.held_out(model.cfg, n, n, shards=shards)), None
        except ConfigError:
            raise
        except ValueError as err:  # e.g. gray shards for a model of L*a*b* colours
            raise ShardError(f"--shards {folder}: {err}") from None
    classes = model.num_classes
    if label is not None and not classes:
        raise ConfigError("--label: this model is not class-conditional")
    if label is not None and not 0 <= label < classes:
        raise ConfigError(f"--label {label}: this model's classes are 0–{classes - 1}")
    if not classes:
        return None, None
    labels = torch.full((n,), label) if label is not None else torch.arange(n) % classes
    return None, labels


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Outputs in [-1, 1] → uint8 (the rounding ``distgan sample`` writes)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def check_sample_fits(model: Model, n: int, out: Path) -> None:
    """Refuse ``--n`` when its uint8 images (a float grid for .png/.jpg), latents and file do not
    fit: in memory, on the disk of ``out``, in one grid image."""
    data = model.family.data
    channels = 3 if "sample_batch" in model.family.needs else data.channels
    image = channels * data.resolution**2
    grid = out.suffix.lower() != ".npz"
    memory = n * (image * (1 + 8 * grid) + 4 * model.latent_dim + 8)
    pixels = n * (data.resolution + 2) ** 2 if grid else 0
    check_fits(f"--n {n}", f"{n:,} samples", out, memory, n * image, pixels)


def sample_command(args: argparse.Namespace) -> int:
    """``distgan sample --ckpt C [--n N] [--label K] [--seed S] [--weights W]
    [--truncation PSI] --out F``."""
    import numpy as np
    from torchvision.utils import save_image

    out = check_out(Path(args.out), OUTPUT_SUFFIXES, ".png/.jpg (grid) or .npz (arrays)")
    if args.n < 1:
        raise ConfigError(f"--n {args.n}: draw at least 1 sample")
    model = load(args.ckpt, weights=args.weights)
    check_sample_fits(model, args.n, out)
    inputs, labels = conditioning(model, args.n, args.label, args.shards)
    parts = model.outputs(args.n, args.seed, labels, inputs, truncation=args.truncation)
    images = torch.cat([to_uint8(part) for part in parts])  # (uint8 chunk by chunk: 4× less)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npz":
        arrays = {"images": images.permute(0, 2, 3, 1).numpy()}
        if labels is not None:
            arrays["labels"] = labels.numpy().astype(np.int64)
        save_npz(out, **arrays)
    else:
        classes = len(labels.unique()) if labels is not None and args.label is None else 0
        nrow = classes or max(1, int(len(images) ** 0.5))
        save_image(images.float() / 255, out, nrow=nrow)
    print(f"distgan: wrote {len(images)} samples to {out}", file=sys.stderr)
    return 0
