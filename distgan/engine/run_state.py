"""Run-wide state: values that must be equal on every rank (ADA's p, a path-length mean, running
statistics of D's outputs), kept by the family and by the augmentation stage.

Losses add per-rank statistics with ``ctx.tally(name, value)`` (names starting ``aug/`` belong to
the augmentation stage, the others to the family). Every ``run_state_every`` steps of a holder,
its tallies are summed over all ranks (one all-reduce) and handed to its ``update_run_state``,
on every rank alike, so the state stays equal everywhere; whatever that returns is logged with
the step. The state is saved once (rank 0's) in every checkpoint; tallies not yet summed are
saved per rank (engine/checkpoint.py).
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from distgan.engine.build import Run

AUG_PREFIX = "aug/"


class Holder(Protocol):
    run_state_every: int

    def update_run_state(
        self, totals: dict[str, torch.Tensor], step: int
    ) -> dict[str, torch.Tensor] | None: ...

    def run_state_dict(self) -> dict[str, Any]: ...

    def load_run_state_dict(self, state: dict[str, Any]) -> None: ...


def holders(run: Run) -> dict[str, Holder]:
    """The run's holders of run-wide state, by their names in checkpoints."""
    found: dict[str, Holder] = {"family": run.family}
    if run.ctx.augment_stage:
        found["aug"] = run.ctx.augment_stage
    return found


def owner(tally: str) -> str:
    return "aug" if tally.startswith(AUG_PREFIX) else "family"


def update(run: Run) -> dict[str, torch.Tensor]:
    """After a step: the holders due at ``run.step`` updated from the ranks' summed tallies;
    returns what they log."""
    logged: dict[str, torch.Tensor] = {}
    for name, holder in holders(run).items():
        every = holder.run_state_every
        if not every or run.step % every:
            continue
        names = sorted(n for n in run.ctx.tallies if owner(n) == name)
        if run.world > 1:
            same_names_on_every_rank(names, run.device)
        totals = torch.stack([run.ctx.tallies.pop(n) for n in names]) if names else None
        if totals is not None and run.world > 1:
            torch.distributed.all_reduce(totals)
        sums = dict(zip(names, totals if totals is not None else [], strict=True))
        logs = holder.update_run_state(sums, run.step) or {}
        logged.update({k: torch.as_tensor(v, device=run.device) for k, v in logs.items()})
    return logged


def same_names_on_every_rank(names: list[str], device: torch.device) -> None:
    """Sums are taken name by name: ranks that tallied different statistics (a tally taken only
    when something happened) would add unrelated values, or leave one rank waiting in the
    all-reduce. One small all-reduce of a fingerprint of the names finds it."""
    fingerprint = float(zlib.crc32("\n".join(names).encode()))
    seen = torch.tensor([fingerprint, -fingerprint], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(seen, op=torch.distributed.ReduceOp.MAX)
    if seen[0].item() != -seen[1].item():  # max ≠ min: the ranks differ
        raise RuntimeError(
            f"the ranks tallied different statistics (this rank: {names}); every rank must "
            "ctx.tally the same names (tally 0 where nothing happened)"
        )


def state_dict(run: Run) -> dict[str, dict[str, Any]]:
    return {name: holder.run_state_dict() for name, holder in holders(run).items()}


def load_state_dict(run: Run, state: dict[str, dict[str, Any]]) -> None:
    for name, holder in holders(run).items():
        holder.load_run_state_dict(state.get(name, {}))
