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

The policies assume images in [-1, 1] (the loader's range) as the authors' code does. ADA
(``aug.ada``, ``aug.p``: distgan/ada.py) follows them, its p kept by this stage as run-wide state.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from distgan import ada
from distgan.ada import Draws

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
    # Read from a copy padded with one zero pixel on each side; coordinates that fall outside
    # the image are clamped onto that zero border.
    padded = F.pad(images, [1, 1, 1, 1])
    rows = (torch.arange(h, device=images.device)[None, :] + dy[:, None] + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=images.device)[None, :] + dx[:, None] + 1).clamp(0, w + 1)
    source = rows[:, :, None] * (w + 2) + cols[:, None, :]  # [N, H, W] in the padded image
    return ada.move_pixels(padded, source).contiguous(memory_format=_format_of(images))


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
    """The DiffAugment policies in order, then ADA's pipeline (if ``aug.ada`` or ``aug.p`` > 0),
    in the order of DiffAugment's StyleGAN2 port; ``bool(augment)`` is False for the identity.

    ADA's p is run-wide state (engine/run_state.py): ``feedback`` tallies ``aug/signs`` (the sum
    of sign D(x) over augmented reals) and ``aug/count`` (their number); every ``ada_interval``
    steps ``update_run_state`` takes r_t = signs / count over all ranks and moves p by
    sign(r_t − target) × (images since the last update) / (ada_kimg × 1000), never below 0
    (stylegan2-ada-pytorch's training_loop.py). p is saved in checkpoints, exactly."""

    def __init__(
        self,
        policies: list[str],
        pipeline: str | None = None,
        p: float = 0.0,
        adaptive: bool = False,
        target: float = 0.6,
        kimg: float = 500.0,
        interval: int = 4,
        images_per_step: int = 0,
    ) -> None:
        self.names = list(policies)
        self.policies = [POLICIES[name] for name in policies]
        self.pipeline, self.p, self.adaptive = pipeline, float(p), adaptive
        self.target, self.kimg, self.images_per_step = target, kimg, images_per_step
        self.run_state_every = interval if adaptive else 0

    def __bool__(self) -> bool:
        return bool(self.policies) or self.pipeline is not None

    def __call__(self, images: torch.Tensor, draws: Draws) -> torch.Tensor:
        for policy in self.policies:
            images = policy(images, draws)
        if self.pipeline is not None and self.p > 0:  # p = 0: the input itself, no draws
            images = ada.augment(images, draws, self.p, self.pipeline)
        return images

    def feedback(self, real_outputs: torch.Tensor, ctx) -> None:
        """D's outputs on augmented reals: ADA's overfitting heuristic (every rank, every call)."""
        if self.adaptive:
            ctx.tally("aug/signs", real_outputs.detach().float().sign().sum())
            ctx.tally("aug/count", real_outputs.numel())

    def update_run_state(self, totals: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        del step
        count = float(totals["aug/count"]) if "aug/count" in totals else 0.0
        if not count:  # no D pass on reals since the last update
            return {"aug/p": self.p}
        rt = float(totals["aug/signs"]) / count
        direction = (rt > self.target) - (rt < self.target)
        images = self.images_per_step * self.run_state_every
        self.p = max(0.0, self.p + direction * images / (self.kimg * 1000))
        return {"aug/p": self.p, "aug/rt": rt}

    def run_state_dict(self) -> dict:
        return {"p": self.p} if self.pipeline is not None else {}

    def load_run_state_dict(self, state: dict) -> None:
        if "p" in state and self.pipeline is not None:
            self.p = float(state["p"])


def build_augment(aug_cfg, images_per_step: int = 0) -> Augment:
    """The stage of a recipe's ``aug:`` section (distgan.config.AugConfig); ``images_per_step``
    over all ranks (batch × micro-batches × processes) paces ADA's p."""
    uses_ada = aug_cfg.ada or aug_cfg.p > 0
    return Augment(
        aug_cfg.diffaug,
        pipeline=aug_cfg.ada_pipeline if uses_ada else None,
        p=aug_cfg.p,
        adaptive=aug_cfg.ada,
        target=aug_cfg.ada_target,
        kimg=aug_cfg.ada_kimg,
        interval=aug_cfg.ada_interval,
        images_per_step=images_per_step,
    )
