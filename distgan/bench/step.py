"""Training-step speed of a recipe: median step time, img/s, FLOPs, % of this machine's ceiling.

Times distgan's real step (``engine.step.advance``: phases and EMA) on synthetic batches, counts the
model FLOPs of one step with torch's FLOP counter, and measures the dense-matmul ceiling of this
machine for the same dtype in the same run, so utilisation is a ratio taken on the spot.
``--baseline`` also times the plain eager fp32 PyTorch version of the step (for DCGAN: exactly
the step of PyTorch's official DCGAN example) and prints the speedup; the two take turns step by
step, so that a shared machine's changing load cannot tilt their ratio. ``--compare "K=V …"``
times the recipe with those extra overrides in the same turns and prints the extra cost, e.g.
``--compare "aug.diffaug=color,translation,cutout"`` for what an augmentation adds to a step.
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, _FlopCounterMode

from distgan.bench._common import (
    build_distgan_step,
    dataset_info_for,
    phase_cycle,
    print_table,
    synthetic_batch,
    time_interleaved,
)
from distgan.recipe import load_recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", default="digits-cdcgan")
    parser.add_argument("--batch", type=int, default=None, help="per-process batch (recipe's)")
    parser.add_argument("--precision", choices=["no", "bf16", "fp16", "auto"], default=None)
    parser.add_argument("--compile", choices=["on", "off"], default=None)
    parser.add_argument("--channels-last", choices=["on", "off"], default=None)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--baseline", action="store_true", help="also time plain PyTorch")
    parser.add_argument(
        "--compare",
        metavar="OVERRIDES",
        default=None,
        help='also time the recipe with these extra overrides, e.g. "aug.diffaug=color,cutout"',
    )
    parser.add_argument("--resolution", type=int, default=None, help="if the shards are absent")
    parser.add_argument("--channels", type=int, default=3, help="if the shards are absent")
    parser.add_argument("--classes", type=int, default=10, help="if the shards are absent")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, key=value")


def matmul_ceiling(dtype: torch.dtype, device: torch.device, size: int = 2048) -> float:
    """Dense matmul FLOP/s of this machine for ``dtype`` (best of a few, measured now)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def count_flops(step_fn, cycle: int = 1) -> float:
    """Model FLOPs per step, averaged over one cycle of the phases (torch's FLOP counter). Its
    per-module tracking breaks inside a penalty's ``autograd.grad``: only the global count."""
    counter = FlopCounterMode(display=False)
    with _FlopCounterMode(counter):
        for i in range(cycle):
            step_fn(i)
    return counter.get_total_flops() / cycle


def build_dcgan_example_step(run, batch_size: int):
    """The training step of PyTorch's official DCGAN example (examples/dcgan/main.py), eager
    fp32, on copies of the same networks: BCE, Adam(2e-4, β1 0.5), D on real, D on fake, G
    through D."""
    device, conditional = run.device, run.family.num_classes > 0
    netG, netD = copy.deepcopy(run.networks["G"]).float(), copy.deepcopy(run.networks["D"]).float()
    netG, netD = (
        m.to(memory_format=torch.contiguous_format).requires_grad_(True) for m in (netG, netD)
    )
    criterion = nn.BCEWithLogitsLoss()  # the example's BCELoss after a Sigmoid, fused
    optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    batch = synthetic_batch(run.family, batch_size, device)
    real, labels = batch["image"], batch.get("label") if conditional else None

    def step_fn(i: int) -> None:
        netD.zero_grad()
        output = netD(real, labels)
        errD_real = criterion(output, torch.ones_like(output))
        errD_real.backward()
        noise = torch.randn(batch_size, netG.z_dim, device=device)
        fake = netG(noise, labels)
        output = netD(fake.detach(), labels)
        errD_fake = criterion(output, torch.zeros_like(output))
        errD_fake.backward()
        optimizerD.step()
        netG.zero_grad()
        output = netD(fake, labels)
        errG = criterion(output, torch.ones_like(output))
        errG.backward()
        optimizerG.step()

    return step_fn


def build_baseline(cfg, run, info):
    """(step function, its description): PyTorch's DCGAN example step for DCGAN recipes, else
    the recipe's own step in eager fp32 (no autocast, compile, channels_last or fused Adam)."""
    if cfg.family == "dcgan":
        step_fn = build_dcgan_example_step(run, cfg.train.batch_size)
        return step_fn, "PyTorch DCGAN example step, eager fp32"
    plain = cfg.model_copy(deep=True)
    t = plain.train
    t.precision, t.compile, t.channels_last, t.fused_optimizers = "no", False, False, False
    return build_distgan_step(plain, info)[0], "the same recipe step, eager fp32"


def run(args: argparse.Namespace) -> dict[str, Any]:
    overrides = list(args.overrides)
    for key, value in (
        ("train.batch_size", args.batch),
        ("train.precision", args.precision),
        ("train.compile", args.compile),
        ("train.channels_last", args.channels_last),
    ):
        if value is not None:
            overrides.append(f"{key}={ {'on': 'true', 'off': 'false'}.get(value, value) }")
    cfg = load_recipe(args.recipe, overrides)
    info = dataset_info_for(cfg, args)
    step_fn, run = build_distgan_step(cfg, info)
    device, settings = run.device, run.settings

    cycle = phase_cycle(run.phases)
    base_fn, baseline = build_baseline(cfg, run, info) if args.baseline else (None, None)
    timed = {"distgan": step_fn, **({"baseline": base_fn} if base_fn else {})}
    if args.compare:
        variant = load_recipe(args.recipe, [*overrides, *args.compare.split()])
        timed["compare"] = build_distgan_step(variant, info)[0]
    timings = time_interleaved(timed, args.warmup, args.steps, device, cycle)
    first, median = timings["distgan"]
    flops = count_flops(step_fn, cycle)
    precision = settings.precision
    dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    ceiling = matmul_ceiling(dtype, device)
    batch = cfg.train.batch_size
    result: dict[str, Any] = {
        "recipe": cfg.name,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch": batch,
        "resolution": info.resolution,
        "precision": precision,
        "compile": settings.compile,
        "channels_last": settings.channels_last,
        "fused_optimizers": settings.fused_optimizers,
        "first_step_s": first,
        "step_s": median,
        "img_per_s": batch / median,
        "gflop_per_step": flops / 1e9,
        "achieved_gflop_s": flops / median / 1e9,
        "ceiling_gflop_s": ceiling / 1e9,
        "utilisation_pct": 100 * flops / median / ceiling,
    }
    if base_fn:
        result["baseline"] = baseline
        result["baseline_step_s"] = timings["baseline"][1]
        result["speedup"] = timings["baseline"][1] / median  # timed in turns with distgan's
    if args.compare:
        result["compare"] = args.compare
        result["compare_step_s"] = timings["compare"][1]
        result["compare_cost_pct"] = 100 * (timings["compare"][1] / median - 1)  # same turns
    print_table(f"distgan bench step: {cfg.name}", result)
    return result
