"""Schedules as pure functions of the step: a resumed run computes the same value at the same
step with no scheduler state to save (learning rates, loss weights, noise levels)."""

from __future__ import annotations


def linear_decay(step: int, total: int, start: float = 0.0) -> float:
    """1 until ``start`` × ``total`` steps, then linearly down to 0 at step ``total``.

    ``start = 0``: from 1 at step 0 to 0 at the end (annealed instance noise); ``start = 0.5``:
    pix2pix/CycleGAN's "constant for half the run, then linear decay"; ``start = 1``: constant.
    """
    begin = start * total
    if step <= begin:
        return 1.0
    return max(0.0, 1.0 - (step - begin) / (total - begin))


def ema_decay_by_images(
    images_seen: int, images_per_step: int, half_life_kimg: float, rampup: float | None = None
) -> float:
    """StyleGAN2-ADA's EMA decay for one step of ``images_per_step`` images: the copy's weight
    halves every ``half_life_kimg`` thousand images; with ``rampup`` the half-life is at most
    ``rampup`` × the images seen so far (a young generator's average forgets its start sooner).
    A pure function of the images seen, so accumulation, the batch and the world size (which
    change images per step) keep the same half-life in images."""
    half_life = half_life_kimg * 1000
    if rampup is not None:
        half_life = min(half_life, images_seen * rampup)
    return 0.5 ** (images_per_step / max(half_life, 1e-8))
