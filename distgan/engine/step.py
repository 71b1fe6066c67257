"""One training step: every phase due at this step runs one forward/backward of its loss and
one optimizer step of each network it trains (distgan/families/base.py); then the EMA copies
follow and the counters advance. The trainer and ``distgan bench`` run exactly this."""

from __future__ import annotations

from typing import Any

import torch

from distgan.engine.build import Run
from distgan.families.base import Nets


def train_step(run: Run, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Run the phases due at ``run.step`` on ``batch``; returns the logged values of the phases
    that stepped (detached tensors: no host sync)."""
    logged: dict[str, torch.Tensor] = {}
    run.ctx.scratch.clear()
    for phase in run.phases:
        if run.step % phase.every:
            continue
        for name, module in run.networks.items():
            module.requires_grad_(name in phase.live)
        nets = Nets(run.networks, {name: run.strategy.module(name) for name in phase.live})
        run.strategy.zero_grad(phase)
        run.ctx.enter(run.step, run.precision.scalers[phase.name])
        with run.precision.autocast():
            loss, logs = phase.loss(nets, batch, run.ctx)
        run.strategy.backward(phase, loss)
        run.set_learning_rates(phase)
        if not run.strategy.step(phase):
            continue  # fp16 skipped it (inf/NaN gradients): counted, its losses not logged
        logged.update({key: value.detach() for key, value in logs.items()})
    return logged


def advance(run: Run, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The whole step: phases, EMA copies, step and image counters; returns the logged values."""
    logged = train_step(run, batch)
    run.update_ema()
    run.step += 1
    run.images_seen += run.cfg.train.batch_size * run.world
    return logged
