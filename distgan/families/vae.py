"""The variational autoencoder (Kingma & Welling, 2014) as in "Generative Deep Learning" ch. 3.

One phase trains the encoder ``E`` and the decoder ``G`` together: x (in [0, 1]) → (μ, log σ²)
→ z = μ + σ·ε (the reparameterisation, with the log-variance) → x̂ = G(z), and the loss per
image is ``loss.reconstruction_weight`` · mean-over-pixels (x − x̂)² + ``loss.kl_weight`` ·
KL(q(z|x) ‖ N(0, I)) summed over z (the book's 10,000 · MSE + KL), averaged over the batch.

Sampling decodes z ~ N(0, I); ``encode`` gives μ and log σ² for the latent tools (distgan
latent). The preview shows held-out images, their reconstructions (from μ), then samples.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from torch import nn

from distgan.errors import ConfigError
from distgan.families.base import Batch, Family, Logs, Nets, Phase, Section, StepContext
from distgan.models.vae import VAEDecoder, VAEEncoder


class VAEConfig(Section):
    z_dim: int = Field(200, ge=1)
    encoder: list[int] = Field([32, 64, 64, 64], description="filters of the stride-2 convs")
    decoder: list[int] = Field([64, 64, 32], description="hidden transposed convs (one fewer)")
    batchnorm: bool = True
    dropout: float = Field(0.25, ge=0, lt=1)
    slope: float = Field(0.3, ge=0, description="LeakyReLU slope (Keras' default 0.3)")

    @model_validator(mode="after")
    def _mirrored(self) -> VAEConfig:
        if len(self.decoder) != len(self.encoder) - 1 or not self.encoder:
            raise ValueError(
                f"model.decoder needs one entry fewer than model.encoder (the last transposed "
                f"conv makes the image): {len(self.encoder)} encoder, {len(self.decoder)} decoder"
            )
        return self


class VAELossConfig(Section):
    reconstruction_weight: float = Field(10_000.0, gt=0, description="× mean squared error")
    kl_weight: float = Field(1.0, ge=0, description="× KL divergence summed over z")


def kl_divergence(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per sample, summed over the latent dimensions."""
    return -0.5 * (1 + log_var - mu.square() - log_var.exp()).sum(1)


class VAE(Family):
    networks = ("E", "G")
    inference = ("E", "G")
    needs = frozenset({"preview_batch"})
    ModelConfig = VAEConfig
    LossConfig = VAELossConfig

    def build_networks(self) -> dict[str, nn.Module]:
        hp, data = self.hp, self.data
        common = dict(
            resolution=data.resolution,
            channels=data.channels,
            z_dim=hp.z_dim,
            batchnorm=hp.batchnorm,
            dropout=hp.dropout,
            slope=hp.slope,
        )
        try:
            return {
                "E": VAEEncoder(filters=hp.encoder, **common),
                "G": VAEDecoder(filters=hp.decoder, start=hp.encoder[-1], **common),
            }
        except ValueError as err:
            raise ConfigError(f"{err} (recipe {self.facts.recipe})") from None

    @property
    def phases(self) -> list[Phase]:
        return [Phase("VAE", trains=("E", "G"), loss=self.loss)]

    def loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        x = (batch["image"] + 1) / 2  # the book's images in [0, 1]
        mu, log_var = ctx.compiled(nets.E)(x)
        mu, log_var = mu.float(), log_var.float()
        z = mu + (0.5 * log_var).exp() * ctx.randn(*mu.shape)
        reconstruction = ctx.compiled(nets.G)(z).float()
        mse = (reconstruction - x.float()).square().flatten(1).mean(1)
        kl = kl_divergence(mu, log_var)
        cfg = self.loss_cfg
        loss = (cfg.reconstruction_weight * mse + cfg.kl_weight * kl).mean()
        logs = {"loss/VAE": loss.detach(), "loss/mse": mse.mean().detach()}
        return loss, {**logs, "loss/kl": kl.mean().detach()}

    # --------------------------------------------------------------------- latent space

    @property
    def latent_dim(self) -> int:
        return self.hp.z_dim

    def decode(
        self, nets: Nets, z: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        if labels is not None:
            raise ConfigError(f"recipe {self.facts.recipe} (a VAE) is not class-conditional")
        return nets.G(z) * 2 - 1

    def encode(self, nets: Nets, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return nets.E((images + 1) / 2)

    def preview(
        self, nets: Nets, batch: Batch | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, int]:
        """Row 1: held-out images; row 2: their reconstructions (from μ); then samples."""
        per_row = self.facts.samples_per_class
        real = batch["image"][:per_row]
        rows = [real, self.decode(nets, self.encode(nets, real)[0])]
        samples = self.sample(nets, per_row * max(per_row - 2, 1), generator)
        return torch.cat([r.float() for r in [*rows, samples]]), per_row


FAMILY = VAE
