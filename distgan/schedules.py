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
