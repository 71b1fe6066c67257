"""Image-to-image families on real files: `distgan colorize` keeps L* on any size and mode,
`distgan translate` both ways, a 1-process pix2pix run resumes exactly, the evaluators' figures,
and the embedded demo's shards rebuild byte for byte."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    EVERY,
    STEPS,
    assert_bit_identical,
    final_weights,
    launch_cmd,
    recipe_args,
    run,
    run_and_kill_after,
)
from PIL import Image

from distgan.cli import main
from distgan.data.transforms import rgb_to_lab
from distgan.evaluation.colorfulness import colorfulness
from distgan.evaluation.colorization import Colorization
from distgan.evaluation.l1_psnr import L1PSNR


def lightness(array: np.ndarray) -> torch.Tensor:
    rgb = torch.from_numpy(array.astype(np.float64) / 255)
    rgb = rgb[None].expand(3, -1, -1) if rgb.dim() == 2 else rgb.permute(2, 0, 1)
    return rgb_to_lab(rgb[None])[0, 0]


def image_files(folder: Path) -> dict[str, Path]:
    """One image per mode the commands must read, of odd sizes; and a broken file."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    modes = {
        "gray": Image.fromarray(rng.integers(0, 256, (333, 517), np.uint8)),
        "rgb": Image.fromarray(rng.integers(0, 256, (41, 67, 3), np.uint8)),
        "rgba": Image.fromarray(rng.integers(0, 256, (30, 20, 4), np.uint8)),
        "palette": Image.fromarray(rng.integers(0, 256, (25, 35, 3), np.uint8)).convert("P"),
        "gray16": Image.fromarray(rng.integers(0, 65535, (19, 23), np.uint16)),
    }
    paths = {}
    for name, image in modes.items():
        paths[name] = folder / f"{name}.png"
        image.save(paths[name])
    cmyk = Image.fromarray(rng.integers(0, 256, (33, 44, 3), np.uint8)).convert("CMYK")
    paths["cmyk"] = folder / "cmyk.jpg"
    cmyk.save(paths["cmyk"])
    paths["broken"] = folder / "broken.png"
    paths["broken"].write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return paths


@pytest.mark.slow
def test_colorize_keeps_lightness_on_any_size_and_mode(
    trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = trained[0] / "photos-colorize" / "checkpoints" / f"step-{STEPS:08d}.pt"
    files = image_files(tmp_path / "in")
    out = tmp_path / "out"
    assert (
        main(["colorize", "--ckpt", str(ckpt), *map(str, files.values()), "--out", str(out)]) == 1
    )
    err = capsys.readouterr().err
    assert f"{files['broken']}: not a readable image" in err and "wrote 6 images" in err
    for name, path in files.items():
        if name != "broken":
            with Image.open(path) as source, Image.open(out / f"{name}.png") as result:
                assert result.size == source.size and result.mode == "RGB", name
    gray = np.asarray(Image.open(files["gray"]))
    colorized = np.asarray(Image.open(out / "gray.png"))
    step = lightness(np.minimum(gray.astype(int) + 1, 255).astype(np.uint8)) - lightness(gray)
    error = (lightness(colorized) - lightness(gray)).abs()
    assert (error <= step.abs().clamp_min(0.3)).all(), error.max()  # L* kept to uint8 rounding


@pytest.mark.slow
def test_translate_both_ways_and_refusals(
    trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = trained[0]
    cyclegan = root / "horse2zebra-cyclegan" / "checkpoints" / f"step-{STEPS:08d}.pt"
    pix2pix = root / "facades-pix2pix" / "checkpoints" / f"step-{STEPS:08d}.pt"
    colorize = root / "photos-colorize" / "checkpoints" / f"step-{STEPS:08d}.pt"
    files = image_files(tmp_path / "in")
    rgb = str(files["rgb"])
    for direction in ("AtoB", "BtoA"):
        out = tmp_path / direction
        argv = ["translate", "--ckpt", str(cyclegan), rgb, "--out", str(out)]
        assert main([*argv, "--direction", direction]) == 0
        assert Image.open(out / "rgb.png").size == (67, 41)
    a, b = (np.asarray(Image.open(tmp_path / d / "rgb.png")) for d in ("AtoB", "BtoA"))
    assert not np.array_equal(a, b)  # two generators
    assert main(["translate", "--ckpt", str(pix2pix), rgb, "--out", str(tmp_path / "p")]) == 0
    capsys.readouterr()
    for argv, needle in (
        (["translate", "--ckpt", str(pix2pix), "--direction", "BtoA"], "translates A→B only"),
        (["translate", "--ckpt", str(colorize)], "does not translate images"),
        (["colorize", "--ckpt", str(cyclegan)], "takes a 'colorize' one"),
    ):
        assert main([*argv, rgb, "--out", str(tmp_path / "x")]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert needle in line


@pytest.mark.slow
def test_pix2pix_1proc_resume_after_sigkill_is_bit_exact(
    fixture_shards: dict[str, Path], tmp_path: Path
) -> None:
    def args(run_dir: Path) -> list[str]:
        return [
            "train",
            "facades-pix2pix",
            *recipe_args("facades-pix2pix", fixture_shards, run_dir),
        ]

    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    run(launch_cmd(1, *args(reference)))
    run_and_kill_after(
        launch_cmd(1, *args(interrupted)), interrupted / "checkpoints" / f"step-{EVERY:08d}.pt"
    )
    resumed = run(launch_cmd(1, *args(interrupted)))
    assert re.search(r"resumed from \S+ at step \d+", resumed.stderr)
    assert_bit_identical(final_weights(reference, STEPS), final_weights(interrupted, STEPS))
    rows = [json.loads(x) for x in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["eval/psnr"] > 0  # evaluated at the end (l1_psnr on held-out pairs)


def test_evaluators_on_known_images() -> None:
    rng = torch.Generator().manual_seed(0)
    real = torch.rand(4, 3, 8, 8, generator=rng) * 2 - 1
    gray = real.mean(1, keepdim=True).expand(-1, 3, -1, -1)

    def figures(kind, outputs: torch.Tensor) -> dict[str, float]:
        evaluator = kind(None, None, torch.device("cpu"))  # (cfg, family: unused)
        evaluator.update(outputs, real, {})
        return evaluator.finish(lambda t: t)

    exact = figures(Colorization, real)
    assert exact["eval/ab_l1"] == pytest.approx(0, abs=1e-9) and exact["eval/ab_accuracy"] == 1
    assert exact["eval/ab_l1_gray"] > 0.05 and exact["eval/ab_accuracy_gray"] < 1
    guess = figures(Colorization, gray)  # outputs without colour score like the gray baseline
    assert guess["eval/ab_l1"] == pytest.approx(guess["eval/ab_l1_gray"], rel=1e-3)
    fidelity = figures(L1PSNR, real)
    assert fidelity == {"eval/l1": 0.0, "eval/psnr": 100.0}
    shifted = figures(L1PSNR, real + 0.2)  # on [0, 1]: 0.1 everywhere → MSE 0.01 → 20 dB
    assert shifted["eval/l1"] == pytest.approx(0.1) and shifted["eval/psnr"] == pytest.approx(20)
    assert colorfulness(gray).abs().max() < 1e-9 and (colorfulness(real) > 50).all()


def test_the_photos_demo_shards_rebuild_byte_for_byte(root: Path, tmp_path: Path) -> None:
    pytest.importorskip("skimage", reason="scikit-image builds the demo shards")
    shipped = json.loads((root / "shards" / "photos" / "test" / "manifest.json").read_text())
    argv = ["shards", "photos", "--split", "test", "--out", str(tmp_path / "photos")]
    assert main(argv) == 0
    rebuilt = json.loads((tmp_path / "photos" / "manifest.json").read_text())
    assert [s["sha256"] for s in rebuilt["shards"]] == [s["sha256"] for s in shipped["shards"]]
