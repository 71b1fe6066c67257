"""U-Nets for image-to-image families and the PatchGAN discriminator they are trained against.

* :class:`ColorizationUNet` (Nazeri, Ng & Ebrahimi, 2018): L → ab. Encoder: 4×4 convolutions,
  the first with stride 1, then stride 2, each with BatchNorm and LeakyReLU(0.2); decoder: 4×4
  transposed convolutions (stride 2) with BatchNorm and ReLU (dropout 0.5 where asked), each
  output concatenated with the mirrored encoder features; then a 1×1 convolution and tanh.
* :class:`Pix2PixUNet` (Isola et al., 2017; "unet_256"): 8 stride-2 downsamplings for 256 px,
  64 → 128 → 256 → 512 × 5, no norm on the outermost and innermost down-convolutions,
  LeakyReLU(0.2) before each down-convolution and ReLU before each up-convolution, dropout 0.5
  in the three up-blocks after the innermost, skip connections, tanh out.
* :class:`PatchDiscriminator` (pix2pix's 70×70 "basic" D with 3 layers): 4×4 convolutions 64
  (stride 2, no norm), 128, 256 (stride 2), 512 (stride 1), then a 4×4 convolution to one logit
  per patch: a map ``[B, 1, H', W']``. Norm: BatchNorm, InstanceNorm (CycleGAN) or none.

All are initialised as the references do: convolution weights N(0, 0.02), BatchNorm scale
N(1, 0.02). Networks carry their own hyper-parameters (``self.hparams``).
"""

from __future__ import annotations

import torch
from torch import nn

from distgan.models.dcgan import dcgan_init_
from distgan.models.freeze import blocks_starting_at
from distgan.models.layers import Dropout, init_args


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":  # CycleGAN: no affine parameters, no running statistics
        return nn.InstanceNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be batch, instance or none, not {kind!r}")


def unet_forward(
    x: torch.Tensor, down: nn.ModuleList, up: nn.ModuleList, head: nn.Module
) -> torch.Tensor:
    """Encoder layers, then decoder layers whose outputs are concatenated with the mirrored
    encoder outputs (the bottleneck is not a skip), then the head."""
    skips = []
    for layer in down:
        x = layer(x)
        skips.append(x)
    skips.pop()
    for layer in up:
        x = torch.cat([layer(x), skips.pop()], dim=1)
    return head(x)


class ColorizationUNet(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        encoder: tuple[int, ...] = (64, 128, 256, 512, 512),
        decoder: tuple[int, ...] = (512, 256, 128, 64),
        decoder_dropout: tuple[float, ...] = (0.5, 0.5, 0.0, 0.0),
        resolution: int = 32,
    ) -> None:
        super().__init__()
        encoder, decoder, decoder_dropout = tuple(encoder), tuple(decoder), tuple(decoder_dropout)
        self.hparams = init_args(locals())
        if len(decoder) != len(encoder) - 1 or len(decoder_dropout) != len(decoder):
            raise ValueError(
                "model.decoder needs one entry fewer than model.encoder, and "
                "model.decoder_dropout one per decoder entry"
            )
        if resolution % 2 ** (len(encoder) - 1):
            raise ValueError(
                f"{len(encoder) - 1} stride-2 encoder layers need a resolution divisible by "
                f"{2 ** (len(encoder) - 1)}, not {resolution}"
            )
        self.down = nn.ModuleList()
        c_in = in_channels
        for i, c_out in enumerate(encoder):
            stride = 1 if i == 0 else 2
            self.down.append(
                nn.Sequential(
                    # "same" padding of a 4×4 stride-1 convolution: 1 before, 2 after (as TF)
                    nn.ZeroPad2d((1, 2, 1, 2) if stride == 1 else 1),
                    nn.Conv2d(c_in, c_out, 4, stride),
                    nn.BatchNorm2d(c_out),
                    nn.LeakyReLU(0.2),
                )
            )
            c_in = c_out
        self.up = nn.ModuleList()
        skips = list(reversed(encoder[:-1]))  # the encoder features each decoder output meets
        for c_out, skip, p in zip(decoder, skips, decoder_dropout, strict=True):
            self.up.append(
                nn.Sequential(
                    nn.ConvTranspose2d(c_in, c_out, 4, 2, 1),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(),
                    *([Dropout(p)] if p else []),
                )
            )
            c_in = c_out + skip
        self.head = nn.Sequential(nn.Conv2d(c_in, out_channels, 1), nn.Tanh())
        dcgan_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return unet_forward(x, self.down, self.up, self.head)


class Pix2PixUNet(nn.Module):
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        width: int = 64,
        downsamplings: int = 8,
        dropout: float = 0.5,
        resolution: int = 256,
    ) -> None:
        super().__init__()
        self.hparams = init_args(locals())
        if downsamplings < 5 or resolution % 2**downsamplings:
            raise ValueError(
                f"model.downsamplings={downsamplings} (≥ 5) must halve {resolution} px down to "
                "an integer size; e.g. 8 for 256 px, 7 for 128 px"
            )
        widths = [width, width * 2, width * 4] + [width * 8] * (downsamplings - 3)
        self.down = nn.ModuleList()
        c_in = in_channels
        for i, c_out in enumerate(widths):
            outermost, innermost = i == 0, i == downsamplings - 1
            self.down.append(
                nn.Sequential(
                    *([] if outermost else [nn.LeakyReLU(0.2)]),
                    nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False),
                    *([] if outermost or innermost else [nn.BatchNorm2d(c_out)]),
                )
            )
            c_in = c_out
        self.up = nn.ModuleList()
        for i, c_out in enumerate(reversed(widths[:-1])):
            c_up = c_in if i == 0 else c_in * 2  # the innermost output has no skip yet
            self.up.append(
                nn.Sequential(
                    nn.ReLU(),
                    nn.ConvTranspose2d(c_up, c_out, 4, 2, 1, bias=False),
                    nn.BatchNorm2d(c_out),
                    *([Dropout(dropout)] if dropout and 0 < i <= 3 else []),
                )
            )
            c_in = c_out
        self.head = nn.Sequential(
            nn.ReLU(), nn.ConvTranspose2d(c_in * 2, out_channels, 4, 2, 1), nn.Tanh()
        )
        dcgan_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return unet_forward(x, self.down, self.up, self.head)


class PatchDiscriminator(nn.Module):
    def __init__(
        self,
        in_channels: int = 6,
        channels: tuple[int, ...] = (64, 128, 256, 512),
        norm: str = "batch",
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        self.hparams = init_args(locals())
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, c_out in enumerate(channels):
            stride = 1 if i == len(channels) - 1 else 2
            layers += [
                nn.Conv2d(c_in, c_out, 4, stride, 1, bias=i == 0 or norm != "batch"),
                *([] if i == 0 else [norm_layer(norm, c_out)]),
                nn.LeakyReLU(0.2),
            ]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        dcgan_init_(self)

    def input_blocks(self) -> list[nn.Module]:
        """One block per conv stage, from the image; the last conv (patch logits) is the head."""
        return blocks_starting_at(self.net, nn.Conv2d, head=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
