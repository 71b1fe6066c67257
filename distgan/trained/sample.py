"""``distgan sample``: a trained model's outputs as a PNG grid or uint8 arrays (.npz), through
the model's one sampling path (:meth:`Model.outputs`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from distgan.errors import ConfigError
from distgan.evaluation import protocol
from distgan.trained.model import Model, load

OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".npz")


def conditioning(
    model: Model, n: int, label: int | None, shards: str | None
) -> tuple[dict[str, Any] | None, torch.Tensor | None]:
    """(inputs, labels) of ``n`` samples: the first ``n`` held-out samples of ``shards`` (default:
    the run's ``eval.shards``, else ``data.shards``) for families that translate data; labels for
    conditional models (all ``label``, or 0, 1, … in turn)."""
    if "sample_batch" in model.family.needs:
        return next(protocol.held_out(model.cfg, n, n, shards=shards)), None
    classes = model.num_classes
    if label is not None and not classes:
        raise ConfigError("--label: this model is not class-conditional")
    if label is not None and not 0 <= label < classes:
        raise ConfigError(f"--label {label}: valid labels are 0–{classes - 1}")
    if not classes:
        return None, None
    labels = torch.full((n,), label) if label is not None else torch.arange(n) % classes
    return None, labels


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Outputs in [-1, 1] → uint8 (the rounding ``distgan sample`` writes)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def sample_command(args: argparse.Namespace) -> int:
    """``distgan sample --ckpt C [--n N] [--label K] [--seed S] [--weights W] --out F``."""
    import numpy as np
    from torchvision.utils import save_image

    out = Path(args.out)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(f"--out {out}: use a .png/.jpg (grid) or .npz (arrays) file name")
    if args.n < 1:
        raise ConfigError(f"--n {args.n}: draw at least 1 sample")
    model = load(args.ckpt, weights=args.weights)
    inputs, labels = conditioning(model, args.n, args.label, args.shards)
    parts = model.outputs(args.n, args.seed, labels, inputs)
    images = torch.cat([to_uint8(part) for part in parts])  # (uint8 chunk by chunk: 4× less)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npz":
        arrays = {"images": images.permute(0, 2, 3, 1).numpy()}
        if labels is not None:
            arrays["labels"] = labels.numpy().astype(np.int64)
        np.savez_compressed(out, **arrays)
    else:
        classes = len(labels.unique()) if labels is not None and args.label is None else 0
        nrow = classes or max(1, int(len(images) ** 0.5))
        save_image(images.float() / 255, out, nrow=nrow)
    print(f"distgan: wrote {len(images)} samples to {out}", file=sys.stderr)
    return 0
