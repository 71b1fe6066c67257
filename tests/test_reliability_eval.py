"""Issue 21 ("Reliability, round 3"): evaluation never costs a checkpoint or a run, read-only
shard folders only cost the reference cache, the figures logged during training are those of
`distgan eval` on another number of processes, the record states what was measured, a clean
stop under a launcher ends in one line and exit 75, and accelerate's launch options are honoured
or refused in one line.

One 2-process launch (`distgan launch`, the shard folder mounted read-only in a private mount
namespace) serves findings 1, 2, 13, 15 and 16; the rest run in this process before any training.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, TINY, distgan_cmd, env_for_tests, kill_tree

from distgan.cli import main

N_SAMPLES = 60  # the tiny shard folder: fewer than eval.n asks for


def make_shards(folder: Path) -> None:
    """60 random 32×32 gray images with digit labels (the shape of shards/digits)."""
    from distgan.data.shards import Sample, write_shards

    rng = np.random.default_rng(0)
    samples = [
        Sample(f"d{i:03d}", rng.integers(0, 256, (32, 32), dtype=np.uint8), i % 10)
        for i in range(N_SAMPLES)
    ]
    meta = dict(source="synthetic", split="all", resolution=32, channels=1)
    meta["class_names"] = [str(i) for i in range(10)]
    write_shards(samples, folder, samples_per_shard=10, meta=meta)


def read_only(folder: Path, cmd: list[str]) -> list[str]:
    """``cmd`` with ``folder`` bind-mounted read-only (EROFS, as NFS/squashfs mounts give; root
    ignores permission bits) in a mount namespace of its own (nothing to undo afterwards)."""
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(folder), *cmd]


def can_mount_read_only(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    cmd = read_only(probe, ["sh", "-c", f"! touch {probe}/x 2>/dev/null"])
    return shutil.which("unshare") is not None and subprocess.run(cmd).returncode == 0


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_launched_run_with_read_only_shards_and_a_failing_evaluation(tmp_path: Path) -> None:
    """2 processes, `distgan launch`, the shards read-only, the first evaluation failing on rank
    1 (tests/plugins/flaky_eval.py), SIGTERM to the launcher once a later evaluation is logged."""
    if not can_mount_read_only(tmp_path):
        pytest.skip("no read-only bind mount here (needs unshare and mount as root)")
    shards, run_dir = tmp_path / "shards", tmp_path / "run"
    make_shards(shards)
    (shards / ".distgan-reference").mkdir()  # e.g. `distgan eval ref` ran before it was mounted
    config = str(ROOT / "launch" / "cpu-2proc.yaml")
    args = [*TINY, f"data.shards={shards}", "family=plugins.flaky_eval", f"run.dir={run_dir}"]
    args += ["train.steps=1000", "train.checkpoint_every=2", "train.stop_check_every=1"]
    args += [
        "run.keep_last=100",
        "log.wandb=disabled",
        "data.num_workers=1",
        "eval.every=2",
        "eval.n=5000",
    ]
    args += ["eval.batch_size=16", "eval.metrics=[digits,fid,kid,pr]", "eval.extractor=random"]
    cmd = read_only(shards, distgan_cmd("launch", "--config_file", config, "train", *args))
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env_for_tests(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not (
        (run_dir / "metrics.jsonl").is_file() and any("eval/fid" in r for r in rows(run_dir))
    ):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                kill_tree(proc.pid)
            raise AssertionError(f"no evaluation logged:\n{proc.communicate()[0][-6000:]}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # the launcher (`distgan launch`), as scancel or Ctrl-C
    output = proc.communicate(timeout=120)[0]

    # 13: a clean stop under the launcher is one line and exit 75, no traceback
    assert "Traceback" not in output, output[-6000:]
    assert proc.returncode == 75, output[-3000:]
    last = output.strip().splitlines()[-1]
    step = int(re.fullmatch(r"distgan: stopped cleanly at step (\d+) \(SIGTERM\).*", last)[1])
    assert (run_dir / "checkpoints" / f"step-{step:08d}.pt").is_file()

    # 2: the first evaluation failed on rank 1; both ranks said so in one line and trained on,
    # and that step's checkpoint had been written before it
    for rank in (0, 1):
        assert re.search(
            rf"\[distgan r{rank}\] step 2: evaluation failed \(LinAlgError: injected: SVD did not "
            r"converge on rank 1\); training goes on",
            output,
        ), output[-6000:]
    assert (run_dir / "checkpoints" / "step-00000002.pt").is_file()
    logged = [r for r in rows(run_dir) if "eval/fid" in r]
    assert logged and logged[0]["step"] == 4

    # 1: the read-only shard folder cost only the cache, with one warning for the whole run
    assert output.count("not caching the reference statistics") == 1, output[-6000:]
    assert "Read-only file system" in output
    assert not any((shards / ".distgan-reference").iterdir())

    # 16: the samples really evaluated, and that the reference images are the training images
    assert logged[0]["eval/n"] == N_SAMPLES
    assert f"eval.n=5000, but {shards} holds only {N_SAMPLES} samples" in output
    assert "evaluating against training images" in output

    # 15: `distgan eval` on 1 process (read-only shards too) gives the figures the 2-process run
    # logged at that step; eval ref there fails in one line (it exists to write the cache)
    ckpt = str(run_dir / "checkpoints" / "step-00000004.pt")
    trusted = {**env_for_tests(), "DISTGAN_ALLOW_PLUGINS": "plugins.flaky_eval"}  # our family
    evaluated = subprocess.run(
        read_only(shards, distgan_cmd("eval", "--ckpt", ckpt, "--json")),
        cwd=ROOT, env=trusted, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert evaluated.returncode == 0 and "Traceback" not in evaluated.stderr, evaluated.stderr
    figures = json.loads(evaluated.stdout)
    for key in ("digits_accuracy", "digits_fd", "fid", "kid", "precision", "recall"):
        assert figures[key] == pytest.approx(logged[0][f"eval/{key}"], rel=1e-6, abs=1e-12), key
    recorded = figures["protocol"]
    assert (recorded["n"], recorded["n_asked"], recorded["processes"]) == (N_SAMPLES, 5000, 1)
    assert recorded["reference_is_training_data"] and "training images" in recorded["reference"]
    ref = subprocess.run(
        read_only(shards, distgan_cmd("eval", "ref", "--shards", str(shards), "--n", "20",
                                      "--extractor", "random")),
        cwd=ROOT, env=env_for_tests(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ref.returncode == 1 and "Traceback" not in ref.stderr, ref.stderr
    assert (
        ref.stderr.strip()
        .splitlines()[-1]
        .startswith("distgan: error: could not write the reference statistics")
    )


def one_line(capsys: pytest.CaptureFixture[str], code: int, expected: int, needle: str) -> None:
    err = capsys.readouterr().err
    assert code == expected and "Traceback" not in err, err[-3000:]
    assert needle in err.strip().splitlines()[-1], err[-3000:]


def test_eval_n_below_what_a_metric_needs_is_refused_at_start_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """eval.n=1 used to pass validation, train, then crash in FID's covariance (n − 1 = 0)."""
    train = ["train", *TINY, f"run.dir={tmp_path / 'run'}", "train.steps=4", "log.wandb=disabled"]
    for metric, n, least in (("fid", 1, 2), ("pr", 3, 4), ("digits", 1, 2)):
        evaluated = ["eval.every=2", f"eval.n={n}", f"eval.metrics=[{metric}]", "eval.best=null"]
        code = main([*train, *evaluated, "eval.extractor=random"])
        one_line(capsys, code, 2, f"eval.n={n}: metric '{metric}' needs at least {least} samples")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("env", "extra", "needle"),
    [
        ({"ACCELERATE_USE_FSDP": "true"}, [], "chooses FSDP, which distgan does not run"),
        ({"ACCELERATE_DYNAMO_BACKEND": "AOT_EAGER"}, [], "with inductor only (train.compile"),
        ({"ACCELERATE_DYNAMO_BACKEND": "INDUCTOR"}, ["train.compile=false"], "train.compile"),
        ({"ACCELERATE_MIXED_PRECISION": "bf16"}, ["train.precision=no"], "train.precision=no"),
        ({"ACCELERATE_MIXED_PRECISION": "fp8"}, [], "mixed_precision fp8"),
        ({"ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "4"}, ["train.accumulate=2"], "accumulate=2"),
    ],
)
def test_launch_options_distgan_cannot_honour_are_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    extra: list[str],
    needle: str,
) -> None:
    """What `accelerate launch` passes to the processes (accelerate 1.15's environment
    variables) was ignored (precision, accumulation), compiled the critic whole (dynamo: every
    gradient penalty broke) or ended in accelerate's traceback (FSDP)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    run_dir = tmp_path / "run"
    code = main(
        ["train", *TINY, f"run.dir={run_dir}", "train.steps=2", "log.wandb=disabled", *extra]
    )
    one_line(capsys, code, 2, needle)
    assert not run_dir.exists()


def test_launch_options_fill_in_the_keys_left_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """The precedence rule (README, "Several processes and clusters"): distgan's key decides; a
    launch option fills in a key left at auto (or train.accumulate left unset); dynamo is then
    cleared so that accelerate does not compile the networks as well."""
    import os

    from distgan.engine.launch_options import honour_launch_options
    from distgan.recipe import load_recipe

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "INDUCTOR")
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "4")
    cfg = load_recipe("digits-cdcgan")
    notes = honour_launch_options(cfg)
    assert (cfg.train.precision, cfg.train.compile, cfg.train.accumulate) == ("bf16", True, 4)
    assert len(notes) == 3 and os.environ["ACCELERATE_DYNAMO_BACKEND"] == "NO"
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "INDUCTOR")
    same = load_recipe("digits-cdcgan", ["train.precision=bf16", "train.accumulate=4"])
    assert honour_launch_options(same) == [
        "train.compile=true (from the launch's dynamo_backend inductor)"
    ]
