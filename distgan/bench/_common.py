"""Helpers shared by the benchmarks."""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from distgan.data.info import DatasetInfo


def synthetic_batch(family, batch_size: int, device: torch.device) -> dict[str, Any]:
    """A batch shaped like the family's data: images in [-1, 1], labels when there are classes,
    a target image for paired data; one such batch per stream for families with named streams."""
    generator = torch.Generator().manual_seed(0)

    def one(info: DatasetInfo) -> dict[str, Any]:
        shape = (batch_size, info.channels, info.resolution, info.resolution)
        batch: dict[str, Any] = {"image": (torch.rand(shape, generator=generator) * 2 - 1)}
        if info.num_classes:
            batch["label"] = torch.randint(info.num_classes, (batch_size,), generator=generator)
        if info.paired:
            batch["target"] = torch.rand(shape, generator=generator) * 2 - 1
        return {k: v.to(device) for k, v in batch.items()}

    streams = family.stream_info
    if list(streams) == [""]:
        return one(streams[""])
    return {name: one(info) for name, info in streams.items()}


SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def machine() -> dict[str, Any]:
    """The CPU every figure was taken on: its model, core count, the flags that pick float
    kernels, and the precision ``train.precision=auto`` resolves to here."""
    from distgan.engine.runtime import cpu_info, resolve_precision

    model, flags = cpu_info()
    model = model or platform.processor() or platform.machine()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "flags": [f for f in SPEED_FLAGS if f in flags],
        # what the kernels may use: less than the flags under ATEN_CPU_CAPABILITY/ONEDNN_MAX_CPU_ISA
        "kernels": f"ATen {torch.backends.cpu.get_cpu_capability()}, oneDNN "
        + os.environ.get("ONEDNN_MAX_CPU_ISA", "all"),
        "auto_precision": resolve_precision("auto", device),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
    }


def describe_machine(info: dict[str, Any]) -> str:
    flags = ", ".join(info["flags"]) or "none of " + ", ".join(SPEED_FLAGS)
    return (
        f"{info['cpu']} ({info['cores']} cores; {flags}; kernels {info['kernels']}); "
        f"device {info['device']}; "
        f"precision=auto → {info['auto_precision']}; torch {info['torch']}"
    )


def print_table(title: str, figures: dict[str, Any]) -> None:
    """A two-column table; floats shown to 4 significant digits (``--json`` keeps them whole)."""
    table = Table(title=title, show_header=False)
    for key, value in figures.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console().print(table)


def dataset_info_for(cfg, args: argparse.Namespace) -> DatasetInfo:
    """The recipe's data shape: from its shards when present, else from the flags (resolution:
    ``--resolution``, else the recipe's ``data.resolution``, else 64)."""
    from distgan.data.info import dataset_info
    from distgan.data.shards import ShardError, read_manifest
    from distgan.engine.build import transforms_of

    shards = cfg.data.shards  # (named streams: the first one's shape stands for all)
    folder = next(iter(shards.values())) if isinstance(shards, dict) else shards
    if args.resolution is None:
        try:
            return dataset_info(read_manifest(folder), transforms_of(cfg))
        except ShardError:
            args.resolution = cfg.data.resolution or 64
    from distgan.families import get_family

    paired = "paired_data" in get_family(cfg.family).needs
    classes = [str(i) for i in range(args.classes)]
    return DatasetInfo(args.resolution, args.channels, classes, 0, paired=paired)


def time_steps(
    step_fn, warmup: int, steps: int, device: torch.device, cycle: int = 1
) -> tuple[float, float]:
    """(first step's seconds, median seconds per step after ``warmup`` steps).

    With phases that run every k-th step (n_critic), steps are timed in whole cycles of ``cycle``
    steps (at least ``steps`` in all) and the median cycle is divided by ``cycle``."""
    return time_interleaved({"": step_fn}, warmup, steps, device, cycle)[""]


def time_interleaved(
    step_fns: dict[str, Any], warmup: int, steps: int, device: torch.device, cycle: int = 1
) -> dict[str, tuple[float, float]]:
    """:func:`time_steps` for several step functions, taking turns cycle by cycle, so that a
    shared machine's changing load weighs on each alike and their ratio holds."""
    times: dict[str, list[float]] = {name: [] for name in step_fns}
    cycles, warm = max(1, -(-steps // cycle)), -(-warmup // cycle)
    for c in range(warm + cycles):
        for name, step_fn in step_fns.items():
            for i in range(cycle):
                start = time.perf_counter()
                step_fn(c * cycle + i)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
    result = {}
    for name, t in times.items():
        timed = t[warm * cycle :]
        per_cycle = [sum(timed[k * cycle : (k + 1) * cycle]) for k in range(cycles)]
        result[name] = (t[0], statistics.median(per_cycle) / cycle)
    return result


def phase_cycle(phases) -> int:
    """Steps after which the phase pattern repeats (lcm of the phases' intervals)."""
    return math.lcm(*(phase.every for phase in phases))


def build_distgan_step(cfg, info: DatasetInfo, phases: list[str] | None = None):
    """distgan's own step for ``cfg`` (this process's part of it, in whatever process group is
    set up), built by the trainer's builder and run as the trainer runs it (phases, EMA), as a
    function of the step index; ``phases`` keeps only the phases named. Returns (step_fn, run)."""
    from distgan.engine.build import build_for_bench
    from distgan.engine.step import advance

    run = build_for_bench(cfg, info)
    batch = run.settings.batch(synthetic_batch(run.family, cfg.train.batch_size, run.device))
    if phases is not None:
        run.phases = [p for p in run.phases if p.name in phases]

    def step_fn(i: int) -> None:
        run.step = i
        advance(run, [batch] * cfg.train.accumulate)

    return step_fn, run
