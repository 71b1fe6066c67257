"""The source material's dense baseline GAN: a mostly fully-connected G and an MLP discriminator
(distgan/models/mlp.py), trained with the shared two-player schedule (non-saturating loss by
default) — the "before" picture that DCGAN and WGAN-GP improve on."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from distgan.families._adversarial import AdversarialFamily, GANConfig
from distgan.models.mlp import MLPDiscriminator, MLPGenerator


class MLPGANConfig(GANConfig):
    z_dim: int = Field(100, ge=1)
    base_channels: int = Field(16, ge=1, description="G's dense layer: (res/4)²·this units")
    conv_channels: int = Field(128, ge=1, description="channels of G's hidden conv")
    d_hidden: list[int] = Field([512, 256], description="D's dense layers")
    leaky_slope: float = Field(0.2, ge=0)
    d_dropout: float = Field(0.0, ge=0, lt=1)
    output: Literal["tanh", "linear"] = "tanh"


class MLPGAN(AdversarialFamily):
    ModelConfig = MLPGANConfig

    def networks_for_data(self) -> dict[str, nn.Module]:
        res, ch, hp = self.data.resolution, self.data.channels, self.hp
        return {
            "G": MLPGenerator(
                z_dim=hp.z_dim,
                resolution=res,
                channels=ch,
                base_channels=hp.base_channels,
                conv_channels=hp.conv_channels,
                leaky_slope=hp.leaky_slope,
                output=hp.output,
            ),
            "D": MLPDiscriminator(
                resolution=res,
                channels=ch,
                hidden=hp.d_hidden,
                leaky_slope=hp.leaky_slope,
                dropout=hp.d_dropout,
            ),
        }


FAMILY = MLPGAN
