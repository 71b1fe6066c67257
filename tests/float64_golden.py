"""A float64 golden run: a safety net for refactors on a laptop of any CPU kind.

The per-CPU digests of tests/test_golden.py are exact but exist only for the CPU kinds someone
recorded; float32/bf16 kernels differ between kinds. In float64 the kernels of different CPUs
(AVX-512 or AVX2) agree to ~1e-15, so here a few shipped recipes (tiny networks, the engine's
own builder and step, synthetic batches) train 4 steps in float64 and their weights are compared
with stored tensors at rel 1e-9: a change to a loss, a network, the optimizer or the step moves
them far more than that. Run by tests/test_golden.py natively and under
``ATEN_CPU_CAPABILITY=avx2``; record anew on purpose with::

    python tests/float64_golden.py --record
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "float64-after-4-steps.safetensors"
STEPS = 4
TOLERANCE = 1e-9

# recipe → (overrides: tiny networks of tests/conftest.py, data shape: resolution, channels,
# classes, paired); together they cover BatchNorm, spectral norm and attention, the gradient
# penalty's double-backward layers, lazy R1, dropout, the VAE, U-Net + PatchGAN, the image pools
RECIPES: dict[str, tuple[list[str], tuple[int, int, int, bool]]] = {
    "digits-cdcgan": (["model.g_width=4", "model.d_width=4", "model.z_dim=8"], (32, 1, 10, False)),
    "digits-wgangp": (
        ["model.g_channels=[16,8,8]", "model.d_channels=[8,8,8]", "model.z_dim=8"],
        (32, 1, 0, False),
    ),
    "cifar10-sagan": (
        ["model.g_channels=[8,8,8,8]", "model.d_channels=[8,8,8,8]", "model.z_dim=8"],
        (32, 3, 10, False),
    ),
    "digits-eigengan": (
        ["model.eps_dim=8", "model.width=0.125", "model.max_channels=8", "model.d_fc=8"],
        (16, 1, 0, False),
    ),
    "digits-vae": (
        ["model.encoder=[8,8,8]", "model.decoder=[8,8]", "model.z_dim=4"],
        (32, 1, 0, False),
    ),
    "facades-pix2pix": (
        ["model.width=2", "model.downsamplings=5", "model.d_channels=[4,4,4,4]"],
        (32, 3, 0, True),
    ),
    "horse2zebra-cyclegan": (
        ["model.width=4", "model.blocks=2", "model.d_channels=[4,4,4,4]", "loss.pool_size=3"],
        (32, 3, 0, False),
    ),
}
COMMON = [
    "train.precision=no",
    "train.compile=false",
    "train.channels_last=false",
    "train.batch_size=4",
    "train.seed=5",
    "log.wandb=disabled",
]


def train_float64(name: str) -> dict[str, torch.Tensor]:
    """Every network's tensors after ``STEPS`` float64 steps of ``name`` on synthetic batches."""
    from distgan.bench._common import synthetic_batch
    from distgan.data.info import DatasetInfo
    from distgan.engine.build import build_for_bench
    from distgan.engine.step import advance
    from distgan.recipe import load_recipe

    overrides, (resolution, channels, classes, paired) = RECIPES[name]
    cfg = load_recipe(name, [*overrides, *COMMON, f"data.resolution={resolution}"])
    info = DatasetInfo(resolution, channels, [str(c) for c in range(classes)], 0, paired=paired)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        run = build_for_bench(cfg, info)
        batch = synthetic_batch(run.family, cfg.train.batch_size, run.device)
        for _ in range(STEPS):
            advance(run, [batch])
    finally:
        torch.set_default_dtype(default)
    return {
        f"{name}/{net}/{key}": tensor.detach().to(torch.float64).contiguous()
        for net, module in {**run.networks, **{f"{n}_ema": m for n, m in run.ema.items()}}.items()
        for key, tensor in module.state_dict().items()
        if tensor.is_floating_point()
    }


def differences() -> dict[str, float]:
    """Each network's largest difference, relative to its largest magnitude. Tensors below 1e-6
    of that magnitude are left out: a bias that a normalisation layer cancels has no true
    gradient, so Adam moves it from 0 by rounding noise alone (~1e-9 here), and where that noise
    falls differs between kernels; every tensor with a real gradient moves by ~lr per step."""
    expected = load_file(GOLDEN)
    got: dict[str, torch.Tensor] = {}
    for name in RECIPES:
        got.update(train_float64(name))
    assert got.keys() == expected.keys(), sorted(set(got) ^ set(expected))[:5]
    scales: dict[str, float] = {}
    for key, value in expected.items():
        network = key.rsplit("/", 1)[0]
        scales[network] = max(scales.get(network, 0.0), value.abs().max().item())
    errors = dict.fromkeys(scales, 0.0)
    for key, value in expected.items():
        network = key.rsplit("/", 1)[0]
        if value.abs().max().item() >= 1e-6 * scales[network]:
            errors[network] = max(errors[network], (got[key] - value).abs().max().item())
    return {network: errors[network] / max(scales[network], 1e-300) for network in errors}


def main(argv: list[str]) -> None:
    if argv == ["--record"]:
        tensors: dict[str, torch.Tensor] = {}
        for name in RECIPES:
            tensors.update(train_float64(name))
        save_file(tensors, GOLDEN)
        print(f"recorded {len(tensors)} tensors in {GOLDEN}")
        return
    worst = max(differences().items(), key=lambda item: item[1])
    print(f"largest relative difference {worst[1]:.3g} ({worst[0]})")
    sys.exit(0 if worst[1] <= TOLERANCE else 1)


if __name__ == "__main__":
    main(sys.argv[1:])
