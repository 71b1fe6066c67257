"""Evaluation during training (``eval.every``) and of checkpoints.

An evaluator is a module here whose ``EVALUATOR`` class is called on **every** rank with an
:class:`~distgan.evaluation.base.EvalContext` and returns figures named ``eval/…`` (the same on
every rank: collectives are allowed and expected). ``eval.metrics`` lists the evaluators a run
uses. The engine gives evaluators their own random generator and their own held-out stream and
runs them on the networks in eval mode, so a run with evaluation trains exactly like one without.
"""

from __future__ import annotations

import importlib
import pkgutil

from distgan.errors import ConfigError
from distgan.evaluation.base import EvalContext, Evaluator


def evaluator_names() -> list[str]:
    import distgan.evaluation as pkg

    modules = pkgutil.iter_modules(pkg.__path__)
    return sorted(m.name for m in modules if m.name != "base" and not m.name.startswith("_"))


def get_evaluator(name: str) -> type[Evaluator]:
    if name not in evaluator_names():
        raise ConfigError(
            f"eval.metrics: unknown evaluator '{name}'; valid: {', '.join(evaluator_names())}"
        )
    return importlib.import_module(f"distgan.evaluation.{name}").EVALUATOR


__all__ = ["EvalContext", "Evaluator", "evaluator_names", "get_evaluator"]
