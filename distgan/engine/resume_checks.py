"""What a resume says about the settings it continues with, so that nothing changes silently.

* ``train.steps`` below the checkpoint's step is refused in one line (the run is past it).
* Settings that differ from the checkpoint's configuration are listed in one warning line.
* A learning-rate schedule relative to ``train.steps`` (``optim.*.decay_start`` < 1) is
  re-timed when ``train.steps`` changes: one warning names it. The new ``train.steps`` is the
  horizon (it is what the command line asks for); keep it to keep the schedule.
* A checkpoint whose tensors do not fit the recipe's networks names the network, the tensor and
  the likely ``model.*`` key.

(Changed shards are noticed by the loader: the checkpoint's data position records a hash of each
stream's manifest; distgan/data/loader.py.)
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from distgan.config import Config
from distgan.config.sections import InitConfig
from distgan.errors import ConfigError

log = logging.getLogger("distgan")

# keys that name where and how a run starts, not what it trains
NOT_SETTINGS = {"resume", "run.dir", "run.overwrite", "init.from"}


def check_steps(cfg: Config, state: dict[str, Any], source: Any) -> None:
    """Refuse to resume a checkpoint that is already past ``train.steps``, or one trained with
    other frozen blocks (``init.freeze_d``)."""
    step = state["step"]
    saved = _saved_config(state).get("init", {}).get("freeze_d", 0)
    if cfg.init.freeze_d != saved:  # the optimizer holds the other parameters
        raise ConfigError(
            f"init.freeze_d={cfg.init.freeze_d}, but the checkpoint '{source}' was trained with "
            f"init.freeze_d={saved}: a run keeps its frozen blocks; resume with "
            f"init.freeze_d={saved}"
        )
    if cfg.train.steps < step:
        raise ConfigError(
            f"train.steps={cfg.train.steps} is below step {step} of the checkpoint '{source}'; "
            f"give train.steps={step} or more to resume it, or start afresh with resume=never "
            "(and run.overwrite=true to move the old run aside)"
        )


def _saved_config(state: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's configuration, with the defaults of sections added since it was written
    (``init``)."""
    saved = state.get("config") if isinstance(state.get("config"), dict) else {}
    return {"init": InitConfig().model_dump(mode="json"), **saved}


def differences(saved: Any, current: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two configuration mappings: key → (old, new)."""
    if isinstance(saved, dict) and isinstance(current, dict):
        changed: dict[str, tuple[Any, Any]] = {}
        for key in sorted(set(saved) | set(current), key=str):
            changed |= differences(saved.get(key), current.get(key), f"{prefix}{key}.")
        return changed
    return {} if saved == current else {prefix.rstrip("."): (saved, current)}


def _short(value: Any, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _listed(changes: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} ({_short(old)} → {_short(new)})" for k, (old, new) in changes.items())


def report(cfg: Config, state: dict[str, Any]) -> None:
    """Warn about the settings a resume changes (rank 0; one line each)."""
    if not isinstance(state.get("config"), dict):
        return
    changed = differences(_saved_config(state), cfg.model_dump(mode="json"))
    shown = {k: v for k, v in changed.items() if k not in NOT_SETTINGS}
    if shown:
        log.warning(
            "resuming with settings that differ from the checkpoint's: %s",
            _listed(shown),
        )
    if "train.steps" in changed:
        old_steps = changed["train.steps"][0]
        relative = sorted(
            f"optim.{name}.decay_start={optim.decay_start:g}"
            for name, optim in cfg.optim.items()
            if optim.decay_start < 1
        )
        if relative:
            log.warning(
                "%s: the lr decay is a fraction of train.steps, so changing train.steps %s → %d "
                "re-times the schedule from here on (the learning rates may jump at step %d); "
                "keep train.steps=%s to keep it",
                ", ".join(relative),
                old_steps,
                cfg.train.steps,
                state["step"],
                old_steps,
            )


def describe_mismatch(
    networks: dict[str, nn.Module], state: dict[str, Any], cfg: Config
) -> str | None:
    """The first tensor of ``networks`` that the checkpoint lacks or holds in another shape,
    and the ``model.*`` settings that differ from the checkpoint's (the likely cause)."""
    saved = state.get("networks", {})
    problem = None
    for name, module in networks.items():
        theirs = saved.get(name)
        if theirs is None:
            problem = f"network {name} is not in the checkpoint"
            break
        mine = module.state_dict()
        for key, tensor in mine.items():
            if key not in theirs:
                problem = f"network {name} has a tensor '{key}' the checkpoint lacks"
            elif tuple(theirs[key].shape) != tuple(tensor.shape):
                problem = (
                    f"network {name}, tensor '{key}': {list(theirs[key].shape)} in the "
                    f"checkpoint, {list(tensor.shape)} in this recipe"
                )
            if problem:
                break
        extra = sorted(set(theirs) - set(mine))
        if not problem and extra:
            problem = f"the checkpoint's network {name} has a tensor '{extra[0]}' this one lacks"
        if problem:
            break
    if problem is None:
        return None
    config = state.get("config") if isinstance(state.get("config"), dict) else {}
    model = differences(config.get("model", {}), cfg.model_dump(mode="json")["model"], "model.")
    if model:
        problem += f"; likely {_listed(model)}"
    return problem
