"""Per-sample transforms of the stream: random crop and flip, grayscale, CIE L*a*b*.

Random choices come from ``random.Random(f"{seed}/aug/{epoch}/{key}")``: a pure function of the
seed, the epoch and the sample's key, so a resumed stream (which skips samples without decoding
them) augments every later sample exactly as the uninterrupted run did. A pair (``image`` +
``target``) gets the same crop and flip.

Crop and flip work per sample on uint8 images; the colour step then turns a whole uint8 batch
into the network's input (one vectorised op per batch, which keeps the stream fast):

* ``grayscale``: one channel, ITU-R 601 luma (what PIL's ``convert("L")`` computes);
* ``lab``: sRGB (D65) → CIE L*a*b*, scaled to about [-1, 1] as ``L/50 - 1, a/110, b/110``
  (:func:`lab_to_rgb` and :func:`denormalize_lab` invert it, for colorization samples);
* otherwise ``2x - 1``, the usual GAN range.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# sRGB (linear) → CIE XYZ, D65 white (IEC 61966-2-1)
RGB_TO_XYZ = torch.tensor(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ],
    dtype=torch.float64,
)
XYZ_TO_RGB = torch.linalg.inv(RGB_TO_XYZ)
WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
DELTA = 6.0 / 29.0
LAB_SCALE = (50.0, 110.0, 110.0)


@dataclass(frozen=True)
class Transforms:
    """What the stream does to each sample (``data.flip``, ``data.crop`` … in the config)."""

    flip: bool = False  # horizontal, p = 0.5
    crop: float = 1.0  # random square crop of this fraction of the side, resized back; 1 = off
    grayscale: bool = False
    lab: bool = False

    def __post_init__(self) -> None:
        if self.grayscale and self.lab:
            raise ValueError("data.grayscale and data.lab exclude each other; pick one")
        if not 0 < self.crop <= 1:
            raise ValueError(f"data.crop={self.crop}: use a fraction in (0, 1], 1 = no crop")

    def channels(self, stored: int) -> int:
        if self.lab and stored != 3:
            raise ValueError("data.lab=true needs RGB shards (these are grayscale)")
        return 1 if self.grayscale else stored

    def geometry(
        self, images: list[torch.Tensor], seed: int, epoch: int, key: str
    ) -> list[torch.Tensor]:
        """Random crop and flip of uint8 images [C,H,W] (image, then target: both alike)."""
        if self.crop == 1 and not self.flip:
            return images
        rng = random.Random(f"{seed}/aug/{epoch}/{key}")
        if self.crop < 1:
            _, height, width = images[0].shape
            side = max(1, round(self.crop * min(height, width)))
            top, left = rng.randint(0, height - side), rng.randint(0, width - side)
            images = [
                F.interpolate(
                    x[None, :, top : top + side, left : left + side].float(),
                    size=(height, width),
                    mode="bilinear",
                    align_corners=False,
                )[0]
                .round_()
                .clamp_(0, 255)
                .to(torch.uint8)
                for x in images
            ]
        if self.flip and rng.random() < 0.5:
            images = [x.flip(-1) for x in images]
        return images

    def colour_batch(self, batch: dict) -> dict:
        """A batch of uint8 ``image`` (and ``target``) → the network's input, where it is (on
        the device, for the trainer: images travel as uint8)."""
        out = dict(batch)
        for key in ("image", "target"):
            if key in out and out[key].dtype == torch.uint8:
                out[key] = self.colour(out[key])
        return out

    def colour(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images ([C,H,W] or a batch [B,C,H,W]) → float network input (one op per batch)."""
        if self.grayscale and x.shape[-3] == 3:
            weights = torch.tensor([0.299, 0.587, 0.114], device=x.device)[:, None, None]
            return (x.float() * weights).sum(-3, keepdim=True).mul_(2 / 255).sub_(1)
        if self.lab:
            return normalize_lab(rgb_to_lab(x.float() / 255))
        return x.float().mul_(2 / 255).sub_(1)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], channels first ([3,H,W] or [B,3,H,W]) → L* in [0, 100], a*, b*."""
    dtype = rgb.dtype
    x = rgb.to(torch.float64)
    linear = torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    matrix, white = RGB_TO_XYZ.to(x.device), WHITE_D65.to(x.device)  # images may be on a GPU
    xyz = torch.einsum("ij,...jhw->...ihw", matrix, linear) / white[:, None, None]
    f = torch.where(xyz > DELTA**3, xyz.clamp_min(1e-12) ** (1 / 3), xyz / (3 * DELTA**2) + 4 / 29)
    fx, fy, fz = f.unbind(-3)
    lab = torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)
    return lab.to(dtype)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`rgb_to_lab` (not clamped: out-of-gamut colours leave [0, 1])."""
    dtype = lab.dtype
    L, a, b = lab.to(torch.float64).unbind(-3)
    fy = (L + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], dim=-3)
    white = WHITE_D65.to(lab.device)[:, None, None]  # images may be on a GPU
    xyz = torch.where(f > DELTA, f**3, 3 * DELTA**2 * (f - 4 / 29)) * white
    linear = torch.einsum("ij,...jhw->...ihw", XYZ_TO_RGB.to(lab.device), xyz)
    srgb = torch.where(
        linear <= 0.0031308, 12.92 * linear, 1.055 * linear.clamp_min(0) ** (1 / 2.4) - 0.055
    )
    return srgb.to(dtype)


def normalize_lab(lab: torch.Tensor) -> torch.Tensor:
    L, a, b = lab.unbind(-3)
    return torch.stack([L / LAB_SCALE[0] - 1, a / LAB_SCALE[1], b / LAB_SCALE[2]], dim=-3)


def denormalize_lab(x: torch.Tensor) -> torch.Tensor:
    L, a, b = x.unbind(-3)
    return torch.stack([(L + 1) * LAB_SCALE[0], a * LAB_SCALE[1], b * LAB_SCALE[2]], dim=-3)
