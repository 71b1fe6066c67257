"""The WGAN-GP networks of the project's source material, layer for layer.

G: Dense 4·4·C₀ → Conv2DTranspose C₁ … → image, kernel 5, stride 2, "same", BatchNorm +
LeakyReLU on all but the last, linear output. D (the critic): Conv2D C₁ … Cₙ, kernel 5, stride 2,
"same", LeakyReLU, no BatchNorm (the gradient penalty is per sample), no dropout, flatten →
linear output.

Networks carry their own hyper-parameters (``self.hparams``) so an exported file can rebuild them.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from distgan.models.double_backward import Conv2d, LeakyReLU
from distgan.models.freeze import blocks_starting_at
from distgan.models.layers import Dropout, activation, init_args, output_layer, same_padding, sn


def _check_resolution(resolution: int, stages: int, what: str) -> None:
    if 4 * 2**stages != resolution:
        raise ValueError(
            f"{what} has {stages} stride-2 stages: it makes {4 * 2**stages} px images, not "
            f"{resolution} px; give it {max(resolution.bit_length() - 3, 0)} stages"
        )


class WGANGenerator(nn.Module):
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


class WGANCritic(nn.Module):
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
            layers += [sn(Conv2d(c_in, c_out, kernel_size, 2, pad), spectral_norm)]
            layers += [LeakyReLU(leaky_slope)]  # ReLU at slope 0
            if dropout:
                layers += [Dropout(dropout)]
        self.features = nn.Sequential(*layers)
        self.head = sn(nn.Linear(d_channels[-1] * 4 * 4, 1), spectral_norm)

    def input_blocks(self) -> list[nn.Module]:
        """One block per stride-2 conv, from the image (FreezeD)."""
        return blocks_starting_at(self.features, nn.Conv2d)

    def forward(self, image: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(image).flatten(1)).flatten()
