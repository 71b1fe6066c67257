"""Configuration and bad input: one clear line, a non-zero exit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from conftest import TINY, distgan_cmd, run

from distgan.cli import main


def error_line(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 2) -> str:
    assert main(argv) == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("distgan: error: ")
    return lines[0]


def test_config_prints_the_resolved_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "digits-cdcgan", "train.steps=7", "train.lr_d=1e-4"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["name"] == "digits-cdcgan" and cfg["family"] == "dcgan"
    assert cfg["train"]["steps"] == 7 and cfg["optim"]["D"]["lr"] == 1e-4  # the shorthand
    assert cfg["model"]["conditional"] is True and cfg["model"]["z_dim"] == 64
    assert cfg["log"]["wandb"] == "auto" and cfg["resume"] == "auto"


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["config", "digits-cdcgn"], ["unknown recipe 'digits-cdcgn'", "digits-cdcgan"]),
        (["config", "digits-cdcgan", "train.step=5"], ["unknown key 'train.step'", "steps"]),
        (["config", "digits-cdcgan", "model.zdim=5"], ["unknown key 'model.zdim'", "z_dim"]),
        (["config", "digits-cdcgan", "train.steps=many"], ["'train.steps'", "'many'", "integer"]),
        (["config", "digits-cdcgan", "train.precision=fp8"], ["train.precision", "bf16"]),
        (["config", "digits-cdcgan", "log.wandb=maybe"], ["log.wandb", "offline"]),
        (["config", "digits-cdcgan", "steps"], ["key=value"]),
    ],
)
def test_config_mistakes(capsys: pytest.CaptureFixture[str], argv: list[str], needles) -> None:
    line = error_line(capsys, argv)
    for needle in needles:
        assert needle in line


def test_missing_shard_folder(tmp_path: Path) -> None:
    proc = run(
        distgan_cmd("train", *TINY, f"data.shards={tmp_path}/nope", f"run.dir={tmp_path}/r"),
        check=False,
    )
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()[-1:]
    assert "shard folder" in line and f"{tmp_path}/nope" in line and "data.shards" in line
    assert "Traceback" not in proc.stderr


def test_shards_of_another_resolution_than_the_recipe(tmp_path: Path, root: Path) -> None:
    """celeba64-wgangp's networks are built for 64 px (data.resolution); the digits are 32 px."""
    digits = root / "shards" / "digits"
    argv = ["train", "celeba64-wgangp", f"data.shards={digits}", f"run.dir={tmp_path}/r"]
    proc = run(distgan_cmd(*argv), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "holds 32 px images but the recipe is built for 64 px (data.resolution)" in line
    assert "--size 64" in line


def test_missing_shard_file(tmp_path: Path, root: Path) -> None:
    shards = tmp_path / "shards"
    shutil.copytree(root / "shards" / "digits", shards)
    (shards / "shard-000003.tar").unlink()
    proc = run(distgan_cmd("train", *TINY, f"data.shards={shards}"), check=False)
    assert proc.returncode == 1 and "shard-000003.tar" in proc.stderr.splitlines()[-1]


def test_truncated_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    run(distgan_cmd("train", *TINY, f"run.dir={run_dir}", "train.steps=2", "log.wandb=disabled"))
    good = run_dir / "checkpoints" / "step-00000002.pt"
    broken = tmp_path / "broken.pt"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])

    line = error_line(capsys, ["sample", "--ckpt", str(broken), "--out", "x.png"], code=1)
    assert str(broken) in line and "corrupt or truncated" in line
    proc = run(
        distgan_cmd("train", *TINY, f"run.dir={run_dir}", f"resume={broken}", "train.steps=4"),
        check=False,
    )
    assert proc.returncode == 1 and "corrupt or truncated" in proc.stderr.splitlines()[-1]

    # resume=auto skips a broken newest checkpoint (with a warning) and uses the one before it.
    (run_dir / "checkpoints" / "step-00000003.pt").write_bytes(broken.read_bytes())
    proc = run(
        distgan_cmd("train", *TINY, f"run.dir={run_dir}", "train.steps=4", "log.wandb=disabled")
    )
    assert "skipping checkpoint" in proc.stderr and "resumed from" in proc.stderr
    assert "step-00000002.pt at step 2" in proc.stderr


def test_every_command_has_working_help(capsys: pytest.CaptureFixture[str]) -> None:
    from distgan.bench import bench_names
    from distgan.data.sources import SOURCES

    commands = [[], ["train"], ["config"], ["sample"], ["export"], ["shards"], ["bench"]]
    commands += [["shards", name] for name in [*SOURCES, "inspect"]]
    commands += [["bench", name] for name in bench_names()]
    for argv in commands:
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--help"])
        assert exit_.value.code == 0, argv
        assert "usage: distgan" in capsys.readouterr().out
