"""DCGAN (Radford et al., 2016) and its class-conditional variant (cDCGAN).

The two-player schedule and losses are the shared ones (families/_adversarial.py); the defaults
are the classic setup: the non-saturating loss, one D and one G step per batch, with
``loss.real_label`` for one-sided label smoothing. The "GAN hacks" are switches:
``loss.label_flip``, ``loss.label_noise``, ``loss.instance_noise``, ``model.d_dropout``,
``model.output`` (tanh) and ``model.kernel_size`` (divisible by the stride, 2).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from distgan.families._adversarial import AdversarialFamily, GANConfig
from distgan.models.dcgan import DCGANDiscriminator, DCGANGenerator


class DCGANConfig(GANConfig):
    z_dim: int = Field(100, ge=1)
    g_width: int = Field(64, ge=1, description="channels of G's last hidden layer (×2 per layer)")
    d_width: int = Field(64, ge=1, description="channels of D's first layer (×2 per layer)")
    conditional: bool = False
    embed_dim: int = 50
    kernel_size: int = Field(4, ge=2, description="kernel of the stride-2 (transposed) convs")
    d_dropout: float = Field(0.0, ge=0, lt=1, description="dropout after D's activations")
    output: Literal["tanh", "linear"] = "tanh"


class DCGAN(AdversarialFamily):
    ModelConfig = DCGANConfig

    @property
    def num_classes(self) -> int:
        return self.classes_of_data() if self.hp.conditional else 0

    def networks_for_data(self) -> dict[str, nn.Module]:
        res, ch, classes, hp = self.data.resolution, self.data.channels, self.num_classes, self.hp
        return {
            "G": DCGANGenerator(
                z_dim=hp.z_dim,
                resolution=res,
                channels=ch,
                width=hp.g_width,
                num_classes=classes,
                embed_dim=hp.embed_dim,
                kernel_size=hp.kernel_size,
                output=hp.output,
            ),
            "D": DCGANDiscriminator(
                resolution=res,
                channels=ch,
                width=hp.d_width,
                num_classes=classes,
                kernel_size=hp.kernel_size,
                dropout=hp.d_dropout,
            ),
        }


FAMILY = DCGAN
