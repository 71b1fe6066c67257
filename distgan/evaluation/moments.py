"""Pixel moments: how far the per-channel mean and standard deviation of the outputs are from
those of the held-out images (a cheap sanity figure for every family: a collapsed or saturated
generator shows at once; FID and friends measure quality).

Per channel and in float64: the pixel count, Σx and Σx² of the real images and of the outputs.
``eval/moments_distance`` = mean over channels of |μ_out − μ_real| + |σ_out − σ_real| in the
[-1, 1] pixel range; ``eval/images``: the held-out images seen (over all ranks).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from distgan.evaluation.base import Evaluator
from distgan.families.base import Batch


class Moments(Evaluator):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        channels = self.family.data.channels
        # [real | output] × [pixel count, Σx, Σx²] × channel, then the image count
        self.sums = torch.zeros(2 * 3 * channels + 1, dtype=torch.float64, device=self.device)

    def update(self, outputs: torch.Tensor, references: torch.Tensor, batch: Batch) -> None:
        moments = self.sums[:-1].view(2, 3, -1)
        for row, images in enumerate((references, outputs)):
            x = images.detach().to(torch.float64).transpose(0, 1).flatten(1)  # C × pixels
            moments[row, 0] += x.shape[1]
            moments[row, 1] += x.sum(1)
            moments[row, 2] += (x * x).sum(1)
        self.sums[-1] += references.shape[0]

    def finish(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        sums = reduce(self.sums)
        moments = sums[:-1].view(2, 3, -1)
        count = moments[:, 0].clamp_min(1)
        mean = moments[:, 1] / count
        std = (moments[:, 2] / count - mean**2).clamp_min(0).sqrt()
        distance = ((mean[0] - mean[1]).abs() + (std[0] - std[1]).abs()).mean()
        return {"eval/moments_distance": distance.item(), "eval/images": sums[-1].item()}


EVALUATOR = Moments
