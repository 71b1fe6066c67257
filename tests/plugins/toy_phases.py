"""A family of the tests' own that records what the engine does in each phase (tests/
test_engine.py runs ``train_step`` in-process with it): two float64 linear networks ``A`` and
``B``; phase ``P`` trains A and prepares B for phase ``Q`` (which trains B), phase ``R``
regularizes A every 3 steps with the lazy-regularization correction. Each loss draws
per-sample noise, so accumulation's split-free draws are exercised too."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from distgan.families.base import Batch, Family, Logs, Nets, Phase, StepContext


class ToyPhases(Family):
    networks = ("A", "B")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.record: list[dict[str, Any]] = []

    def build_networks(self) -> dict[str, nn.Module]:
        return {name: nn.Linear(4, 4, dtype=torch.float64) for name in self.networks}

    @property
    def phases(self) -> list[Phase]:
        return [
            Phase("P", trains="A", loss=self.p_loss, prepares="B"),
            Phase("Q", trains="B", loss=self.q_loss),
            Phase("R", trains="A", loss=self.r_loss, every=3, lazy_correction=True),
        ]

    def note(self, phase: str, nets: Nets, ctx: StepContext) -> None:
        self.record.append(
            {
                "phase": phase,
                "step": ctx.step,
                "micro_batch": ctx.micro_batch,
                "live": {n for n in nets if nets.raw(n).weight.requires_grad},
                "prepares_B": ctx.prepares("B"),
                "scaler": ctx.scaler,
            }
        )

    def p_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        self.note("P", nets, ctx)
        x = batch["image"] + 0.1 * ctx.randn(*batch["image"].shape)
        if ctx.prepares("B"):
            ctx.scratch["b_out"] = nets.B(x)
        else:
            ctx.scratch["x"] = x
        loss = (nets.A(x) - 1).square().mean()
        return loss, {"loss/P": loss.detach()}

    def q_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        self.note("Q", nets, ctx)
        out = ctx.scratch.pop("b_out", None)
        if out is None:
            out = nets.B(ctx.scratch.pop("x"))
        loss = (out + nets.A(batch["image"]).detach()).square().mean()
        return loss, {"loss/Q": loss.detach()}

    def r_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        self.note("R", nets, ctx)
        loss = nets.A.weight.square().sum() * 1e-2 + 0 * ctx.rand(batch["image"].shape[0]).sum()
        return loss, {"loss/R": loss.detach()}


FAMILY = ToyPhases
