"""WGAN-GP (Gulrajani et al., 2017) with the source material's networks (distgan/models/wgan.py).

The critic maximises E[D(x)] − E[D(G(z))] under a gradient penalty λ·E[(‖∇D(x̂)‖ − 1)²]
(``loss.adversarial: wasserstein``, ``loss.gp_weight``), with ``loss.n_critic`` critic steps per
generator step. How the penalty stays correct under AMP, DDP and torch.compile:
distgan/penalties.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from distgan.families._adversarial import AdversarialFamily, GANConfig
from distgan.models.wgan import WGANCritic, WGANGenerator


class WGANGPConfig(GANConfig):
    z_dim: int = Field(100, ge=1)
    g_channels: list[int] = Field(
        [512, 256, 128, 64], description="Dense 4·4·[0], then one stride-2 transposed conv each"
    )
    d_channels: list[int] = Field([64, 128, 256, 512], description="one stride-2 conv each")
    kernel_size: int = Field(5, ge=2, description="all convs; 4 is divisible by the stride")
    leaky_slope: float = Field(0.2, ge=0, description="LeakyReLU negative slope (0: ReLU)")
    g_batchnorm: bool = True
    d_dropout: float = Field(0.0, ge=0, lt=1, description="dropout after D's activations")
    d_spectral_norm: bool = False
    output: Literal["linear", "tanh"] = "linear"


class WGANGP(AdversarialFamily):
    ModelConfig = WGANGPConfig

    def networks_for_data(self) -> dict[str, nn.Module]:
        res, ch, hp = self.data.resolution, self.data.channels, self.hp
        return {
            "G": WGANGenerator(
                z_dim=hp.z_dim,
                resolution=res,
                channels=ch,
                g_channels=hp.g_channels,
                kernel_size=hp.kernel_size,
                leaky_slope=hp.leaky_slope,
                batchnorm=hp.g_batchnorm,
                output=hp.output,
            ),
            "D": WGANCritic(
                resolution=res,
                channels=ch,
                d_channels=hp.d_channels,
                kernel_size=hp.kernel_size,
                leaky_slope=hp.leaky_slope,
                dropout=hp.d_dropout,
                spectral_norm=hp.d_spectral_norm,
            ),
        }


FAMILY = WGANGP
