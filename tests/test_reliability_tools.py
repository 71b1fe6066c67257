"""The tools that use a trained model, replaying issue 21's findings (4, 5, 12, 18, 19): inputs are
never overwritten, outputs only with ``--force``, a huge image is colorized in bounded memory,
unbounded outputs and non-finite weights are refused before any work, and `distgan eval` writes
next to the checkpoint it was given. Checkpoints are built by hand (untrained networks), not
trained: these tests check the tools, not the training."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARDS, TINY, TINY_RECIPES, env_for_tests
from PIL import Image

from distgan.cli import main
from distgan.data.transforms import rgb_to_lab


def make_checkpoint(recipe: str, overrides: list[str], run_dir: Path, step: int = 4) -> Path:
    """``run_dir/checkpoints/step-N.pt`` of a recipe's untrained networks (what the tools read)."""
    from distgan.data.shards import read_manifest
    from distgan.data.stream import dataset_info
    from distgan.engine.checkpoint import SCHEMA
    from distgan.evaluation import protocol
    from distgan.families import build_family
    from distgan.recipe import load_recipe

    cfg = load_recipe(recipe, [*overrides, f"run.dir={run_dir}"])
    info = dataset_info(read_manifest(cfg.data.shards), protocol.transforms_of(cfg))
    family = build_family(cfg, {"": info})
    nets = family.build_networks()
    networks = {name: module.state_dict() for name, module in nets.items()}
    for name in family.ema:
        networks[f"{name}_ema"] = copy.deepcopy(nets[name]).state_dict()
    state = {
        "schema": SCHEMA,
        "step": step,
        "networks": networks,
        "config": cfg.model_dump(mode="json"),
        "data_info": {"": dataclasses.asdict(info)},
        "run_id": "handmade",
        "rng": [],
        "tallies": [],
    }
    path = run_dir / "checkpoints" / f"step-{step:08d}.pt"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("handmade")
    return {
        "cgan": make_checkpoint("digits-cdcgan", TINY, root / "cgan"),
        "colorize": make_checkpoint(
            "photos-colorize", TINY_RECIPES["photos-colorize"], root / "colorize"
        ),
    }


def one_line(capsys: pytest.CaptureFixture[str], argv: list[str], code: int) -> str:
    assert main(argv) == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("distgan: error: "), lines
    return lines[0]


def limited(calls: list[list[str]], cwd: Path, memory_gb: float = 2.5, seconds: float = 60):
    """``distgan ARGV`` for each ARGV of ``calls`` in one subprocess (each exit code printed to
    stderr after the call) whose address space may grow by ``memory_gb`` beyond what importing
    torch takes (its libraries reserve ~3.5 GB of address space), with a timeout."""
    code = (
        "import resource, sys, torch, numpy; from distgan.cli import main; "
        "size = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize(); "
        f"limit = size + int({memory_gb} * 2**30); "
        "resource.setrlimit(resource.RLIMIT_AS, (limit, limit)); "
        f"[print(main(argv), file=sys.stderr) for argv in {calls!r}]"
    )
    threads = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**env_for_tests(), **threads},
        capture_output=True,
        text=True,
        timeout=seconds,
    )


def photo(path: Path, size: tuple[int, int] = (40, 30), colour=(90, 140, 200)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


# ----------------------------------------------------------------------------- finding 4


def test_colorize_and_translate_never_overwrite_inputs_or_outputs(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    original = photo(tmp_path / "holiday.png").read_bytes()
    ckpt = str(ckpts["colorize"])
    for command in ("colorize", "translate"):  # --out . would write ./holiday.png over the input
        line = one_line(capsys, [command, "--ckpt", ckpt, "holiday.png", "--out", "."], 2)
        assert "holiday.png" in line and "is an input" in line
        line = one_line(
            capsys, [command, "--ckpt", ckpt, "holiday.png", "--out", ".", "--force"], 2
        )
        assert "is an input" in line  # --force never replaces an input
    assert (tmp_path / "holiday.png").read_bytes() == original

    out = tmp_path / "out"
    out.mkdir()
    (out / "holiday.png").write_bytes(b"the user's earlier result")
    line = one_line(capsys, ["colorize", "--ckpt", ckpt, "holiday.png", "--out", "out"], 2)
    assert "out/holiday.png exists" in line and "--force" in line
    assert (out / "holiday.png").read_bytes() == b"the user's earlier result"
    assert main(["colorize", "--ckpt", ckpt, "holiday.png", "--out", "out", "--force"]) == 0
    capsys.readouterr()
    with Image.open(out / "holiday.png") as result:
        assert result.size == (40, 30)
    # an --out that is a file is one line, not a traceback (finding 18)
    line = one_line(capsys, ["colorize", "--ckpt", ckpt, "holiday.png", "--out", "holiday.png"], 2)
    assert "is a file, not a folder" in line


# ----------------------------------------------------------------------------- finding 12


def test_a_huge_image_is_colorized_in_bounded_memory_and_the_batch_goes_on(
    ckpts: dict[str, Path], tmp_path: Path
) -> None:
    # 16 Mpixels: 6.1 GB before (330 bytes a pixel); 12,500² (156 Mpixels) was also checked by
    # hand under a 3 GB limit (about a minute on one core: too slow for the suite)
    big = tmp_path / "huge.png"
    Image.new("L", (4000, 4000), 120).save(big)  # 16 KB
    small = photo(tmp_path / "small.png")
    argv = ["colorize", "--ckpt", str(ckpts["colorize"]), str(big), str(small), "--out", "out"]
    proc = limited([argv], tmp_path, memory_gb=1.5, seconds=100)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-2:] == ["distgan: wrote 2 images to out", "0"]
    with Image.open(tmp_path / "out" / "huge.png") as result:
        assert result.size == (4000, 4000)
        corner = np.asarray(result.crop((0, 0, 64, 64)), dtype=np.float64) / 255
    lightness = rgb_to_lab(torch.from_numpy(corner).permute(2, 0, 1)[None])[0, 0]
    gray = rgb_to_lab(torch.full((1, 3, 1, 1), 120 / 255, dtype=torch.float64))[0, 0, 0, 0]
    assert (lightness - gray).abs().max() < 0.5  # L* kept up to uint8 rounding


# ----------------------------------------------------------------------------- finding 18


def test_promised_one_liners_of_sample_and_latent(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cgan, colorize = str(ckpts["cgan"]), str(ckpts["colorize"])
    folder = tmp_path / "grid.png"
    folder.mkdir()
    line = one_line(capsys, ["sample", "--ckpt", cgan, "--out", str(folder)], 2)
    assert "is a folder" in line
    line = one_line(capsys, ["latent", "interpolate", "--ckpt", cgan, "--out", "i.txt"], 2)
    assert "--out i.txt" in line and ".png" in line
    line = one_line(
        capsys, ["sample", "--ckpt", colorize, "--shards", str(SHARDS), "--out", "x.png"], 1
    )
    assert str(SHARDS) in line
    line = one_line(capsys, ["sample", "--ckpt", cgan, "--label", "99", "--out", "x.png"], 2)
    assert "--label 99: this model's classes are 0–9" in line
    argv = ["latent", "interpolate", "--ckpt", cgan, "--label", "99", "--out", "i.png"]
    assert "--label 99: this model's classes are 0–9" in one_line(capsys, argv, 2)

    upper = tmp_path / "S.NPZ"
    assert main(["sample", "--ckpt", cgan, "--n", "3", "--out", str(upper)]) == 0
    assert f"to {upper}" in capsys.readouterr().err
    assert upper.is_file() and not (tmp_path / "S.NPZ.npz").exists()
    with np.load(upper) as arrays:
        assert arrays["images"].shape == (3, 32, 32, 1)


# ----------------------------------------------------------------------------- finding 19


def test_non_finite_weights_are_refused(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = torch.load(ckpts["cgan"], weights_only=True)
    first = next(iter(state["networks"]["G_ema"]))
    state["networks"]["G_ema"][first].fill_(float("nan"))
    broken = tmp_path / "run" / "checkpoints" / "step-00000004.pt"
    broken.parent.mkdir(parents=True)
    torch.save(state, broken)
    for argv in (
        ["sample", "--ckpt", str(broken), "--out", str(tmp_path / "x.png")],
        ["export", "--ckpt", str(broken), "--out", str(tmp_path / "G.safetensors")],
    ):
        line = one_line(capsys, argv, 1)
        assert "G_ema" in line and "--weights raw" in line and "earlier checkpoint" in line
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "G.safetensors").exists()
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(broken),
                "--weights",
                "raw",
                "--out",
                str(tmp_path / "raw.png"),
            ]
        )
        == 0
    )
    capsys.readouterr()


def test_outputs_that_cannot_fit_are_refused_before_any_work(
    ckpts: dict[str, Path], tmp_path: Path
) -> None:
    ckpt = str(ckpts["cgan"])
    calls = [
        ["sample", "--ckpt", ckpt, "--n", "100000000", "--out", "s.npz"],
        ["sample", "--ckpt", ckpt, "--n", "100000000", "--out", "s.png"],
        ["latent", "interpolate", "--ckpt", ckpt, "--steps", "100000", "--out", "i.png"],
    ]
    proc = limited(calls, tmp_path, memory_gb=3, seconds=40)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 6, lines  # one line and an exit code each
    for line, code in zip(lines[::2], lines[1::2], strict=True):
        assert line.startswith("distgan: error: ") and "does not fit" in line and code == "2"
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- finding 5


def test_eval_writes_next_to_the_checkpoint_it_was_given(
    ckpts: dict[str, Path], tmp_path: Path
) -> None:
    original = ckpts["cgan"].parents[1]
    copy_dir = tmp_path / "moved"
    shutil.copytree(original, copy_dir)
    argv = ["eval", "--ckpt", str(copy_dir / "checkpoints" / "step-00000004.pt")]
    code = [sys.executable, "-m", "distgan", *argv, "--metrics", "moments", "--n", "8"]
    proc = subprocess.run(
        code, cwd=tmp_path, env=env_for_tests(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = copy_dir / "eval" / "step-00000004.json"
    assert json.loads(written.read_text())["protocol"]["checkpoint_step"] == 4
    assert not (original / "eval").exists()
