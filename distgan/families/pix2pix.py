"""pix2pix (Isola et al., 2017) with the reference implementation's defaults: a U-Net G
("unet_256": 8 downsamplings, BatchNorm, dropout 0.5) maps A to B, a 70×70 PatchGAN D (3 layers,
BatchNorm) judges (A, B) pairs; vanilla GAN loss (cross-entropy) + λ_L1 = 100, D's loss × 0.5,
Adam 2e-4 β1 0.5, batch 1; 100 epochs at constant lr then 100 of linear decay
(``optim.*.decay_start: 0.5``). Data: paired shards (``distgan shards paired``: ``image`` = A,
``target`` = B); the reference's jitter (load 286, random crop 256) is ``data.crop: 0.895``
on 256 px shards, plus ``data.flip``.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from distgan.errors import ConfigError
from distgan.families._paired import PairedTranslation
from distgan.families.base import Batch, Section
from distgan.models.unet import PatchDiscriminator, Pix2PixUNet


class Pix2PixConfig(Section):
    width: int = Field(64, ge=1, description="G's first layer (ngf)")
    downsamplings: int = Field(8, ge=5, description="8 for 256 px (unet_256), 7 for 128 px")
    dropout: float = Field(0.5, ge=0, lt=1)
    d_channels: list[int] = Field([64, 128, 256, 512], description="D: the 70×70 PatchGAN")


class Pix2Pix(PairedTranslation):
    ModelConfig = Pix2PixConfig
    needs = PairedTranslation.needs | {"paired_data"}  # checked by build_family

    def build_networks(self) -> dict[str, nn.Module]:
        hp, c = self.hp, self.data.channels
        try:
            G = Pix2PixUNet(c, c, hp.width, hp.downsamplings, hp.dropout, self.data.resolution)
        except ValueError as err:
            raise ConfigError(f"{err} (recipe {self.facts.recipe})") from None
        return {"G": G, "D": PatchDiscriminator(2 * c, hp.d_channels, "batch")}

    def split(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["image"], batch["target"]

    def to_image(self, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float()


FAMILY = Pix2Pix
