"""SNGAN (Miyato et al., 2018) and SAGAN (Zhang et al., 2019): ResNet G and D
(distgan/models/resnet.py) with spectral norm, the hinge loss, optional self-attention at chosen
feature resolutions (``model.attention``: SAGAN), and for class-conditional training conditional
BatchNorm in G and a projection discriminator. SAGAN's recipe adds spectral norm on G and TTUR
(``optim.D.lr`` 4e-4, ``optim.G.lr`` 1e-4, betas (0, 0.9))."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from distgan.families._adversarial import AdversarialFamily, GANConfig
from distgan.models.resnet import ResNetDiscriminator, ResNetGenerator


class SNGANConfig(GANConfig):
    z_dim: int = Field(128, ge=1)
    g_channels: list[int] = Field(
        [256, 256, 256, 256], description="4×4×[0], then one up-block (×2) per entry"
    )
    d_channels: list[int] = Field(
        [128, 128, 128, 128], description="one D block each; halves the size while above 8×8"
    )
    attention: list[int] = Field(
        [], description="feature resolutions with a self-attention block in G and D (SAGAN)"
    )
    g_spectral_norm: bool = False
    d_spectral_norm: bool = True
    conditional: bool = False


class SNGAN(AdversarialFamily):
    ModelConfig = SNGANConfig

    @property
    def num_classes(self) -> int:
        return self.classes_of_data() if self.hp.conditional else 0

    def networks_for_data(self) -> dict[str, nn.Module]:
        res, ch, classes, hp = self.data.resolution, self.data.channels, self.num_classes, self.hp
        return {
            "G": ResNetGenerator(
                z_dim=hp.z_dim,
                resolution=res,
                channels=ch,
                g_channels=hp.g_channels,
                num_classes=classes,
                attention=hp.attention,
                spectral_norm=hp.g_spectral_norm,
            ),
            "D": ResNetDiscriminator(
                resolution=res,
                channels=ch,
                d_channels=hp.d_channels,
                num_classes=classes,
                attention=hp.attention,
                spectral_norm=hp.d_spectral_norm,
            ),
        }


FAMILY = SNGAN
