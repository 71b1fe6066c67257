"""Device placement, checked on a CPU-only machine: under ``FakeTensorMode`` tensors made on
``cuda`` are fake (no GPU needed) and any op that mixes them with CPU tensors raises, as it would
on a real GPU. The colour transforms, the image pools after a resume (checkpoints load on the
CPU) and every family's previews and samples run with their inputs on the fake GPU."""

from __future__ import annotations

import pytest
import torch
from float64_golden import RECIPES
from torch._subclasses.fake_tensor import FakeTensorMode

from distgan.bench._common import synthetic_batch
from distgan.data.stream import DatasetInfo
from distgan.data.transforms import Transforms, lab_to_rgb, rgb_to_lab
from distgan.families import build_family
from distgan.families._image_pool import ImagePool
from distgan.families.base import Nets
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
    generator = GpuGenerator().manual_seed(0)
    out = pool.query(torch.rand(3, 3, 4, 4, device=GPU), generator)
    assert out.device.type == "cuda" and pool.state_dict()["images"][0].device.type == "cpu"


# the recipes of the float64 golden run, plus the colorization GAN (L*a*b*)
FAMILY_RECIPES = {
    **RECIPES,
    "photos-colorize": (
        ["model.encoder=[8,8,8,8,8]", "model.decoder=[8,8,8,8]", "model.d_channels=[8,8,8,8]"],
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
