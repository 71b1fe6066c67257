"""Evaluation during training (``eval.every``) and of checkpoints (``distgan eval``).

An evaluator is a module here whose ``EVALUATOR`` class (a :class:`base.Evaluator`) accumulates
statistics of the outputs and real images of this rank's held-out batches and reduces them over
the ranks into figures named ``eval/…``. ``eval.metrics`` lists metric names: a module's name, or
one of the names in its ``METRICS`` (e.g. ``fid``, ``kid``, ``is``, ``pr`` are all served by
``fidelity``, which then extracts the features once for all of them). The engine samples once per
batch for all evaluators, on the networks in eval mode, with a generator and a held-out stream of
their own, so a run with evaluation trains exactly like one without.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import torch

from distgan.config import Config
from distgan.errors import ConfigError
from distgan.evaluation.base import Evaluator, evaluate


def _modules() -> dict[str, ModuleType]:
    import distgan.evaluation as pkg

    names = [m.name for m in pkgutil.iter_modules(pkg.__path__)]
    names = sorted(n for n in names if n != "base" and not n.startswith("_"))
    return {n: importlib.import_module(f"distgan.evaluation.{n}") for n in names}


def _metric_modules() -> dict[str, str]:
    """metric name → the module that computes it."""
    return {
        metric: name
        for name, module in _modules().items()
        for metric in getattr(module, "METRICS", (name,))
    }


def evaluator_names() -> list[str]:
    return sorted(_metric_modules())


def check_metric(name: str) -> None:
    if name not in _metric_modules():
        raise ConfigError(
            f"eval.metrics: unknown metric '{name}'; valid: {', '.join(evaluator_names())}"
        )


def check_samples(metrics: list[str], n: int, key: str = "eval.n") -> None:
    """Refuse (one line) an ``n`` below what a metric is defined on (a module's
    ``MIN_SAMPLES``), e.g. FID on 1 sample, which would fail only at the first evaluation."""
    modules, owners = _modules(), _metric_modules()
    for name in metrics:
        check_metric(name)
        least = getattr(modules[owners[name]], "MIN_SAMPLES", {}).get(name, 1)
        if n < least:
            raise ConfigError(f"{key}={n}: metric '{name}' needs at least {least} samples")


def build_evaluators(cfg: Config, family, device: torch.device) -> list[Evaluator]:
    """One evaluator per module, serving every metric of ``cfg.eval.metrics`` it computes."""
    names = cfg.eval.metrics
    check_samples(names, cfg.eval.n)
    owners = _metric_modules()
    grouped: dict[str, list[str]] = {}
    for name in names:
        grouped.setdefault(owners[name], []).append(name)
    modules = _modules()
    evaluators = []
    for module, metrics in grouped.items():
        kind = modules[module].EVALUATOR
        served = hasattr(modules[module], "METRICS")
        args = (cfg, family, device)
        evaluators.append(kind(*args, metrics) if served else kind(*args))
    return evaluators


__all__ = [
    "Evaluator",
    "build_evaluators",
    "check_metric",
    "check_samples",
    "evaluate",
    "evaluator_names",
]
