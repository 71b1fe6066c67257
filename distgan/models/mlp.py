"""The dense baseline GAN of the project's source material: a mostly fully-connected G
(Dense → LeakyReLU → BatchNorm → reshape to (res/4)² × C → upsample → conv → upsample → conv →
image) and an MLP discriminator (flatten → dense → 1).

Networks carry their own hyper-parameters (``self.hparams``) so an exported file can rebuild them.
"""

from __future__ import annotations

import torch
from torch import nn

from distgan.models.freeze import blocks_starting_at
from distgan.models.layers import Dropout, activation, init_args, output_layer, upsample


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

    def input_blocks(self) -> list[nn.Module]:
        """One block per hidden dense layer, from the image; the logit layer is the head."""
        return blocks_starting_at(self.net, nn.Linear, head=1)

    def forward(self, image: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(image).flatten()
