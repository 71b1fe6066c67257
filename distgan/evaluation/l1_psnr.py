"""Pixel fidelity of translations with a ground truth (pix2pix, colorization): ``eval/l1``, the
mean absolute difference of outputs and targets on [0, 1], and ``eval/psnr``, the mean over
images of 10·log₁₀(1 / MSE) on [0, 1] (in dB; capped at 100 dB for identical images).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from distgan.evaluation.base import Evaluator
from distgan.families.base import Batch


class L1PSNR(Evaluator):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sums = torch.zeros(4, dtype=torch.float64, device=self.device)  # Σ|Δ|, px, ΣPSNR, n

    def update(self, outputs: torch.Tensor, references: torch.Tensor, batch: Batch) -> None:
        delta = ((outputs.double() - references.double()) / 2).flatten(1)  # on [0, 1]
        mse = (delta**2).mean(1).clamp_min(1e-10)
        self.sums[0] += delta.abs().sum()
        self.sums[1] += delta.numel()
        self.sums[2] += (10 * torch.log10(1 / mse)).sum()
        self.sums[3] += delta.shape[0]

    def finish(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        sums = reduce(self.sums)
        return {
            "eval/l1": (sums[0] / sums[1].clamp_min(1)).item(),
            "eval/psnr": (sums[2] / sums[3].clamp_min(1)).item(),
        }


EVALUATOR = L1PSNR
