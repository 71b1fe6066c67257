"""Helpers shared by the benchmarks."""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from distgan.data.stream import DatasetInfo


def synthetic_batch(info: DatasetInfo, batch_size: int, device: torch.device) -> dict[str, Any]:
    """A batch shaped like the recipe's data (images in [-1, 1], labels when there are classes)."""
    generator = torch.Generator().manual_seed(0)
    shape = (batch_size, info.channels, info.resolution, info.resolution)
    batch: dict[str, Any] = {"image": (torch.rand(shape, generator=generator) * 2 - 1).to(device)}
    if info.num_classes:
        labels = torch.randint(info.num_classes, (batch_size,), generator=generator)
        batch["label"] = labels.to(device)
    return batch


def print_table(title: str, figures: dict[str, Any]) -> None:
    """A two-column table; floats shown to 4 significant digits (``--json`` keeps them whole)."""
    table = Table(title=title, show_header=False)
    for key, value in figures.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console().print(table)


def dataset_info_for(cfg, args: argparse.Namespace) -> DatasetInfo:
    """The recipe's data shape: from its shards when present, else from the flags (resolution:
    ``--resolution``, else the recipe's ``data.resolution``, else 64)."""
    from distgan.data.shards import ShardError, read_manifest
    from distgan.data.stream import dataset_info

    if args.resolution is None:
        try:
            return dataset_info(read_manifest(cfg.data.shards))
        except ShardError:
            args.resolution = cfg.data.resolution or 64
    return DatasetInfo(args.resolution, args.channels, [str(i) for i in range(args.classes)], 0)


def time_steps(
    step_fn, warmup: int, steps: int, device: torch.device, cycle: int = 1
) -> tuple[float, float]:
    """(first step's seconds, median seconds per step after ``warmup`` steps).

    With phases that run every k-th step (n_critic), steps are timed in whole cycles of ``cycle``
    steps (at least ``steps`` in all) and the median cycle is divided by ``cycle``."""
    times = []
    cycles = max(1, -(-steps // cycle))
    for i in range(warmup + cycles * cycle):
        start = time.perf_counter()
        step_fn(i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    timed = times[warmup:]
    per_cycle = [sum(timed[c * cycle : (c + 1) * cycle]) for c in range(cycles)]
    return times[0], statistics.median(per_cycle) / cycle


def phase_cycle(recipe) -> int:
    """Steps after which the recipe's phase pattern repeats (lcm of the phases' intervals)."""
    return math.lcm(*(phase.every for phase in recipe.phases))


def build_distgan_step(
    cfg, info: DatasetInfo, device: torch.device, phases: list[str] | None = None
):
    """distgan's own step for ``cfg`` (this process's part of it, in whatever process group is
    set up), as a function of the step index; ``phases`` keeps only the phases named."""
    from distgan.engine.parallel import DataParallel
    from distgan.engine.runtime import Precision, process_accelerator, speed_settings
    from distgan.engine.trainer import train_step
    from distgan.recipes import get_recipe
    from distgan.recipes.base import StepContext

    recipe = get_recipe(cfg.family)(cfg, info)
    torch.manual_seed(cfg.train.seed)
    models = {name: m.to(device) for name, m in recipe.build_models().items()}
    speed = speed_settings(cfg, device)
    speed.apply(models)
    optimizers = recipe.build_optimizers(models, fused=speed.fused_optimizers)
    precision = Precision(cfg.train.precision, device, list(optimizers))
    accelerator = process_accelerator(cfg.train.collective_timeout)
    parallel = DataParallel(accelerator, precision, models, optimizers)
    ctx = StepContext(device, torch.Generator(device).manual_seed(0), speed.compile_backend)
    batch = speed.batch(synthetic_batch(info, cfg.train.batch_size, device))
    phases = [p for p in recipe.phases if phases is None or p.name in phases]

    def step_fn(i: int) -> None:
        train_step(phases, i, models, parallel, precision, ctx, batch)

    return step_fn, recipe, models, speed
