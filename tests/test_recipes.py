"""Shipped recipes: each trains with 2 processes on fixture shards without NaN, samples and
exports (the export samples as the checkpoint does, bit for bit), a 2-process WGAN-GP run
resumes bit-exactly after SIGKILL, and `distgan config` shows the seed's values."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import (
    EVERY,
    STEPS,
    TINY_RECIPES,
    assert_bit_identical,
    final_weights,
    launch_cmd,
    recipe_args,
    run,
    run_and_kill_after,
)

import distgan
from distgan.cli import main
from distgan.config import ConfigError, recipe_names
from distgan.data.info import DatasetInfo
from distgan.families import build_family, get_family
from distgan.recipe import load_recipe
from distgan.trained.sample import conditioning


def test_the_table_covers_every_shipped_recipe() -> None:
    assert sorted(TINY_RECIPES) == recipe_names()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TINY_RECIPES))
def test_recipe_trains_with_2_processes_without_nan(name: str, trained) -> None:
    root, log = trained
    run_dir = root / name
    assert f"trained {name} in {run_dir}" in log
    section = log.split(f"training {name}:")[1].split("trained ")[0]
    assert "global batch 8 = 4 × 2 processes" in section
    assert f"step {STEPS}: parameters identical on all 2 ranks" in section
    assert "broadcast_buffers" not in log  # DDP's options in their current names, no warning
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    scalars = [r for r in rows if "img_per_s" in r]
    assert [r["step"] for r in scalars] == [3, 6, 9, 12]
    assert all(math.isfinite(v) for r in rows for v in r.values() if isinstance(v, float))
    assert sum(k.startswith("loss/") for k in scalars[-1]) >= 2, scalars[-1]
    if load_recipe(name).eval.every:  # evaluated once, at the end, on both ranks
        (figures,) = [r for r in rows if "img_per_s" not in r]
        assert figures["step"] == STEPS and all(
            k.startswith("eval/") for k in figures if k != "step"
        )
    models = final_weights(run_dir, STEPS)
    assert all(torch.isfinite(t).all() for net in models.values() for t in net.values())
    assert (run_dir / "samples" / f"step-{STEPS:08d}.png").stat().st_size > 0


def outputs_of(path: Path, weights: str | None, n: int = 3) -> torch.Tensor:
    """The floats ``distgan sample --ckpt path --n n`` rounds to uint8 (before rounding)."""
    model = distgan.load(path, weights=weights)
    inputs, labels = conditioning(model, n, None, None)
    return torch.cat(list(model.outputs(n, 0, labels, inputs)))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TINY_RECIPES))
def test_sample_and_export_with_ema_and_raw_weights(name: str, trained, tmp_path: Path) -> None:
    from safetensors import safe_open

    ckpt = trained[0] / name / "checkpoints" / f"step-{STEPS:08d}.pt"
    state = torch.load(ckpt, weights_only=True)
    family = get_family(load_recipe(name).family)
    if not family.ema:  # samples its trained weights; asking for EMA copies is one line
        out = tmp_path / "raw.npz"
        assert main(["sample", "--ckpt", str(ckpt), "--n", "3", "--out", str(out)]) == 0
        assert np.load(out)["images"].shape[0] == 3
        argv = ["sample", "--ckpt", str(ckpt), "--weights", "ema", "--out", str(out)]
        assert main(argv) == 2
        export = tmp_path / "nets.safetensors"
        assert main(["export", "--ckpt", str(ckpt), "--out", str(export)]) == 0
        with safe_open(str(export), "pt") as f:
            assert {k.split(".")[0] for k in f.keys()} == set(family.inference)  # noqa: SIM118
        assert torch.equal(outputs_of(export, None), outputs_of(ckpt, None))  # the round trip
        return
    outputs = {}
    for weights in ("ema", "raw"):
        out = tmp_path / f"{weights}.npz"
        argv = ["sample", "--ckpt", str(ckpt), "--n", "5", "--weights", weights, "--out", str(out)]
        assert main(argv) == 0
        outputs[weights] = np.load(out)["images"]
        assert outputs[weights].shape[0] == 5 and outputs[weights].dtype == np.uint8
        export = tmp_path / f"{weights}.safetensors"
        argv = ["export", "--ckpt", str(ckpt), "--weights", weights, "--out", str(export)]
        assert main(argv) == 0
        net = "G_ema" if weights == "ema" else "G"
        with safe_open(str(export), "pt") as f:
            assert {k.split(".")[0] for k in f.keys()} == {net}  # noqa: SIM118
            for key, value in state["networks"][net].items():
                assert torch.equal(f.get_tensor(f"{net}.{key}"), value), key
        # the export loads (distgan.load, distgan sample) and samples as the checkpoint does
        assert torch.equal(outputs_of(export, weights), outputs_of(ckpt, weights))
    # the default samples the EMA copy (the GAN families keep one) and differs from raw G
    default = tmp_path / "default.npz"
    assert main(["sample", "--ckpt", str(ckpt), "--n", "5", "--out", str(default)]) == 0
    assert np.array_equal(np.load(default)["images"], outputs["ema"])
    assert not np.array_equal(outputs["ema"], outputs["raw"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["digits-wgangp", "horse2zebra-cyclegan", "celeba128-vae", "celeba64-eigengan"]
)
def test_2proc_resume_after_sigkill_is_bit_exact(
    name: str, trained, fixture_shards: dict[str, Path], tmp_path: Path
) -> None:
    """WGAN-GP (penalty, n_critic), CycleGAN (two generators in one phase, image pools per
    rank, linear lr decay), the VAE (encoder and decoder in one phase, BatchNorm, dropout) and
    EigenGAN (lazy R1, orthogonality penalty) resume to the uninterrupted run's state."""
    root, _ = trained
    interrupted = tmp_path / "interrupted"
    args = ["train", name, *recipe_args(name, fixture_shards, interrupted)]
    first = interrupted / "checkpoints" / f"step-{EVERY:08d}.pt"
    run_and_kill_after(launch_cmd(2, *args), first)
    assert not (interrupted / "checkpoints" / f"step-{STEPS:08d}.pt").exists()
    resumed = run(launch_cmd(2, *args))
    match = re.search(r"resumed from \S+ at step (\d+)", resumed.stderr)
    assert match and EVERY <= int(match.group(1)) < STEPS, resumed.stderr[-3000:]
    # Reference: the uninterrupted run of the same command (in the shared launch).
    assert_bit_identical(final_weights(root / name, STEPS), final_weights(interrupted, STEPS))
    states = [
        torch.load(d / "checkpoints" / f"step-{STEPS:08d}.pt", weights_only=True)
        for d in (root / name, interrupted)
    ]
    assert _equal(*states, "optimizers")
    assert _equal(*states, "family")
    if name == "horse2zebra-cyclegan":
        pools = [rank[side]["images"] for rank in states[1]["family"] for side in "AB"]
        assert [len(p) for p in pools] == [3, 3, 3, 3]  # full, per rank and domain
        lr = states[1]["optimizers"]["optimizers"]["G_AB"]["param_groups"][0]["lr"]
        assert lr == pytest.approx(2e-4 * (1 - (STEPS - 1 - STEPS / 2) / (STEPS / 2)))
    else:
        rows = [json.loads(x) for x in (interrupted / "metrics.jsonl").read_text().splitlines()]
        key = {"digits-wgangp": "D/gp", "celeba128-vae": "loss/kl"}.get(name, "G/ortho")
        assert rows[-1][key] > 0 and rows[-1]["step"] == STEPS


def _equal(a: dict, b: dict, key: str) -> bool:
    """Nested checkpoint entries equal, tensors bit for bit."""

    def same(x, y) -> bool:
        if isinstance(x, torch.Tensor):
            return isinstance(y, torch.Tensor) and torch.equal(x, y)
        if isinstance(x, dict):
            return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        if isinstance(x, list | tuple):
            return len(x) == len(y) and all(same(u, v) for u, v in zip(x, y, strict=True))
        return x == y

    return same(a[key], b[key])


def test_config_shows_the_seed_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "celeba64-wgangp"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["family"] == "wgangp" and cfg["data"]["shards"] == "shards/celeba64"
    assert cfg["train"]["batch_size"] == 64
    assert cfg["optim"]["G"]["lr"] == cfg["optim"]["D"]["lr"] == 2e-4
    assert cfg["optim"]["G"]["betas"][0] == cfg["optim"]["D"]["betas"][0] == 0.5
    assert cfg["train"]["steps"] == 60 * math.ceil(202_599 / 64)  # 60 epochs
    assert (cfg["loss"]["adversarial"], cfg["loss"]["gp_weight"]) == ("wasserstein", 10.0)
    assert (cfg["loss"]["n_critic"], cfg["loss"]["reg_every"]) == (5, 1)
    model = cfg["model"]
    assert model["z_dim"] == 100
    assert model["g_channels"] == [512, 256, 128, 64]  # Dense 4·4·512 → 256/128/64 → 3
    assert model["d_channels"] == [64, 128, 256, 512]
    assert model["kernel_size"] == 5 and model["output"] == "linear"
    assert model["g_batchnorm"] is True and model["d_dropout"] == 0.0
    assert model["d_spectral_norm"] is False


def test_sagan_recipe_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "cifar10-sagan"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert (cfg["optim"]["D"]["lr"], cfg["optim"]["G"]["lr"]) == (4e-4, 1e-4)
    assert cfg["optim"]["D"]["betas"] == cfg["optim"]["G"]["betas"] == [0.0, 0.9]
    assert cfg["model"]["g_spectral_norm"] and cfg["model"]["d_spectral_norm"]
    assert cfg["model"]["attention"] == [16] and cfg["loss"]["adversarial"] == "hinge"


def test_network_mistakes_are_config_errors() -> None:
    cfg = load_recipe("celeba64-wgangp", ["model.g_channels=[16,8,8]"])
    family = build_family(cfg, {"": DatasetInfo(64, 3, [], 10)})
    with pytest.raises(ConfigError, match=r"model.g_channels .* makes 32 px images, not 64 px"):
        family.build_networks()
    with pytest.raises(ConfigError, match="need a loss with targets"):
        load_recipe("cifar10-sngan", ["loss.real_label=0.9"])
