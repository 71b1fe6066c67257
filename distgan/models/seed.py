"""The seed's networks, layer for layer.

* WGAN-GP (``SeedGenerator``/``SeedCritic``): G: Dense 4·4·C₀ → Conv2DTranspose C₁ … → image,
  kernel 5, stride 2, "same", BatchNorm + LeakyReLU on all but the last, linear output.
  D: Conv2D C₁ … Cₙ, kernel 5, stride 2, "same", LeakyReLU, no BatchNorm (the gradient penalty is
  per sample), no dropout, flatten → linear output.
* The dense baseline (``MLPGenerator``/``MLPDiscriminator``): G: Dense → LeakyReLU → BatchNorm →
  reshape to (res/4)² × C → upsample → conv → upsample → conv → image; D: flatten → dense → 1.

Networks carry their own hyper-parameters (``self.hparams``) so an exported file can rebuild them.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from distgan.models.layers import (
    Dropout,
    activation,
    init_args,
    output_layer,
    same_padding,
    sn,
    upsample,
)


def _check_resolution(resolution: int, stages: int, what: str) -> None:
    if 4 * 2**stages != resolution:
        raise ValueError(
            f"{what} has {stages} stride-2 stages: it makes {4 * 2**stages} px images, not "
            f"{resolution} px; give it {max(resolution.bit_length() - 3, 0)} stages"
        )


class SeedGenerator(nn.Module):
    """z → Dense 4·4·g_channels[0] → transposed convs g_channels[1:] → image (linear output)."""

    def __init__(
        self,
        z_dim: int = 100,
        resolution: int = 64,
        channels: int = 3,
        g_channels: tuple[int, ...] = (512, 256, 128, 64),
        kernel_size: int = 5,
        leaky_slope: float = 0.2,
        batchnorm: bool = True,
        output: str = "linear",
    ) -> None:
        super().__init__()
        g_channels = tuple(g_channels)
        self.hparams = init_args(locals())
        _check_resolution(resolution, len(g_channels), "model.g_channels")
        self.z_dim, self.base = z_dim, g_channels[0]
        self.dense = nn.Linear(z_dim, 4 * 4 * g_channels[0])
        pad, out_pad = same_padding(kernel_size)
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(g_channels):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, kernel_size, 2, pad, out_pad, bias=not batchnorm),
                nn.BatchNorm2d(c_out) if batchnorm else nn.Identity(),
                activation(leaky_slope),
            ]
        last = nn.ConvTranspose2d(g_channels[-1], channels, kernel_size, 2, pad, out_pad)
        self.net = nn.Sequential(*layers, last, *output_layer(output))

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.dense(z).view(-1, self.base, 4, 4))


class SeedCritic(nn.Module):
    """image → strided convs d_channels (LeakyReLU) → flatten → one linear output per image."""

    def __init__(
        self,
        resolution: int = 64,
        channels: int = 3,
        d_channels: tuple[int, ...] = (64, 128, 256, 512),
        kernel_size: int = 5,
        leaky_slope: float = 0.2,
        dropout: float = 0.0,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        d_channels = tuple(d_channels)
        self.hparams = init_args(locals())
        _check_resolution(resolution, len(d_channels), "model.d_channels")
        pad, _ = same_padding(kernel_size)
        layers: list[nn.Module] = []
        for c_in, c_out in zip((channels, *d_channels), d_channels, strict=False):
            layers += [sn(nn.Conv2d(c_in, c_out, kernel_size, 2, pad), spectral_norm)]
            layers += [activation(leaky_slope)]
            if dropout:
                layers += [Dropout(dropout)]
        self.features = nn.Sequential(*layers)
        self.head = sn(nn.Linear(d_channels[-1] * 4 * 4, 1), spectral_norm)

    def forward(self, image: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(image).flatten(1)).flatten()


class MLPGenerator(nn.Module):
    """z → Dense (res/4)²·C → LeakyReLU → BatchNorm → reshape → upsample → conv → upsample → conv.

    At 64 px with C = 16 that is the seed's Dense 4096 → 16×16×16 → … → 64×64×3.
    """

    def __init__(
        self,
        z_dim: int = 100,
        resolution: int = 64,
        channels: int = 3,
        base_channels: int = 16,
        conv_channels: int = 128,
        leaky_slope: float = 0.2,
        output: str = "tanh",
    ) -> None:
        super().__init__()
        self.hparams = init_args(locals())
        if resolution % 4:
            raise ValueError(
                f"the dense baseline needs a resolution divisible by 4, not {resolution}"
            )
        self.base, self.side = base_channels, resolution // 4
        dense = base_channels * self.side**2
        self.dense = nn.Sequential(
            nn.Linear(z_dim, dense), activation(leaky_slope), nn.BatchNorm1d(dense)
        )
        self.conv1 = nn.Conv2d(base_channels, conv_channels, 3, padding=1)
        self.act = activation(leaky_slope)
        self.conv2 = nn.Conv2d(conv_channels, channels, 3, padding=1)
        self.out = nn.Sequential(*output_layer(output))

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        h = self.dense(z).view(-1, self.base, self.side, self.side)
        h = self.act(self.conv1(upsample(h)))
        return self.out(self.conv2(upsample(h)))


class MLPDiscriminator(nn.Module):
    """image → flatten → dense layers (LeakyReLU, optional dropout) → one logit per image."""

    def __init__(
        self,
        resolution: int = 64,
        channels: int = 3,
        hidden: tuple[int, ...] = (512, 256),
        leaky_slope: float = 0.2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.hparams = init_args(locals())
        layers: list[nn.Module] = [nn.Flatten()]
        width = channels * resolution**2
        for h in hidden:
            layers += [nn.Linear(width, h), activation(leaky_slope)]
            layers += [Dropout(dropout)] if dropout else []
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(image).flatten()
