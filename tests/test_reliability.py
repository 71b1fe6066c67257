"""Nothing lost across runs in one folder: lineage and overwrite, one trainer per folder, no
non-finite checkpoint, a run continued elsewhere is a new W&B run, and a fault soak (kill -9 at
random moments, a full disk during a checkpoint, a corrupt newest checkpoint) that ends exactly
where an uninterrupted run ends."""

from __future__ import annotations

import contextlib
import json
import random
import re
import resource
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    ROOT,
    TINY,
    assert_bit_identical,
    distgan_cmd,
    env_for_tests,
    final_weights,
    kill_tree,
    launch_cmd,
    run,
)
from wandb_reader import read_offline_run

from distgan.engine.runtime import Precision
from distgan.errors import TrainingDiverged


def train(run_dir: Path, *extra: str) -> list[str]:
    return ["train", "digits-cdcgan", *TINY, f"run.dir={run_dir}", "log.wandb=disabled", *extra]


def last_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


def checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def test_a_new_run_in_an_occupied_folder_is_refused_or_moves_the_old_one_aside(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    run(distgan_cmd(*train(run_dir, "train.steps=10", "train.checkpoint_every=5")))
    fresh = train(run_dir, "train.steps=3", "resume=never", "run.keep_last=1", "log.every=3")
    proc = run(distgan_cmd(*fresh), check=False)
    assert proc.returncode == 2
    assert "already holds a run (checkpoints up to step-00000010.pt)" in last_line(proc)
    assert checkpoints(run_dir) == ["step-00000005.pt", "step-00000010.pt"]

    run(distgan_cmd(*fresh, "run.overwrite=true"))
    assert checkpoints(run_dir) == ["step-00000003.pt"]
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3]  # the new run's rows only
    (aside,) = tmp_path.glob("run.replaced-*")
    assert checkpoints(aside) == ["step-00000005.pt", "step-00000010.pt"]
    assert (aside / "metrics.jsonl").is_file()

    # every checkpoint unusable: refuse, never silently start again at step 0
    ckpt = run_dir / "checkpoints" / "step-00000003.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    proc = run(distgan_cmd(*train(run_dir, "train.steps=6")), check=False)
    assert proc.returncode == 1 and "none of the 1 checkpoints" in last_line(proc)
    assert checkpoints(run_dir) == ["step-00000003.pt"]


def test_no_checkpoint_with_nonfinite_weights(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    common = ["train.checkpoint_every=3", "log.every=1000"]
    run(distgan_cmd(*train(run_dir, *common, "train.steps=3")))
    proc = run(
        distgan_cmd(*train(run_dir, *common, "train.steps=9", "optim.D.lr=1e30")), check=False
    )
    assert proc.returncode == 1
    line = last_line(proc)
    assert "the weights of D" in line and "became inf/NaN by step 6: no checkpoint written" in line
    assert "the newest finite one is step-00000003.pt" in line
    assert checkpoints(run_dir) == ["step-00000003.pt"]

    # a non-finite checkpoint (as older versions wrote them) is skipped by resume=auto
    state = torch.load(run_dir / "checkpoints" / "step-00000003.pt", weights_only=True)
    next(iter(state["networks"]["D"].values())).fill_(float("nan"))
    state["step"] = 4
    torch.save(state, run_dir / "checkpoints" / "step-00000004.pt")
    proc = run(distgan_cmd(*train(run_dir, *common, "train.steps=6")))
    assert "inf/NaN weights in D" in proc.stderr
    assert "resumed from" in proc.stderr and "step-00000003.pt at step 3" in proc.stderr


def test_fp16_steps_skipped_in_a_row_stop_the_run() -> None:
    """Simulates the CUDA fp16 path with a CPU GradScaler: inf gradients on every step."""
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    precision = Precision("no", torch.device("cpu"), ["D"], max_skipped_in_a_row=3)
    precision.scalers["D"] = torch.amp.GradScaler("cpu", init_scale=1024.0)

    def step(gradient_scale: float) -> torch.Tensor | None:
        optimizer.zero_grad()
        precision.backward(model(torch.ones(2, 3)).sum() * gradient_scale, "D")
        return precision.step([optimizer], "D")

    for _ in range(2):
        assert not step(float("inf"))
    precision.check()  # 2 in a row: goes on
    for _ in range(3):
        assert not step(float("inf"))
    assert step(1.0)  # a good step after 3 skipped in a row, before the check (at the next log)
    with pytest.raises(TrainingDiverged, match="5 optimizer steps in a row were skipped"):
        precision.check()
    precision.check()  # counted again from the check


@pytest.mark.slow
def test_one_trainer_per_run_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = subprocess.Popen(
        distgan_cmd(*train(run_dir, "train.steps=100000", "train.checkpoint_every=5")),
        cwd=ROOT,
        env=env_for_tests(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoints" / "step-00000005.pt").exists():
            assert time.monotonic() < deadline and first.poll() is None, "first trainer failed"
            time.sleep(0.1)
        second = run(distgan_cmd(*train(run_dir, "train.steps=10")), check=False)
        assert second.returncode == 1
        assert f"is in use by another trainer (pid {first.pid} on" in last_line(second)
    finally:
        kill_tree(first.pid)
        first.wait()
    reached = max(int(p.stem.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*.pt"))
    more = (f"train.steps={reached + 2}", "train.checkpoint_every=5")  # (fewer steps: refused)
    third = run(distgan_cmd(*train(run_dir, *more)))
    assert "resumed from" in third.stderr  # a crashed trainer leaves no stale lock


def test_a_run_continued_in_another_folder_is_a_new_lineage_and_wandb_run(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["train.checkpoint_every=6", "log.wandb=offline"]
    run(distgan_cmd(*train(a, *args, "train.steps=6")))
    source = a / "checkpoints" / "step-00000006.pt"
    run(distgan_cmd(*train(b, *args, "train.steps=8", f"resume={source}")))
    parent = torch.load(source, weights_only=True)
    child = torch.load(b / "checkpoints" / "step-00000008.pt", weights_only=True)
    assert child["wandb_id"] != parent["wandb_id"] and child["run_id"] != parent["run_id"]
    assert child["parent"]["wandb_id"] == parent["wandb_id"]
    assert child["parent"]["run_id"] == parent["run_id"] and child["parent"]["step"] == 6
    config = read_offline_run(next((b / "wandb").glob("offline-run-*")))["config"]
    assert config["lineage"]["parent"]["wandb_id"] == parent["wandb_id"]  # W&B records it
    # continuing in its own folder keeps the lineage and the W&B run
    run(distgan_cmd(*train(a, *args, "train.steps=12")))
    later = torch.load(a / "checkpoints" / "step-00000012.pt", weights_only=True)
    assert (later["run_id"], later["wandb_id"]) == (parent["run_id"], parent["wandb_id"])


# --------------------------------------------------------------------------- the soak


@contextlib.contextmanager
def small_disk(path: Path, megabytes: int):
    """A real small file system (tmpfs) where the machine allows mounting one; else a folder
    (the full disk is then simulated with a file-size limit: writes fail with EFBIG)."""
    path.mkdir()
    mounted = (
        shutil.which("mount") is not None
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
            capture_output=True,
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=True)


def newest(run_dir: Path) -> int:
    names = [p.name for p in (run_dir / "checkpoints").glob("step-*.pt")]
    return max((int(n[5:13]) for n in names), default=0)


@pytest.mark.slow
def test_fault_soak_ends_where_an_uninterrupted_run_ends(tmp_path: Path) -> None:
    steps, seed = 40, 20261124
    rng = random.Random(seed)
    args = [*TINY, f"train.steps={steps}", "train.checkpoint_every=4", "train.precision=no"]
    args += ["log.wandb=disabled", "train.seed=4"]
    reference = tmp_path / "reference"
    run(launch_cmd(2, "train", "digits-cdcgan", *args, f"run.dir={reference}"))

    with small_disk(tmp_path / "disk", megabytes=8) as tmpfs:
        run_dir = tmp_path / "disk" / "run"
        cmd = launch_cmd(2, "train", "digits-cdcgan", *args, f"run.dir={run_dir}")
        # 1. kill -9 the whole 2-process tree at random moments (mid-checkpoint ones included)
        for _ in range(3):
            before = newest(run_dir) if run_dir.exists() else 0
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env_for_tests(), stdout=subprocess.DEVNULL)
            deadline = time.monotonic() + 240
            while (not run_dir.exists() or newest(run_dir) <= before) and proc.poll() is None:
                assert time.monotonic() < deadline, "no progress"
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.5))
            kill_tree(proc.pid)
            proc.wait()
        progress = newest(run_dir)
        assert 0 < progress < steps, f"seed {seed}: the kills left step {progress}"

        # 2. the disk fills up during a checkpoint: one line, no partial file, older ones intact
        size = (run_dir / "checkpoints" / f"step-{progress:08d}.pt").stat().st_size
        filler, limit = tmp_path / "disk" / "filler", None
        if tmpfs:
            filler.write_bytes(bytes(shutil.disk_usage(filler.parent).free - size // 2))
        else:
            limit = size // 2
        full = subprocess.run(
            cmd,
            cwd=ROOT,
            env=env_for_tests(),
            capture_output=True,
            text=True,
            preexec_fn=None
            if limit is None
            else lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
        )
        assert full.returncode != 0
        assert "could not write checkpoint" in full.stderr and "are intact" in full.stderr
        # (accelerate's launcher reports a failed child with a traceback of its own)
        assert not re.search(r'File "[^"]*/distgan/', full.stderr), full.stderr[-3000:]
        assert not list((run_dir / "checkpoints").glob("*.tmp"))
        assert newest(run_dir) == progress
        filler.unlink(missing_ok=True)

        # 3. the newest checkpoint is corrupted: resume from the one before, finish the run
        names = sorted((run_dir / "checkpoints").glob("step-*.pt"))
        names[-1].write_bytes(names[-1].read_bytes()[: size // 3])
        done = run(cmd)
        assert "skipping checkpoint" in done.stderr
        assert f"resumed from {names[-2]}" in done.stderr

        # the same weights as the uninterrupted run, and one log row per logged step
        assert_bit_identical(final_weights(reference, steps), final_weights(run_dir, steps))
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        rows = [json.loads(x)["step"] for x in lines]
        assert rows == sorted(set(rows)) and rows[-1] == steps
    print(f"soak: seed {seed}, {'tmpfs' if tmpfs else 'RLIMIT_FSIZE'}, killed at ≤ {progress}")
