"""The augmentation stage (distgan/augment.py, distgan/ada.py), in-process: every op against
its definition with forced draws, the identity at p = 0 bit for bit, gradients to the input,
draws that do not depend on how a batch is split, and ADA's controller of p."""

from __future__ import annotations

import pytest
import torch

from distgan.augment import build_augment, color, cutout, translation
from distgan.config.schema import AugConfig
from distgan.families.context import StepContext


class Forced:
    """Draws that return given values, one list per call, in the order the op draws them."""

    def __init__(self, *values: object) -> None:
        self.values = list(values)

    def _next(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.as_tensor(self.values.pop(0), dtype=torch.float32).expand(shape).clone()

    def rand(self, *shape: int) -> torch.Tensor:
        return self._next(shape)

    def randn(self, *shape: int) -> torch.Tensor:
        return self._next(shape)

    def randint(self, high: int, *shape: int) -> torch.Tensor:
        value = self._next(shape).long()
        assert (value < high).all() and (value >= 0).all()
        return value


def images(n: int = 2, c: int = 3, side: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ----------------------------------------------------------------------------- DiffAugment


def test_color_is_brightness_then_saturation_then_contrast() -> None:
    x = images(1)
    out = color(x, Forced(0.75, 0.25, 0.0))
    expected = x + 0.25  # brightness: u − ½
    mean = expected.mean(dim=1, keepdim=True)
    expected = (expected - mean) * 0.5 + mean  # saturation: 2u around the channel mean
    mean = expected.mean(dim=(1, 2, 3), keepdim=True)
    expected = (expected - mean) * 0.5 + mean  # contrast: u + ½ around the image mean
    assert torch.allclose(out, expected, atol=1e-6)
    # u = (½, ½, ½) leaves the image as it is (up to rounding)
    assert torch.allclose(color(x, Forced(0.5, 0.5, 0.5)), x, atol=1e-6)


def test_cutout_zeroes_one_square_of_half_the_side_and_passes_gradients() -> None:
    x = (images(1, 1) + 3).requires_grad_(True)  # no pixel is 0 before the cut
    out = cutout(x, Forced(4, 3))  # centre row 4, column 3; square of 4: rows 2–5, cols 1–4
    zero = out[0, 0] == 0
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:6, 1:5] = True
    assert torch.equal(zero, expected)
    out.sum().backward()
    assert torch.equal(x.grad[0, 0] == 0, expected)
    # a centre at the border: the square hangs over it and is clipped (rows 0–1, cols 6–7)
    clipped = cutout(x.detach(), Forced(0, 8))[0, 0] == 0
    assert clipped.sum() == 4 and clipped[:2, 6:].all()


def test_translation_of_three_channels_moves_content_and_zero_fills() -> None:
    x = images(1) + 3
    out = translation(x, Forced(0, 2))  # −1 row, +1 column
    assert torch.equal(out[0, :, 1:, :7], x[0, :, :7, 1:])
    assert (out[0, :, 0, :] == 0).all() and (out[0, :, :, 7] == 0).all()


def step_context(augment, micro_batches: int = 1, seed: int = 0) -> StepContext:
    ctx = StepContext(torch.device("cpu"), torch.Generator().manual_seed(seed), augment=augment)
    ctx.begin_step(0, micro_batches)
    ctx.enter(0, None)
    return ctx


def augmented_in_parts(augment, batch: torch.Tensor, parts: int) -> torch.Tensor:
    """``batch`` through the stage as ``parts`` micro-batches of one step."""
    ctx = step_context(augment, parts)
    out = []
    for index, part in enumerate(batch.chunk(parts)):
        ctx.enter_micro_batch(index)
        out.append(ctx.augment(part))
    return torch.cat(out)


@pytest.mark.parametrize(
    "aug",
    [
        {"diffaug": "color,translation,cutout"},
        {"diffaug": "cutout,color"},
    ],
)
def test_same_draws_give_the_same_images_however_the_batch_is_split(aug: dict) -> None:
    stage = build_augment(AugConfig(**aug))
    batch = images(8, 3, 16)
    whole = augmented_in_parts(stage, batch, 1)
    assert not torch.equal(whole, batch)
    assert torch.equal(augmented_in_parts(stage, batch, 2), whole)
    assert torch.equal(augmented_in_parts(stage, batch, 4), whole)


def test_empty_policy_list_is_off() -> None:
    assert not build_augment(AugConfig(diffaug=""))
    assert AugConfig(diffaug="color, cutout").diffaug == ["color", "cutout"]
