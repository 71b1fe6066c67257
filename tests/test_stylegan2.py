"""StyleGAN2 (issue 24): the networks' sizes equal the reference's, a 2-process run with every
phase (lazy R1, path length, style mixing, augmentation) resumes bit-exactly after SIGKILL, and
truncation pulls w towards its per-class average (ψ = 0: one image per class; ψ = 1: exactly the
untruncated samples). The penalties under DDP: tests/ddp_penalty_check.py."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    SHARDS,
    assert_bit_identical,
    final_weights,
    launch_cmd,
    run,
    run_and_kill_after,
)

import distgan
from distgan.cli import main
from distgan.data.info import DatasetInfo
from distgan.families import build_family
from distgan.recipe import load_recipe

# Counted from NVlabs/stylegan2-ada-pytorch (training/networks.py, built on CPU with its
# reference ops) with train.py's configurations: `stylegan2` at 256 px, 3 channels,
# unconditional (G 30,034,338, D 28,864,129) and `cifar` (32 px, 10 classes).
REFERENCE_COUNTS = {
    "stylegan2-256": (30_034_338, 28_864_129),
    "cifar": (20_215_315, 23_089_664),
}


@pytest.mark.parametrize("config", list(REFERENCE_COUNTS))
def test_parameter_counts_equal_the_reference(config: str) -> None:
    if config == "cifar":
        cfg = load_recipe("cifar10-stylegan2", [])
        info = DatasetInfo(32, 3, [str(i) for i in range(10)], 100)
    else:  # paper256's recipe with `stylegan2`'s widths (fmaps 1) and mbstd group 4
        cfg = load_recipe("ffhq256-stylegan2", ["model.channel_base=32768", "model.mbstd_group=4"])
        info = DatasetInfo(256, 3, [], 100)
    torch.manual_seed(0)
    nets = build_family(cfg, {"": info}).build_networks()
    counts = tuple(sum(p.numel() for p in nets[n].parameters()) for n in ("G", "D"))
    assert counts == REFERENCE_COUNTS[config]


@pytest.mark.parametrize("resample", ["up", "down", "blur"])
def test_resampling_has_the_derivatives_of_a_grouped_convolution(resample: str) -> None:
    """The constant-filter convolutions (stylegan2_ops.fixed_conv) against PyTorch's grouped
    convolution: outputs, ∇ₓ and the gradient of a function of ∇ₓ (R1's and path length's
    double backward), in float64, and under bf16 autocast as fast as they are differentiable."""
    import torch.nn.functional as F

    from distgan.models import stylegan2_ops as ops

    filt = ops.blur_filter(1).double()
    ours = {
        "up": lambda x: ops.upsample2d(x, filt),
        "down": lambda x: ops.downsample2d(x, filt),
        "blur": lambda x: ops.blur(x, filt, pad=2, gain=4.0),
    }[resample]
    theirs = {
        "up": lambda x: F.conv_transpose2d(x, filt.expand(3, 1, 4, 4) * 4, stride=2, padding=1,
                                           groups=3),
        "down": lambda x: F.conv2d(x, filt.expand(3, 1, 4, 4), stride=2, padding=1, groups=3),
        "blur": lambda x: F.conv2d(F.pad(x, [2] * 4), filt.expand(3, 1, 4, 4) * 4, groups=3),
    }[resample]  # fmt: skip
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=g)
    scale = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=g).requires_grad_(True)
    probe = torch.randn(theirs(x).shape, dtype=torch.float64, generator=g)
    results = []
    for op in (ours, theirs):
        x_in = x.clone().requires_grad_(True)
        y = op(x_in * scale)
        (grad,) = torch.autograd.grad((y * probe).sum(), x_in, create_graph=True)
        (second,) = torch.autograd.grad(grad.square().sum(), scale)
        results.append((y, grad, second))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_bf = x.float().requires_grad_(True)
        y = ours(x_bf)
        assert y.dtype == torch.bfloat16
        (grad,) = torch.autograd.grad(y.float().square().sum(), x_bf, create_graph=True)
        grad.square().sum().backward()
    assert torch.isfinite(x_bf.grad).all()


def test_a_minibatch_stddev_group_that_does_not_divide_the_batch_is_one_line() -> None:
    from distgan.errors import ConfigError

    info = DatasetInfo(32, 1, [str(i) for i in range(10)], 100)
    family = build_family(load_recipe("digits-stylegan2", ["train.batch_size=6"]), {"": info})
    with pytest.raises(ConfigError, match=r"model.mbstd_group=4 does not divide train.batch_s"):
        family.build_networks()
    for fits in ("train.batch_size=8", "train.batch_size=2", "model.mbstd_group=3"):
        build_family(load_recipe("digits-stylegan2", ["train.batch_size=6", fits]), {"": info})


STEPS, EVERY = 6, 3
TINY = [
    f"data.shards={SHARDS}",
    "model.z_dim=8",
    "model.w_dim=8",
    "model.map_layers=2",
    "model.d_map_layers=2",
    "model.channel_base=128",
    "model.channel_max=8",
    "loss.r1_every=4",
    "loss.pl_every=2",
    "loss.pl_weight=2",
    "loss.style_mixing=0.9",
    "aug.diffaug=translation",
    "train.batch_size=4",
    f"train.steps={STEPS}",
    f"train.checkpoint_every={EVERY}",
    "train.ema_kimg=0.01",
    "train.ema_rampup=0.5",
    "train.seed=3",
    "log.every=2",
    f"log.sample_every={STEPS}",
    "log.samples_per_class=2",
    "log.wandb=disabled",
    "eval.every=0",
    "data.num_workers=1",
    "data.shuffle_buffer=8",
]


def test_2proc_resume_is_bit_exact_and_truncation_is_class_aware(tmp_path: Path) -> None:
    def args(run_dir: Path) -> list[str]:
        return ["train", "digits-stylegan2", *TINY, f"run.dir={run_dir}"]

    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    run(launch_cmd(2, *args(reference)))
    run_and_kill_after(
        launch_cmd(2, *args(interrupted)), interrupted / "checkpoints" / f"step-{EVERY:08d}.pt"
    )
    resumed = run(launch_cmd(2, *args(interrupted)))
    match = re.search(r"resumed from \S+ at step (\d+)", resumed.stderr)
    assert match and EVERY <= int(match.group(1)) < STEPS, resumed.stderr[-3000:]

    # G, D and G_ema with their buffers (w_avg per class, the constant noise) bit-identical
    ref_nets, nets = final_weights(reference, STEPS), final_weights(interrupted, STEPS)
    assert_bit_identical(ref_nets, nets)
    w_avg = next(v for k, v in ref_nets["G"].items() if k.endswith("w_avg"))
    assert w_avg.shape == (10, 8) and w_avg.abs().sum(1).gt(0).sum() >= 5  # classes seen
    states = [
        torch.load(d / "checkpoints" / f"step-{STEPS:08d}.pt", weights_only=True)
        for d in (reference, interrupted)
    ]
    pl_means = [s["run_state"]["family"]["pl_mean"] for s in states]
    assert pl_means[0] > 0 and torch.equal(*pl_means)  # moved by 3 path-length steps, restored

    # truncation: ψ = 1 is untruncated bit for bit; ψ = 0 one image per class for every seed
    model = distgan.load(reference)
    labels = torch.arange(20) % 10
    plain = model.sample(20, labels, seed=1)
    assert torch.equal(model.sample(20, labels, seed=1, truncation=1.0), plain)
    centre = model.sample(20, labels, seed=1, truncation=0.0)
    assert torch.equal(centre[:10], centre[10:])  # the same image per class, whatever z
    assert not torch.equal(centre[0], centre[1])  # … and a different one per class
    assert torch.equal(model.sample(10, labels[:10], seed=7, truncation=0.0), centre[:10])
    half = model.sample(20, labels, seed=1, truncation=0.5)
    assert not torch.equal(half, plain) and not torch.equal(half, centre)

    out = tmp_path / "t0.npz"
    ckpt = str(reference / "checkpoints" / f"step-{STEPS:08d}.pt")
    assert (
        main(["sample", "--ckpt", ckpt, "--n", "20", "--truncation", "0", "--out", str(out)]) == 0
    )
    images = np.load(out)["images"]
    assert (images[:10] == images[10:]).all()
    expected = (centre[:10] * 255).permute(0, 2, 3, 1).numpy()
    assert np.abs(images[:10] - expected).max() <= 0.51  # the same images, rounded to uint8
