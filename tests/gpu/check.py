"""The GPU check: what the CPU tests cannot show, in about 10 minutes on one GPU, offline.

Every shipped recipe trains a few steps on 1 GPU (fixture shards, tiny widths, evaluation with
the weights-free random extractor) in bf16 and in fp16 (GradScaler), a trimmed set with
``torch.compile`` on, DiffAugment and ADA (RGB and gray), DDP over every visible GPU (NCCL),
``distgan eval`` with KID and PR, and a CycleGAN run resumed from its checkpoint (image pools
restored from the CPU). It prints one table row per case (ok / the error's last line, seconds)
and writes ``--out`` as JSON; the exit code is the number of failed cases. Run it whenever a
GPU is at hand::

    bash tests/gpu/check.sh            # = python tests/gpu/check.py --out gpu-check.json

and put the table in README ("GPU check") and the session's note.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from conftest import (  # noqa: E402  (tests/ on the path first)
    TINY_RECIPES,
    distgan_cmd,
    env_for_tests,
    make_fixture_shards,
    recipe_args,
)

ROOT = TESTS.parent
STEPS = ["train.steps=4", "train.checkpoint_every=2", "eval.extractor=random", "log.wandb=disabled"]
# plain, penalty, U-Net, StyleGAN2 (its penalties' passes stay eager)
COMPILED = ["digits-cdcgan", "digits-wgangp", "facades-pix2pix", "digits-stylegan2"]


def run(cmd: list[str], timeout: float = 300) -> tuple[bool, str, float]:
    """(ok, the last line of its output, seconds)."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env_for_tests(), capture_output=True, text=True, timeout=timeout
        )
        lines = (proc.stderr + proc.stdout).strip().splitlines() or [""]
        ok, last = proc.returncode == 0, lines[-1][-160:]
    except subprocess.TimeoutExpired:
        ok, last = False, f"timed out after {timeout:.0f} s"
    return ok, last, time.perf_counter() - start


def cases(shards: dict[str, Path], runs: Path, gpus: int) -> dict[str, list[str]]:
    """Case name → command."""
    out: dict[str, list[str]] = {}
    for precision in ("bf16", "fp16"):
        for name in TINY_RECIPES:
            args = [*recipe_args(name, shards, runs / f"{name}-{precision}"), *STEPS]
            out[f"{name} {precision}"] = distgan_cmd(
                "train", name, *args, f"train.precision={precision}"
            )
    for name in COMPILED:
        args = [*recipe_args(name, shards, runs / f"{name}-compiled"), *STEPS]
        out[f"{name} bf16 compiled"] = distgan_cmd(
            "train", name, *args, "train.precision=bf16", "train.compile=true"
        )
    if gpus > 1:
        accelerate = str(Path(sys.executable).with_name("accelerate"))
        for name in ("digits-cdcgan", "horse2zebra-cyclegan"):
            args = [
                *recipe_args(name, shards, runs / f"{name}-ddp"),
                *STEPS,
                "train.precision=bf16",
            ]
            out[f"{name} DDP × {gpus} GPUs"] = [
                accelerate, "launch", "--config_file", str(ROOT / "launch" / "1node-gpus.yaml"),
                "--num_processes", str(gpus), "-m", "distgan", "train", name, *args,
            ]  # fmt: skip
    for tag, aug in (
        ("DiffAugment", ["aug.diffaug=color,translation,cutout"]),
        ("ADA", ["aug.ada=true", "aug.p=0.5", "aug.ada_interval=1"]),
    ):  # the augmentation ops forward and backward on the GPU, under autocast
        for name in ("celeba64-dcgan", "digits-wgangp"):
            args = [*recipe_args(name, shards, runs / f"{name}-{tag}"), *STEPS, *aug]
            out[f"{name} bf16 {tag}"] = distgan_cmd("train", name, *args, "train.precision=bf16")
    digits = runs / "digits-cdcgan-bf16"
    out["distgan eval fid,kid,pr"] = distgan_cmd(
        "eval", "--ckpt", str(digits), "--metrics", "fid,kid,pr", "--extractor", "random",
        "--n", "64",
    )  # fmt: skip
    stylegan2 = str(runs / "digits-stylegan2-bf16")  # the latent tools of issue 24 on the GPU
    mix = str(runs / "mix.png")
    out["distgan latent mix"] = distgan_cmd(
        "latent", "mix", "--ckpt", stylegan2, "--rows", "0-2", "--cols", "3-5", "--out", mix,
        "--device", "cuda",
    )  # fmt: skip
    out["distgan latent project"] = distgan_cmd(
        "latent", "project", "--ckpt", stylegan2, mix, "--out", str(runs / "projected"),
        "--steps", "20", "--device", "cuda",
    )  # fmt: skip
    cyclegan = runs / "horse2zebra-cyclegan-fp16"
    resume = [*recipe_args("horse2zebra-cyclegan", shards, cyclegan), *STEPS]
    out["horse2zebra-cyclegan fp16 resumed"] = distgan_cmd(
        "train", "horse2zebra-cyclegan", *resume, "train.precision=fp16", "train.steps=6"
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-check.json", help="JSON of the table")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no usable CUDA GPU here: nothing to check", file=sys.stderr)
        return 1
    gpus = torch.cuda.device_count()
    print(f"{torch.cuda.get_device_name(0)} × {gpus}, torch {torch.__version__}", flush=True)
    table: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        shards = make_fixture_shards(Path(tmp) / "shards")
        for case, cmd in cases(shards, Path(tmp) / "runs", gpus).items():
            ok, last, seconds = run(cmd)
            table[case] = {"ok": ok, "seconds": round(seconds, 1), "last_line": last}
            print(f"| {case} | {'ok' if ok else 'FAILED: ' + last} | {seconds:.0f} s |", flush=True)
    Path(args.out).write_text(json.dumps(table, indent=1) + "\n")
    failed = sum(not row["ok"] for row in table.values())
    print(f"{len(table) - failed} passed, {failed} failed")
    return failed


if __name__ == "__main__":
    sys.exit(main())
