"""StyleGAN2's latent tools (issue 24) on a tiny digits-stylegan2 trained in-process: the
style-mixing grid's cells are exactly the column image (all layers mixed) or the row image (none),
projection recovers a generated image (PSNR ≥ 25 dB at 32 px) and writes a w that reproduces
it, outputs are never replaced without --force, a wrong LPIPS file is one line, and the LPIPS
network takes its VGG16 from the checked file (a random one here: the real one is not
downloadable in tests)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RECIPES
from PIL import Image

import distgan
from distgan.cli import main
from distgan.trained.latent import projection, styles

RUN = ["eval.every=0", "log.wandb=disabled", "train.batch_size=4", "train.steps=2"]
RUN += ["train.checkpoint_every=2", "train.seed=1", "data.num_workers=0", "data.shuffle_buffer=8"]
RUN += ["log.sample_every=2", "log.samples_per_class=1"]


def train(recipe: str, run_dir: Path) -> Path:
    """A 2-step in-process run of ``recipe`` with tiny networks; its checkpoint."""
    assert main(["train", recipe, *TINY_RECIPES[recipe], *RUN, f"run.dir={run_dir}"]) == 0
    return run_dir / "checkpoints" / "step-00000002.pt"


@pytest.fixture(scope="module")
def sg2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train("digits-stylegan2", tmp_path_factory.mktemp("sg2") / "run")


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


def test_mixing_cells_are_column_images_with_all_layers_and_row_images_with_none(
    sg2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = distgan.load(sg2)
    num_ws = styles.generator(model).num_ws  # 8 at 32 px
    rows, cols = [1, 2], [3, 4, 5]
    side = 32 + 2
    for layers, source in ((range(num_ws), "column"), ([], "row")):
        grid = styles.mixing_grid(model, rows, cols, layers, label=4).view(3, 4, 1, 32, 32)
        assert torch.equal(grid[0, 0], torch.ones(1, 32, 32))  # the blank corner
        for c, seed in enumerate(cols, 1):  # the top row: exactly what sample() draws
            assert torch.equal(grid[0, c], model.sample(1, 4, seed)[0])
        for r in (1, 2):
            for c in (1, 2, 3):
                expected = grid[0, c] if source == "column" else grid[r, 0]
                assert torch.equal(grid[r, c], expected), (layers, r, c)
    coarse = styles.mixing_grid(model, rows, cols, styles.coarse_layers(num_ws), label=4)
    assert list(styles.coarse_layers(num_ws)) == [0, 1, 2]
    assert not torch.equal(coarse.view(3, 4, 1, 32, 32)[1, 1], grid.view(3, 4, 1, 32, 32)[1, 0])

    out = tmp_path / "mix.png"
    argv = ["latent", "mix", "--ckpt", str(sg2), "--rows", "1,2", "--cols", "3-5"]
    argv += ["--out", str(out)]
    assert main([*argv, "--label", "4", "--layers", f"0-{num_ws - 1}", "--truncation", "1"]) == 0
    pixels = np.asarray(Image.open(out).convert("L"))
    assert pixels.shape == (3 * side + 2, 4 * side + 2)
    top = (model.sample(1, 4, seed=5)[0, 0] * 255).round().numpy()
    cell = pixels[2 * side + 2 : 3 * side, 3 * side + 2 : 4 * side]  # row seed 2 × column seed 5
    assert np.abs(cell - top).max() <= 1
    before = (out.read_bytes(), out.stat().st_mtime_ns)
    assert "exists; pass --force" in one_line_error(capsys, argv)
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before
    assert main([*argv, "--force", "--layers", "0"]) == 0 and out.read_bytes() != before[0]
    # --wandb reaches the latent tools' W&B upload (tests/test_latent.py runs it offline): this
    # run's log.wandb is disabled, which it says
    capsys.readouterr()
    assert main([*argv, "--force", "--wandb"]) == 0
    assert "--wandb: W&B is disabled for this run (log.wandb)" in capsys.readouterr().err
    line = one_line_error(capsys, [*argv, "--force", "--layers", f"2-{num_ws}"])
    assert f"this model's layers are 0–{num_ws - 1}" in line

    vae = train("digits-vae", tmp_path / "vae")
    line = one_line_error(capsys, ["latent", "mix", "--ckpt", str(vae), "--rows", "1",
                                   "--cols", "2", "--out", str(tmp_path / "v.png")])  # fmt: skip
    assert line.endswith("family vae has no style layers: latent mix/project need stylegan2")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2) / 255**2
    return float(10 * np.log10(1 / mse))


def test_projection_recovers_a_generated_digit_and_never_overwrites(
    sg2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = distgan.load(sg2)
    target = (model.sample(1, 7, seed=11)[0, 0] * 255).round().byte().numpy()
    image = tmp_path / "seven.png"
    Image.fromarray(target).save(image)
    out = tmp_path / "proj"
    argv = ["latent", "project", "--ckpt", str(sg2), str(image), "--out", str(out)]
    assert main([*argv, "--steps", "300"]) == 0
    projected = np.asarray(Image.open(out / "seven.png"))
    assert projected.shape == (32, 32) and psnr(projected, target) >= 25

    with np.load(out / "seven.npz") as npz:  # w and the noise maps reproduce the image
        G = styles.generator(model)
        assert npz["w"].shape == (1, G.num_ws, 8) and int(npz["label"]) == -1
        noise = [torch.from_numpy(npz[f"noise{i}"])[None, None] for i in range(G.num_ws - 1)]
        again = G.synthesis(torch.from_numpy(npz["w"]), noise_mode="random", noise=noise)
    again = ((again[0, 0].clamp(-1, 1) + 1) * 127.5).round().numpy()
    assert np.abs(again - projected).max() <= 1

    written = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    (out / "seven.png").unlink()  # only the .npz left: still refused, and nothing written
    assert "seven.npz exists; pass --force" in one_line_error(capsys, [*argv, "--steps", "2"])
    assert sorted(out.iterdir()) == [out / "seven.npz"]
    assert (out / "seven.npz").read_bytes() == written[out / "seven.npz"][0]
    capsys.readouterr()
    assert main([*argv, "--steps", "2", "--force", "--wandb"]) == 0
    assert "--wandb: W&B is disabled" in capsys.readouterr().err
    assert (out / "seven.npz").read_bytes() != written[out / "seven.npz"][0]


def test_lpips_takes_the_checked_vgg16_file_and_refuses_another(
    sg2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    image = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (200, 90, 10)).save(image)  # read as gray, cropped, resized
    wrong = tmp_path / "vgg16-397923af.pth"
    wrong.write_bytes(b"not the weights")
    argv = ["latent", "project", "--ckpt", str(sg2), str(image), "--out", str(tmp_path / "o")]
    line = one_line_error(capsys, [*argv, "--lpips", str(wrong)])
    assert f"--lpips {wrong} is not vgg16-397923af.pth" in line
    assert f"expected {projection.VGG16_SHA256[:16]}…" in line
    assert not (tmp_path / "o").exists()

    # VGG16's convolutions under torchvision's names (features.0, .2, .5, …: conv/ReLU pairs,
    # pools between), random, standing in for the real file
    generator = torch.Generator().manual_seed(0)
    widths = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    trunk = {}
    layer, channels = 0, 3
    for width in widths:
        if width == "M":
            layer += 1
            continue
        shape = (width, channels, 3, 3)
        trunk[f"features.{layer}.weight"] = torch.randn(shape, generator=generator)
        trunk[f"features.{layer}.bias"] = torch.zeros(width)
        layer, channels = layer + 2, width
    fake = tmp_path / "vgg16.pth"
    torch.save(trunk, fake)
    monkeypatch.setattr(projection, "VGG16_SHA256", hashlib.sha256(fake.read_bytes()).hexdigest())
    net = projection.lpips_vgg(str(fake), torch.device("cpu"))
    assert torch.equal(net.net.slice1[0].weight, trunk["features.0.weight"])
    assert torch.equal(getattr(net.net.slice5, "28").weight, trunk["features.28.weight"])
    assert main([*argv, "--lpips", str(fake), "--steps", "2"]) == 0
    assert (tmp_path / "o" / "x.png").is_file() and (tmp_path / "o" / "x.npz").is_file()
