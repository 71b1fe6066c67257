"""``distgan export``: a trained model's networks as safetensors, with each network's
hyper-parameters and the run's config in the metadata (string values, JSON inside), which is all
``distgan.load``, ``sample``, ``colorize``, ``translate`` and ``latent`` need to use the file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

from distgan.errors import ConfigError
from distgan.trained.model import EXPORT_FORMAT, Model, load, refuse_non_finite


def export_tensors(
    model: Model, names: list[str], weights: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors ``<net>.<param>`` (trained weights) and ``<net>_ema.<param>`` (EMA copies) of the
    networks ``names``: ``weights`` raw, ema, or both (EMA copies where the family keeps them);
    and the metadata that rebuilds them."""
    unknown = [n for n in names if n not in model.networks]
    if unknown:
        raise ConfigError(
            f"--nets: no network {', '.join(unknown)} in family '{model.cfg.family}' "
            f"(networks: {', '.join(model.networks)})"
        )
    if weights == "ema":
        model.weights_choice("ema", tuple(names))  # one clear line if one has no EMA copy
    modules: dict[str, nn.Module] = {}
    for name in names:
        if weights in ("raw", "both"):
            modules[name] = model.networks[name]
        if weights in ("ema", "both") and name in model.ema:
            modules[f"{name}_ema"] = model.ema[name]
    refuse_non_finite(model.path or "--ckpt", modules)
    tensors = {
        f"{key}.{param}": value.contiguous()
        for key, module in modules.items()
        for param, value in module.state_dict().items()
    }
    metadata = {
        "format": EXPORT_FORMAT,
        "family": model.cfg.family,
        "recipe": model.cfg.name,
        "step": str(model.step),
        "networks": json.dumps(list(modules)),
        "hparams": json.dumps({k: getattr(m, "hparams", {}) for k, m in modules.items()}),
        "data_info": json.dumps(model.state["data_info"]),
        "config": json.dumps(model.state["config"]),
    }
    return tensors, metadata


def export_command(args: argparse.Namespace) -> int:
    """``distgan export --ckpt C --out F.safetensors [--nets G,D] [--weights raw|ema|both]``."""
    out = Path(args.out)
    if out.suffix.lower() != ".safetensors":
        raise ConfigError(f"--out {out}: use a .safetensors file name")
    nets = args.nets.split(",") if args.nets else None
    tensors, metadata = write_export(args.ckpt, out, nets, args.weights)
    print(
        f"distgan: exported {metadata['networks']} ({len(tensors)} tensors) to {out}",
        file=sys.stderr,
    )
    return 0


def write_export(
    ckpt: str | Path, out: Path, nets: list[str] | None = None, weights: str = "both"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Export the networks ``nets`` (default: those outputs come from) of ``ckpt`` to ``out``;
    ``distgan.load(out)`` reads it back (trained/model.py)."""
    from safetensors.torch import save_file

    model = load(ckpt, weights="raw" if weights == "raw" else None)
    tensors, metadata = export_tensors(model, nets or list(model.family.inference), weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata=metadata)
    return tensors, metadata
