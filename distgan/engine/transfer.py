"""Transfer learning: ``init.from`` starts a new run from another run's weights (``init.freeze_d``,
FreezeD, keeps the discriminator's first blocks fixed: distgan/models/freeze.py).

``init.from=CKPT`` (a checkpoint, or a run folder: its newest usable one) loads every network the
family declares and its EMA copies (from the source's EMA copy where it kept one, else from the
network itself). Nothing else carries over: the optimizers, step, image count, data position,
random streams, run-wide state and lineage start afresh. The run is a new lineage; every
checkpoint records where its weights came from (``init_from``: checkpoint, run id, step, recipe,
family). It applies to a run that starts afresh only: once the run has a checkpoint of its own,
``resume=auto`` continues from that (a requeued transfer run continues, it never re-initialises).

The checkpoint is read with ``weights_only=True`` (engine/checkpoint.py) and its family's code is
never imported: its tensors go into this recipe's networks, so another family, other widths or
another resolution is refused in one line that names the tensors.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from distgan.engine import checkpoint
from distgan.errors import ConfigError

if TYPE_CHECKING:
    from distgan.engine.build import Run

log = logging.getLogger("distgan")


def initialise(run: Run, source: Path) -> None:
    """Load the weights of ``source`` into ``run``'s networks and EMA copies (every rank)."""
    state = checkpoint.load(source)
    saved = state["networks"]
    wanted = {name: (name, module) for name, module in run.networks.items()}
    for name, copy in run.ema.items():
        wanted[f"{name}_ema"] = (f"{name}_ema" if f"{name}_ema" in saved else name, copy)
    problems = [
        problem
        for name, (theirs, module) in wanted.items()
        for problem in _mismatches(name, module, saved.get(theirs), saved)
    ]
    if problems:
        more = f"; also {len(problems) - 1} more" if len(problems) > 1 else ""
        raise ConfigError(f"init.from {source}: {problems[0]}{more}{_families(run, state)}")
    with torch.no_grad():
        for _, (theirs, module) in wanted.items():
            module.load_state_dict(saved[theirs])
    config = state.get("config") if isinstance(state.get("config"), dict) else {}
    run.init_from = {
        "checkpoint": str(Path(source).resolve()),
        "run_id": state.get("run_id"),
        "step": state["step"],
        "recipe": config.get("name"),
        "family": config.get("family"),
    }
    ema = ", ".join(f"{n}_ema ← {wanted[f'{n}_ema'][0]}" for n in run.ema)
    log.info(
        "weights from %s (run %s, step %d; %s), a new lineage %s",
        source,
        state.get("run_id"),
        state["step"],
        ema or "no EMA copies",
        run.run_id,
    )


def _mismatches(
    name: str, module: nn.Module, theirs: dict[str, torch.Tensor] | None, saved: dict[str, Any]
) -> list[str]:
    """Each tensor of ``module`` (``name`` in checkpoints) that ``theirs`` lacks, holds in
    another shape or holds beyond it, as short phrases."""
    if theirs is None:
        return [f"network {name} is not in the checkpoint (it holds {', '.join(sorted(saved))})"]
    mine = module.state_dict()
    found = []
    for key, tensor in mine.items():
        if key not in theirs:
            found.append(f"{name}.{key} is not in the checkpoint")
        elif theirs[key].shape != tensor.shape:
            found.append(
                f"{name}.{key} has shape {_shape(tensor)} here, {_shape(theirs[key])} in the "
                "checkpoint"
            )
    found += [f"{name}.{key} is in the checkpoint, not here" for key in theirs if key not in mine]
    return found


def _shape(tensor: torch.Tensor) -> str:
    return "[" + ",".join(str(d) for d in tensor.shape) + "]"


def _families(run: Run, state: dict[str, Any]) -> str:
    """The families and recipes when they differ (the likely cause of a mismatch)."""
    config = state.get("config") if isinstance(state.get("config"), dict) else {}
    if config.get("family") == run.cfg.family:
        return ""
    return (
        f" (the checkpoint is of family '{config.get('family')}', recipe '{config.get('name')}'; "
        f"this run's is '{run.cfg.family}')"
    )
