"""A family of the tests' own for contract v3: the two-player GAN schedule (families/_adversarial:
its D and G phases, the D phase's fake reused by G, the augmentation stage) with float64 MLPs
and no BatchNorm, so that gradient accumulation can be compared with one big batch to float64
precision, and with *run-wide state* updated from a cross-rank reduction every 4 steps:

* ``pixel_sum``/``pixel_count``: sums of every real pixel D saw, over all ranks — after whole
  epochs they equal the data set's sums however many processes read it;
* ``p``: an ADA-like probability stepped by the sign of E[sign D(real)] − 0.6; it scales G's loss,
  so a run that lost it on resume trains differently (the exact-resume test sees it).
"""

from __future__ import annotations

import itertools

import torch
from pydantic import Field
from torch import nn

from distgan.families._adversarial import AdversarialFamily, GANConfig
from distgan.families.base import Batch, Logs, Nets, StepContext


class ToyConfig(GANConfig):
    z_dim: int = Field(8, ge=1)
    hidden: int = Field(32, ge=1)


class MLP(nn.Module):
    """Float64 layers; inputs of any float dtype are cast in (the loader's images are fp32)."""

    def __init__(self, sizes: list[int], shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(a, b, dtype=torch.float64))
            if i < len(sizes) - 2:
                layers.append(nn.LeakyReLU(0.2))
        self.net = nn.Sequential(*layers)
        self.shape = shape

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        out = self.net(x.to(torch.float64).flatten(1))
        return torch.tanh(out).view(-1, *self.shape) if self.shape else out.view(-1)


class ToyTally(AdversarialFamily):
    ModelConfig = ToyConfig
    run_state_every = 4

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.p = torch.zeros((), dtype=torch.float64)
        self.pixel_sum = torch.zeros((), dtype=torch.float64)
        self.pixel_count = torch.zeros((), dtype=torch.float64)
        self.updates = 0

    def networks_for_data(self) -> dict[str, nn.Module]:
        shape = (self.data.channels, self.data.resolution, self.data.resolution)
        pixels, hp = shape[0] * shape[1] * shape[2], self.hp
        return {
            "G": MLP([hp.z_dim, hp.hidden, pixels], shape),
            "D": MLP([pixels, hp.hidden, 1]),
        }

    def d_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        real = batch["image"]
        with torch.no_grad():
            real_out = nets.raw("D")(real)
        ctx.tally("pixel_sum", real.to(torch.float64).sum())
        ctx.tally("pixel_count", real.numel())
        ctx.tally("sign_sum", real_out.sign().sum())
        ctx.tally("samples", real.shape[0])
        return super().d_loss(nets, batch, ctx)

    def g_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        loss, logs = super().g_loss(nets, batch, ctx)
        return loss * (1 + self.p.to(loss.device)), logs

    def update_run_state(self, totals: dict[str, torch.Tensor], step: int) -> Logs:
        totals = {name: value.cpu() for name, value in totals.items()}
        self.pixel_sum = self.pixel_sum + totals["pixel_sum"]
        self.pixel_count = self.pixel_count + totals["pixel_count"]
        rt = totals["sign_sum"] / totals["samples"]
        self.p = (self.p + 0.05 * torch.sign(rt - 0.6)).clamp(0, 1)
        self.updates += 1
        return {"toy/p": self.p.clone()}

    def run_state_dict(self) -> dict[str, object]:
        return {
            "p": self.p,
            "pixel_sum": self.pixel_sum,
            "pixel_count": self.pixel_count,
            "updates": self.updates,
        }

    def load_run_state_dict(self, state: dict[str, object]) -> None:
        if state:
            self.p, self.pixel_sum = state["p"], state["pixel_sum"]
            self.pixel_count, self.updates = state["pixel_count"], state["updates"]


FAMILY = ToyTally
