"""Paired image-to-image translation (not a family itself): a generator maps an input to an
output, a PatchGAN discriminator judges (input, output) pairs, and an L1 term ties the output to
the target (Isola et al., 2017). pix2pix (A → B) and the colorization GAN (L → ab) are this
scheme with their own networks and their own split of a batch into input and target.

Each step: phase ``D`` (the conditional D on real and generated pairs, non-saturating loss with
``loss.real_label`` one-sided smoothing, times ``loss.d_weight``), then phase ``G`` (fool D +
``loss.l1_weight`` × L1 to the target), back-propagating through the D phase's output of G (one
G forward per step, as the reference implementation's ``forward()`` does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from distgan import losses
from distgan.errors import ConfigError
from distgan.families.base import Batch, Family, Logs, Nets, Phase, Section, StepContext


class PairedLossConfig(Section):
    l1_weight: float = Field(100.0, ge=0, description="λ of the L1 term")
    real_label: float = Field(
        1.0, gt=0, le=1, description="D's target for real pairs (0.9: smoothing)"
    )
    d_weight: float = Field(1.0, gt=0, description="scale of D's loss (pix2pix: 0.5)")


class PairedTranslation(Family):
    networks = ("G", "D")
    discriminators = ("D",)
    inference = ("G",)
    needs = frozenset({"sample_batch", "preview_batch"})
    LossConfig = PairedLossConfig

    def split(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, target) network tensors of a batch."""
        raise NotImplementedError

    def to_image(self, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """The RGB image (in [-1, 1]) of G's ``outputs`` for ``inputs``."""
        raise NotImplementedError

    @property
    def phases(self) -> list[Phase]:
        return [
            Phase("D", trains=("D",), loss=self.d_loss, prepares=("G",)),
            Phase("G", trains=("G",), loss=self.g_loss),
        ]

    def d_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        inputs, target = self.split(batch)
        if ctx.prepares("G"):  # G's one pass of the step: phase G reuses it
            ctx.scratch["fake"] = ctx.compiled(nets.G)(inputs)
            fake = ctx.scratch["fake"].detach()
        else:
            with torch.no_grad():
                fake = ctx.compiled(nets.G)(inputs)
        real_out = ctx.compiled(nets.D)(torch.cat([inputs, target], 1))
        fake_out = ctx.compiled(nets.D)(torch.cat([inputs, fake], 1))
        targets = losses.d_targets(
            inputs.shape[0], inputs.device, real_label=self.loss_cfg.real_label
        )
        loss = self.loss_cfg.d_weight * losses.d_cross_entropy(real_out, fake_out, targets)
        logs = losses.accuracy(real_out.detach(), fake_out.detach())
        return loss, {**logs, "loss/D": loss.detach()}

    def g_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        inputs, target = self.split(batch)
        fake = ctx.scratch.pop("fake", None)
        if fake is None:  # not prepared (gradient accumulation): G runs again
            fake = ctx.compiled(nets.G)(inputs)
        adversarial = losses.g_nonsaturating(ctx.compiled(nets.D)(torch.cat([inputs, fake], 1)))
        l1 = F.l1_loss(fake.float(), target.float())
        loss = adversarial + self.loss_cfg.l1_weight * l1
        logs = {"loss/G": adversarial.detach(), "loss/L1": l1.detach()}
        extra = self.output_penalty(fake)
        if extra is not None:
            loss = loss + extra[0]
            logs.update(extra[1])
        return loss, logs

    def output_penalty(self, outputs: torch.Tensor) -> tuple[torch.Tensor, Logs] | None:
        """An extra term of G's loss on its outputs alone (none here; see colorize)."""
        return None

    def sample(
        self, nets: Nets, n: int, generator: torch.Generator, batch: Batch | None = None
    ) -> torch.Tensor:
        if batch is None:
            raise ValueError(f"family '{self.facts.family}' translates data: give it a batch")
        inputs, _ = self.split(batch)
        inputs = inputs[:n]
        return self.to_image(inputs, nets.G(inputs))

    def translate(self, nets: Nets, images: torch.Tensor, direction: str = "AtoB") -> torch.Tensor:
        if direction != "AtoB":
            raise ConfigError(
                f"--direction {direction}: a {self.facts.family} model translates A→B only (train "
                "one on shards converted with --direction BtoA for the other way)"
            )
        return self.to_image(images, nets.G(images))

    def reference(self, batch: Batch) -> torch.Tensor:
        inputs, target = self.split(batch)
        return self.to_image(inputs, target)

    def preview(
        self, nets: Nets, batch: Batch | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, int]:
        """Rows: input | output | target, one column per held-out sample."""
        inputs, target = self.split(batch)
        shown = [self.input_image(inputs), self.to_image(inputs, nets.G(inputs))]
        return torch.cat([*shown, self.to_image(inputs, target)]), inputs.shape[0]

    def input_image(self, inputs: torch.Tensor) -> torch.Tensor:
        """The input as an RGB image in [-1, 1] (for previews)."""
        return inputs if inputs.shape[1] == 3 else inputs.expand(-1, 3, -1, -1)
