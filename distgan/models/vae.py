"""The convolutional VAE of "Generative Deep Learning" (Foster, ch. 3) for faces.

Encoder: 3×3 stride-2 "same" convs (32, 64, 64, 64 filters), each + BatchNorm + LeakyReLU +
Dropout 0.25, flattened → dense μ and log σ². Decoder: dense back to the encoder's last feature
map (8×8×64 = 4096 at 128 px), then 3×3 stride-2 transposed convs (64, 64, 32, image channels),
BatchNorm/LeakyReLU/Dropout on all but the last, sigmoid out: images in [0, 1].

Keras' defaults carry over where they change the numbers: LeakyReLU slope 0.3, BatchNorm
momentum 0.99 (PyTorch's ``momentum=0.01``) and ε 1e-3, Glorot-uniform weights, zero biases.
"""

from __future__ import annotations

import torch
from torch import nn

from distgan.models.layers import Dropout, init_args


def _block(layer: nn.Module, channels: int, batchnorm: bool, slope: float, dropout: float):
    norm = [nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)] if batchnorm else []
    return [layer, *norm, nn.LeakyReLU(slope), *([Dropout(dropout)] if dropout else [])]


def _glorot_(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def _feature_side(resolution: int, convs: int) -> int:
    side = resolution >> convs
    if side < 1 or side << convs != resolution:
        raise ValueError(
            f"{convs} stride-2 convs do not divide {resolution} px evenly; change model.encoder"
        )
    return side


class VAEEncoder(nn.Module):
    """Images in [0, 1] → (μ, log σ²) of q(z | x)."""

    def __init__(
        self,
        resolution: int = 128,
        channels: int = 3,
        filters: list[int] = (32, 64, 64, 64),
        z_dim: int = 200,
        batchnorm: bool = True,
        dropout: float = 0.25,
        slope: float = 0.3,
    ) -> None:
        super().__init__()
        self.hparams = init_args(locals())
        side = _feature_side(resolution, len(filters))
        layers: list[nn.Module] = []
        for previous, width in zip([channels, *filters], filters, strict=False):
            conv = nn.Conv2d(previous, width, 3, 2, 1)
            layers += _block(conv, width, batchnorm, slope, dropout)
        self.convs = nn.Sequential(*layers, nn.Flatten())
        self.mu = nn.Linear(filters[-1] * side * side, z_dim)
        self.log_var = nn.Linear(filters[-1] * side * side, z_dim)
        _glorot_(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.convs(x)
        return self.mu(h), self.log_var(h)


class VAEDecoder(nn.Module):
    """z → images in [0, 1]. ``filters``: the hidden transposed convs (the last one, to the
    image's channels, is added); ``start`` channels × side² is the dense layer's output."""

    def __init__(
        self,
        resolution: int = 128,
        channels: int = 3,
        filters: list[int] = (64, 64, 32),
        z_dim: int = 200,
        start: int = 64,
        batchnorm: bool = True,
        dropout: float = 0.25,
        slope: float = 0.3,
    ) -> None:
        super().__init__()
        self.hparams = init_args(locals())
        self.start, self.side = start, _feature_side(resolution, len(filters) + 1)
        self.dense = nn.Linear(z_dim, start * self.side * self.side)
        layers: list[nn.Module] = []
        for previous, width in zip([start, *filters], filters, strict=False):
            deconv = nn.ConvTranspose2d(previous, width, 3, 2, 1, output_padding=1)
            layers += _block(deconv, width, batchnorm, slope, dropout)
        last = filters[-1] if filters else start
        layers += [nn.ConvTranspose2d(last, channels, 3, 2, 1, output_padding=1), nn.Sigmoid()]
        self.deconvs = nn.Sequential(*layers)
        _glorot_(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.dense(z).view(-1, self.start, self.side, self.side)
        return self.deconvs(h)
