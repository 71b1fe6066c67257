"""Device placement, checked on a CPU-only machine: under ``FakeTensorMode`` tensors made on
``cuda`` are fake (no GPU needed) and any op that mixes them with CPU tensors raises, as it would
on a real GPU. The colour transforms, the image pools after a resume (checkpoints load on the
CPU), the augmentation stage and every family's previews and samples run with their inputs on
the fake GPU. Then the GPU settings that need no GPU to check: precision=auto on GPUs that only
emulate bf16, compile off by default and its fallback, unusable GPUs refused, deterministic
kernels, a noise stream saved on another device type."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from float64_golden import RECIPES
from torch._subclasses.fake_tensor import FakeTensorMode

from distgan.augment import build_augment
from distgan.bench._common import synthetic_batch
from distgan.config.sections import AugConfig
from distgan.data.info import DatasetInfo
from distgan.data.transforms import Transforms, lab_to_rgb, rgb_to_lab
from distgan.engine import checkpoint, runtime
from distgan.errors import LaunchError
from distgan.families import build_family
from distgan.families._image_pool import ImagePool
from distgan.families.base import Nets
from distgan.families.context import StepContext
from distgan.recipe import load_recipe

GPU = torch.device("cuda")


class GpuGenerator(torch.Generator):
    """A CPU generator that says it is on the GPU (families draw on ``generator.device``)."""

    device = GPU


@pytest.fixture
def fake_gpu():
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        yield mode


def test_colour_transforms_stay_on_the_images_device(fake_gpu) -> None:
    rgb = torch.rand(2, 3, 8, 8, device=GPU)
    assert lab_to_rgb(rgb_to_lab(rgb)).device.type == "cuda"
    assert Transforms(lab=True).colour((rgb * 255).to(torch.uint8)).device == rgb.device
    assert Transforms(grayscale=True).colour((rgb * 255).to(torch.uint8)).device == rgb.device


def test_an_image_pool_restored_on_the_cpu_serves_gpu_fakes(fake_gpu) -> None:
    pool = ImagePool(2)
    pool.load_state_dict({"images": [torch.zeros(3, 4, 4), torch.ones(3, 4, 4)]})  # a checkpoint
    ctx = StepContext(GPU, GpuGenerator().manual_seed(0))
    out = pool.query(torch.rand(3, 3, 4, 4, device=GPU), ctx)
    assert out.device.type == "cuda" and pool.state_dict()["images"][0].device.type == "cpu"


def test_augmentation_makes_every_tensor_on_the_images_device(fake_gpu) -> None:
    """DiffAugment's policies and ADA's three groups (RGB and gray) with the step context's draws
    on the GPU, and ADA's feedback tallies (the backward pass needs a real GPU: tests/gpu)."""
    stage = build_augment(AugConfig(diffaug="color,translation,cutout", ada=True, p=0.5))
    ctx = StepContext(GPU, GpuGenerator().manual_seed(0), augment=stage)
    ctx.begin_step(0)
    ctx.enter(0, None)
    for channels in (3, 1):
        out = ctx.augment(torch.rand(2, channels, 8, 8, device=GPU, requires_grad=True))
        assert out.device.type == "cuda" and out.requires_grad
    ctx.augment_feedback(torch.rand(2, 1, device=GPU))
    assert {t.device.type for t in ctx.tallies.values()} == {"cuda"}


# the recipes of the float64 golden run, plus the colorization GAN (L*a*b*)
FAMILY_RECIPES = {
    **RECIPES,
    "photos-colorize": (
        ["model.encoder=[8,8,8,8,8]", "model.decoder=[8,8,8,8]", "model.d_channels=[8,8,8,8]"],
        (32, 3, 0, False),
    ),
    "digits-stylegan2": (
        ["model.channel_base=128", "model.channel_max=8", "model.z_dim=8", "model.w_dim=8"],
        (32, 1, 10, False),
    ),
    "celeba64-stylegan2": (
        ["model.channel_base=128", "model.channel_max=8", "model.z_dim=8", "model.w_dim=8"],
        (32, 3, 0, False),
    ),
}


@pytest.mark.parametrize("name", list(FAMILY_RECIPES))
def test_previews_and_samples_of_every_family_on_a_gpu(name: str, fake_gpu) -> None:
    overrides, (resolution, channels, classes, paired) = FAMILY_RECIPES[name]
    cfg = load_recipe(
        name, [*overrides, f"data.resolution={resolution}", "log.samples_per_class=2"]
    )
    info = DatasetInfo(resolution, channels, [str(c) for c in range(classes)], 0, paired=paired)
    from distgan.families import get_family

    streams = {s: info for s in get_family(cfg.family).streams} or {"": info}
    family = build_family(cfg, streams)
    with torch.device(GPU):
        networks = family.build_networks()
    nets = Nets(networks)
    batch = synthetic_batch(family, 2, GPU)
    generator = GpuGenerator().manual_seed(0)
    with torch.no_grad():
        images, _ = family.preview(nets, batch, generator)
        samples = family.sample(nets, 2, generator, batch)
    assert images.device.type == samples.device.type == "cuda"


# ----------------------------------------------------------------------------- GPU settings


def test_auto_precision_is_fp16_where_a_gpu_only_emulates_bf16(monkeypatch) -> None:
    """V100/T4: ``is_bf16_supported()`` is true through emulation, which is slow there."""
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation
    )
    assert runtime.resolve_precision("auto", GPU) == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert runtime.resolve_precision("auto", GPU) == "bf16"


def test_compile_is_off_unless_asked_and_a_failing_compile_runs_eagerly(caplog) -> None:
    cfg = load_recipe("digits-cdcgan", ["train.precision=no"])
    assert not runtime.resolve_settings(cfg, GPU).compile
    asked = load_recipe("digits-cdcgan", ["train.precision=no", "train.compile=true"])
    assert runtime.resolve_settings(asked, GPU).compile

    def broken_backend(graph, inputs):
        raise RuntimeError("no compiler on this node")

    ctx = StepContext(torch.device("cpu"), torch.Generator(), compile_backend=broken_backend)
    layer = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    with caplog.at_level(logging.WARNING, logger="distgan"):
        out = ctx.compiled(layer)(x)
        again = ctx.compiled(layer)(x)
    assert torch.equal(out, layer(x)) and torch.equal(again, out)
    assert [r.getMessage() for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert len([r for r in caplog.records if "torch.compile failed" in r.getMessage()]) == 1


def test_gpus_that_cannot_be_used_are_refused_in_one_line(monkeypatch) -> None:
    monkeypatch.setattr(
        runtime, "gpus_present", lambda: True
    )  # e.g. a driver too old for the wheel
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    cfg = load_recipe("digits-cdcgan")
    with pytest.raises(LaunchError, match=r"cannot use them .* train.device=cpu"):
        runtime.check_gpus_usable(cfg)
    runtime.check_gpus_usable(load_recipe("digits-cdcgan", ["train.device=cpu"]))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_deterministic_kernels_on_request() -> None:
    before = torch.are_deterministic_algorithms_enabled(), torch.get_float32_matmul_precision()
    try:
        runtime.configure_gpu_kernels(deterministic=True)
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark and os.environ["CUBLAS_WORKSPACE_CONFIG"]
        runtime.configure_gpu_kernels(deterministic=False)
        assert torch.backends.cudnn.benchmark and torch.get_float32_matmul_precision() == "high"
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.set_float32_matmul_precision(before[1])
        torch.backends.cudnn.benchmark = torch.backends.cudnn.deterministic = False


def test_a_noise_state_of_another_device_type_reseeds_the_generator(caplog) -> None:
    """A CPU checkpoint resumed on a GPU: its mt19937 state does not fit a CUDA generator (here
    the other way round: a 16-byte Philox state into a CPU generator)."""
    state = checkpoint.capture_rng(torch.Generator().manual_seed(1))
    state["noise"] = torch.arange(16, dtype=torch.uint8)
    first, second = torch.Generator(), torch.Generator()
    with caplog.at_level(logging.WARNING, logger="distgan"):
        checkpoint.restore_rng(state, first)
        checkpoint.restore_rng(state, second)
    assert torch.equal(torch.rand(5, generator=first), torch.rand(5, generator=second))
    assert "noise continues from a seed" in caplog.text


def test_feature_gathers_use_the_backends_device(monkeypatch) -> None:
    """KID/PR/IS keep features on the CPU; under NCCL their all-gathers must run on the
    process's GPU (NCCL cannot gather CPU tensors), under gloo on the CPU."""
    from distgan.evaluation import _features

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(torch.distributed, "get_backend", lambda group=None: "nccl")
    assert _features.collective_device() == torch.device("cuda", 3)
    monkeypatch.setattr(torch.distributed, "get_backend", lambda group=None: "gloo")
    assert _features.collective_device() == torch.device("cpu")


def test_out_of_memory_is_one_line_naming_the_batch_and_accumulation() -> None:
    from test_engine import toy_run

    from distgan.engine.trainer import out_of_memory_hint

    hint = out_of_memory_hint(toy_run(1, 8))
    assert "train.batch_size=8 per process" in hint
    assert "train.batch_size=4 train.accumulate=2 keeps the global batch of 8" in hint
