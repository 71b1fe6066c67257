"""Pixel moments: how far the per-channel mean and standard deviation of the outputs are from
those of the held-out images (a cheap sanity figure for every family: a collapsed or saturated
generator shows at once; FID and friends measure quality).

Each rank accumulates, per channel and in float64, the pixel count, Σx and Σx² of the real
images and of the outputs; one all-reduce sums them over the ranks. Figures:
``eval/moments_distance`` = mean over channels of |μ_out − μ_real| + |σ_out − σ_real| in the
[-1, 1] pixel range, and ``eval/images``, the number of held-out images it saw.
"""

from __future__ import annotations

import torch

from distgan.evaluation.base import EvalContext


class Moments:
    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        channels = ctx.family.data.channels
        # [real | output] × [pixel count, Σx, Σx²] × channel, then the image count
        sums = torch.zeros(2 * 3 * channels + 1, dtype=torch.float64, device=ctx.device)
        moments = sums[:-1].view(2, 3, channels)
        for batch in ctx.batches():
            real = ctx.family.reference(batch)
            with ctx.autocast():
                output = ctx.family.sample(ctx.nets, real.shape[0], ctx.generator, batch)
            for row, images in enumerate((real, output)):
                x = images.detach().to(torch.float64).transpose(0, 1).flatten(1)  # C × pixels
                moments[row, 0] += x.shape[1]
                moments[row, 1] += x.sum(1)
                moments[row, 2] += (x * x).sum(1)
            sums[-1] += real.shape[0]
        ctx.all_reduce_sum(sums)  # every rank takes part, also one that got no sample
        count = moments[:, 0].clamp_min(1)
        mean = moments[:, 1] / count
        std = (moments[:, 2] / count - mean**2).clamp_min(0).sqrt()
        distance = ((mean[0] - mean[1]).abs() + (std[0] - std[1]).abs()).mean()
        return {"eval/moments_distance": distance.item(), "eval/images": sums[-1].item()}


EVALUATOR = Moments
