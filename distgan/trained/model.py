"""A trained model: its family rebuilt from a checkpoint alone (no shards, no processes), with
the Python API for notebooks — ``m = distgan.load("runs/x")``, then ``m.sample(16)``,
``m.encode(images)``, ``m.decode(z)``, ``m.translate(images)`` where the family has them — and the
one sampling path that ``distgan sample`` and the latent tools use too.

Images go in and come out as float tensors N×C×H×W in [0, 1] on the CPU (uint8 input is
accepted too), ready for ``torchvision.utils.make_grid`` or matplotlib; the networks run on
``device`` in fp32, with the EMA weights where the family keeps them (``weights="raw"`` for the
trained ones). Noise is drawn on the CPU from ``seed``, so a seed gives the same latents on
any device, and ``m.sample(n, seed=s)`` decodes exactly ``m.latents(n, seed=s)`` — the images
``distgan sample --seed s`` writes (before rounding to uint8).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distgan.config import Config
from distgan.data.info import DatasetInfo
from distgan.engine import checkpoint
from distgan.errors import ConfigError
from distgan.families import build_family
from distgan.families.base import Batch, Family, LatentLayer, Nets
from distgan.recipe import recipe_from_checkpoint

WEIGHTS = ("ema", "raw")
Labels = int | Sequence[int] | torch.Tensor | None


class Model:
    """A family and its trained networks (eval mode, no grad) on ``device``; ``weights`` picks
    the EMA copies or the trained weights that outputs come from (default: EMA where kept)."""

    path: Path | None = None  # the checkpoint file it was loaded from

    def __init__(
        self,
        cfg: Config,
        family: Family,
        networks: dict[str, nn.Module],
        ema: dict[str, nn.Module],
        state: dict[str, Any],
        weights: str | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.cfg, self.family, self.state = cfg, family, state
        self.device = device or torch.device("cpu")
        self.networks = networks  # the trained weights
        self.ema = ema  # network name → its EMA copy
        self.weights = self.weights_choice(weights, family.inference)
        self.nets = self.nets_for(self.weights)

    def __repr__(self) -> str:
        return (
            f"Model(recipe={self.cfg.name!r}, family={self.cfg.family!r}, step={self.step}, "
            f"weights={self.weights!r}, latent_dim={self.latent_dim}, device={self.device})"
        )

    @property
    def step(self) -> int:
        return self.state["step"]

    @property
    def latent_dim(self) -> int:
        return self.family.latent_dim

    @property
    def num_classes(self) -> int:
        """Classes a conditional model takes as ``labels`` (0: unconditional)."""
        return self.family.num_classes

    # ------------------------------------------------------------------ weights

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

    def nets_for(self, weights: str) -> Nets:
        """All networks, with the EMA copies in place of the trained ones for ``weights="ema"``."""
        return Nets.for_outputs(self.networks, self.ema, use_ema=weights == "ema")

    # ------------------------------------------------------------------ outputs

    def latents(self, n: int, seed: int = 0) -> torch.Tensor:
        """The n latent vectors ``sample(n, seed=seed)`` decodes (z ~ N(0, I), CPU)."""
        self._needs_latent()
        return torch.randn(n, self.latent_dim, generator=torch.Generator().manual_seed(seed))

    def sample(
        self, n: int, labels: Labels = None, seed: int = 0, truncation: float | None = None
    ) -> torch.Tensor:
        """``n`` new images; ``labels`` (one class or one per image) for conditional models,
        by default 0, 1, 2, … in turn (as ``distgan sample``); ``truncation`` ψ: the truncation
        trick where the family has one (StyleGAN2: w = lerp(w_avg, w, ψ))."""
        parts = self.outputs(n, seed, labels, truncation=truncation)
        return torch.cat([_to_unit(part) for part in parts])

    def outputs(
        self,
        n: int,
        seed: int = 0,
        labels: Labels = None,
        inputs: Batch | None = None,
        chunk: int = 256,
        truncation: float | None = None,
    ) -> Iterator[torch.Tensor]:
        """The one sampling path: ``n`` outputs in [-1, 1] (float, CPU), ``chunk`` at a time
        (20,000 samples of 64 px are 1 GB of floats): ``latents(n, seed)`` decoded with
        ``labels``, or for a family without latents its outputs for the batch ``inputs``."""
        if self.latent_dim:
            if self.num_classes and labels is None:
                labels = torch.arange(n) % self.num_classes
            z, labels = self.latents(n, seed), self._labels(labels, n)
            for start in range(0, n, chunk):
                part = None if labels is None else labels[start : start + chunk]
                yield self.decode_signed(z[start : start + chunk], part, truncation)
            return
        if truncation is not None:
            raise ConfigError(f"--truncation: family '{self.cfg.family}' has no latent space")
        if inputs is None and "sample_batch" in self.family.needs:
            self._needs_latent()
        generator = torch.Generator(self.device).manual_seed(seed)
        for start in range(0, n, chunk):
            part = None if inputs is None else _to(_slice(inputs, start, chunk), self.device)
            with torch.no_grad():
                images = self.family.sample(self.nets, min(chunk, n - start), generator, part)
            yield images.float().cpu()

    def decode(
        self, z: torch.Tensor, labels: Labels = None, truncation: float | None = None
    ) -> torch.Tensor:
        """Images from latent vectors z [N, latent_dim] (``truncation``: see ``sample``)."""
        return _to_unit(self.decode_signed(z, self._labels(labels, len(z)), truncation))

    @torch.no_grad()
    def decode_signed(
        self, z: torch.Tensor, labels: torch.Tensor | None, truncation: float | None = None
    ) -> torch.Tensor:
        """The networks' outputs in [-1, 1] (CPU float) for z and checked labels."""
        self._needs_latent()
        z = torch.as_tensor(z, dtype=torch.float32)
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ConfigError(f"z must be N × {self.latent_dim}, not {tuple(z.shape)}")
        labels = None if labels is None else labels.to(self.device)
        z = z.to(self.device)
        if truncation is None:
            return self.family.decode(self.nets, z, labels).float().cpu()
        return self.family.decode_truncated(self.nets, z, labels, truncation).float().cpu()

    @torch.no_grad()
    def encode(self, images: torch.Tensor, log_var: bool = False):
        """μ of q(z | x) for images [N, C, H, W] (VAE); with ``log_var=True`` (μ, log σ²)."""
        mu, logv = self.family.encode(self.nets, _to_signed(images, self.device))
        return (mu.float().cpu(), logv.float().cpu()) if log_var else mu.float().cpu()

    @torch.no_grad()
    def translate(self, images: torch.Tensor, direction: str = "AtoB") -> torch.Tensor:
        """Images of one domain mapped to the other (pix2pix: A→B; CycleGAN: both ways)."""
        out = self.family.translate(self.nets, _to_signed(images, self.device), direction)
        return _to_unit(out)

    def latent_layers(self) -> list[LatentLayer]:
        """EigenGAN: each layer's latent dimensions and their |L| (importance)."""
        return self.family.latent_layers(self.nets)

    # ------------------------------------------------------------------ helpers

    def _needs_latent(self) -> None:
        if not self.latent_dim:
            hint = "; use translate()" if "sample_batch" in self.family.needs else ""
            raise ConfigError(f"family '{self.cfg.family}' has no latent space{hint}")

    def _labels(self, labels: Labels, n: int) -> torch.Tensor | None:
        if labels is None:
            if self.num_classes:
                raise ConfigError(f"recipe {self.cfg.name} is class-conditional: give labels")
            return None
        if not self.num_classes:
            raise ConfigError(f"recipe {self.cfg.name} is not class-conditional: drop labels")
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        labels = labels.expand(n) if len(labels) == 1 else labels
        classes = f"this model's classes are 0–{self.num_classes - 1}"
        if len(labels) != n:
            raise ConfigError(f"labels: give one class or {n}, not {len(labels)} ({classes})")
        outside = labels[(labels < 0) | (labels >= self.num_classes)]
        if len(outside):
            raise ConfigError(f"label {outside[0].item()}: {classes}")
        return labels


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    return (images.float().clamp(-1, 1).cpu() + 1) / 2


def _to_signed(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """[0, 1] floats or uint8 → the networks' [-1, 1]."""
    images = torch.as_tensor(images)
    if images.dtype == torch.uint8:
        images = images.float() / 255
    return images.float().to(device) * 2 - 1


def _slice(batch: Batch, start: int, count: int) -> Batch:
    return {
        k: _slice(v, start, count) if isinstance(v, dict) else v[start : start + count]
        for k, v in batch.items()
    }


def _to(batch: Batch, device: torch.device) -> Batch:
    return {
        k: _to(v, device) if isinstance(v, dict) else v.to(device) if torch.is_tensor(v) else v
        for k, v in batch.items()
    }


def load(path: str | Path, device: str | torch.device = "cpu", weights: str | None = None) -> Model:
    """A trained model from a checkpoint file, a run folder (its newest usable checkpoint) or
    the ``.safetensors`` file ``distgan export`` wrote."""
    device, path = torch.device(device), Path(path)
    if path.suffix.lower() == ".safetensors" and not path.is_dir():
        return load_export(path, device, weights)
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
    model = Model(cfg, family, networks, ema, state, weights, device)
    model.path = Path(path)
    used = {}  # the networks outputs come from, by their names in the checkpoint
    for name in family.inference:
        if model.weights == "ema" and name in ema:
            used[f"{name}_ema"] = ema[name]
        else:
            used[name] = networks[name]
    refuse_non_finite(path, used)
    return model


def refuse_non_finite(path: str | Path, modules: dict[str, nn.Module]) -> None:
    """One line naming the networks (by their names in the checkpoint) whose weights hold inf
    or NaN: outputs from them would be garbage, written without complaint."""
    bad = [
        name
        for name, module in modules.items()
        if not all(
            t.isfinite().all() for t in module.state_dict().values() if t.is_floating_point()
        )
    ]
    if not bad:
        return
    raw = all(name.endswith("_ema") for name in bad)
    hint = (
        "use --weights raw (the trained weights) or an earlier checkpoint"
        if raw
        else ("use an earlier checkpoint")
    )
    raise checkpoint.CheckpointError(
        f"checkpoint '{path}': the weights of {', '.join(bad)} are not finite (inf/NaN); {hint}"
    )


EXPORT_FORMAT = "distgan-networks/1"


def load_export(path: Path, device: torch.device, weights: str | None) -> Model:
    """A model from ``distgan export``'s file: the family rebuilt from the config in its
    metadata, checked against each network's recorded hyper-parameters, with the networks the
    file holds (``G`` trained, ``G_ema`` the EMA copy); its outputs equal the checkpoint's."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise checkpoint.CheckpointError(f"export '{path}' does not exist")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
        if meta.get("format") != EXPORT_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, not {EXPORT_FORMAT}")
        state = {
            "step": int(meta["step"]),
            "config": json.loads(meta["config"]),
            "data_info": json.loads(meta["data_info"]),
        }
        names, hparams = json.loads(meta["networks"]), json.loads(meta["hparams"])
        data = {name: DatasetInfo(**info) for name, info in state["data_info"].items()}
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as err:
        raise checkpoint.CheckpointError(
            f"'{path}' is not a file of distgan export ({str(err).splitlines()[0][:120]})"
        ) from None
    cfg = recipe_from_checkpoint(state, path)  # a built-in family unless allowed
    family = build_family(cfg, data)
    built = family.build_networks()
    networks: dict[str, nn.Module] = {}
    ema: dict[str, nn.Module] = {}
    for key in names:
        base = key.removesuffix("_ema")
        if base not in built:
            raise checkpoint.CheckpointError(
                f"'{path}': family '{cfg.family}' has no network {base} "
                f"(networks: {', '.join(built)})"
            )
        module = copy.deepcopy(built[base]) if key != base else built[base]
        if json.loads(json.dumps(getattr(module, "hparams", {}))) != hparams.get(key):
            raise checkpoint.CheckpointError(
                f"'{path}': network {key}'s hyper-parameters differ from those its config "
                "builds; export it again with this distgan"
            )
        own = {k.removeprefix(f"{key}."): v for k, v in tensors.items() if k.startswith(f"{key}.")}
        try:
            module.load_state_dict(own)
        except RuntimeError as err:
            raise checkpoint.CheckpointError(
                f"'{path}': {key} does not fit family '{cfg.family}' "
                f"({str(err).splitlines()[0][:120]})"
            ) from None
        module.to(device).eval().requires_grad_(False)
        (ema if key != base else networks)[base] = module
    for name in family.inference:
        if name not in networks and name in ema and weights != "raw":
            networks[name] = ema[name]  # only its EMA copy was exported (--weights ema)
        elif name not in networks:
            held = "only its EMA copy" if name in ema else "neither its weights nor an EMA copy"
            raise ConfigError(
                f"'{path}' holds {held} of {name}; use the checkpoint, or export with "
                "--weights both"
            )
    model = Model(cfg, family, networks, ema, state, weights, device)
    model.path = path
    refuse_non_finite(path, {name: model.nets.raw(name) for name in family.inference})
    return model
