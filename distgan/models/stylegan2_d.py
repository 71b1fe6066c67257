"""StyleGAN2's discriminator (as in stylegan2-ada-pytorch): blocks from the image resolution
down to 8×8, each two 3×3 convs (the second halving the size after the [1, 3, 3, 1] filter) with
a residual 1×1 skip ("resnet"; "orig" drops the skip, as ADA's ``cifar`` config does), then at
4×4 the minibatch-stddev feature, a conv, two dense layers and, in the conditional model, a
projection onto the label mapped by a small mapping network (the reference's ``cmap``).

No BatchNorm and no per-batch statistic other than the stddev within groups of
``mbstd_group`` samples: with group size 1 the per-sample gradients (R1) do not depend on how
the batch is split across ranks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from distgan.models.stylegan2 import MappingNetwork, channels_at
from distgan.models.stylegan2_ops import Conv2dLayer, FullyConnected, at_least_fp32

ARCHITECTURES = ("resnet", "orig")


class DiscriminatorBlock(nn.Module):
    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        img_channels: int,
        architecture: str,
        conv_clamp: float | None,
    ) -> None:
        super().__init__()
        self.architecture = architecture
        self.fromrgb = (
            Conv2dLayer(img_channels, tmp_channels, 1, conv_clamp=conv_clamp)
            if in_channels == 0
            else None
        )
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, down=True, conv_clamp=conv_clamp)
        if architecture == "resnet":
            self.skip = Conv2dLayer(
                tmp_channels, out_channels, 1, bias=False, activation=False, down=True
            )

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if self.fromrgb is not None:
            x = self.fromrgb(img)
        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            return y + self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return self.conv1(self.conv0(x))


def minibatch_stddev(x: torch.Tensor, group_size: int, num_channels: int = 1) -> torch.Tensor:
    """Append the mean stddev over groups of ``group_size`` samples (samples i, i + N/G, …, as
    the reference groups them) as ``num_channels`` feature maps."""
    n, c, h, w = x.shape
    g = min(group_size, n)
    if n % g:
        raise ValueError(f"a batch of {n} does not split into minibatch-stddev groups of {g}")
    f = num_channels
    y = at_least_fp32(x).reshape(g, -1, f, c // f, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0)
    y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [N/G, F]
    y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y.to(x.dtype)], dim=1)


class DiscriminatorEpilogue(nn.Module):
    def __init__(
        self,
        in_channels: int,
        cmap_dim: int,
        mbstd_group: int,
        mbstd_channels: int,
        conv_clamp: float | None,
    ) -> None:
        super().__init__()
        self.cmap_dim, self.mbstd_group, self.mbstd_channels = cmap_dim, mbstd_group, mbstd_channels
        self.conv = Conv2dLayer(in_channels + mbstd_channels, in_channels, 3, conv_clamp=conv_clamp)
        self.fc = FullyConnected(in_channels * 16, in_channels, activation=True)
        self.out = FullyConnected(in_channels, cmap_dim or 1)

    def forward(self, x: torch.Tensor, cmap: torch.Tensor | None) -> torch.Tensor:
        if self.mbstd_channels:
            x = minibatch_stddev(x, self.mbstd_group, self.mbstd_channels)
        x = self.out(self.fc(self.conv(x).flatten(1)))
        if cmap is not None:  # projection: ⟨D's features, the label's mapping⟩ / √dim
            x = (x * cmap.to(x.dtype)).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class StyleGAN2Discriminator(nn.Module):
    """``forward(images, labels)`` → one logit per image [N]."""

    def __init__(
        self,
        resolution: int,
        channels: int,
        num_classes: int = 0,
        architecture: str = "resnet",
        channel_base: int = 32768,
        channel_max: int = 512,
        mbstd_group: int = 4,
        mbstd_channels: int = 1,
        map_layers: int = 8,
        conv_clamp: float | None = 256,
        mapping_lr: float = 0.01,
    ) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"D architecture {architecture!r}: use {' or '.join(ARCHITECTURES)}")
        log2 = int(math.log2(resolution))
        if resolution < 8 or 2**log2 != resolution:
            raise ValueError(f"StyleGAN2's D needs a power-of-two resolution ≥ 8, not {resolution}")
        width = lambda res: channels_at(res, channel_base, channel_max)  # noqa: E731
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(
                width(res) if res < resolution else 0,
                width(res),
                width(res // 2),
                channels,
                architecture,
                conv_clamp,
            )
            for res in (2**i for i in range(log2, 2, -1))
        )
        cmap_dim = width(4) if num_classes else 0
        self.mapping = (
            MappingNetwork(
                0, num_classes, cmap_dim, map_layers, track_w_avg=False, lr_multiplier=mapping_lr
            )
            if num_classes
            else None
        )
        self.epilogue = DiscriminatorEpilogue(
            width(4), cmap_dim, mbstd_group, mbstd_channels, conv_clamp
        )

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = None
        for block in self.blocks:
            x = block(x, images)
        cmap = self.mapping(None, labels) if self.mapping is not None else None
        return self.epilogue(x, cmap).squeeze(1)
