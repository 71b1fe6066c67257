"""One training step: every phase due at this step runs the forward/backward of its loss on each
micro-batch (``train.accumulate`` of them; gradients summed, synchronised across ranks on the last
only) and then one optimizer step of each network it trains (distgan/families/base.py); then the
EMA copies follow, the counters advance and, at its interval, the run-wide state is updated from
every rank's tallies. The trainer and ``distgan bench`` run exactly this."""

from __future__ import annotations

from typing import Any

import torch

from distgan.engine import run_state
from distgan.engine.build import Run
from distgan.families.base import Nets

Batch = dict[str, Any]


def train_step(run: Run, batches: list[Batch]) -> dict[str, torch.Tensor]:
    """Run the phases due at ``run.step`` on the micro-batches ``batches``; returns the logged
    values (means over the micro-batches) of the phases that stepped (detached: no host sync)."""
    logged: dict[str, torch.Tensor] = {}
    micro_batches = len(batches)
    run.ctx.begin_step(run.step, micro_batches)
    for phase in run.phases:
        if run.step % phase.every:
            continue
        live = phase.live if micro_batches == 1 else phase.trains  # see StepContext.prepares
        run.set_live(live)
        nets = Nets(run.networks, {name: run.strategy.module(name) for name in live})
        run.strategy.zero_grad(phase)
        run.ctx.enter(run.step, run.precision.scalers[phase.name], phase.prepares)
        sums: dict[str, torch.Tensor] = {}
        for index, batch in enumerate(batches):
            run.ctx.enter_micro_batch(index)
            last = index == micro_batches - 1
            with run.strategy.accumulating(phase, last):  # no gradient all-reduce before the last
                with run.precision.autocast():
                    loss, logs = phase.loss(nets, batch, run.ctx)
                run.strategy.backward(phase, loss, micro_batches, last)
            for key, value in logs.items():
                sums[key] = sums[key] + value.detach() if key in sums else value.detach()
        run.ctx.leave()
        run.set_learning_rates(phase)
        applied = run.strategy.step(phase)  # None, or under fp16 a device flag (no host sync)
        values = sums if micro_batches == 1 else {k: v / micro_batches for k, v in sums.items()}
        if applied is not None:  # fp16 skipped it (inf/NaN gradients): counted, losses not logged
            values = {k: torch.where(applied, v, torch.nan) for k, v in values.items()}
        logged.update(values)
    return logged


def advance(run: Run, batches: list[Batch]) -> dict[str, torch.Tensor]:
    """The whole step: phases, EMA copies, step and image counters, run-wide state; returns the
    logged values."""
    logged = train_step(run, batches)
    run.update_ema()
    run.step += 1
    run.images_seen += run.images_per_step
    logged.update(run_state.update(run))
    return logged
