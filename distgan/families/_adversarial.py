"""The two-player schedule shared by the GAN families (not a family itself).

Each engine step consumes one batch and runs:

* phase ``D`` (every step): D learns to tell real from G(z) under ``loss.adversarial``, plus the
  gradient penalty (``loss.gp_weight``) and/or R1 (``loss.r1_gamma``) on lazy-regularization
  steps (``step % loss.reg_every == 0``, gain ``reg_every``), see distgan/penalties.py;
* phase ``G`` (every ``loss.n_critic``-th step): G learns to fool a frozen D; with
  ``n_critic = 1`` it back-propagates through the D phase's fakes (one G forward per step).

So ``loss.n_critic = 5`` gives five critic updates, each on a fresh real batch, per G update
(Gulrajani et al.'s Algorithm 1), and ``train.steps`` counts D steps. A family only builds its
networks (``networks()``) and its ``model:`` schema (a :class:`GANConfig`).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from distgan import losses, penalties
from distgan.errors import ConfigError
from distgan.families.base import Batch, Family, Logs, Nets, Phase, Section, StepContext
from distgan.schedules import linear_decay


class GANConfig(Section):
    z_dim: int = Field(100, ge=1)


class AdversarialLossConfig(Section):
    """The two-player loss section: adversarial loss, regularizers, schedule and "GAN hacks"
    (see distgan/losses.py and distgan/penalties.py)."""

    adversarial: Literal["minimax", "nonsaturating", "hinge", "wasserstein", "lsgan"] = Field(
        "nonsaturating", description="adversarial loss of D and G"
    )
    real_label: float = Field(
        1.0, gt=0, le=1, description="D's target for real images: one-sided smoothing, e.g. 0.9"
    )
    label_noise: float = Field(
        0.0, ge=0, lt=0.5, description="D's targets drawn from [real_label − a, real_label], [0, a]"
    )
    label_flip: float = Field(
        0.0, ge=0, lt=0.5, description="fraction of samples whose real/fake targets D sees swapped"
    )
    instance_noise: float = Field(
        0.0, ge=0, description="std of Gaussian noise on D's inputs, annealed linearly to 0"
    )
    gp_weight: float = Field(0.0, ge=0, description="WGAN-GP λ: λ·E[(‖∇D(x̂)‖ − 1)²]")
    r1_gamma: float = Field(0.0, ge=0, description="R1 γ: γ/2·E[‖∇D(x)‖²] on real images")
    reg_every: int = Field(
        1, ge=1, description="lazy regularization: the penalty on every k-th step, with gain k"
    )
    n_critic: int = Field(1, ge=1, description="D steps per G step (one D step per train step)")

    @model_validator(mode="after")
    def _targets_need_a_target_loss(self) -> AdversarialLossConfig:
        hacks = self.real_label != 1.0 or self.label_noise or self.label_flip
        if hacks and self.adversarial in ("hinge", "wasserstein"):
            raise ValueError(
                f"loss.real_label/label_noise/label_flip need a loss with targets (minimax, "
                f"nonsaturating, lsgan), not loss.adversarial={self.adversarial}"
            )
        return self


class AdversarialFamily(Family):
    networks = ("G", "D")
    ema = ("G",)
    inference = ("G",)
    augments = ("D",)  # real and fake alike, in both phases
    discriminators = ("D",)
    ModelConfig = GANConfig
    LossConfig = AdversarialLossConfig

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.adversarial = losses.ADVERSARIAL[self.loss_cfg.adversarial]

    def build_networks(self) -> dict[str, nn.Module]:
        try:
            return self.networks_for_data()
        except ValueError as err:  # e.g. channel lists that do not fit the data's resolution
            raise ConfigError(
                f"{err} (recipe {self.facts.recipe}, data {self.data.resolution} px)"
            ) from None

    def networks_for_data(self) -> dict[str, nn.Module]:
        """``{"G": …, "D": …}`` for this family and ``self.data``."""
        raise NotImplementedError

    # --------------------------------------------------------------------- helpers

    def classes_of_data(self) -> int:
        """The shards' classes, for a family whose ``model.conditional`` is true (its
        ``num_classes``)."""
        if self.data.num_classes < 2:
            raise ConfigError(
                "model.conditional=true needs labelled shards (class_names in manifest.json)"
            )
        return self.data.num_classes

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def label(self, batch: Batch) -> torch.Tensor | None:
        return batch.get("label") if self.conditional else None

    def fake(
        self, G: nn.Module, batch: Batch, ctx: StepContext, z: torch.Tensor | None = None
    ) -> torch.Tensor:
        if z is None:
            z = ctx.randn(batch["image"].shape[0], self.latent_dim)
        if self.reuses_fake:  # the G phase of this step uses the same z (StepContext.prepares)
            ctx.scratch["z"] = z
        return ctx.compiled(G)(z, self.label(batch))

    def d_input(self, images: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """What D sees of real or generated images: ``loss.instance_noise`` (annealed linearly
        to 0 over the run), then the augmentation stage (``aug:``)."""
        std = self.loss_cfg.instance_noise * linear_decay(ctx.step, self.facts.steps)
        return ctx.augment(losses.instance_noise(images, std, ctx.randn))

    # --------------------------------------------------------------------- the schedule

    @property
    def phases(self) -> list[Phase]:
        return [
            Phase("D", trains=("D",), loss=self.d_loss, prepares=("G",) * self.reuses_fake),
            Phase("G", trains=("G",), loss=self.g_loss, every=self.loss_cfg.n_critic),
        ]

    @property
    def reuses_fake(self) -> bool:
        """With a G phase on every step, G runs once per step: the D phase's fakes keep their
        graph and the G phase back-propagates through them (as PyTorch's DCGAN example does)."""
        return self.loss_cfg.n_critic == 1

    def d_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        cfg, label = self.loss_cfg, self.label(batch)
        if ctx.prepares("G"):
            ctx.scratch["fake"] = self.fake(nets.G, batch, ctx)
            fake = ctx.scratch["fake"].detach()
        else:
            with torch.no_grad():
                fake = self.fake(nets.G, batch, ctx)
        gp_gain = penalties.lazy_gain(ctx.step, cfg.reg_every) * cfg.gp_weight
        r1_gain = penalties.lazy_gain(ctx.step, cfg.reg_every) * cfg.r1_gamma / 2
        real = batch["image"]
        if r1_gain:  # R1 differentiates D's pass on the reals (before augmentation, as ADA's
            real = real.detach().requires_grad_(True)  # code does): it must stay eager
        real_in, fake_in = self.d_input(real, ctx), self.d_input(fake, ctx)
        real_out = (nets.D if r1_gain else ctx.compiled(nets.D))(real_in, label)
        fake_out = ctx.compiled(nets.D)(fake_in, label)
        ctx.augment_feedback(real_out.detach())

        targets = (None, None)
        if self.adversarial.uses_targets:
            n = real_out.shape[0]
            targets = losses.d_targets(
                n, real_out.device, ctx.rand, cfg.real_label, cfg.label_noise, cfg.label_flip
            )
        loss = self.adversarial.d(real_out, fake_out, targets)
        logs: Logs = {}
        if self.adversarial.logits:
            logs.update(losses.accuracy(real_out.detach(), fake_out.detach()))
        else:
            logs["D/real_minus_fake"] = (real_out.float().mean() - fake_out.float().mean()).detach()

        # Penalties go through nets.D itself: DDP-wrapped, never compiled (see penalties.py).
        if gp_gain:  # on interpolates of the images D saw (augmented, if aug: is set)
            eps = ctx.rand(real.shape[0])
            gp, grad_norm = penalties.gradient_penalty(
                lambda x: nets.D(x, label), real_in.detach(), fake_in.detach(), eps, ctx.scaler
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
        fake = ctx.scratch.pop("fake", None)
        if fake is None:  # not prepared: G runs here, on the D phase's z where it kept one
            fake = self.fake(nets.G, batch, ctx, ctx.scratch.pop("z", None))
        loss = self.adversarial.g(ctx.compiled(nets.D)(self.d_input(fake, ctx), self.label(batch)))
        return loss, {"loss/G": loss.detach()}

    # --------------------------------------------------------------------- outputs

    def sample(
        self, nets: Nets, n: int, generator: torch.Generator, batch: Batch | None = None
    ) -> torch.Tensor:
        """``n`` images from fresh noise; conditional models use ``batch["label"]`` if given,
        else random labels."""
        device = generator.device
        z = torch.randn(n, self.latent_dim, device=device, generator=generator)
        labels = None
        if self.conditional:
            labels = (batch or {}).get("label")
            if labels is None:
                labels = torch.randint(
                    self.data.num_classes, (n,), device=device, generator=generator
                )
            labels = labels[:n].to(device)
        return self.decode(nets, z, labels)

    @property
    def latent_dim(self) -> int:
        return self.hp.z_dim

    def decode(
        self, nets: Nets, z: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.conditional and labels is None:
            raise ConfigError(f"recipe {self.facts.recipe} is class-conditional: give labels")
        return nets.G(z, labels if self.conditional else None)

    def preview(
        self, nets: Nets, batch: Batch | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, int]:
        """Fixed noise; one row per class for conditional models."""
        per_row = self.facts.samples_per_class
        classes = self.num_classes
        if classes:
            labels = torch.arange(classes, device=generator.device).repeat_interleave(per_row)
            return self.sample(nets, len(labels), generator, {"label": labels}), per_row
        return self.sample(nets, per_row * per_row, generator), per_row
