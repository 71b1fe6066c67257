"""EigenGAN's networks (He, Kan & Shan, ICCV 2021), after the authors' TensorFlow release.

Widths follow the authors' rule: a feature map of side s has ``min(2^(10 − log2 s) · width,
max_channels)`` channels (``width`` 4 → 512 at 4–8 px, 256 at 16, 128 at 32, 64 at 64 px).

Generator: ε → dense → 4×4; then per layer i (side s = 4·2^i) an *eigen-subspace* in that
layer's feature space, φᵢ = Uᵢ·diag(Lᵢ)·zᵢ + μᵢ (zᵢ of ``layer_dims`` dims, Uᵢ initialised
orthogonal, Lᵢ to 3·dims … 6, 3, μᵢ to 0), injected twice: h ← up(act(h + 1×1-deconv(φᵢ))),
h ← deconv(act(h + 3×3-stride-2-deconv(φᵢ))); finally act → 7×7 conv → tanh. No normalisation.
The latent vector is ``[ε, z₁, …, z_L]``; the orthogonality penalty Σᵢ ‖UᵢᵀUᵢ − I‖²_F keeps each
Uᵢ's columns orthonormal, so each zᵢ dimension moves the layer along its own direction.

Discriminator: 7×7 conv, then per halving a 3×3 conv and a 3×3 stride-2 conv, a 3×3 conv, a
dense layer and one logit; LeakyReLU 0.2 everywhere, no normalisation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from distgan.models.double_backward import Conv2d, LeakyReLU
from distgan.models.layers import init_args


def eigen_width(side: int, width: float, max_channels: int) -> int:
    return max(1, min(int(2 ** (10 - math.log2(side)) * width), max_channels))


def _halvings(resolution: int) -> int:
    layers = int(math.log2(resolution)) - 2
    if resolution < 8 or 4 << layers != resolution:
        raise ValueError(f"EigenGAN needs a power-of-two resolution ≥ 8 px, not {resolution}")
    return layers


class Subspace(nn.Module):
    """φ = U·diag(L)·z + μ, a point of the layer's feature space [C, H, W]."""

    def __init__(self, shape: tuple[int, int, int], dims: int) -> None:
        super().__init__()
        self.shape = shape
        self.U = nn.Parameter(nn.init.orthogonal_(torch.empty(math.prod(shape), dims)))
        self.L = nn.Parameter(torch.tensor([3.0 * k for k in range(dims, 0, -1)]))
        self.mu = nn.Parameter(torch.zeros(shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return ((z * self.L) @ self.U.t()).view(-1, *self.shape) + self.mu

    def orthogonality(self) -> torch.Tensor:
        """‖UᵀU − I‖²_F, in float32 whatever the autocast."""
        with torch.autocast(self.U.device.type, enabled=False):
            U = self.U.float()
            gram = U.t() @ U
            return (gram - torch.eye(gram.shape[0], device=U.device)).square().sum()


class EigenBlock(nn.Module):
    """One layer: the subspace injected before the upsampling deconv and before the next one."""

    def __init__(self, side: int, channels: int, out_channels: int, dims: int, slope: float):
        super().__init__()
        self.subspace = Subspace((channels, side, side), dims)
        self.inject_same = nn.ConvTranspose2d(channels, channels, 1)
        self.inject_up = nn.ConvTranspose2d(channels, out_channels, 3, 2, 1, output_padding=1)
        self.up = nn.ConvTranspose2d(channels, out_channels, 3, 2, 1, output_padding=1)
        self.conv = nn.ConvTranspose2d(out_channels, out_channels, 3, 1, 1)
        self.act = nn.LeakyReLU(slope)

    def forward(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        phi = self.subspace(z).to(h.dtype)
        h = self.up(self.act(h + self.inject_same(phi)))
        return self.conv(self.act(h + self.inject_up(phi)))


def _he_init_(module: nn.Module, slope: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, a=slope)
            nn.init.zeros_(m.bias)


class EigenGenerator(nn.Module):
    def __init__(
        self,
        resolution: int = 64,
        channels: int = 3,
        eps_dim: int = 512,
        layer_dims: int = 6,
        width: float = 4,
        max_channels: int = 512,
        slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.hparams = init_args(locals())
        self.eps_dim, self.layer_dims = eps_dim, layer_dims
        layers = _halvings(resolution)
        self.latent_dim = eps_dim + layers * layer_dims
        nd = lambda side: eigen_width(side, width, max_channels)  # noqa: E731
        self.start = nd(4)
        self.dense = nn.Linear(eps_dim, 16 * self.start)
        self.blocks = nn.ModuleList(
            EigenBlock(4 << i, nd(4 << i), nd(8 << i), layer_dims, slope) for i in range(layers)
        )
        self.out = nn.Sequential(
            nn.LeakyReLU(slope), nn.Conv2d(nd(resolution), channels, 7, 1, 3), nn.Tanh()
        )
        _he_init_(self, slope)
        for block in self.blocks:  # (the init above must not touch the subspaces)
            nn.init.orthogonal_(block.subspace.U)

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        eps, zs = z[:, : self.eps_dim], z[:, self.eps_dim :].split(self.layer_dims, 1)
        h = self.dense(eps).view(-1, self.start, 4, 4)
        for block, z_i in zip(self.blocks, zs, strict=True):
            h = block(h, z_i)
        return self.out(h)

    def orthogonality(self) -> torch.Tensor:
        """Σ over layers of ‖UᵢᵀUᵢ − I‖²_F."""
        return sum(block.subspace.orthogonality() for block in self.blocks)


class EigenDiscriminator(nn.Module):
    def __init__(
        self,
        resolution: int = 64,
        channels: int = 3,
        width: float = 4,
        max_channels: int = 512,
        fc_dim: int = 512,
        slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.hparams = init_args(locals())
        nd = lambda side: eigen_width(side, width, max_channels)  # noqa: E731
        act = lambda: LeakyReLU(slope)  # noqa: E731  (cheap for R1's double backward)
        layers: list[nn.Module] = [Conv2d(channels, nd(resolution), 7, 1, 3), act()]
        side = resolution
        for _ in range(_halvings(resolution)):
            layers += [Conv2d(nd(side), nd(side), 3, 1, 1), act()]
            layers += [Conv2d(nd(side), nd(side // 2), 3, 2, 1), act()]
            side //= 2
        layers += [Conv2d(nd(4), nd(4), 3, 1, 1), act(), nn.Flatten()]
        layers += [nn.Linear(16 * nd(4), fc_dim), act(), nn.Linear(fc_dim, 1)]
        self.net = nn.Sequential(*layers)
        _he_init_(self, slope)

    def input_blocks(self) -> list[nn.Module]:
        """One block per halving stage (two convs), the first with the 7×7 from-image conv;
        the 4×4 conv and the dense layers are the head (FreezeD)."""
        stages = (len(self.net) - 8) // 4
        return [self.net[0 if i == 0 else 2 + 4 * i : 6 + 4 * i] for i in range(stages)]

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x).squeeze(1)
