"""The augmentation stage (distgan/augment.py, distgan/ada.py), in-process: every op against
its definition with forced draws, the identity at p = 0 bit for bit, gradients to the input,
draws that do not depend on how a batch is split, and ADA's controller of p."""

from __future__ import annotations

import pytest
import torch

from distgan import ada
from distgan.augment import Augment, build_augment, color, cutout, translation
from distgan.config.sections import AugConfig
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
        {"ada": True, "p": 0.7},
        {"ada": True, "p": 0.7, "ada_pipeline": "c", "diffaug": "translation"},
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


# ----------------------------------------------------------------------------- ADA's ops

NOT_CHOSEN = 1.0  # a U(0, 1) draw not below p ≤ 1: the op is not applied


def test_ada_at_p_0_or_on_images_not_chosen_is_the_identity_bit_for_bit() -> None:
    x = images(4, 3, 16)
    assert build_augment(AugConfig(ada=True))(x, Forced()) is x  # p = 0: no draws, the input
    for channels in (3, 1):
        x = images(4, channels, 16)
        out = ada.augment(x, Forced(*[NOT_CHOSEN] * 40), p=0.5)
        assert torch.equal(out, x)


def test_xflip_quarter_turns_and_integer_translation_are_exact_pixel_moves() -> None:
    x = images(1, 3, 8)
    # draws: flip u, chosen u; turns u, chosen u; shift u (x, y), chosen u
    flipped = ada.blit(x, Forced(0.75, 0.0, 0.0, 1.0, 0.5, 1.0), p=1.0)
    assert torch.equal(flipped, x.flip(3))
    for k in (1, 2, 3):
        turned = ada.blit(x, Forced(0.0, 1.0, (k + 0.5) / 4, 0.0, 0.5, 1.0), p=1.0)
        assert torch.equal(turned, x.rot90(k, (2, 3)))
    # u = 1: a shift of 1/8 of the side = 1 pixel right and down; the border reflects
    shifted = ada.blit(x, Forced(0.0, 1.0, 0.0, 1.0, 1.0, 0.0), p=1.0)
    assert torch.equal(shifted[..., 1:, 1:], x[..., :-1, :-1])
    assert torch.equal(shifted[..., 0, 1:], x[..., 1, :-1])  # row −1 reflects to row 1
    # all three at once: flipped, then turned, then shifted
    everything = ada.blit(x, Forced(0.75, 0.0, 0.375, 0.0, 1.0, 0.0), p=1.0)
    turned = x.flip(3).rot90(1, (2, 3))
    assert torch.equal(everything, ada.blit(turned, Forced(0.0, 1.0, 0.0, 1.0, 1.0, 0.0), p=1.0))


def test_geometry_half_turn_and_whole_pixel_shift_match_their_pixel_moves() -> None:
    x = images(1, 3, 8).requires_grad_(True)
    # draws: scale (n, u), pre-rotation (u, u), aniso (n, u), post-rotation (u, u), shift (n, u)
    half_turn = Forced(0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.5, 1.0, 0.0, 1.0)  # θ = (2u − 1)π = π
    out = ada.geometric(x, half_turn, p=1.0)
    assert torch.allclose(out, x.flip(2, 3), atol=1e-5)
    out.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x), atol=1e-5)
    one_pixel = Forced(0.0, 1.0, 0.5, 1.0, 0.0, 1.0, 0.5, 1.0, 1 / 8 / ada.XFRAC_STD, 0.0)
    shifted = ada.geometric(x.detach(), one_pixel, p=1.0)  # N(0, 0.125²) × side = 1 pixel
    assert torch.allclose(shifted[..., 1:, 1:], x[..., :-1, :-1].detach(), atol=1e-5)
    # a scaling by 2 about the centre: the middle pixel pair (3.5 ± 0.5 px) samples ±0.25 px
    zoom = Forced(1 / ada.SCALE_STD, 0.0, 0.5, 1.0, 0.0, 1.0, 0.5, 1.0, 0.0, 1.0)
    zoomed = ada.geometric(x.detach(), zoom, p=1.0)
    middle = x.detach()[..., 3:5, 3:5]
    expected = 0.75 * middle[..., 0, 0] + 0.25 * middle[..., 0, 1]
    expected = 0.75 * expected + 0.25 * (0.75 * middle[..., 1, 0] + 0.25 * middle[..., 1, 1])
    assert torch.allclose(zoomed[..., 3, 3], expected, atol=1e-5)


def colour_draws(op: int, *value: float) -> Forced:
    """Colour draws with only op ``op`` chosen (0 brightness, 1 contrast, 2 luma flip, 3 hue,
    4 saturation), its parameter draw ``value``."""
    draws = []
    for index in range(5):
        draws += [*value, 0.0] if index == op else [0.0, NOT_CHOSEN]
    return Forced(*draws)


def test_colour_ops_match_their_definitions() -> None:
    x = images(1, 3, 4)
    mean = x.mean(dim=1, keepdim=True)  # the luma-axis component, per pixel
    cases = {
        0: ((1.0,), x + ada.BRIGHTNESS_STD),  # brightness + N(0, 0.2²): n = 1
        1: ((1 / ada.CONTRAST_STD,), x * 2),  # contrast × 2^N(0, 0.5²): n = 2
        2: ((0.75,), x - 2 * mean),  # luma flip: gray component negated
        3: ((5 / 6,), x.roll(1, dims=1)),  # hue +120° about (1, 1, 1): R → G → B → R
        4: ((1.0,), mean + 2 * (x - mean)),  # saturation × 2^N(0, 1): n = 1
    }
    for op, (value, expected) in cases.items():
        assert torch.allclose(ada.colour(x, colour_draws(op, *value), p=1.0), expected, atol=1e-5)
    # gray images take the mean of the colour rows, and no hue or saturation draws: a luma flip
    # negates, a brightness shift adds (these draws are all there are)
    gray = images(1, 1, 4)
    luma_flip = Forced(0.0, NOT_CHOSEN, 0.0, NOT_CHOSEN, 0.75, 0.0)
    assert torch.allclose(ada.colour(gray, luma_flip, p=1.0), -gray, atol=1e-6)
    brighter = Forced(1.0, 0.0, 0.0, NOT_CHOSEN, 0.0, NOT_CHOSEN)
    assert torch.allclose(ada.colour(gray, brighter, p=1.0), gray + 0.2, atol=1e-6)


def test_the_whole_pipeline_passes_gradients_to_its_input() -> None:
    x = images(4, 3, 16).requires_grad_(True)
    ctx = step_context(None, seed=3)
    out = ada.augment(x, ctx, p=1.0)
    assert not torch.allclose(out, x)
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad.abs().sum(dim=(1, 2, 3)) > 0).all()


# ----------------------------------------------------------------------------- ADA's p


def adaptive(**settings) -> Augment:
    cfg = AugConfig(ada=True, ada_kimg=1, **settings)
    return build_augment(cfg, images_per_step=16)


def feed(stage: Augment, real_outputs: list[torch.Tensor]) -> dict[str, float]:
    """D's outputs on augmented reals through the stage's feedback (the step context's tallies),
    one call per step, then the update the engine runs on the summed tallies."""
    ctx = step_context(stage)
    for outputs in real_outputs:
        ctx.augment_feedback(outputs)
    totals = {name: ctx.tallies.pop(name) for name in list(ctx.tallies)}
    return stage.update_run_state(totals, 0)


def test_p_rises_while_d_is_sure_of_the_reals_and_stays_at_0_while_it_is_not() -> None:
    stage = adaptive()  # 4 steps × 16 images / (1 kimg) = 0.064 per update
    overfit = [torch.rand(16, 1) + 0.1 for _ in range(4)]  # sign D(real) = +1: r_t = 1
    p = [feed(stage, overfit)["aug/p"] for _ in range(3)]
    assert p == pytest.approx([0.064, 0.128, 0.192])
    logs = feed(
        stage, [torch.randn(16, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    )
    assert logs["aug/rt"] < 0.6 and logs["aug/p"] == pytest.approx(0.128)
    unsure = adaptive()  # a D that has not memorised the reals: r_t ≈ 0 < 0.6
    for _ in range(5):
        logs = feed(unsure, [torch.randn(16) for _ in range(4)])
        assert logs["aug/p"] == 0.0
    state = stage.run_state_dict()
    restored = adaptive(p=0.5)
    restored.load_run_state_dict(state)
    assert restored.p == stage.p  # exactly (a float in the checkpoint)
