"""The engine's step, specified in-process on any CPU (tests/plugins/toy_phases.py records what
each phase sees): which networks are live, ``every``, ``prepares``, one grad scaler per phase,
gradient accumulation with split-free noise, the lazy-regularization correction, EMA by images
seen, the augmentation stage; and, through real launches of tests/plugins/toy_tally.py
(float64, no BatchNorm): accumulation equal to one big batch with 1 and 2 processes, run-wide
state summed over the ranks, and exact resume of both after SIGKILL."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import assert_bit_identical, launch_cmd, run, run_and_kill_after, train_recipes_cmd
from PIL import Image

from distgan.augment import translation
from distgan.data.info import DatasetInfo
from distgan.data.shards import Sample, write_shards
from distgan.engine.build import build_run
from distgan.engine.runtime import process_accelerator
from distgan.engine.step import advance
from distgan.families._image_pool import ImagePool
from distgan.families.context import StepContext
from distgan.recipe import recipe_from_dict
from distgan.schedules import ema_decay_by_images

# ----------------------------------------------------------------------------- in-process


def toy_run(accumulate: int = 1, batch_size: int = 8, **train):
    cfg = recipe_from_dict(
        {
            "name": "toy-phases",
            "family": "plugins.toy_phases",
            "data": {"shards": "unused"},
            "train": {
                "steps": 100,
                "batch_size": batch_size,
                "accumulate": accumulate,
                "precision": "no",
                "compile": False,
                "seed": 1,
                **train,
            },
            "log": {"wandb": "disabled"},
        }
    )
    info = DatasetInfo(4, 1, [], 64)
    return build_run(cfg, process_accelerator(60), data_info={"": info})


def toy_batches(steps: int, n: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return [torch.randn(n, 4, dtype=torch.float64, generator=generator) for _ in range(steps)]


def test_phases_run_at_their_interval_with_their_live_networks_and_own_scaler() -> None:
    run = toy_run()
    for images in toy_batches(6, 8):
        advance(run, [{"image": images}])
    record = run.family.record
    assert [(r["phase"], r["step"]) for r in record] == [
        (name, step)
        for step in range(6)
        for name, every in (("P", 1), ("Q", 1), ("R", 3))
        if step % every == 0
    ]
    live = {r["phase"]: r["live"] for r in record}
    assert live == {"P": {"A", "B"}, "Q": {"B"}, "R": {"A"}}  # P prepares B for Q
    assert all(r["prepares_B"] == (r["phase"] == "P") for r in record)
    scalers = {r["phase"]: r["scaler"] for r in record}
    assert set(run.precision.scalers) == {"P", "Q", "R"}
    assert all(scalers[name] is run.precision.scalers[name] for name in scalers)
    assert run.step == 6 and run.images_seen == 6 * 8


def test_lazy_regularization_correction_of_lr_and_betas() -> None:
    run = toy_run()
    group_a = run.optimizers["A"].param_groups[0]
    group_b = run.optimizers["B"].param_groups[0]
    ratio = 3 / 4  # phase R: every 3 steps, lazy_correction
    assert group_a["lr"] == pytest.approx(2e-4 * ratio)
    assert group_a["betas"] == pytest.approx((0.5**ratio, 0.999**ratio))
    assert group_b["lr"] == 2e-4 and group_b["betas"] == (0.5, 0.999)
    advance(run, [{"image": toy_batches(1, 8)[0]}])
    assert group_a["lr"] == pytest.approx(2e-4 * ratio)  # the lr schedule keeps it


def test_accumulation_equals_one_big_batch_in_float64() -> None:
    """4 micro-batches of 8 = one batch of 32 over steps where P prepares B (not under
    accumulation: Q runs B again on the kept inputs), with per-sample noise in P."""
    big, small = toy_run(1, 32), toy_run(4, 8)
    for images in toy_batches(7, 32):
        advance(big, [{"image": images}])
        advance(small, [{"image": part} for part in images.split(8)])
    for name in ("A", "B"):
        for a, b in zip(
            big.networks[name].parameters(), small.networks[name].parameters(), strict=True
        ):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-15), name
    assert small.images_seen == big.images_seen == 7 * 32
    micro = [r for r in small.family.record if r["phase"] == "P"]
    assert [r["micro_batch"] for r in micro[:4]] == [0, 1, 2, 3]
    assert not any(r["prepares_B"] for r in micro) and micro[0]["live"] == {"A"}


def test_split_free_draws_and_their_misuse() -> None:
    def draws(k: int, n: int) -> list[torch.Tensor]:
        ctx = StepContext(torch.device("cpu"), torch.Generator().manual_seed(3))
        ctx.begin_step(0, k)
        ctx.enter(0, None)
        out = []
        for index in range(k):
            ctx.enter_micro_batch(index)
            out.append((ctx.randn(n, 3), ctx.randint(5, n), ctx.rand()))
        return out

    whole = draws(1, 12)[0]
    parts = draws(3, 4)
    for i in range(2):
        assert torch.equal(torch.cat([p[i] for p in parts]), whole[i])
    assert all(torch.equal(p[2], whole[2]) for p in parts)  # a 0-d draw: one per step

    ctx = StepContext(torch.device("cpu"), torch.Generator().manual_seed(3))
    ctx.begin_step(0, 2)
    ctx.enter(0, None)
    ctx.randn(4, 8)
    ctx.enter_micro_batch(1)
    with pytest.raises(RuntimeError, match="must draw the same shapes"):
        ctx.randn(4, 16)


def test_the_image_pool_is_split_free() -> None:
    """CycleGAN's pool draws its swaps and picks per sample through the context: K micro-
    batches of n meet the pool as one batch of K·n does (a full pool of 2, 8 fakes)."""

    def served(k: int) -> list[float]:
        pool = ImagePool(2)
        pool.load_state_dict(
            {"images": [torch.full((1, 2, 2), 100.0), torch.full((1, 2, 2), 101.0)]}
        )
        ctx = StepContext(torch.device("cpu"), torch.Generator().manual_seed(4))
        ctx.begin_step(0, k)
        ctx.enter(0, None)
        fakes = torch.arange(8.0).view(8, 1, 1, 1).expand(8, 1, 2, 2)
        out = []
        for index, part in enumerate(fakes.split(8 // k)):
            ctx.enter_micro_batch(index)
            out += pool.query(part, ctx)[:, 0, 0, 0].tolist()
        return out

    assert served(1) == served(2) == served(4)


def test_ema_decay_by_images_seen() -> None:
    # half-life 10 kimg at 100 images per step: after 100 steps the old weights count ½
    assert ema_decay_by_images(10**6, 100, 10) ** 100 == pytest.approx(0.5)
    # accumulation or more processes double the images per step: same half-life in images
    assert ema_decay_by_images(10**6, 200, 10) ** 50 == pytest.approx(0.5)
    assert ema_decay_by_images(0, 64, 10, rampup=0.05) == 0  # no images yet: copy the network
    assert ema_decay_by_images(1000, 64, 10, rampup=0.05) == pytest.approx(0.5 ** (64 / 50))


def test_translation_moves_whole_pixels_zero_fills_and_passes_gradients() -> None:
    class Fixed:
        def __init__(self, *values: int) -> None:
            self.values = list(values)

        def randint(self, high: int, *shape: int) -> torch.Tensor:
            return torch.full(shape, self.values.pop(0))

    image = torch.arange(1.0, 65.0).view(1, 1, 8, 8).requires_grad_(True)
    # max shift round(8/8) = 1: draws 2 → +1 row, 0 → −1 column
    out = translation(image, Fixed(2, 0))
    expected = torch.zeros(8, 8)
    expected[:7, 1:] = image.detach()[0, 0, 1:, :7]
    assert torch.equal(out[0, 0], expected)
    out.sum().backward()
    assert image.grad[0, 0, 1:, :7].eq(1).all() and image.grad.sum() == 49
    identity = translation(image.detach(), Fixed(1, 1))
    assert torch.equal(identity, image.detach())


# ----------------------------------------------------------------------------- real launches

TALLY_STEPS = 8


@pytest.fixture(scope="module")
def tally_shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float, float]:
    """64 random 8 px gray images in 8 shards of 8, the sum of their pixels in [-1, 1] and the
    sum of their magnitudes (a sample counted twice or not at all moves the sum by ~1/64 of it;
    the loader's float32 pixels round by ~1e-8)."""
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (64, 8, 8), dtype=np.uint8)
    folder = tmp_path_factory.mktemp("tally") / "shards"
    samples = [Sample(f"t{i:03d}", images[i]) for i in range(64)]
    meta = dict(source="synthetic", split="train", resolution=8, channels=1)
    write_shards(samples, folder, samples_per_shard=8, meta=meta)
    pixels = images.astype(np.float64) / 127.5 - 1
    return folder, float(pixels.sum()), float(np.abs(pixels).sum())


def tally_recipe(path: Path, shards: Path, run_dir: Path, batch: int, accumulate: int) -> str:
    recipe = {
        "name": run_dir.name,
        "family": "plugins.toy_tally",
        "data": {"shards": str(shards), "num_workers": 1, "shuffle_buffer": 16},
        "train": {
            "steps": TALLY_STEPS,
            "batch_size": batch,
            "accumulate": accumulate,
            "precision": "no",
            "channels_last": False,
            "compile": False,
            "checkpoint_every": 2,
            "seed": 2,
            "ema_kimg": 0.05,
            "ema_rampup": 0.5,
        },
        "optim": {"G": {"lr": 1e-3}, "D": {"lr": 1e-3}},
        # ADA from p = 0.2, updated every 3 steps (a checkpoint at step 4 holds pending tallies)
        # by 3 steps' images / 1000 (0.096 with 2 processes of 16), then DiffAugment
        "aug": {
            "diffaug": ["translation"],
            "ada": True,
            "p": 0.2,
            "ada_interval": 3,
            "ada_kimg": 1,
        },
        "run": {"dir": str(run_dir)},
        "log": {"wandb": "disabled", "every": 2, "sample_every": 100},
    }
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def checkpoint(run_dir: Path, step: int = TALLY_STEPS) -> dict:
    return torch.load(
        run_dir / "checkpoints" / f"step-{step:08d}.pt", map_location="cpu", weights_only=True
    )


def assert_close(a: dict, b: dict, rel: float) -> None:
    for net in a:
        for key in a[net]:
            x, y = a[net][key].double(), b[net][key].double()
            error = ((x - y).abs().max() / y.abs().max().clamp_min(1e-30)).item()
            assert error <= rel, f"{net}.{key}: relative difference {error:.3g}"


@pytest.mark.slow
def test_accumulation_run_wide_state_and_exact_resume(tally_shards, tmp_path: Path) -> None:
    shards, pixel_sum, magnitude = tally_shards
    runs = {1: {}, 2: {}}  # processes → {name: recipe}
    for processes in runs:
        for name, batch, k in (("k4", 8, 4), ("k1", 32, 1), ("k2", 8, 2)):
            run_dir = tmp_path / f"p{processes}-{name}"
            runs[processes][name] = tally_recipe(
                tmp_path / f"p{processes}-{name}.yaml", shards, run_dir, batch, k
            )
    for processes, recipes in runs.items():
        run(
            train_recipes_cmd(processes, {r: ["train.seed=2"] for r in recipes.values()}),
            timeout=600,
        )
    state = {(p, name): checkpoint(tmp_path / f"p{p}-{name}") for p in runs for name in runs[p]}

    # K = 4 micro-batches of 8 = one batch of 32 per process (float64: rel 1e-6 asked, ~1e-15 seen)
    for processes in runs:
        assert_close(state[processes, "k4"]["networks"], state[processes, "k1"]["networks"], 1e-6)
        assert state[processes, "k4"]["images_seen"] == 32 * processes * TALLY_STEPS
        p4, p1 = (state[processes, k]["run_state"]["family"]["p"] for k in ("k4", "k1"))
        assert p4 == p1
        ada4, ada1 = (state[processes, k]["run_state"]["aug"]["p"] for k in ("k4", "k1"))
        assert ada4 == ada1 != 0.2  # ADA's p: the same sums over the ranks, and it moved
        with Image.open(tmp_path / f"p{processes}-k1" / "loss.png") as plot:
            assert plot.height == 650  # the losses, and under them ADA's p and r_t

    # run-wide sums over all ranks: every pixel of each epoch counted once, however many ranks
    for (processes, name), s in state.items():
        epochs = s["images_seen"] // 64  # whole epochs by the last update (step 8)
        total = s["run_state"]["family"]["pixel_sum"].item()
        assert abs(total - epochs * pixel_sum) < 1e-6 * epochs * magnitude, (processes, name)
        assert s["run_state"]["family"]["pixel_count"].item() == epochs * 64 * 64
        assert s["run_state"]["family"]["updates"] == TALLY_STEPS // 4
    # 2 processes × 16 per step equal 1 process × 32 on the same global batch
    assert math.isclose(
        state[2, "k2"]["run_state"]["family"]["pixel_sum"].item(),
        state[1, "k1"]["run_state"]["family"]["pixel_sum"].item(),
        rel_tol=1e-9,
    )

    # 2 processes, K = 2: SIGKILL after the step-4 checkpoint, resume, end bit-identical
    interrupted = tmp_path / "interrupted"
    recipe = tally_recipe(tmp_path / "interrupted.yaml", shards, interrupted, 8, 2)
    run_and_kill_after(
        launch_cmd(2, "train", recipe), interrupted / "checkpoints" / "step-00000004.pt"
    )
    resumed = run(launch_cmd(2, "train", recipe))
    assert "resumed from" in resumed.stderr
    final, ref = checkpoint(interrupted), state[2, "k2"]
    assert_bit_identical(final["networks"], ref["networks"])
    assert final["run_state"].keys() == ref["run_state"].keys() == {"family", "aug"}
    assert final["run_state"]["aug"] == ref["run_state"]["aug"]  # ADA's p, exactly
    final_state, ref_state = final["run_state"]["family"], ref["run_state"]["family"]
    assert final_state.keys() == ref_state.keys()
    assert all(
        torch.equal(torch.as_tensor(final_state[k]), torch.as_tensor(ref_state[k]))
        for k in ref_state
    )
    assert_bit_identical(
        {"m": final["optimizers"]["optimizers"]["G"]["state"][0]},
        {"m": ref["optimizers"]["optimizers"]["G"]["state"][0]},
    )
