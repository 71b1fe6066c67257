"""Evaluation during training (``eval.every``) and of checkpoints.

An evaluator is a module here whose ``EVALUATOR`` class (a :class:`base.Evaluator`) accumulates
statistics of the outputs and real images of this rank's held-out batches and reduces them over
the ranks into figures named ``eval/…``; ``eval.metrics`` lists the evaluators a run uses. The
engine samples once per batch for all of them, on the networks in eval mode, with a generator
and a held-out stream of their own, so a run with evaluation trains exactly like one without.
"""

from __future__ import annotations

import importlib
import pkgutil

from distgan.errors import ConfigError
from distgan.evaluation.base import Evaluator, evaluate


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


__all__ = ["Evaluator", "evaluate", "evaluator_names", "get_evaluator"]
