"""Run folders a trusted tool neither confuses nor lets be turned against it (issue 21, round 3):
a best.pt or metrics.jsonl of another run, copied folders and checkpoints (child lineages),
checkpoints that name code, planted symlinks, a billion-laughs recipe, W&B without network,
resumes that change settings silently, and the one-line answers promised for odd run folders.

Most runs here are in-process (``distgan.cli.main``): one tiny trained folder is shared."""

from __future__ import annotations

import json
import resource
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SHARDS, TINY, distgan_cmd, env_for_tests

import distgan
from distgan.cli import main
from distgan.engine import rundir
from distgan.errors import CheckpointError
from distgan.recipe import load_recipe

# the parent run: its lr decays over the second half of train.steps (the default recipe's kind)
PARENT = ["optim.G.decay_start=0.5", "optim.D.decay_start=0.5", "train.checkpoint_every=2"]


def train_argv(run_dir: Path | str, *extra: str) -> list[str]:
    common = ["log.wandb=disabled", "train.precision=no", "data.num_workers=1"]
    return ["train", "digits-cdcgan", *TINY, *common, f"run.dir={run_dir}", *extra]


def config_of(run_dir: Path | str, *extra: str):
    return load_recipe("digits-cdcgan", train_argv(run_dir, *extra)[2:])


def error_line(capsys: pytest.CaptureFixture[str], argv: list[str], code: int) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("distgan: error: "), err[-3000:]
    return line


def step_file(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:08d}.pt"


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step run with a checkpoint at step 2 whose W&B run id is 'parentwandb'."""
    run_dir = tmp_path_factory.mktemp("parent") / "run"
    assert main(train_argv(run_dir, *PARENT, "train.steps=2")) == 0
    state = load(step_file(run_dir, 2))
    torch.save({**state, "wandb_id": "parentwandb"}, step_file(run_dir, 2))
    return run_dir


# --------------------------------------------------------------------------- 6. best.pt, metrics


def test_a_best_checkpoint_of_another_run_is_set_aside_not_adopted(
    parent: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    best = {"metric": "moments_distance", "value": -1.0, "step": 2}  # unbeatable
    old = {**load(step_file(parent, 2)), "run_id": "oldrun", "best": best}
    torch.save(old, run_dir / "checkpoints" / "best.pt")
    old_rows = '{"step": 5, "loss/D": 1.0}\n'
    (run_dir / "metrics.jsonl").write_text(old_rows)
    evaluate = ["eval.every=2", "eval.metrics=[moments]", "eval.best=moments_distance"]
    evaluate += ["eval.n=8", "eval.batch_size=4", "train.steps=2"]
    assert main(train_argv(run_dir, *evaluate)) == 0
    err = capsys.readouterr().err

    new_id = load(step_file(run_dir, 2))["run_id"]
    assert load(run_dir / "checkpoints" / "best.pt")["run_id"] == new_id  # its own best
    kept = load(run_dir / "checkpoints" / "best-oldrun.pt")
    assert kept["run_id"] == "oldrun" and kept["best"]["value"] == -1.0
    (aside,) = run_dir.glob("metrics.replaced-*.jsonl")
    assert aside.read_text() == old_rows
    assert "best-oldrun.pt" in err and aside.name in err


# --------------------------------------------------------------------------- 7. copies


def test_a_copied_run_folder_or_checkpoint_starts_a_child_lineage(
    parent: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parent_state = load(step_file(parent, 2))
    copy = tmp_path / "copy"
    shutil.copytree(parent, copy)
    assert main(train_argv(copy, *PARENT, "train.steps=3")) == 0
    child = load(step_file(copy, 3))
    assert child["run_id"] != parent_state["run_id"]
    assert child["wandb_id"] != "parentwandb"  # a new W&B run
    assert child["parent"]["run_id"] == parent_state["run_id"]
    assert child["parent"]["wandb_id"] == "parentwandb" and child["parent"]["step"] == 2
    assert "copied" in capsys.readouterr().err

    # the copy's own checkpoints, seen under another path (a requeue on a node that mounts the
    # file system elsewhere; here: the folder renamed): the same lineage and W&B run
    moved = tmp_path / "moved"
    copy.rename(moved)
    plan = rundir._decide(config_of(moved), moved)
    assert plan.source == step_file(moved, 3)
    assert (plan.run_id, plan.same_wandb_run, plan.parent) == (child["run_id"], True, None)

    # one checkpoint copied into a new folder: a child of its run
    single = tmp_path / "single"
    (single / "checkpoints").mkdir(parents=True)
    shutil.copy(step_file(parent, 2), single / "checkpoints")
    plan = rundir._decide(config_of(single), single)
    assert plan.run_id != parent_state["run_id"] and not plan.same_wandb_run
    assert plan.parent["run_id"] == parent_state["run_id"]

    # 18. resume=<run folder>: its newest usable checkpoint, as a child in another folder
    other = tmp_path / "other"
    plan = rundir._decide(config_of(other, f"resume={parent}"), other)
    assert plan.source == step_file(parent, 2) and plan.parent["run_id"] == parent_state["run_id"]


# --------------------------------------------------------------------------- 8. code


def test_a_checkpoint_names_only_built_in_families_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "pwn").mkdir()
    (tmp_path / "pwn" / "__init__.py").write_text("")
    (tmp_path / "pwn" / "fam.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISTGAN_ALLOW_PLUGINS", raising=False)
    config = {"name": "x", "family": "pwn.fam", "data": {"shards": "x"}, "train": {"steps": 1}}
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000001.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"schema": 3, "step": 1, "networks": {}, "config": config, "data_info": {}}, ckpt)

    out = str(tmp_path / "x.png")
    line = error_line(capsys, ["sample", "--ckpt", str(ckpt), "--out", out], 1)
    assert "family 'pwn.fam'" in line and "DISTGAN_ALLOW_PLUGINS=pwn.fam" in line
    line = error_line(capsys, ["eval", "--ckpt", str(tmp_path / "run")], 1)
    assert "family 'pwn.fam'" in line
    with pytest.raises(CheckpointError, match="not a built-in family"):
        distgan.load(ckpt)
    assert not marker.exists()

    monkeypatch.setenv("DISTGAN_ALLOW_PLUGINS", "pwn.fam")  # the explicit opt-in
    try:
        line = error_line(capsys, ["sample", "--ckpt", str(ckpt), "--out", out], 2)
        assert marker.exists() and "defines no FAMILY class" in line
    finally:
        for name in ("pwn.fam", "pwn"):
            sys.modules.pop(name, None)


# --------------------------------------------------------------------------- 9. symlinks


def test_symlinks_planted_in_the_run_folder_are_not_followed(
    parent: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").symlink_to(victim)
    line = error_line(capsys, train_argv(run_dir, "train.steps=1"), 1)
    assert "'.lock' is a symbolic link" in line
    assert victim.read_text() == "precious\n"

    (run_dir / ".lock").unlink()
    (run_dir / "config.yaml").symlink_to(victim)
    assert main(train_argv(run_dir, "train.steps=1")) == 0
    assert victim.read_text() == "precious\n"
    config = run_dir / "config.yaml"
    assert not config.is_symlink() and "digits-cdcgan" in config.read_text()


# --------------------------------------------------------------------------- 10. YAML bombs


def limit_memory(gigabytes: float):
    def apply() -> None:
        size = int(gigabytes * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    return apply


def test_a_billion_laughs_recipe_is_one_line_within_a_memory_limit(tmp_path: Path) -> None:
    lines = ["family: dcgan", "data: {shards: x}"]
    lines += ['train: {steps: [&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"],']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"  &{name} [" + ",".join([f"*{prev}"] * 9) + "],")
    lines.append("]}")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert len(bomb.read_bytes()) < 700
    proc = subprocess.run(
        distgan_cmd("config", str(bomb)),
        cwd=ROOT,
        env=env_for_tests(),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit_memory(5),  # distgan with torch needs about 3.5 GB of address space
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "YAML aliases" in line and len(line) < 400


# --------------------------------------------------------------------------- 11. W&B offline


def test_wandb_auto_without_network_falls_back_to_offline_quickly(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a local port nobody listens on: no internet contacted
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in env_for_tests().items() if k != "WANDB_MODE"}
    env |= {"WANDB_API_KEY": "0" * 40, "WANDB_BASE_URL": f"http://127.0.0.1:{port}"}
    env["WANDB_DIR"] = env["WANDB_CONFIG_DIR"] = str(tmp_path)
    script = (
        "import time; from distgan.engine.reporting import resolve_wandb_mode as r; "
        "t = time.monotonic(); mode, hint = r('auto'); "
        "print(mode, round(time.monotonic() - t, 1)); print(hint)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    mode_line, hint = proc.stdout.strip().splitlines()
    mode, seconds = mode_line.split()
    assert mode == "offline" and float(seconds) < 6, proc.stdout
    assert f"127.0.0.1:{port}" in hint and "unreachable" in hint


# --------------------------------------------------------------------------- 17. resume changes


def test_resume_names_what_changed_and_refuses_to_go_back(
    parent: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(parent, run_dir)
    # (c) fewer steps than the checkpoint: refused; config.yaml stays as it was
    before = (run_dir / "config.yaml").read_text()
    line = error_line(capsys, train_argv(run_dir, *PARENT, "train.steps=1"), 2)
    assert "train.steps=1 is below step 2 of the checkpoint" in line
    assert (run_dir / "config.yaml").read_text() == before

    # (a) other shards, (b) changed overrides, (d) a schedule relative to train.steps
    shards = tmp_path / "shards"
    shards.mkdir()
    manifest = json.loads((SHARDS / "manifest.json").read_text())
    manifest["shards"] = manifest["shards"][:-1]
    for shard in manifest["shards"]:
        (shards / shard["file"]).symlink_to(SHARDS / shard["file"])
    (shards / "manifest.json").write_text(json.dumps(manifest))
    changed = [f"data.shards={shards}", "optim.G.lr=0.0001", "train.steps=3"]
    assert main(train_argv(run_dir, *PARENT, *changed)) == 0
    err = capsys.readouterr().err
    assert f"the shards in '{shards}' changed since the checkpoint" in err
    (differ,) = [ln for ln in err.splitlines() if "differ from the checkpoint's" in ln]
    assert "data.shards" in differ and "optim.G.lr (0.0004 → 0.0001)" in differ
    assert "train.steps (2 → 3)" in differ
    (schedule,) = [ln for ln in err.splitlines() if "decay_start" in ln]
    assert "optim.D.decay_start=0.5, optim.G.decay_start=0.5" in schedule
    assert "re-times" in schedule


# --------------------------------------------------------------------------- 18. one line


def test_odd_run_folders_are_one_line(
    parent: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    line = error_line(capsys, train_argv(f"{tmp_path}/{{x}}", "train.steps=1"), 2)
    assert "run.dir" in line and "{name}" in line

    # a full disk when the lock is written (a file-size limit: the write fails like ENOSPC)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
    try:
        code = main(train_argv(tmp_path / "full", "train.steps=1"))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err[-3000:]
    assert "could not write" in err.strip().splitlines()[-1] and ".lock" in err

    # a width change on resume names the network, the tensor and the likely key
    copy = tmp_path / "copy"
    shutil.copytree(parent, copy)
    line = error_line(capsys, train_argv(copy, *PARENT, "train.steps=3", "model.g_width=16"), 1)
    assert "network G" in line and "model.g_width (8 → 16)" in line

    # run.dir=. run.overwrite=true: the old run moves next to the folder
    monkeypatch.chdir(copy)
    assert main(train_argv(".", "resume=never", "run.overwrite=true", "train.steps=1")) == 0
    (aside,) = tmp_path.glob("copy.replaced-*")
    assert (aside / "checkpoints" / "step-00000002.pt").is_file()
    assert load(step_file(copy, 1))["step"] == 1
