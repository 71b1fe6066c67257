"""CycleGAN's ResNet generator (Zhu et al., 2017; Johnson et al.'s style-transfer network):
reflection-padded 7×7 convolution (64), two stride-2 3×3 convolutions (128, 256), ``blocks``
residual blocks of two reflection-padded 3×3 convolutions, two stride-2 transposed convolutions
back (128, 64), a reflection-padded 7×7 convolution and tanh. InstanceNorm and ReLU throughout;
9 blocks for 256 px ("resnet_9blocks"), 6 for 128 px. The discriminator is
:class:`distgan.models.unet.PatchDiscriminator` with InstanceNorm.
"""

from __future__ import annotations

import torch
from torch import nn

from distgan.models.dcgan import dcgan_init_
from distgan.models.layers import init_args
from distgan.models.unet import norm_layer


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=norm != "batch"),
            norm_layer(norm, channels),
            nn.ReLU(),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=norm != "batch"),
            norm_layer(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        width: int = 64,
        blocks: int = 9,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        self.hparams = init_args(locals())
        bias = norm != "batch"
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, width, 7, bias=bias),
            norm_layer(norm, width),
            nn.ReLU(),
        ]
        for mult in (1, 2):  # downsampling
            layers += [
                nn.Conv2d(width * mult, width * mult * 2, 3, 2, 1, bias=bias),
                norm_layer(norm, width * mult * 2),
                nn.ReLU(),
            ]
        layers += [ResidualBlock(width * 4, norm) for _ in range(blocks)]
        for mult in (4, 2):  # upsampling
            layers += [
                nn.ConvTranspose2d(width * mult, width * mult // 2, 3, 2, 1, 1, bias=bias),
                norm_layer(norm, width * mult // 2),
                nn.ReLU(),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
