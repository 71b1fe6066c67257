"""StyleGAN2 (Karras et al. 2020) as in NVlabs/stylegan2-ada-pytorch, in plain PyTorch
(networks: distgan/models/stylegan2.py, stylegan2_d.py; layers: stylegan2_ops.py).

The objective is the reference's ``StyleGAN2Loss``, as four phases:

* ``D``: the non-saturating logistic loss, softplus(D(G(z))) + softplus(−D(x)), on fakes whose
  graph the ``G`` phase reuses (one G forward per step);
* ``G``: softplus(−D(G(z)));
* ``G_pl`` every ``loss.pl_every`` (4) steps: path-length regularization on ``pl_batch_shrink``
  (2)-times fewer samples, weight ``pl_weight`` (2) × the interval: (‖Jᵀy‖ − a)², Jᵀy = ∂(img·y)/∂ws
  for y ~ N(0, I)/√(HW), a = ``pl_mean``;
* ``D_r1`` every ``loss.r1_every`` (16) steps: R1, γ/2·‖∇D(x)‖² × the interval.

The two regularization phases are separate optimizer steps with the lazy-regularization
correction of Adam's lr and betas (``Phase.lazy_correction``). ``pl_mean`` is run-wide state: the
penalty of a step uses the value all ranks share, and after each ``G_pl`` step it moves towards
the mean path length of all ranks' samples (decay ``pl_decay``), so 2 processes compute the
penalty of 1 process on the global batch. (The reference moves its per-rank ``pl_mean`` first
and penalises against the moved value: a 1 % difference in the centre of the first penalties.)

Style mixing (``loss.style_mixing``, the reference's 0.9): with that probability per batch, the
ws from a random layer on come from a second z. Noise inputs, z, mixing and the penalty's y are
drawn through the step context (seeded, exact on resume, independent of micro-batching).
``w_avg`` (the truncation centre, per class in the conditional model) is a buffer of G that each
rank tracks from its own batches, as in the reference; checkpoints and the EMA copy keep rank
0's. Truncation: :meth:`decode_truncated`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from distgan import losses, penalties
from distgan.families._adversarial import AdversarialFamily
from distgan.families.base import Batch, Logs, Nets, Phase, Section, StepContext
from distgan.models.stylegan2 import StyleGAN2Generator
from distgan.models.stylegan2_d import StyleGAN2Discriminator
from distgan.models.stylegan2_ops import at_least_fp32 as fp32


class StyleGAN2Config(Section):
    z_dim: int = Field(512, ge=1)
    w_dim: int = Field(512, ge=1)
    map_layers: int = Field(8, ge=1, description="G's mapping depth (cifar: 2)")
    channel_base: int = Field(32768, ge=1, description="channels at resolution r: base / r …")
    channel_max: int = Field(512, ge=1, description="… at most this (the reference's fmaps)")
    d_architecture: Literal["resnet", "orig"] = "resnet"
    d_map_layers: int = Field(8, ge=1, description="depth of D's label mapping (conditional)")
    mbstd_group: int = Field(4, ge=1, description="minibatch-stddev group (divides the batch)")
    mbstd_channels: int = Field(1, ge=0)
    conv_clamp: float | None = Field(256, gt=0, description="activation bound (fp16 safety)")
    mapping_lr: float = Field(0.01, gt=0, description="lr multiplier of G's and D's mappings")
    conditional: bool = False


class StyleGAN2LossConfig(Section):
    adversarial: Literal["nonsaturating"] = Field(
        "nonsaturating", description="the logistic non-saturating loss (the only one)"
    )
    r1_gamma: float = Field(10.0, ge=0, description="R1 γ: γ/2·E‖∇D(x)‖² on reals")
    r1_every: int = Field(16, ge=1, description="lazy R1: a D step of its own every k steps")
    pl_weight: float = Field(2.0, ge=0, description="path-length weight (0: off)")
    pl_every: int = Field(4, ge=1, description="lazy path length: a G step every k steps")
    pl_batch_shrink: int = Field(2, ge=1, description="path length on batch / this samples")
    pl_decay: float = Field(0.01, gt=0, le=1, description="pl_mean's moving-average rate")
    style_mixing: float = Field(0.9, ge=0, le=1, description="probability of mixing 2 z")


class StyleGAN2(AdversarialFamily):
    ModelConfig = StyleGAN2Config
    LossConfig = StyleGAN2LossConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pl_mean = torch.zeros((), dtype=torch.float64)

    @property
    def num_classes(self) -> int:
        return self.classes_of_data() if self.hp.conditional else 0

    def networks_for_data(self) -> dict[str, nn.Module]:
        hp, data, classes = self.hp, self.data, self.num_classes
        batch, group = self.facts.batch_size, hp.mbstd_group
        if hp.mbstd_channels and batch > group and batch % group:
            raise ValueError(  # (one line, through build_networks)
                f"model.mbstd_group={group} does not divide train.batch_size={batch} (D's "
                "minibatch-stddev groups): pick a batch size that is a multiple of it, or a "
                "divisor of the batch as model.mbstd_group"
            )
        widths = dict(
            channel_base=hp.channel_base, channel_max=hp.channel_max, mapping_lr=hp.mapping_lr
        )
        return {
            "G": StyleGAN2Generator(
                hp.z_dim,
                hp.w_dim,
                data.resolution,
                data.channels,
                classes,
                hp.map_layers,
                conv_clamp=hp.conv_clamp,
                **widths,
            ),
            "D": StyleGAN2Discriminator(
                data.resolution,
                data.channels,
                classes,
                hp.d_architecture,
                mbstd_group=hp.mbstd_group,
                mbstd_channels=hp.mbstd_channels,
                map_layers=hp.d_map_layers,
                conv_clamp=hp.conv_clamp,
                **widths,
            ),
        }

    # --------------------------------------------------------------------- the schedule

    @property
    def phases(self) -> list[Phase]:
        cfg = self.loss_cfg
        phases = [
            Phase("D", trains=("D",), loss=self.d_loss, prepares=("G",)),
            Phase("G", trains=("G",), loss=self.g_loss),
        ]
        if cfg.pl_weight:
            phases.append(
                Phase("G_pl", ("G",), self.pl_loss, every=cfg.pl_every, lazy_correction=True)
            )
        if cfg.r1_gamma:
            phases.append(
                Phase("D_r1", ("D",), self.r1_loss, every=cfg.r1_every, lazy_correction=True)
            )
        return phases

    def draw_inputs(self, nets: Nets, n: int, ctx: StepContext) -> dict[str, Any]:
        """G's random inputs for n samples: z, one noise map per layer, style mixing."""
        G = nets.raw("G")
        inputs: dict[str, Any] = {"z": ctx.randn(n, self.hp.z_dim)}
        inputs["noise"] = [ctx.randn(n, 1, side, side) for side in G.synthesis.noise_shapes()]
        if self.loss_cfg.style_mixing:  # one decision and cutoff per batch, as the reference
            z2, mixes = ctx.randn(n, self.hp.z_dim), ctx.rand() < self.loss_cfg.style_mixing
            inputs["mix"] = (z2, torch.where(mixes, ctx.randint(G.num_ws - 1) + 1, G.num_ws))
        return inputs

    def generate(
        self, nets: Nets, inputs: dict[str, Any], labels: torch.Tensor | None, **kwargs: Any
    ):
        """G's training pass (w_avg tracked) on ``inputs`` from :meth:`draw_inputs`."""
        return nets.G(inputs["z"], labels, inputs["noise"], inputs.get("mix"), **kwargs)

    def d_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        label, real = self.label(batch), batch["image"]
        inputs = self.draw_inputs(nets, real.shape[0], ctx)
        if ctx.prepares("G"):  # the G phase back-propagates through these fakes
            fake = ctx.scratch["fake"] = self.generate(nets, inputs, label, update_w_avg=True)
        else:  # under accumulation the G phase runs G again on the same draws
            ctx.scratch["inputs"] = inputs
            with torch.no_grad():
                fake = self.generate(nets, inputs, label, update_w_avg=True)
        D = ctx.compiled(nets.D)
        real_out = D(ctx.augment(real), label)
        fake_out = D(ctx.augment(fake.detach()), label)
        ctx.augment_feedback(real_out.detach())
        loss = F.softplus(fp32(fake_out)).mean() + F.softplus(-fp32(real_out)).mean()
        logs = losses.accuracy(real_out.detach(), fake_out.detach())
        logs["loss/D"] = loss.detach()
        return loss, logs

    def g_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        label = self.label(batch)
        fake = ctx.scratch.pop("fake", None)
        if fake is None:
            fake = self.generate(nets, ctx.scratch.pop("inputs"), label)
        out = ctx.compiled(nets.D)(ctx.augment(fake), label)
        loss = F.softplus(-fp32(out)).mean()
        return loss, {"loss/G": loss.detach()}

    def pl_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        cfg = self.loss_cfg
        n = max(1, batch["image"].shape[0] // cfg.pl_batch_shrink)
        label = self.label(batch)
        label = None if label is None else label[:n]
        inputs = self.draw_inputs(nets, n, ctx)
        img, ws = self.generate(nets, inputs, label, return_ws=True, update_w_avg=True)
        y = ctx.randn(*img.shape) / math.sqrt(img.shape[2] * img.shape[3])
        with torch.autocast(img.device.type, enabled=False):
            (grad,) = torch.autograd.grad((fp32(img) * y).sum(), ws, create_graph=True)
            lengths = fp32(grad).square().sum(2).mean(1).sqrt()
            penalty = (lengths - self.pl_mean.to(lengths)).square().mean()
        ctx.tally("pl_sum", lengths.detach().sum())
        ctx.tally("pl_count", float(n))
        # × 0: every parameter of G takes part in the backward (DDP expects them all)
        loss = penalty * (cfg.pl_weight * cfg.pl_every) + img[:, 0, 0, 0].sum() * 0
        return loss, {"G/pl_penalty": penalty.detach(), "G/pl_length": lengths.detach().mean()}

    def r1_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        cfg, label = self.loss_cfg, self.label(batch)
        real = batch["image"].detach().requires_grad_(True)  # before augmentation, as ADA's code
        out = nets.D(ctx.augment(real), label)  # the wrapped, uncompiled D (penalties.py)
        r1 = penalties.r1_penalty(out, real, ctx.scaler)
        loss = r1 * (cfg.r1_gamma / 2 * cfg.r1_every) + fp32(out).sum() * 0
        return loss, {"D/r1": r1.detach()}

    # --------------------------------------------------------------------- run-wide state

    @property
    def run_state_every(self) -> int:  # type: ignore[override]
        return self.loss_cfg.pl_every if self.loss_cfg.pl_weight else 0

    def update_run_state(self, totals: dict[str, torch.Tensor], step: int) -> Logs | None:
        if not totals.get("pl_count"):
            return None
        mean = (totals["pl_sum"] / totals["pl_count"]).cpu()
        self.pl_mean = torch.lerp(self.pl_mean, mean, self.loss_cfg.pl_decay)
        return {"G/pl_mean": self.pl_mean.clone()}

    def run_state_dict(self) -> dict[str, Any]:
        return {"pl_mean": self.pl_mean.clone()}

    def load_run_state_dict(self, state: dict[str, Any]) -> None:
        if "pl_mean" in state:
            self.pl_mean = torch.as_tensor(state["pl_mean"], dtype=torch.float64).cpu()

    # --------------------------------------------------------------------- outputs

    def decode_truncated(
        self, nets: Nets, z: torch.Tensor, labels: torch.Tensor | None, truncation: float
    ) -> torch.Tensor:
        """Images from w = lerp(w_avg, w, ψ) (``torch.lerp``: ψ = 1 is w exactly), w_avg of the
        sample's class in the conditional model, with the constant noise inputs."""
        G = nets.raw("G")
        ws = G.ws(z, labels if self.conditional else None, truncation=truncation)
        return G.synthesis(ws, noise_mode="const")


FAMILY = StyleGAN2
