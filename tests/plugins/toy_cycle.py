"""A test-only family (tests/test_contract.py), outside distgan, named in its recipe as
``family: plugins.toy_cycle``: a miniature CycleGAN that uses every part of the family contract
the shipped GAN families do not: two generators trained in ONE phase (one backward into both),
two critics trained together, named data streams A and B, a per-rank image pool saved as the
family's own state, a linear learning-rate decay, work shared between phases through
``ctx.scratch``, PatchGAN outputs with broadcast targets, a data-conditioned preview, no EMA.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from distgan import losses
from distgan.families._image_pool import ImagePool
from distgan.families.base import Batch, Family, Logs, Nets, Phase, Section, StepContext


class ToyModel(Section):
    width: int = Field(8, ge=1)


class ToyLoss(Section):
    cycle_weight: float = Field(10.0, ge=0)
    pool_size: int = Field(3, ge=0)


class Translator(nn.Module):
    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, channels, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchCritic(nn.Module):
    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(width, 1, 3, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # [B, 1, H/2, W/2]


class ToyCycle(Family):
    networks = ("G_AB", "G_BA", "D_A", "D_B")
    inference = ("G_AB", "G_BA")
    streams = ("A", "B")
    needs = frozenset({"sample_batch", "preview_batch"})
    ModelConfig = ToyModel
    LossConfig = ToyLoss

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pools = {side: ImagePool(self.loss_cfg.pool_size) for side in ("A", "B")}
        self.adversarial = losses.ADVERSARIAL["lsgan"]

    def build_networks(self) -> dict[str, nn.Module]:
        c, w = self.data.channels, self.hp.width
        return {
            "G_AB": Translator(c, w),
            "G_BA": Translator(c, w),
            "D_A": PatchCritic(c, w),
            "D_B": PatchCritic(c, w),
        }

    @property
    def phases(self) -> list[Phase]:
        return [
            Phase("G", trains=("G_AB", "G_BA"), loss=self.g_loss),
            Phase("D", trains=("D_A", "D_B"), loss=self.d_loss),
        ]

    def g_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        real_A, real_B = batch["A"]["image"], batch["B"]["image"]
        fake_B, fake_A = nets.G_AB(real_A), nets.G_BA(real_B)
        adversarial = self.adversarial.g(nets.D_B(fake_B)) + self.adversarial.g(nets.D_A(fake_A))
        cycle = F.l1_loss(nets.G_BA(fake_B), real_A) + F.l1_loss(nets.G_AB(fake_A), real_B)
        ctx.scratch.update(fake_A=fake_A.detach(), fake_B=fake_B.detach())  # for the D phase
        loss = adversarial + self.loss_cfg.cycle_weight * cycle
        return loss, {"loss/G": loss.detach(), "loss/cycle": cycle.detach()}

    def d_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        loss = torch.zeros((), device=ctx.device)
        for side, critic in (("A", nets.D_A), ("B", nets.D_B)):
            real = batch[side]["image"]
            fake = self.pools[side].query(ctx.scratch[f"fake_{side}"], ctx)
            targets = losses.d_targets(real.shape[0], real.device)
            loss = loss + 0.5 * self.adversarial.d(critic(real), critic(fake), targets)
        return loss, {"loss/D": loss.detach()}

    def sample(
        self, nets: Nets, n: int, generator: torch.Generator, batch: Batch | None = None
    ) -> torch.Tensor:
        return nets.G_AB(batch["A"]["image"][:n])

    def reference(self, batch: Batch) -> torch.Tensor:
        return batch["B"]["image"]

    def preview(
        self, nets: Nets, batch: Batch | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, int]:
        real_A = batch["A"]["image"]
        fake_B = nets.G_AB(real_A)
        return torch.cat([real_A, fake_B, nets.G_BA(fake_B)]), real_A.shape[0]  # A | A→B | A→B→A

    def state_dict(self) -> dict[str, Any]:
        return {side: pool.state_dict() for side, pool in self.pools.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for side, pool in self.pools.items():
            pool.load_state_dict(state[side])


FAMILY = ToyCycle
