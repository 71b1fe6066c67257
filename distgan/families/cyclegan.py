"""CycleGAN (Zhu et al., 2017) with the reference implementation's defaults: two ResNet-9
generators (G_AB: A → B, G_BA: B → A) and two 70×70 PatchGANs (D_A, D_B), InstanceNorm, LSGAN
loss, cycle consistency λ = 10 for both directions, identity loss 0.5·λ, image pools of 50 fakes
per discriminator, D's loss × 0.5, Adam 2e-4 β1 0.5, batch 1, 100 + 100 epochs (linear decay:
``optim.*.decay_start: 0.5``).

Each step takes one A and one B image from separate streams (``data.shards: {A: DIR, B: DIR}``,
each made by ``distgan shards unpaired --domain A|B``). Phase ``G`` trains both generators with
one backward (adversarial + cycle + identity); phase ``D`` trains both discriminators on the
real images and on fakes drawn from this rank's pools. The pools are saved in every checkpoint,
so a resumed run continues exactly, decay included (what the reference's resume loses).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from distgan import losses
from distgan.errors import ConfigError
from distgan.families._image_pool import ImagePool
from distgan.families.base import Batch, Family, Logs, Nets, Phase, Section, StepContext
from distgan.models.cyclegan import ResnetGenerator
from distgan.models.unet import PatchDiscriminator

DIRECTIONS = {"AtoB": ("A", "G_AB"), "BtoA": ("B", "G_BA")}


class CycleGANConfig(Section):
    width: int = Field(64, ge=1, description="G's first layer (ngf)")
    blocks: int = Field(9, ge=1, description="residual blocks (9 for 256 px, 6 for 128 px)")
    d_channels: list[int] = Field([64, 128, 256, 512], description="D: the 70×70 PatchGAN")


class CycleGANLoss(Section):
    cycle_weight: float = Field(10.0, ge=0, description="λ of ‖G_BA(G_AB(a)) − a‖₁ (and B)")
    identity_weight: float = Field(0.5, ge=0, description="× λ: ‖G_AB(b) − b‖₁ (and A)")
    pool_size: int = Field(50, ge=0, description="fakes kept per discriminator (0: none)")
    d_weight: float = Field(0.5, gt=0, description="scale of each D's loss")


class CycleGAN(Family):
    networks = ("G_AB", "G_BA", "D_A", "D_B")
    discriminators = ("D_A", "D_B")
    inference = ("G_AB", "G_BA")
    streams = ("A", "B")
    needs = frozenset({"sample_batch", "preview_batch"})
    ModelConfig = CycleGANConfig
    LossConfig = CycleGANLoss

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lsgan = losses.ADVERSARIAL["lsgan"]
        self.pools = {side: ImagePool(self.loss_cfg.pool_size) for side in ("A", "B")}
        a, b = self.stream_info["A"], self.stream_info["B"]
        if (a.resolution, a.channels) != (b.resolution, b.channels):
            raise ConfigError(
                f"the A shards hold {a.resolution} px × {a.channels} channels but the B shards "
                f"{b.resolution} px × {b.channels}; convert both alike"
            )

    def build_networks(self) -> dict[str, nn.Module]:
        hp, c = self.hp, self.data.channels
        return {
            "G_AB": ResnetGenerator(c, c, hp.width, hp.blocks),
            "G_BA": ResnetGenerator(c, c, hp.width, hp.blocks),
            "D_A": PatchDiscriminator(c, hp.d_channels, "instance"),
            "D_B": PatchDiscriminator(c, hp.d_channels, "instance"),
        }

    @property
    def phases(self) -> list[Phase]:
        return [
            Phase("G", trains=("G_AB", "G_BA"), loss=self.g_loss),
            Phase("D", trains=("D_A", "D_B"), loss=self.d_loss),
        ]

    def g_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        cfg = self.loss_cfg
        real_A, real_B = batch["A"]["image"], batch["B"]["image"]
        G_AB, G_BA = ctx.compiled(nets.G_AB), ctx.compiled(nets.G_BA)
        fake_B, fake_A = G_AB(real_A), G_BA(real_B)
        adversarial = self.lsgan.g(ctx.compiled(nets.D_B)(fake_B)) + self.lsgan.g(
            ctx.compiled(nets.D_A)(fake_A)
        )
        cycle = F.l1_loss(G_BA(fake_B).float(), real_A) + F.l1_loss(G_AB(fake_A).float(), real_B)
        loss = adversarial + cfg.cycle_weight * cycle
        logs: Logs = {"loss/G": adversarial.detach(), "loss/cycle": cycle.detach()}
        if cfg.identity_weight:
            identity = F.l1_loss(G_AB(real_B).float(), real_B) + F.l1_loss(
                G_BA(real_A).float(), real_A
            )
            loss = loss + cfg.cycle_weight * cfg.identity_weight * identity
            logs["loss/identity"] = identity.detach()
        ctx.scratch.update(fake_A=fake_A.detach(), fake_B=fake_B.detach())  # for phase D
        return loss, logs

    def d_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        loss = torch.zeros((), device=ctx.device)
        logs: Logs = {}
        for side, critic in (("A", nets.D_A), ("B", nets.D_B)):
            real = batch[side]["image"]
            fake = self.pools[side].query(ctx.scratch[f"fake_{side}"], ctx)
            targets = losses.d_targets(real.shape[0], real.device)
            critic = ctx.compiled(critic)
            d = self.loss_cfg.d_weight * self.lsgan.d(critic(real), critic(fake), targets)
            logs[f"loss/D_{side}"] = d.detach()
            loss = loss + d
        return loss, logs

    # --------------------------------------------------------------------- outputs

    def translate(self, nets: Nets, images: torch.Tensor, direction: str = "AtoB") -> torch.Tensor:
        if direction not in DIRECTIONS:
            raise ConfigError(f"--direction {direction}: use AtoB or BtoA")
        return nets[DIRECTIONS[direction][1]](images)

    def sample(
        self, nets: Nets, n: int, generator: torch.Generator, batch: Batch | None = None
    ) -> torch.Tensor:
        return self.translate(nets, batch["A"]["image"][:n])

    def reference(self, batch: Batch) -> torch.Tensor:
        return batch["B"]["image"]

    def preview(
        self, nets: Nets, batch: Batch | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, int]:
        """Rows A → B → A, then B → A → B, one column per held-out image."""
        real_A, real_B = batch["A"]["image"], batch["B"]["image"]
        fake_B, fake_A = nets.G_AB(real_A), nets.G_BA(real_B)
        rows = [real_A, fake_B, nets.G_BA(fake_B), real_B, fake_A, nets.G_AB(fake_A)]
        return torch.cat(rows), real_A.shape[0]

    def state_dict(self) -> dict[str, Any]:
        return {side: pool.state_dict() for side, pool in self.pools.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for side, pool in self.pools.items():
            pool.load_state_dict(state[side])

    def regroup_state(
        self, saved: list[dict[str, Any]], rank: int, world: int
    ) -> dict[str, Any] | None:
        """The old ranks' pooled images dealt over the new ranks (each keeps its pool size)."""
        return {
            side: ImagePool.regroup([state[side] for state in saved], rank, world, pool.size)
            for side, pool in self.pools.items()
        }


FAMILY = CycleGAN
