"""The two-player schedule shared by the GAN families (not a family itself).

Each engine step consumes one batch and runs:

* phase ``D`` (every step): D learns to tell real from G(z) under ``loss.adversarial``, plus the
  gradient penalty (``loss.gp_weight``) and/or R1 (``loss.r1_gamma``) on lazy-regularization
  steps (``step % loss.reg_every == 0``, gain ``reg_every``), see distgan/penalties.py;
* phase ``G`` (every ``loss.n_critic``-th step): G learns to fool a frozen D.

So ``loss.n_critic = 5`` gives five critic updates, each on a fresh real batch, per G update
(Gulrajani et al.'s Algorithm 1), and ``train.steps`` counts D steps. A family only builds its
networks (``build_models``) and its ``model:`` schema (a :class:`GANConfig`).
"""

from __future__ import annotations

import torch
from torch import nn

from distgan import losses, penalties
from distgan.config import ConfigError
from distgan.recipes.base import Batch, Logs, ModelSection, Nets, Phase, Recipe, StepContext


class GANConfig(ModelSection):
    z_dim: int = 100


class AdversarialRecipe(Recipe):
    ModelConfig = GANConfig

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.adversarial = losses.ADVERSARIAL[self.cfg.loss.adversarial]

    def build_models(self) -> dict[str, nn.Module]:
        try:
            return self.networks()
        except ValueError as err:  # e.g. channel lists that do not fit the data's resolution
            raise ConfigError(
                f"{err} (recipe {self.cfg.name}, data {self.data.resolution} px)"
            ) from None

    def networks(self) -> dict[str, nn.Module]:
        """Named networks ``{"G": …, "D": …}`` for this family."""
        raise NotImplementedError

    # --------------------------------------------------------------------- helpers

    @property
    def conditional(self) -> bool:
        return bool(getattr(self.hp, "conditional", False))

    def num_classes(self) -> int:
        """Classes the networks are conditioned on (0: unconditional)."""
        if not self.conditional:
            return 0
        if self.data.num_classes < 2:
            raise ConfigError(
                "model.conditional=true needs labelled shards (class_names in manifest.json)"
            )
        return self.data.num_classes

    def label(self, batch: Batch) -> torch.Tensor | None:
        return batch.get("label") if self.conditional else None

    def fake(self, G: nn.Module, batch: Batch, ctx: StepContext) -> torch.Tensor:
        z = ctx.randn(batch["image"].shape[0], self.hp.z_dim)
        return ctx.compiled(G)(z, self.label(batch))

    def instance_noise(self, images: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Gaussian noise on D's inputs (Sønderby et al., 2017), annealed linearly to 0."""
        std = self.cfg.loss.instance_noise * max(0.0, 1.0 - ctx.step / self.cfg.train.steps)
        if std == 0:
            return images
        noise = torch.randn(images.shape, device=images.device, generator=ctx.generator)
        return images + std * noise.to(images.dtype)

    # --------------------------------------------------------------------- the schedule

    @property
    def phases(self) -> list[Phase]:
        return [
            Phase("D", trains="D", loss=self.d_loss),
            Phase("G", trains="G", loss=self.g_loss, every=self.cfg.loss.n_critic),
        ]

    def d_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        cfg, label = self.cfg.loss, self.label(batch)
        with torch.no_grad():
            fake = self.fake(nets.G, batch, ctx)
        real = self.instance_noise(batch["image"], ctx)
        fake = self.instance_noise(fake, ctx)
        gp_gain = penalties.lazy_gain(ctx.step, cfg.reg_every) * cfg.gp_weight
        r1_gain = penalties.lazy_gain(ctx.step, cfg.reg_every) * cfg.r1_gamma / 2
        if r1_gain:  # R1 differentiates D's pass on the reals: it must stay eager
            real = real.detach().requires_grad_(True)
        real_out = (nets.D if r1_gain else ctx.compiled(nets.D))(real, label)
        fake_out = ctx.compiled(nets.D)(fake, label)

        targets = (None, None)
        if self.adversarial.uses_targets:
            n = real_out.shape[0]
            targets = losses.d_targets(
                n, real_out.device, ctx.generator, cfg.real_label, cfg.label_noise, cfg.label_flip
            )
        loss = self.adversarial.d(real_out, fake_out, targets)
        logs: Logs = {}
        if self.adversarial.logits:
            logs.update(losses.accuracy(real_out.detach(), fake_out.detach()))
        else:
            logs["D/real_minus_fake"] = (real_out.float().mean() - fake_out.float().mean()).detach()

        # Penalties go through nets.D itself: DDP-wrapped, never compiled (see penalties.py).
        if gp_gain:
            eps = ctx.rand(real.shape[0])
            gp, grad_norm = penalties.gradient_penalty(
                lambda x: nets.D(x, label), real, fake, eps, ctx.scaler
            )
            loss = loss + gp_gain * gp
            logs.update({"D/gp": gp.detach(), "D/grad_norm": grad_norm})
        if r1_gain:
            r1 = penalties.r1_penalty(real_out, real, ctx.scaler)
            loss = loss + r1_gain * r1
            logs["D/r1"] = r1.detach()
        logs["loss/D"] = loss.detach()  # adversarial + penalties
        return loss, logs

    def g_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        fake = self.instance_noise(self.fake(nets.G, batch, ctx), ctx)
        loss = self.adversarial.g(ctx.compiled(nets.D)(fake, self.label(batch)))
        return loss, {"loss/G": loss.detach()}

    def generate(
        self, G: nn.Module, n: int, generator: torch.Generator, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        device = next(G.parameters()).device
        z = torch.randn(n, self.hp.z_dim, device=device, generator=generator)
        if self.conditional and labels is None:
            labels = torch.randint(self.data.num_classes, (n,), device=device, generator=generator)
        return G(z, labels if self.conditional else None)
