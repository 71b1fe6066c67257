"""Critic step with vs without the gradient penalty (target: the penalty costs ≤ 1.6× the step).

Times only the D phase of a WGAN-GP recipe (default: the seed's ``celeba64-wgangp``) on synthetic
batches, once with ``loss.gp_weight`` as the recipe sets it and once with 0, in the same run.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from distgan.bench._common import (
    build_distgan_step,
    dataset_info_for,
    print_table,
    time_interleaved,
)
from distgan.recipe import load_recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", default="celeba64-wgangp")
    parser.add_argument("--batch", type=int, default=None, help="per-process batch (recipe's)")
    parser.add_argument("--precision", choices=["no", "bf16", "fp16"], default=None)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=None, help="if the shards are absent")
    parser.add_argument("--channels", type=int, default=3, help="if the shards are absent")
    parser.add_argument("--classes", type=int, default=0, help="if the shards are absent")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, key=value")


def run(args: argparse.Namespace) -> dict[str, Any]:
    overrides = list(args.overrides)
    if args.batch is not None:
        overrides.append(f"train.batch_size={args.batch}")
    if args.precision is not None:
        overrides.append(f"train.precision={args.precision}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    step_fns = {}
    for label, extra in (("with_gp", []), ("without_gp", ["loss.gp_weight=0", "loss.r1_gamma=0"])):
        cfg = load_recipe(args.recipe, [*overrides, "loss.reg_every=1", *extra])
        if label == "with_gp" and not (cfg.loss.gp_weight or cfg.loss.r1_gamma):
            cfg = load_recipe(args.recipe, [*overrides, "loss.reg_every=1", "loss.gp_weight=10"])
        info = dataset_info_for(cfg, args)
        step_fns[label], run = build_distgan_step(cfg, info, phases=["D"])
    measured = time_interleaved(step_fns, args.warmup, args.steps, device)  # in turns
    timings = {label: median for label, (_, median) in measured.items()}
    result = {
        "recipe": cfg.name,
        "device": str(device),
        "batch": cfg.train.batch_size,
        "precision": run.settings.precision,
        "critic_step_with_gp_s": timings["with_gp"],
        "critic_step_without_gp_s": timings["without_gp"],
        "gp_overhead_ratio": timings["with_gp"] / timings["without_gp"],
    }
    print_table(f"distgan bench gp: {cfg.name}", result)
    return result
