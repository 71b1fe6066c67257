"""A resume on another world size: what each new rank takes over from the old ranks.

Weights, optimizer states (DDP: the same on every rank) and the run-wide state are restored as
in an exact resume (engine/checkpoint.py). Per rank:

* data (``data.mode=epoch``): the interrupted epochs' unseen samples are dealt over the new
  ranks, then normal epochs follow (distgan/data/elastic.py);
* statistics tallied since the last run-wide update: summed over the old ranks and held by the
  new rank 0 (the others hold zeros), so the next update sums exactly what it would have;
* the family's per-rank state: the family's ``regroup_state`` redistributes it, or it is
  dropped (the default); one console line says which;
* random streams: seeded afresh, as in a new run (no old rank's stream maps onto a new one).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from distgan.engine.build import Run

log = logging.getLogger("distgan")


def restore_per_rank(run: Run, state: dict[str, Any]) -> None:
    """Take over the old ranks' per-rank state on a run of another world size."""
    old_world = len(state["rng"])
    if run.is_main:
        log.warning(
            "checkpoint was written by %d processes, this run has %d: weights, optimizers and "
            "the run-wide state resume exactly; random streams start afresh",
            old_world,
            run.world,
        )
    if run.data is not None:
        run.data.load_elastic(state["data"])
    run.ctx.tallies = summed_tallies(state["tallies"], run.rank, run.device)
    saved = state["family"]
    mine = run.family.regroup_state(saved, run.rank, run.world) if any(saved) else None
    if mine is not None:
        run.family.load_state_dict(mine)
    if run.is_main:
        if not any(saved):
            log.warning("family '%s' keeps no per-rank state: nothing to regroup", run.cfg.family)
        else:
            log.warning(
                "family '%s': its per-rank state (%s) of %d ranks is %s",
                run.cfg.family,
                ", ".join(sorted({key for state in saved for key in state})),
                old_world,
                f"redistributed over {run.world} ranks"
                if mine is not None
                else "dropped (the family does not regroup it)",
            )


def summed_tallies(
    saved: list[dict[str, torch.Tensor]], rank: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """The old ranks' pending tallies summed, on rank 0; zeros of the same names elsewhere (the
    run-wide update all-reduces a sum, so it sees exactly the old ranks' total)."""
    names = sorted({name for tallies in saved for name in tallies})
    sums = {}
    for name in names:
        total = sum(t[name].to(device) for t in saved if name in t)
        sums[name] = total if rank == 0 else torch.zeros_like(total)
    return sums
