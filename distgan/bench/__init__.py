"""``distgan bench NAME``: measurements (speed, and the few-shot quality table), each printed as a
table (``--json`` for JSON).

One module per benchmark, each exposing ``add_arguments(parser)`` and ``run(args) -> dict``;
a module ``a_b`` is the command ``a-b``.
Figures are meant to be read as ratios taken in the same run (machines are noisy).
"""

from __future__ import annotations

import importlib
import pkgutil


def bench_names() -> list[str]:
    import distgan.bench as pkg

    modules = pkgutil.iter_modules(pkg.__path__)
    return sorted(m.name.replace("_", "-") for m in modules if not m.name.startswith("_"))


def get_bench(name: str):
    return importlib.import_module(f"distgan.bench.{name.replace('-', '_')}")
