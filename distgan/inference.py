"""A trained family rebuilt from a checkpoint alone (no shards, no processes): what
``distgan sample`` and ``distgan export`` use."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distgan.config import Config
from distgan.data.stream import DatasetInfo
from distgan.engine import checkpoint
from distgan.errors import ConfigError
from distgan.families import build_family
from distgan.families.base import Family, Nets
from distgan.recipe import recipe_from_checkpoint

WEIGHTS = ("ema", "raw")


@dataclass
class Trained:
    cfg: Config
    family: Family
    networks: dict[str, nn.Module]  # the trained weights, in eval mode
    ema: dict[str, nn.Module]  # network name → its EMA copy
    state: dict[str, Any]  # the checkpoint

    @property
    def step(self) -> int:
        return self.state["step"]

    def weights_choice(self, weights: str | None, names: tuple[str, ...]) -> str:
        """``ema``/``raw`` as asked, or by default the EMA copies where the family keeps them.
        Asking for EMA weights the family does not keep is an error, never a silent fallback."""
        if weights not in (None, *WEIGHTS):
            raise ConfigError(f"--weights {weights}: use ema or raw")
        missing = [n for n in names if n not in self.ema]
        if weights == "ema" and missing:
            kept = ", ".join(self.ema) or "none"
            raise ConfigError(
                f"--weights ema: family '{self.cfg.family}' keeps no EMA copy of "
                f"{', '.join(missing)} (EMA copies: {kept}); use --weights raw"
            )
        if weights is None:
            return "ema" if any(n in self.ema for n in names) else "raw"
        return weights

    def nets(self, weights: str) -> Nets:
        """All networks, with the EMA copies in place of the trained ones for ``weights="ema"``."""
        return Nets.for_outputs(self.networks, self.ema, use_ema=weights == "ema")


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> Trained:
    """A checkpoint file, or a run folder (its newest usable checkpoint)."""
    path = Path(path)
    if path.is_dir():
        run_dir = path.parent if path.name == "checkpoints" else path
        found = checkpoint.latest_valid(run_dir)
        if found is None:
            raise checkpoint.CheckpointError(
                f"no usable checkpoint in '{run_dir}/checkpoints'; give a step-*.pt file or a "
                "run folder that has one"
            )
        path, state = found
    else:
        state = checkpoint.load(path)
    cfg = recipe_from_checkpoint(state, path)  # a built-in family unless allowed
    family = build_family(
        cfg, {name: DatasetInfo(**info) for name, info in state["data_info"].items()}
    )
    networks = family.build_networks()
    ema = {name: copy.deepcopy(networks[name]) for name in family.ema}
    try:
        for name, module in networks.items():
            module.load_state_dict(state["networks"][name])
        for name, module in ema.items():
            module.load_state_dict(state["networks"][f"{name}_ema"])
    except (KeyError, RuntimeError) as err:
        raise checkpoint.CheckpointError(
            f"checkpoint '{path}' does not fit family '{cfg.family}' "
            f"({str(err).splitlines()[0][:120]})"
        ) from None
    for module in [*networks.values(), *ema.values()]:
        module.to(device).eval().requires_grad_(False)
    return Trained(cfg, family, networks, ema, state)


def conditioning(
    trained: Trained, n: int, label: int | None, shards: str | None
) -> tuple[dict[str, Any] | None, torch.Tensor | None]:
    """What ``sample`` is conditioned on: the first ``n`` held-out samples of ``shards`` (default:
    the run's ``eval.shards``, else ``data.shards``) for families that translate data, labels
    for conditional models (all ``label``, or 0, 1, … in turn); and the labels, if any."""
    from distgan.data.loader import held_out_transforms
    from distgan.data.stream import held_out_batches
    from distgan.engine.build import transforms_of

    family, cfg = trained.family, trained.cfg
    if "sample_batch" in family.needs:
        folders = shards or cfg.eval.shards or cfg.data.shards
        named = isinstance(folders, dict)
        folders = folders if named else {"": folders}
        transforms = held_out_transforms(transforms_of(cfg))
        batch = {
            name: next(
                held_out_batches(f, n=n, batch_size=n, seed=cfg.train.seed, transforms=transforms)
            )
            for name, f in folders.items()
        }
        return (batch if named else batch[""]), None
    classes = family.num_classes
    if label is not None and not classes:
        raise ConfigError("--label: this model is not class-conditional")
    if label is not None and not 0 <= label < classes:
        raise ConfigError(f"--label {label}: valid labels are 0–{classes - 1}")
    if not classes:
        return None, None
    labels = torch.full((n,), label) if label is not None else torch.arange(n) % classes
    return {"label": labels}, labels


def sample(
    trained: Trained,
    n: int,
    weights: str | None = None,
    seed: int = 0,
    batch: dict[str, Any] | None = None,
    chunk: int = 256,
) -> torch.Tensor:
    """``n`` outputs as uint8 images [N,C,H,W] (CPU), generated and converted ``chunk`` at a
    time (20,000 samples of 64 px hold 250 MB, not 1 GB of floats)."""
    nets = trained.nets(trained.weights_choice(weights, trained.family.inference))
    generator = torch.Generator().manual_seed(seed)
    parts = []
    with torch.no_grad():
        for start in range(0, n, chunk):
            part = _slice(batch, start, start + chunk) if batch is not None else None
            count = min(chunk, n - start)
            images = trained.family.sample(nets, count, generator, part).float().cpu()
            parts.append(((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
    return torch.cat(parts)


def _slice(batch: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    return {
        k: _slice(v, start, stop) if isinstance(v, dict) else v[start:stop]
        for k, v in batch.items()
    }


def export_tensors(
    trained: Trained, names: list[str], weights: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors ``<net>.<param>`` (trained weights) and ``<net>_ema.<param>`` (EMA copies) of the
    networks ``names``: ``weights`` raw, ema, or both (EMA copies where the family keeps them);
    and the metadata that rebuilds them."""
    import json

    unknown = [n for n in names if n not in trained.networks]
    if unknown:
        raise ConfigError(
            f"--nets: no network {', '.join(unknown)} in family '{trained.cfg.family}' "
            f"(networks: {', '.join(trained.networks)})"
        )
    if weights == "ema":
        trained.weights_choice("ema", tuple(names))  # one clear line if one has no EMA copy
    modules: dict[str, nn.Module] = {}
    for name in names:
        if weights in ("raw", "both"):
            modules[name] = trained.networks[name]
        if weights in ("ema", "both") and name in trained.ema:
            modules[f"{name}_ema"] = trained.ema[name]
    tensors = {
        f"{key}.{param}": value.contiguous()
        for key, module in modules.items()
        for param, value in module.state_dict().items()
    }
    metadata = {
        "format": "distgan-networks/1",
        "family": trained.cfg.family,
        "recipe": trained.cfg.name,
        "step": str(trained.step),
        "networks": json.dumps(list(modules)),
        "hparams": json.dumps({k: getattr(m, "hparams", {}) for k, m in modules.items()}),
        "data_info": json.dumps(trained.state["data_info"]),
        "config": json.dumps(trained.state["config"]),
    }
    return tensors, metadata
