"""DDP weak scaling: N processes (1 thread each) with the same per-rank batch, N in ``--procs``.

Each world size runs the recipe's real training step (``engine.step.advance``) in processes
started like users start them (``accelerate launch`` with launch/cpu-2proc.yaml and
``--num_processes N`` on CPU, gloo); 1 process runs plainly. Per world size:

* weak-scaling efficiency = t(1 process, batch b) / t(N processes, batch b each);
* its decomposition, in ms per step: *bookkeeping* = t(N, all-reduce skipped by a no-op comm
  hook) − t(1) (DDP's hooks, bucket copies, and on an oversubscribed machine the contention),
  *all-reduce* = t(N) − t(N, skipped) (the gradient reduction itself; both variants run in the
  same processes, taking turns, so a shared machine's load weighs on both alike);
* *batch size*: what the same global batch N·b would cost one process, N·t(1, b) − t(1, N·b)
  (the strong-scaling loss that weak scaling does not pay), and the strong-scaling efficiency
  t(1, N·b) / (N · t(N));
* the all-reduce bytes per step (the trained networks' gradients; float64 on the wire with more
  than 2 ranks, engine/parallel.py).

A world larger than the machine's cores runs oversubscribed: its row says so and its figures
measure contention, not DDP. ``--rounds`` repeats everything in turns (median per world size).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

LAUNCH = Path(__file__).resolve().parents[2] / "launch" / "cpu-2proc.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", default="digits-cdcgan")
    parser.add_argument("--procs", default="1,2", help="world sizes, comma-separated (1,2,4)")
    parser.add_argument("--batch", type=int, default=64, help="per-rank batch (weak scaling)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="repeats, in turns (median)")
    parser.add_argument("--resolution", type=int, default=None, help="if the shards are absent")
    parser.add_argument("--channels", type=int, default=3, help="if the shards are absent")
    parser.add_argument("--classes", type=int, default=10, help="if the shards are absent")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, key=value")


def _worker_args(args: argparse.Namespace, batches: list[int]) -> list[str]:
    out = ["--recipe", args.recipe, "--batches", ",".join(map(str, batches)),
           "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--channels", str(args.channels), "--classes", str(args.classes)]  # fmt: skip
    if args.resolution is not None:
        out += ["--resolution", str(args.resolution)]
    return [*out, *args.overrides]


def _run(cmd: list[str]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("DISTGAN_BENCH ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"bench worker failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[0].split(" ", 1)[1])


def world_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(n) for n in text.split(",")})
    except ValueError:
        sizes = []
    if not sizes or sizes[0] < 1:
        raise SystemExit(f"distgan: error: --procs {text}: give world sizes such as 1,2,4")
    return sizes


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [n for n in world_sizes(args.procs) if n > 1]
    worker = ["-m", "distgan.bench.ddp"]
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    rounds: list[dict[int, dict[str, Any]]] = []
    for _ in range(max(1, args.rounds)):  # in turns: a shared machine's drift hits all alike
        batches = sorted({args.batch, *(n * args.batch for n in sizes)})
        one = _run([sys.executable, *worker, *_worker_args(args, batches)])
        measured = {1: {"step_s": one["step_s"][str(args.batch)], "one": one["step_s"]}}
        for n in sizes:
            launch = [accelerate, "launch", "--config_file", str(LAUNCH), "--num_processes", str(n)]
            measured[n] = _run([*launch, *worker, *_worker_args(args, [args.batch])])
        rounds.append(measured)
    rows = [_row(args, n, [r[n] for r in rounds], [r[1] for r in rounds]) for n in [1, *sizes]]
    from distgan.bench._common import describe_machine, machine

    result = {"recipe": args.recipe, "per_rank_batch": args.batch, "rounds": len(rounds),
              "machine": describe_machine(machine()), "rows": rows}  # fmt: skip
    _print(result)
    return result


def _row(
    args: argparse.Namespace, n: int, runs: list[dict[str, Any]], ones: list[dict[str, Any]]
) -> dict[str, Any]:
    """World size ``n``'s figures from the round of its median weak-scaling efficiency."""
    cores = os.cpu_count() or 1
    effs = [100 * one["step_s"] / r["step_s"] for r, one in zip(runs, ones, strict=True)]
    pick = sorted(range(len(runs)), key=lambda i: effs[i])[len(runs) // 2]
    r, one = runs[pick], ones[pick]
    row: dict[str, Any] = {"processes": n, "step_ms": 1000 * r["step_s"],
                           "weak_efficiency_pct": effs[pick],
                           "efficiency_pct_per_round": ", ".join(f"{e:.1f}" for e in effs),
                           "oversubscribed": n > cores}  # fmt: skip
    if n > 1:
        single, big = one["step_s"], one["one"][str(n * args.batch)]
        row |= {
            "bookkeeping_ms": 1000 * (r["local_s"] - single),
            "all_reduce_ms": 1000 * (r["step_s"] - r["local_s"]),
            "all_reduce_mb_per_step": r["all_reduce_bytes"] / 2**20,
            "batch_size_ms": 1000 * (n * single - big),
            "strong_efficiency_pct": 100 * big / (n * r["step_s"]),
        }
    return row


def _print(result: dict[str, Any]) -> None:
    title = (
        f"distgan bench ddp: weak scaling, {result['recipe']}, batch {result['per_rank_batch']} "
        f"per rank, 1 thread per process; {result['machine']}"
    )
    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column)
    for row in result["rows"]:
        cells = [str(row["processes"]), f"{row['step_ms']:.1f}"]
        for key in ("weak_efficiency_pct", *DECOMPOSITION, "strong_efficiency_pct"):
            cells.append(f"{row[key]:.2f}" if key in row else "—")
        note = f"oversubscribed: {row['processes']} processes on {os.cpu_count()} cores"
        cells.append(note if row["oversubscribed"] else "")
        table.add_row(*cells)
    Console(width=160).print(table)


COLUMNS = ["processes", "step ms", "weak eff. %", "bookkeeping ms", "all-reduce ms",
           "all-reduce MB/step", "batch size ms", "strong eff. %", "note"]  # fmt: skip
DECOMPOSITION = ("bookkeeping_ms", "all_reduce_ms", "all_reduce_mb_per_step", "batch_size_ms")


def _worker() -> None:
    """One world size: time the real step in this process group, print from rank 0. With
    several processes, also the step with the all-reduce skipped (a no-op comm hook)."""
    import torch

    from distgan.bench._common import (
        build_distgan_step,
        dataset_info_for,
        phase_cycle,
        time_interleaved,
    )
    from distgan.engine.parallel import DDPStrategy, skip_all_reduce_hook
    from distgan.recipe import load_recipe

    parser = argparse.ArgumentParser()
    for flag in ("--recipe", "--batches"):
        parser.add_argument(flag)
    for flag in ("--steps", "--warmup", "--channels", "--classes"):
        parser.add_argument(flag, type=int)
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device("cpu")
    steps, out = {}, {}
    for batch in map(int, args.batches.split(",")):
        cfg = load_recipe(args.recipe, [*args.overrides, f"train.batch_size={batch}"])
        step_fn, run = build_distgan_step(cfg, dataset_info_for(cfg, args))
        steps[str(batch)] = step_fn
        if world > 1:
            DDPStrategy.comm_hook = staticmethod(skip_all_reduce_hook)
            steps["local"] = build_distgan_step(cfg, dataset_info_for(cfg, args))[0]
            DDPStrategy.comm_hook = None
            out["all_reduce_bytes"] = _reduced_bytes(run, world)
    times = time_interleaved(steps, args.warmup, args.steps, device, phase_cycle(run.phases))
    if world > 1:
        out |= {"step_s": times[args.batches][1], "local_s": times["local"][1]}
    else:
        out["step_s"] = {batch: t[1] for batch, t in times.items()}
    if int(os.environ.get("RANK", "0")) == 0:
        print("DISTGAN_BENCH " + json.dumps(out), flush=True)
    # Leave the process group cleanly: a gloo group left to the interpreter's exit can abort
    # ("terminate called without an active exception") and fail the launch.
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _reduced_bytes(run: Any, world: int) -> float:
    """Gradient bytes all-reduced per step, averaged over the phase cycle (float64 on the wire
    with more than 2 ranks)."""
    per_step = 0.0
    for phase in run.phases:
        params = sum(p.numel() for name in phase.trains for p in run.networks[name].parameters())
        per_step += params * (8 if world > 2 else 4) / phase.every
    return per_step


if __name__ == "__main__":
    _worker()
