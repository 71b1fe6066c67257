"""The Python API for notebooks: ``m = distgan.load("runs/x")`` and then ``m.sample(16)``,
``m.encode(images)``, ``m.decode(z)``, ``m.translate(images)`` where the family has them.

Images go in and come out as float tensors N×C×H×W in [0, 1] on the CPU (uint8 input is
accepted too), ready for ``torchvision.utils.make_grid`` or matplotlib; the networks run on
``device`` in fp32, with the EMA weights where the family keeps them (``weights="raw"`` for the
trained ones). Noise is drawn on the CPU from ``seed``, so a seed gives the same latents on
any device, and ``m.sample(n, seed=s)`` decodes exactly ``m.latents(n, seed=s)`` — the images
``distgan sample --seed s`` writes (before rounding to uint8).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from distgan import inference
from distgan.errors import ConfigError
from distgan.families.base import LatentLayer


class Model:
    def __init__(self, trained: inference.Trained, weights: str | None, device: torch.device):
        self.trained, self.device = trained, device
        self.family, self.cfg = trained.family, trained.cfg
        self.weights = trained.weights_choice(weights, self.family.inference)
        self.nets = trained.nets(self.weights)

    def __repr__(self) -> str:
        return (
            f"Model(recipe={self.cfg.name!r}, family={self.cfg.family!r}, step={self.step}, "
            f"weights={self.weights!r}, latent_dim={self.latent_dim}, device={self.device})"
        )

    @property
    def step(self) -> int:
        return self.trained.step

    @property
    def latent_dim(self) -> int:
        return self.family.latent_dim

    @property
    def num_classes(self) -> int:
        """Classes a conditional model takes as ``labels`` (0: unconditional)."""
        return self.family.num_classes

    # ------------------------------------------------------------------ latent space

    def latents(self, n: int, seed: int = 0) -> torch.Tensor:
        """The n latent vectors ``sample(n, seed=seed)`` decodes (z ~ N(0, I), CPU)."""
        self._needs_latent()
        return torch.randn(n, self.latent_dim, generator=torch.Generator().manual_seed(seed))

    def sample(
        self, n: int, labels: int | Sequence[int] | torch.Tensor | None = None, seed: int = 0
    ) -> torch.Tensor:
        """``n`` new images; ``labels`` (one class or one per image) for conditional models,
        by default 0, 1, 2, … in turn (as ``distgan sample``)."""
        if self.num_classes and labels is None:
            labels = torch.arange(n) % self.num_classes
        return self.decode(self.latents(n, seed), labels)

    @torch.no_grad()
    def decode(
        self, z: torch.Tensor, labels: int | Sequence[int] | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images from latent vectors z [N, latent_dim]."""
        self._needs_latent()
        z = torch.as_tensor(z, dtype=torch.float32)
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ConfigError(f"z must be N × {self.latent_dim}, not {tuple(z.shape)}")
        out = self.family.decode(self.nets, z.to(self.device), self._labels(labels, len(z)))
        return _to_unit(out)

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

    def _labels(self, labels, n: int) -> torch.Tensor | None:
        if labels is None:
            if self.num_classes:
                raise ConfigError(f"recipe {self.cfg.name} is class-conditional: give labels")
            return None
        if not self.num_classes:
            raise ConfigError(f"recipe {self.cfg.name} is not class-conditional: drop labels")
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        labels = labels.expand(n) if len(labels) == 1 else labels
        if len(labels) != n or not ((labels >= 0) & (labels < self.num_classes)).all():
            raise ConfigError(f"labels: {n} values in 0–{self.num_classes - 1}")
        return labels.to(self.device)


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    return (images.float().clamp(-1, 1).cpu() + 1) / 2


def _to_signed(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """[0, 1] floats or uint8 → the networks' [-1, 1]."""
    images = torch.as_tensor(images)
    if images.dtype == torch.uint8:
        images = images.float() / 255
    return images.float().to(device) * 2 - 1


def load(path: str | Path, device: str | torch.device = "cpu", weights: str | None = None) -> Model:
    """A trained model from a checkpoint file or a run folder (its newest usable checkpoint)."""
    device = torch.device(device)
    return Model(inference.load_trained(path, device), weights, device)
