"""DDP scaling: 1 process vs 2 processes (1 thread each) on the same global batch.

Each side runs the recipe's real training step (``engine.step.advance``) in its own process
group: one plain process, and two processes started like users start them (``accelerate launch``
with launch/cpu-2proc.yaml on CPU, gloo). Scaling efficiency = t(1 process) / (2 × t(2 processes)),
from ``--rounds`` pairs run in turns (the pair of the median efficiency is reported).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from distgan.bench._common import print_table

LAUNCH = Path(__file__).resolve().parents[2] / "launch" / "cpu-2proc.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", default="digits-cdcgan")
    parser.add_argument("--global-batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--rounds", type=int, default=3, help="1-process/2-process pairs, run in turns (median)"
    )
    parser.add_argument("--resolution", type=int, default=None, help="if the shards are absent")
    parser.add_argument("--channels", type=int, default=3, help="if the shards are absent")
    parser.add_argument("--classes", type=int, default=10, help="if the shards are absent")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, key=value")


def _worker_args(args: argparse.Namespace, batch: int) -> list[str]:
    out = [
        "--recipe",
        args.recipe,
        "--batch",
        str(batch),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--channels",
        str(args.channels),
        "--classes",
        str(args.classes),
    ]
    if args.resolution is not None:
        out += ["--resolution", str(args.resolution)]
    return [*out, *args.overrides]


def _run(cmd: list[str]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("DISTGAN_BENCH ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"bench worker failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[0].split(" ", 1)[1])["step_s"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.global_batch % 2:
        raise SystemExit("distgan: error: --global-batch must be even (split over 2 processes)")
    worker = ["-m", "distgan.bench.ddp"]
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    launch = [accelerate, "launch", "--config_file", str(LAUNCH)]
    pairs = []  # in turns, so that a shared machine's load drifts over both sides alike
    for _ in range(max(1, args.rounds)):
        one = _run([sys.executable, *worker, *_worker_args(args, args.global_batch)])
        two = _run([*launch, *worker, *_worker_args(args, args.global_batch // 2)])
        pairs.append((one, two))
    efficiencies = [100 * one / (2 * two) for one, two in pairs]
    middle = sorted(range(len(pairs)), key=lambda i: efficiencies[i])[len(pairs) // 2]
    one, two = pairs[middle]  # the round of the median efficiency
    result = {
        "recipe": args.recipe,
        "global_batch": args.global_batch,
        "rounds": len(pairs),
        "step_s_1_process": one,
        "step_s_2_processes": two,
        "scaling_efficiency_pct": efficiencies[middle],
        "efficiency_pct_per_round": ", ".join(f"{e:.1f}" for e in efficiencies),
    }
    print_table("distgan bench ddp: 1 vs 2 processes, 1 thread each", result)
    return result


def _worker() -> None:
    """One side of the comparison: time the real step in this process group, print from rank 0."""
    import torch

    from distgan.bench._common import build_distgan_step, dataset_info_for, phase_cycle, time_steps
    from distgan.recipe import load_recipe

    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--channels", type=int)
    parser.add_argument("--classes", type=int)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_recipe(args.recipe, [*args.overrides, f"train.batch_size={args.batch}"])
    device = torch.device("cpu")
    step_fn, run = build_distgan_step(cfg, dataset_info_for(cfg, args))
    step_s = time_steps(step_fn, args.warmup, args.steps, device, phase_cycle(run.phases))[1]
    if int(os.environ.get("RANK", "0")) == 0:
        print("DISTGAN_BENCH " + json.dumps({"step_s": step_s}), flush=True)
    # Leave the process group cleanly: a gloo group left to the interpreter's exit can abort
    # ("terminate called without an active exception") and fail the launch.
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    _worker()
