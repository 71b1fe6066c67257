"""DCGAN generator and discriminator (Radford et al., 2016) for 32, 64 and 128 px, optionally
class-conditional: the generator concatenates a label embedding to z, the discriminator adds a
projection term ⟨embed(y), φ(x)⟩ (Miyato & Koyama, 2018).

Networks carry their own hyper-parameters (``self.hparams``) so an exported file can rebuild them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from distgan.models.freeze import blocks_starting_at
from distgan.models.layers import Dropout, init_args, output_layer, same_padding

RESOLUTIONS = (32, 64, 128)


def _num_upsamplings(resolution: int) -> int:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"DCGAN supports resolutions {RESOLUTIONS}, not {resolution}")
    return int(math.log2(resolution // 4))


def dcgan_init_(module: nn.Module) -> None:
    """The DCGAN paper's init: conv weights N(0, 0.02), BatchNorm scale N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)


class DCGANGenerator(nn.Module):
    """z (+ label embedding) → 4×4 → … → resolution, BatchNorm + ReLU, tanh output in [-1, 1].

    ``kernel_size`` of the stride-2 layers (4: divisible by the stride, no checkerboard) and
    ``output`` (tanh | linear) are the "GAN hacks" switches.
    """

    def __init__(
        self,
        z_dim: int = 100,
        resolution: int = 64,
        channels: int = 3,
        width: int = 64,
        num_classes: int = 0,
        embed_dim: int = 50,
        kernel_size: int = 4,
        output: str = "tanh",
    ) -> None:
        super().__init__()
        self.hparams = init_args(locals())
        pad, out_pad = same_padding(kernel_size)
        self.z_dim, self.num_classes = z_dim, num_classes
        n_up = _num_upsamplings(resolution)
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        in_dim = z_dim + (embed_dim if num_classes else 0)
        ch = width * 2 ** (n_up - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_dim, ch, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(True),
        ]
        for _ in range(n_up - 1):
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, kernel_size, 2, pad, out_pad, bias=False),
                nn.BatchNorm2d(ch // 2),
                nn.ReLU(True),
            ]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, kernel_size, 2, pad, out_pad, bias=False)]
        layers += output_layer(output)
        self.net = nn.Sequential(*layers)
        dcgan_init_(self)

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if label is None:
                raise ValueError("this generator is class-conditional: pass a label")
            z = torch.cat([z, self.embed(label)], dim=1)
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """resolution → … → 4×4 strided convs, BatchNorm + LeakyReLU(0.2), one logit per image;
    optional dropout after each activation (a "GAN hack" against an over-confident D)."""

    def __init__(
        self,
        resolution: int = 64,
        channels: int = 3,
        width: int = 64,
        num_classes: int = 0,
        kernel_size: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.hparams = init_args(locals())
        n_down = _num_upsamplings(resolution)
        pad, _ = same_padding(kernel_size)
        layers: list[nn.Module] = [
            nn.Conv2d(channels, width, kernel_size, 2, pad, bias=False),
            nn.LeakyReLU(0.2, True),
            *([Dropout(dropout)] if dropout else []),
        ]
        ch = width
        for _ in range(n_down - 1):
            layers += [
                nn.Conv2d(ch, ch * 2, kernel_size, 2, pad, bias=False),
                nn.BatchNorm2d(ch * 2),
                nn.LeakyReLU(0.2, True),
                *([Dropout(dropout)] if dropout else []),
            ]
            ch *= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(ch, 1, 4, 1, 0, bias=False)
        self.embed = nn.Embedding(num_classes, ch) if num_classes else None
        dcgan_init_(self)

    def input_blocks(self) -> list[nn.Module]:
        """One block per stride-2 conv (with its BatchNorm), from the image (FreezeD)."""
        return blocks_starting_at(self.features, nn.Conv2d)

    def forward(self, image: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(image)
        logit = self.head(h).flatten()
        if self.embed is not None:
            if label is None:
                raise ValueError("this discriminator is class-conditional: pass a label")
            logit = logit + (self.embed(label) * h.sum(dim=(2, 3))).sum(dim=1)
        return logit
