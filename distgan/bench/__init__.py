"""``distgan bench NAME``: measurements (speed, and the few-shot quality table), each printed as a
table (``--json`` for JSON).

One module per benchmark, each exposing ``add_arguments(parser)`` and ``run(args) -> dict``.
Figures are meant to be read as ratios taken in the same run (machines are noisy).
"""

from __future__ import annotations

import importlib
import pkgutil


def bench_names() -> list[str]:
    import distgan.bench as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def get_bench(name: str):
    return importlib.import_module(f"distgan.bench.{name}")
