"""The augmentation stage: a differentiable, seeded transform of the images a family declares
(``Family.augments``, e.g. D's real and fake inputs), built from the recipe's ``aug:`` section.

A family calls ``ctx.augment(images)`` where its declared networks read images (real and fake,
in every phase that calls them, and in penalties as the method prescribes); with ``aug:`` empty
that is the identity and costs nothing. Every random draw goes through the step context
(``ctx.randint`` …), so an augmented run is seeded like the rest of the step, resumes exactly
and does not depend on how a batch is split into micro-batches (``train.accumulate``).

Policies (``aug.diffaug``, applied in the order given):

* ``color`` — DiffAugment's (Zhao et al. 2020) three colour ops, per image: brightness
  x + (u − ½), saturation (x − m_c)·2u + m_c around the pixel's mean over channels, contrast
  (x − m)·(u + ½) + m around the image's mean (each u ~ U(0, 1) drawn anew);
* ``translation`` — DiffAugment's: each image moves by a whole number of pixels, up to 1/8 of
  its side in each direction, and the uncovered border is zero;
* ``cutout`` — DiffAugment's: one square of half the side is zeroed, its centre drawn among the
  side + 1 − (square mod 2) positions of the authors' code (so it may hang over the border).

The policies assume images in [-1, 1] (the loader's range) as the authors' code does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F


class Draws(Protocol):
    """The random draws a policy may take (the step context provides them; the first dimension
    of every draw is the batch, so a draw does not depend on how the batch is split)."""

    def rand(self, *shape: int) -> torch.Tensor: ...

    def randint(self, high: int, *shape: int) -> torch.Tensor: ...


Policy = Callable[[torch.Tensor, Draws], torch.Tensor]


def per_image(draw: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """A draw of one value per image, shaped [N, 1, 1, 1] in the images' dtype and device."""
    return draw.to(device=images.device, dtype=images.dtype).view(-1, 1, 1, 1)


def color(images: torch.Tensor, draws: Draws) -> torch.Tensor:
    """DiffAugment's brightness, saturation and contrast, in this order (module docstring)."""
    n = images.shape[0]
    images = images + (per_image(draws.rand(n), images) - 0.5)
    pixel_mean = images.mean(dim=1, keepdim=True)
    images = (images - pixel_mean) * (per_image(draws.rand(n), images) * 2) + pixel_mean
    image_mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - image_mean) * (per_image(draws.rand(n), images) + 0.5) + image_mean


def translation(images: torch.Tensor, draws: Draws, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by (dy, dx) whole pixels, |d| ≤ round(ratio × side), zero-filled."""
    n, _, h, w = images.shape
    max_y, max_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = draws.randint(2 * max_y + 1, n) - max_y
    dx = draws.randint(2 * max_x + 1, n) - max_x
    # Index a copy padded with one zero pixel on each side; coordinates that fall outside the
    # image are clamped onto that zero border.
    padded = F.pad(images, [1, 1, 1, 1])
    rows = (torch.arange(h, device=images.device)[None, :] + dy[:, None] + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=images.device)[None, :] + dx[:, None] + 1).clamp(0, w + 1)
    batch = torch.arange(n, device=images.device)[:, None, None]
    shifted = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return shifted.permute(0, 3, 1, 2).contiguous(memory_format=_format_of(images))


def cutout(images: torch.Tensor, draws: Draws, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of round(ratio × side) per image: rows (and columns) o − s//2 … o − s//2
    + s − 1 with the centre o drawn from [0, side + 1 − s mod 2), clipped to the image."""
    n, _, h, w = images.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = draws.randint(h + 1 - size_y % 2, n).to(images.device) - size_y // 2
    left = draws.randint(w + 1 - size_x % 2, n).to(images.device) - size_x // 2
    rows = torch.arange(h, device=images.device)[None, :] - top[:, None]  # [N, H]
    cols = torch.arange(w, device=images.device)[None, :] - left[:, None]  # [N, W]
    inside = ((rows >= 0) & (rows < size_y))[:, :, None] & ((cols >= 0) & (cols < size_x))[:, None]
    return images * (~inside).to(images.dtype)[:, None]


def _format_of(images: torch.Tensor) -> torch.memory_format:
    channels_last = images.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


POLICIES: dict[str, Policy] = {"color": color, "translation": translation, "cutout": cutout}


class Augment:
    """The configured policies, in order; ``bool(augment)`` is False for the identity.

    A stage may keep run-wide state (ADA's p), updated like a family's (engine/run_state.py):
    ``feedback`` receives D's outputs on augmented real images and tallies what the update
    needs under names starting ``aug/``; ``update_run_state`` runs every ``run_state_every``
    steps on the sums over all ranks. The fixed policies here keep none."""

    run_state_every = 0

    def __init__(self, policies: list[str]) -> None:
        self.names = list(policies)
        self.policies = [POLICIES[name] for name in policies]

    def __bool__(self) -> bool:
        return bool(self.policies)

    def __call__(self, images: torch.Tensor, draws: Draws) -> torch.Tensor:
        for policy in self.policies:
            images = policy(images, draws)
        return images

    def feedback(self, real_outputs: torch.Tensor, ctx) -> None:
        del real_outputs, ctx  # (a fixed pipeline learns nothing from D)

    def update_run_state(self, totals: dict[str, torch.Tensor], step: int) -> None:
        del totals, step

    def run_state_dict(self) -> dict:
        return {}

    def load_run_state_dict(self, state: dict) -> None:
        del state


def build_augment(aug_cfg) -> Augment:
    """The stage of a recipe's ``aug:`` section (distgan.config.AugConfig)."""
    return Augment(aug_cfg.diffaug)
