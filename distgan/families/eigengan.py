"""EigenGAN (He, Kan & Shan, ICCV 2021): a generator whose layers each own a small orthogonal
subspace of latent directions, learned without labels (networks: distgan/models/eigengan.py).

The two-player schedule is the shared one (families/_adversarial.py) with the authors' setup:
hinge loss, R1 on real images every 3rd step, Adam 1e-4 β1 0.5, G EMA 0.999; G's phase adds
``loss.ortho_weight`` · Σᵢ ‖UᵢᵀUᵢ − I‖²_F. The latent vector is ``[ε, z₁, …, z_L]``;
``latent_layers`` names each layer's zᵢ and orders its dimensions by |Lᵢ| for
``distgan latent traverse``.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from distgan.families._adversarial import AdversarialFamily, AdversarialLossConfig
from distgan.families.base import Batch, LatentLayer, Logs, Nets, Section, StepContext
from distgan.models.eigengan import EigenDiscriminator, EigenGenerator


class EigenGANConfig(Section):
    eps_dim: int = Field(512, ge=1, description="dimensions of ε, the dense layer's input")
    layer_dims: int = Field(6, ge=1, description="dimensions of each layer's subspace zᵢ")
    width: float = Field(4, gt=0, description="channels = min(2^(10 − log2 side) · width, max)")
    max_channels: int = Field(512, ge=1)
    d_fc: int = Field(512, ge=1, description="D's dense layer")
    slope: float = Field(0.2, ge=0, description="LeakyReLU slope")


class EigenGANLossConfig(AdversarialLossConfig):
    ortho_weight: float = Field(1.0, ge=0, description="× Σ‖UᵀU − I‖²_F in G's loss")


class EigenGAN(AdversarialFamily):
    ModelConfig = EigenGANConfig
    LossConfig = EigenGANLossConfig

    def networks_for_data(self) -> dict[str, nn.Module]:
        hp, data = self.hp, self.data
        widths = dict(width=hp.width, max_channels=hp.max_channels, slope=hp.slope)
        return {
            "G": EigenGenerator(
                data.resolution, data.channels, hp.eps_dim, hp.layer_dims, **widths
            ),
            "D": EigenDiscriminator(data.resolution, data.channels, fc_dim=hp.d_fc, **widths),
        }

    @property
    def latent_dim(self) -> int:
        layers = self.data.resolution.bit_length() - 3  # log2(resolution / 4)
        return self.hp.eps_dim + layers * self.hp.layer_dims

    def g_loss(self, nets: Nets, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        loss, logs = super().g_loss(nets, batch, ctx)
        if self.loss_cfg.ortho_weight:
            ortho = nets.raw("G").orthogonality()  # its gradient joins the wrapped pass's
            loss = loss + self.loss_cfg.ortho_weight * ortho
            logs["G/ortho"] = ortho.detach()
        return loss, logs

    def latent_layers(self, nets: Nets) -> list[LatentLayer]:
        G, start = nets.raw("G"), self.hp.eps_dim
        layers = []
        for i, block in enumerate(G.blocks):
            dims = slice(start + i * G.layer_dims, start + (i + 1) * G.layer_dims)
            layers.append(LatentLayer(f"layer {i + 1}", dims, block.subspace.L.detach().abs()))
        return layers


FAMILY = EigenGAN
