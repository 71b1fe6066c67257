"""ResNet generator and discriminator of SNGAN (Miyato et al., 2018) and SAGAN (Zhang et al.,
2019) for 32–128 px: spectral norm on D and/or G, self-attention at chosen feature resolutions,
conditional BatchNorm in G and a projection discriminator for class-conditional training.

Channel lists set depth and width: G starts at 4×4×g_channels[0] and each further entry is one
up-block (×2), so 32 px needs 4 entries; each D block halves the size while it is above 8×8.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from distgan.models.freeze import blocks_starting_at
from distgan.models.layers import Norm2d, SelfAttention, init_args, projection, sn, upsample


def _init_(module: nn.Module) -> None:
    """Xavier-uniform weights, zero biases (SNGAN); the raw weight under spectral norm."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear | nn.Embedding):
            weight = (
                m.parametrizations.weight.original
                if parametrize.is_parametrized(m, "weight")
                else m.weight
            )
            nn.init.xavier_uniform_(weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


class GBlock(nn.Module):
    """BN → ReLU → up → conv3 → BN → ReLU → conv3, plus up → conv1 shortcut."""

    def __init__(self, c_in: int, c_out: int, num_classes: int, use_sn: bool) -> None:
        super().__init__()
        self.norm1, self.norm2 = Norm2d(c_in, num_classes), Norm2d(c_out, num_classes)
        self.conv1 = sn(nn.Conv2d(c_in, c_out, 3, padding=1), use_sn)
        self.conv2 = sn(nn.Conv2d(c_out, c_out, 3, padding=1), use_sn)
        self.skip = sn(nn.Conv2d(c_in, c_out, 1), use_sn)

    def forward(self, x: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(upsample(F.relu(self.norm1(x, label))))
        h = self.conv2(F.relu(self.norm2(h, label)))
        return h + self.skip(upsample(x))


class DBlock(nn.Module):
    """(ReLU →) conv3 → ReLU → conv3 (→ avg-pool), plus conv1 (→ avg-pool) shortcut.

    The first block of D takes the image, so it has no leading ReLU (SNGAN's "optimized" block).
    """

    def __init__(self, c_in: int, c_out: int, down: bool, first: bool, use_sn: bool) -> None:
        super().__init__()
        self.down, self.first = down, first
        self.conv1 = sn(nn.Conv2d(c_in, c_out, 3, padding=1), use_sn)
        self.conv2 = sn(nn.Conv2d(c_out, c_out, 3, padding=1), use_sn)
        self.skip = sn(nn.Conv2d(c_in, c_out, 1), use_sn) if (c_in != c_out or down) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        skip = x if self.skip is None else self.skip(x)
        if self.down:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        return h + skip


class ResNetGenerator(nn.Module):
    def __init__(
        self,
        z_dim: int = 128,
        resolution: int = 32,
        channels: int = 3,
        g_channels: tuple[int, ...] = (256, 256, 256, 256),
        num_classes: int = 0,
        attention: tuple[int, ...] = (),
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        g_channels = tuple(g_channels)
        self.hparams = init_args(locals())
        if 4 * 2 ** (len(g_channels) - 1) != resolution:
            raise ValueError(
                f"model.g_channels {list(g_channels)} makes {4 * 2 ** (len(g_channels) - 1)} px "
                f"images, not {resolution} px (one entry for 4×4, then one per doubling)"
            )
        self.z_dim, self.base = z_dim, g_channels[0]
        self.dense = sn(nn.Linear(z_dim, 16 * g_channels[0]), spectral_norm)
        self.blocks = nn.ModuleList()
        size = 4
        for c_in, c_out in itertools.pairwise(g_channels):
            size *= 2
            self.blocks.append(GBlock(c_in, c_out, num_classes, spectral_norm))
            if size in attention:
                self.blocks.append(SelfAttention(c_out, spectral_norm))
        self.norm = nn.BatchNorm2d(g_channels[-1])
        self.to_image = sn(nn.Conv2d(g_channels[-1], channels, 3, padding=1), spectral_norm)
        _init_(self)

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        h = self.dense(z).view(-1, self.base, 4, 4)
        for block in self.blocks:
            h = block(h, label) if isinstance(block, GBlock) else block(h)
        return torch.tanh(self.to_image(F.relu(self.norm(h))))


class ResNetDiscriminator(nn.Module):
    def __init__(
        self,
        resolution: int = 32,
        channels: int = 3,
        d_channels: tuple[int, ...] = (128, 128, 128, 128),
        num_classes: int = 0,
        attention: tuple[int, ...] = (),
        spectral_norm: bool = True,
    ) -> None:
        super().__init__()
        d_channels = tuple(d_channels)
        self.hparams = init_args(locals())
        layers: list[nn.Module] = []
        size, c_in = resolution, channels
        for i, c_out in enumerate(d_channels):
            down = size > 8
            size //= 2 if down else 1
            layers.append(DBlock(c_in, c_out, down, first=i == 0, use_sn=spectral_norm))
            if size in attention:
                layers.append(SelfAttention(c_out, spectral_norm))
            c_in = c_out
        self.blocks = nn.Sequential(*layers)
        self.head = sn(nn.Linear(c_in, 1), spectral_norm)
        self.embed = sn(nn.Embedding(num_classes, c_in), spectral_norm) if num_classes else None
        _init_(self)

    def input_blocks(self) -> list[nn.Module]:
        """The residual blocks from the image, each with the self-attention after it (FreezeD)."""
        return blocks_starting_at(self.blocks, DBlock)

    def forward(self, image: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        features = F.relu(self.blocks(image)).sum(dim=(2, 3))  # global sum pooling
        return projection(self.head(features).flatten(), features, self.embed, label)
