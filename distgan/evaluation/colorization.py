"""Colorization figures in CIE L*a*b* (outputs and real images converted from RGB):

* ``eval/ab_l1``: mean |Δa| + |Δb| over 2, in the stream's units (a/110, b/110), and
  ``eval/ab_l1_gray``, the same for the gray baseline (a = b = 0): a model that colours
  anything right beats it;
* ``eval/ab_accuracy`` (Nazeri et al.'s pixel accuracy): the share of pixels whose a* and b*
  both lie within 2 % of their range (±110, so within 4.4) of the real ones, and
  ``eval/ab_accuracy_gray`` for the gray baseline.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from distgan.data.transforms import LAB_SCALE, rgb_to_lab
from distgan.evaluation.base import Evaluator
from distgan.families.base import Batch

THRESHOLD = 0.02 * 2 * LAB_SCALE[1]  # 2 % of a*/b*'s range [-110, 110]


def ab_of(images: torch.Tensor) -> torch.Tensor:
    """a*, b* (unscaled) of RGB images in [-1, 1]."""
    return rgb_to_lab(((images + 1) / 2).clamp(0, 1).double())[:, 1:]


class Colorization(Evaluator):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Σ|Δab| model, Σ|Δab| gray, pixels accurate model, accurate gray, pixel count
        self.sums = torch.zeros(5, dtype=torch.float64, device=self.device)

    def update(self, outputs: torch.Tensor, references: torch.Tensor, batch: Batch) -> None:
        real = ab_of(references)
        for i, predicted in enumerate((ab_of(outputs), torch.zeros_like(real))):
            delta = (predicted - real).abs()
            self.sums[i] += delta.sum() / LAB_SCALE[1] / 2  # mean over a and b, scaled
            self.sums[2 + i] += (delta <= THRESHOLD).all(dim=1).sum()
        self.sums[4] += real[:, 0].numel()

    def finish(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        sums = reduce(self.sums)
        pixels = sums[4].clamp_min(1)
        return {
            "eval/ab_l1": (sums[0] / pixels).item(),
            "eval/ab_l1_gray": (sums[1] / pixels).item(),
            "eval/ab_accuracy": (sums[2] / pixels).item(),
            "eval/ab_accuracy_gray": (sums[3] / pixels).item(),
        }


EVALUATOR = Colorization
