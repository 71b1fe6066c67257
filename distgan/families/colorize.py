"""The colorization GAN of Nazeri, Ng & Ebrahimi (2018): a U-Net G predicts the a*b* channels
of CIE L*a*b* from L*, a PatchGAN D judges (L, ab) pairs; the image is the input L plus the
predicted ab, so L is preserved exactly. Non-saturating loss with one-sided label smoothing
(``loss.real_label`` 0.9) + λ·L1(ab) with λ = 100 (``loss.l1_weight``); Adam 2e-4, β1 0.5 — the
values of the paper's text. The authors' code used lr 3e-4 (``optim.G.lr``/``optim.D.lr``),
D's lr ÷ 10 and β1 0 (``optim.*.betas``); set them as overrides to reproduce it.

``loss.gray_weight`` (0: off, the paper) adds γ·mean|ab| to G's loss, a pull toward gray: with
λ·L1 to the target, a pixel's optimum becomes the weighted median of its plausible colours and
a point mass γ/λ at gray, so each of a*, b* stays 0 unless the data agree on its sign by more
than γ/λ. A model unsure of a colour (a texture seen in many colours, a photo unlike the
training set) then leaves it gray instead of painting a confident guess.

Needs ``data.lab: true`` (the stream then yields ``L/50 − 1, a/110, b/110``). Networks:
distgan/models/unet.py (``model.encoder``/``decoder``/``decoder_dropout``, ``d_channels``).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from distgan.data.transforms import denormalize_lab, lab_to_rgb
from distgan.errors import ConfigError
from distgan.families._paired import PairedLossConfig, PairedTranslation
from distgan.families.base import Batch, Logs, Section
from distgan.models.unet import ColorizationUNet, PatchDiscriminator


class ColorizeConfig(Section):
    encoder: list[int] = Field([64, 128, 256, 512, 512], description="G: stride 1, then 2")
    decoder: list[int] = Field([512, 256, 128, 64], description="G: one fewer than encoder")
    decoder_dropout: list[float] = Field([0.5, 0.5, 0.0, 0.0], description="per decoder layer")
    d_channels: list[int] = Field([64, 128, 256, 512], description="D: stride 2 …, last stride 1")


class ColorizeLossConfig(PairedLossConfig):
    gray_weight: float = Field(
        0.0, ge=0, description="γ of the pull of a*b* toward gray, γ·mean|ab| (0: off)"
    )


def lab_to_image(lab: torch.Tensor) -> torch.Tensor:
    """Normalized L*a*b* (the stream's scaling) → RGB in [-1, 1]."""
    rgb = lab_to_rgb(denormalize_lab(lab.float())).clamp(0, 1)
    return rgb.to(torch.float32) * 2 - 1


class Colorize(PairedTranslation):
    ModelConfig = ColorizeConfig
    LossConfig = ColorizeLossConfig

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.facts.lab:
            raise ConfigError("family 'colorize' needs data.lab=true (it learns a*b* from L*)")

    def build_networks(self) -> dict[str, nn.Module]:
        hp = self.hp
        try:
            G = ColorizationUNet(
                1, 2, hp.encoder, hp.decoder, hp.decoder_dropout, self.data.resolution
            )
        except ValueError as err:
            raise ConfigError(f"{err} (recipe {self.facts.recipe})") from None
        return {"G": G, "D": PatchDiscriminator(3, hp.d_channels, "batch")}

    def output_penalty(self, outputs: torch.Tensor) -> tuple[torch.Tensor, Logs] | None:
        if not self.loss_cfg.gray_weight:
            return None
        pull = outputs.float().abs().mean()
        return self.loss_cfg.gray_weight * pull, {"loss/gray": pull.detach()}

    def split(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        lab = batch["image"]
        return lab[:, :1], lab[:, 1:]

    def to_image(self, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        return lab_to_image(torch.cat([inputs.float(), outputs.float()], 1))

    def translate(self, nets, images: torch.Tensor, direction: str = "AtoB") -> torch.Tensor:
        raise ConfigError(
            "family 'colorize' does not translate images; colorize photos with `distgan colorize`"
        )

    def input_image(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.to_image(inputs, torch.zeros_like(inputs).expand(-1, 2, -1, -1))


FAMILY = Colorize
