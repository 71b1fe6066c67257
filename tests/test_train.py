"""End-to-end training: exact resume after SIGKILL (1 process), rank synchronisation,
the run folder, W&B offline logging, and the sample/export commands on a real checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    TINY,
    assert_bit_identical,
    distgan_cmd,
    final_weights,
    launch_cmd,
    run,
    run_and_kill_after,
)
from safetensors import safe_open
from wandb_reader import read_offline_run

STEPS = 60
EVERY = 10


def train_args(run_dir: Path, *extra: str) -> list[str]:
    return [
        "train",
        "digits-cdcgan",
        *TINY,
        f"run.dir={run_dir}",
        f"train.steps={STEPS}",
        f"train.checkpoint_every={EVERY}",
        "train.seed=3",
        "train.precision=no",  # exact resume is promised in fp32 (bf16 autocast: see test_clusters)
        *extra,
    ]


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1])
def test_resume_after_sigkill_is_bit_exact(tmp_path: Path, processes: int) -> None:
    """(2 processes: tests/test_recipes.py resumes WGAN-GP, CycleGAN, the VAE and EigenGAN after
    SIGKILL, and tests/test_contract.py a two-generator family; the same launch and code path.)
    The data are read by the trainer (reference), 2 loader processes (killed run) and 1 (resumed):
    the number of loader processes must not change a batch."""
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"

    def cmd(run_dir: Path, loader_processes: int) -> list[str]:
        extra = ("log.wandb=disabled", f"data.loader_processes={loader_processes}")
        return launch_cmd(processes, *train_args(run_dir, *extra))

    ref = run(cmd(reference, 0))

    # Hard-kill the whole process tree right after the first checkpoint, then resume=auto.
    first = interrupted / "checkpoints" / f"step-{EVERY:08d}.pt"
    run_and_kill_after(cmd(interrupted, 2), first)
    assert not (interrupted / "checkpoints" / f"step-{STEPS:08d}.pt").exists()
    resumed = run(cmd(interrupted, 1))
    match = re.search(r"resumed from \S+ at step (\d+)", resumed.stderr)
    assert match and EVERY <= int(match.group(1)) < STEPS, resumed.stderr[-3000:]

    assert_bit_identical(final_weights(reference, STEPS), final_weights(interrupted, STEPS))

    # The documented launch really gives `processes` synchronised ranks.
    for log in (ref.stderr, resumed.stderr):
        for rank in range(processes):
            expected = "backend=gloo" if processes > 1 else "backend=none"
            assert re.search(rf"rank {rank}/{processes} {expected}", log), log[-3000:]
        if processes > 1:
            assert f"step {STEPS}: parameters identical on all 2 ranks" in log


@pytest.mark.slow
def test_run_folder_wandb_sample_export(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run(distgan_cmd(*train_args(run_dir, "log.wandb=offline", "train.steps=20")))

    # The run folder: config, checkpoints (keep-last 3), sample grids, metrics and loss plot.
    assert (run_dir / "config.yaml").read_text().startswith("name: digits-cdcgan")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "step-00000010.pt",
        "step-00000020.pt",
    ]
    assert (run_dir / "samples" / "step-00000020.png").stat().st_size > 0
    assert (run_dir / "loss.png").stat().st_size > 0

    # The offline W&B run holds the scalars and the sample grids.
    (folder,) = list((run_dir / "wandb").glob("offline-run-*"))
    record = read_offline_run(folder)
    state = torch.load(run_dir / "checkpoints" / "step-00000020.pt", weights_only=True)
    assert record["id"] == state["wandb_id"]
    assert record["config"]["train"]["steps"] == 20
    logged = {row["_step"]: row for row in record["history"] if "loss/D" in row}
    assert sorted(logged) == [5, 10, 15, 20]
    assert all(np.isfinite(row["loss/G"]) for row in logged.values())
    assert len(record["images"]) == 2  # steps 10 and 20
    assert all((folder / image).is_file() for image in record["images"])

    # `distgan sample`: a PNG grid, and uint8 arrays with labels.
    ckpt = run_dir / "checkpoints" / "step-00000020.pt"
    run(distgan_cmd("sample", "--ckpt", str(ckpt), "--n", "20", "--out", str(tmp_path / "g.png")))
    assert (tmp_path / "g.png").stat().st_size > 0
    npz = tmp_path / "threes.npz"
    run(distgan_cmd("sample", "--ckpt", str(ckpt), "--n", "6", "--label", "3", "--out", str(npz)))
    arrays = np.load(npz)
    assert arrays["images"].shape == (6, 32, 32, 1) and arrays["images"].dtype == np.uint8
    assert arrays["labels"].tolist() == [3] * 6

    # `distgan export`: G_ema and G weights with the model config in the metadata.
    out = tmp_path / "g.safetensors"
    run(distgan_cmd("export", "--ckpt", str(ckpt), "--out", str(out)))
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        assert meta["family"] == "dcgan" and '"num_classes": 10' in meta["hparams"]
        assert torch.equal(
            f.get_tensor("G_ema.net.0.weight"), state["networks"]["G_ema"]["net.0.weight"]
        )


@pytest.mark.slow
def test_time_limit_stops_both_ranks_cleanly_and_resumes(tmp_path: Path) -> None:
    """train.time_limit: the 2 ranks agree on a step, one checkpoint is written, every rank has
    closed its logs before any exits (the launcher kills the rest once one exits), exit 75."""
    run_dir = tmp_path / "run"
    args = train_args(run_dir, "log.wandb=offline", "train.stop_check_every=1", "log.every=1")
    proc = run(launch_cmd(2, *args, "train.time_limit=0.001"), check=False)
    assert proc.returncode != 0
    match = re.search(r"r0\] stopped at step (\d+) \(train.time_limit\)", proc.stderr)
    assert match, proc.stderr[-3000:]
    step = int(match.group(1))
    assert re.search(rf"r1\] stopped at step {step} \(", proc.stderr), proc.stderr[-3000:]
    assert (run_dir / "checkpoints" / f"step-{step:08d}.pt").is_file()
    # rank 0's last acts before exiting: W&B finished (its history readable), then loss.png
    (folder,) = list((run_dir / "wandb").glob("offline-run-*"))
    assert [row["_step"] for row in read_offline_run(folder)["history"]][-1] == step
    assert (run_dir / "loss.png").is_file()

    resumed = run(launch_cmd(2, *args))
    assert f"resumed from {run_dir}/checkpoints/step-{step:08d}.pt" in resumed.stderr
    assert final_weights(run_dir, STEPS)
