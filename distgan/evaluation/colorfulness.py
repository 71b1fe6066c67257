"""Colorfulness (Hasler & Süsstrunk, 2003) of the outputs and of the real images: per image,
with rg = R − G and yb = (R + G)/2 − B on 0…255, M = √(σ_rg² + σ_yb²) + 0.3·√(μ_rg² + μ_yb²),
averaged over images (``eval/colorfulness``, ``eval/colorfulness_real``). Gray images score 0;
a colorization model that plays safe with sepia scores far below the real photos.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from distgan.evaluation.base import Evaluator
from distgan.families.base import Batch


def colorfulness(images: torch.Tensor) -> torch.Tensor:
    """Per image, for RGB images in [-1, 1] (gray images: 0)."""
    if images.shape[1] != 3:
        return torch.zeros(images.shape[0], dtype=torch.float64, device=images.device)
    r, g, b = ((images.double() + 1) * 127.5).clamp(0, 255).unbind(1)
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    spread = (rg.var(1, unbiased=False) + yb.var(1, unbiased=False)).sqrt()
    return spread + 0.3 * (rg.mean(1) ** 2 + yb.mean(1) ** 2).sqrt()


class Colorfulness(Evaluator):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # out, real, count

    def update(self, outputs: torch.Tensor, references: torch.Tensor, batch: Batch) -> None:
        self.sums[0] += colorfulness(outputs).sum()
        self.sums[1] += colorfulness(references).sum()
        self.sums[2] += outputs.shape[0]

    def finish(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        sums = reduce(self.sums)
        count = sums[2].clamp_min(1)
        return {
            "eval/colorfulness": (sums[0] / count).item(),
            "eval/colorfulness_real": (sums[1] / count).item(),
        }


EVALUATOR = Colorfulness
