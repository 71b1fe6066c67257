"""DCGAN and its class-conditional variant (cDCGAN) with the non-saturating loss.

D step: D learns real → ``loss.real_label`` (one-sided smoothing), G(z) → 0.
G step: G learns to make D call its samples real, back-propagating through a frozen D.
"""

from __future__ import annotations

import torch
from torch import nn

from distgan import losses
from distgan.models.dcgan import DCGANDiscriminator, DCGANGenerator
from distgan.recipes.base import Batch, Logs, ModelSection, Nets, Phase, Recipe, StepContext


class DCGANConfig(ModelSection):
    z_dim: int = 100
    g_width: int = 64
    d_width: int = 64
    conditional: bool = False
    embed_dim: int = 50


class DCGAN(Recipe):
    ModelConfig = DCGANConfig

    def _classes(self) -> int:
        if not self.hp.conditional:
            return 0
        if self.data.num_classes < 2:
            from distgan.config import ConfigError

            raise ConfigError(
                "model.conditional=true needs labelled shards (class_names in manifest.json)"
            )
        return self.data.num_classes

    def build_models(self) -> dict[str, nn.Module]:
        res, ch, classes = self.data.resolution, self.data.channels, self._classes()
        return {
            "G": DCGANGenerator(
                z_dim=self.hp.z_dim,
                resolution=res,
                channels=ch,
                width=self.hp.g_width,
                num_classes=classes,
                embed_dim=self.hp.embed_dim,
            ),
            "D": DCGANDiscriminator(
                resolution=res, channels=ch, width=self.hp.d_width, num_classes=classes
            ),
        }

    @property
    def phases(self) -> list[Phase]:
        return [Phase("D", trains="D", loss=self.d_loss), Phase("G", trains="G", loss=self.g_loss)]

    def _fake(self, G: nn.Module, batch: Batch, ctx: StepContext) -> torch.Tensor:
        z = ctx.randn(batch["image"].shape[0], self.hp.z_dim)
        return G(z, batch.get("label") if self.hp.conditional else None)

    def d_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        label = batch.get("label") if self.hp.conditional else None
        with torch.no_grad():
            fake = self._fake(nets.G, batch, ctx)
        real_logits = nets.D(batch["image"], label)
        fake_logits = nets.D(fake, label)
        loss = losses.d_nonsaturating(real_logits, fake_logits, self.cfg.loss.real_label)
        logs = {
            "loss/D": loss.detach(),
            **losses.accuracy(real_logits.detach(), fake_logits.detach()),
        }
        return loss, logs

    def g_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        label = batch.get("label") if self.hp.conditional else None
        fake_logits = nets.D(self._fake(nets.G, batch, ctx), label)
        loss = losses.g_nonsaturating(fake_logits)
        return loss, {"loss/G": loss.detach()}

    def generate(
        self, G: nn.Module, n: int, generator: torch.Generator, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        device = next(G.parameters()).device
        z = torch.randn(n, self.hp.z_dim, device=device, generator=generator)
        if self.hp.conditional and labels is None:
            labels = torch.randint(self.data.num_classes, (n,), device=device, generator=generator)
        return G(z, labels if self.hp.conditional else None)


RECIPE = DCGAN
