"""ADA's augmentation pipeline (Karras et al. 2020, "Training Generative Adversarial Networks
with Limited Data"): differentiable transforms of D's inputs, each applied to an image with
probability p, with the parameters of stylegan2-ada-pytorch's ``AugmentPipe``:

* pixel blitting (``b``): x-flip, rotation by a multiple of 90°, integer translation by up to
  1/8 of the side (the drawn shift rounded to whole pixels), reflect-padded;
* general geometry (``g``): isotropic scaling 2^N(0, 0.2²), rotation U(−π, π) before and after
  anisotropic scaling 2^N(0, 0.2²) (each rotation with p_rot = 1 − √(1 − p), so that one of
  them happens with probability p), fractional translation N(0, 0.125²) × side;
* colour (``c``), as one 4×4 matrix on (R, G, B, 1): brightness + N(0, 0.2²), contrast
  × 2^N(0, 0.5²), luma flip (a reflection through the plane ⟂ the luma axis (1, 1, 1)/√3), hue
  rotation about that axis U(−π, π), saturation × 2^N(0, 1) away from it. Gray images take the
  matrix's mean over the colour rows, and no hue or saturation (as the authors do).

Where the authors resample once (all of the geometry in one matrix, sym6-wavelet 2× up- and
downsampling around a bilinear ``grid_sample``, reflect padding), this resamples in plain PyTorch:
the blits are exact pixel moves (flip, ``rot90``, an index gather with reflection about the edge
pixels), and the general geometry is one ``grid_sample`` per image, bilinear, at the native
resolution, whose ``reflection`` padding with ``align_corners=True`` coordinates reflects about
the edge pixels' centres like the authors' reflect padding. Without the 2× supersampling a
minified image aliases a little (the scales stay within 2^±0.4 for 95 % of images) and a
fractional shift blurs a little, both alike for real and generated images; an identity, a flip or
a quarter turn is exact. Images not selected for any op of a group are returned bit for bit
(``torch.where``), so p = 0 is the identity.

Every draw goes through the step context (first dimension = batch), in the authors' order.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F

PIPELINES = ("bgc", "bg", "b", "c")  # aug.ada_pipeline: its groups, b(lit) g(eometry) c(olour)

XINT_MAX, SCALE_STD, ANISO_STD, XFRAC_STD, ROTATE_MAX = 0.125, 0.2, 0.2, 0.125, 1.0
BRIGHTNESS_STD, CONTRAST_STD, HUE_MAX, SATURATION_STD = 0.2, 0.5, 1.0, 1.0


class Draws(Protocol):
    """The random draws an op may take (the step context provides them; the first dimension of
    every draw is the batch, so a draw does not depend on how the batch is split)."""

    def rand(self, *shape: int) -> torch.Tensor: ...

    def randn(self, *shape: int) -> torch.Tensor: ...

    def randint(self, high: int, *shape: int) -> torch.Tensor: ...


def augment(images: torch.Tensor, draws: Draws, p: float, pipeline: str = "bgc") -> torch.Tensor:
    """``images`` [N, C, H, W] through the groups of ``pipeline`` (``PIPELINES``) at probability
    ``p``."""
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown ADA pipeline {pipeline!r}; valid: {', '.join(PIPELINES)}")
    if "b" in pipeline:
        images = blit(images, draws, p)
    if "g" in pipeline:
        images = geometric(images, draws, p)
    if "c" in pipeline:
        images = colour(images, draws, p)
    return images


def chosen(draws: Draws, n: int, p: float, device: torch.device) -> torch.Tensor:
    """Which of ``n`` images an op is applied to: U(0, 1) < p."""
    return draws.rand(n).to(device) < p


def per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def blit(images: torch.Tensor, draws: Draws, p: float) -> torch.Tensor:
    """x-flip, quarter turns and integer translation, each with probability p: exact pixel
    moves, composed into one source pixel per output pixel and done as one gather."""
    n, _, h, w = images.shape
    if h != w:
        raise ValueError(f"ADA's quarter turns need square images, not {h}×{w}")
    device = images.device
    flip = torch.floor(draws.rand(n).to(device) * 2)
    flip = torch.where(chosen(draws, n, p, device), flip, 0).long()
    turns = torch.floor(draws.rand(n).to(device) * 4)
    turns = torch.where(chosen(draws, n, p, device), turns, 0).long()
    shift = (draws.rand(n, 2).to(device) * 2 - 1) * XINT_MAX
    shift = torch.where(chosen(draws, n, p, device)[:, None], shift, 0)
    dx, dy = torch.round(shift[:, 0] * w).long(), torch.round(shift[:, 1] * h).long()

    # The image is flipped, then turned, then shifted: the output pixel (i, j) reads the shifted
    # position (reflected at the border), turned back (torch.rot90's direction), flipped back.
    # Each of these moves rows and columns separately, so the source index is a sum of a term
    # of the output row and a term of the output column (cheap [N, side] maps).
    row = reflect(torch.arange(h, device=device)[None, :] - dy[:, None], h)  # of output row i
    col = reflect(torch.arange(w, device=device)[None, :] - dx[:, None], w)  # of output column j
    flipped = flip[:, None] > 0
    k = turns[:, None]

    def back(column: torch.Tensor) -> torch.Tensor:  # the x-flip, undone
        return torch.where(flipped, w - 1 - column, column)

    # quarter turns k: source (row, column) = (A, B), (B, w−1−A), (h−1−A, w−1−B), (h−1−B, A)
    # with A = row(i), B = col(j)
    of_i = torch.where(
        k == 0,
        row * w,
        torch.where(k == 1, back(w - 1 - row), torch.where(k == 2, (h - 1 - row) * w, back(row))),
    )
    of_j = torch.where(
        k == 0,
        back(col),
        torch.where(k == 1, col * w, torch.where(k == 2, back(w - 1 - col), (h - 1 - col) * w)),
    )
    return move_pixels(images, of_i[:, :, None] + of_j[:, None, :])


def move_pixels(images: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``out[n, :, i, j] = images[n, :, source[n, i, j] // W, source[n, i, j] % W]``: one gather
    (its gradient one scatter-add, much faster than advanced indexing's on a CPU), in the
    images' memory format."""
    n, channels, h, w = images.shape
    flat = images.reshape(n, channels, h * w)
    index = source.reshape(n, 1, -1).expand(n, channels, source[0].numel())
    moved = torch.gather(flat, 2, index).view(n, channels, *source.shape[1:])
    channels_last = images.is_contiguous(memory_format=torch.channels_last) and channels > 1
    return moved.contiguous(memory_format=torch.channels_last) if channels_last else moved


def reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices outside [0, size) mirrored about the edge pixels (numpy's 'reflect')."""
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


# ----------------------------------------------------------------------------- matrices


def identity(n: int, size: int, device: torch.device) -> torch.Tensor:
    return torch.eye(size, device=device).repeat(n, 1, 1)


def compose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for batches of small matrices, elementwise (autocast would round a matmul to
    bf16/fp16, and pixel coordinates need float32)."""
    return (a[:, :, :, None] * b[:, None, :, :]).sum(2)


def scale2(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = identity(len(sx), 3, sx.device)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def rotate2(theta: torch.Tensor) -> torch.Tensor:
    m = identity(len(theta), 3, theta.device)
    m[:, 0, 0], m[:, 0, 1] = theta.cos(), -theta.sin()
    m[:, 1, 0], m[:, 1, 1] = theta.sin(), theta.cos()
    return m


def translate2(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = identity(len(tx), 3, tx.device)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def geometric(images: torch.Tensor, draws: Draws, p: float) -> torch.Tensor:
    """Isotropic scaling, rotation, anisotropic scaling, rotation, fractional translation: one
    inverse matrix per image (output pixel → input pixel, centred coordinates), one resampling."""
    n, _, h, w = images.shape
    device = images.device
    inverse = identity(n, 3, device)
    selected = torch.zeros(n, dtype=torch.bool, device=device)

    def pick(values: torch.Tensor, probability: float, neutral: float) -> torch.Tensor:
        nonlocal selected
        mask = chosen(draws, n, probability, device)
        selected = selected | mask
        return torch.where(mask.view(-1, *[1] * (values.dim() - 1)), values, neutral)

    s = pick(torch.exp2(draws.randn(n).to(device) * SCALE_STD), p, 1.0)
    inverse = compose(inverse, scale2(1 / s, 1 / s))
    p_rot = 1 - math.sqrt(min(max(1 - p, 0.0), 1.0))  # P(pre or post rotation) = p
    theta = pick((draws.rand(n).to(device) * 2 - 1) * math.pi * ROTATE_MAX, p_rot, 0.0)
    inverse = compose(inverse, rotate2(theta))
    s = pick(torch.exp2(draws.randn(n).to(device) * ANISO_STD), p, 1.0)
    inverse = compose(inverse, scale2(1 / s, s))
    theta = pick((draws.rand(n).to(device) * 2 - 1) * math.pi * ROTATE_MAX, p_rot, 0.0)
    inverse = compose(inverse, rotate2(theta))
    t = draws.randn(n, 2).to(device) * XFRAC_STD
    mask = chosen(draws, n, p, device)
    selected = selected | mask
    t = torch.where(mask[:, None], t, 0)
    inverse = compose(inverse, translate2(-t[:, 0] * w, -t[:, 1] * h))

    cx, cy = (w - 1) / 2, (h - 1) / 2
    y, x = torch.meshgrid(
        torch.arange(h, device=device) - cy, torch.arange(w, device=device) - cx, indexing="ij"
    )
    x, y = x[None], y[None]  # [1, H, W]
    m = inverse[:, :2, :, None, None]  # [N, 2, 3, 1, 1]
    source_x = m[:, 0, 0] * x + m[:, 0, 1] * y + m[:, 0, 2]
    source_y = m[:, 1, 0] * x + m[:, 1, 1] * y + m[:, 1, 2]
    grid = torch.stack([source_x / cx, source_y / cy], dim=-1).to(images.dtype)  # align_corners
    warped = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=True
    )
    return torch.where(per_image(selected), warped, images)


def colour(images: torch.Tensor, draws: Draws, p: float) -> torch.Tensor:
    """Brightness, contrast, luma flip, hue, saturation: one matrix C per image (colour_out =
    C @ (colour_in, 1)), applied elementwise."""
    n, channels, _, _ = images.shape
    if channels not in (1, 3):
        raise ValueError(f"ADA's colour ops need RGB or gray images, not {channels} channels")
    device = images.device
    eye = torch.eye(4, device=device)
    matrix = identity(n, 4, device)
    selected = torch.zeros(n, dtype=torch.bool, device=device)

    def pick(values: torch.Tensor, neutral: float) -> torch.Tensor:
        nonlocal selected
        mask = chosen(draws, n, p, device)
        selected = selected | mask
        return torch.where(mask, values, neutral)[:, None, None]  # [N, 1, 1]

    offset = torch.zeros(4, 4, device=device)
    offset[:3, 3] = 1  # adds the same value to R, G and B
    colours = torch.diag(torch.tensor([1.0, 1, 1, 0], device=device))
    b = pick(draws.randn(n).to(device) * BRIGHTNESS_STD, 0.0)
    matrix = compose(eye + b * offset, matrix)
    c = pick(torch.exp2(draws.randn(n).to(device) * CONTRAST_STD), 1.0)
    matrix = compose(eye - colours + c * colours, matrix)
    luma = torch.tensor([1.0, 1, 1, 0], device=device) / math.sqrt(3)
    along = torch.outer(luma, luma)  # projection onto the luma axis
    flip = pick(torch.floor(draws.rand(n).to(device) * 2), 0.0)
    matrix = compose(eye - 2 * along * flip, matrix)  # Householder reflection
    if channels > 1:
        theta = pick((draws.rand(n).to(device) * 2 - 1) * math.pi * HUE_MAX, 0.0)
        matrix = compose(rotation_about_luma(theta[:, 0, 0]), matrix)
        s = pick(torch.exp2(draws.randn(n).to(device) * SATURATION_STD), 1.0)
        matrix = compose(along + (eye - along) * s, matrix)

    m = matrix.to(images.dtype)
    if channels == 3:  # (under autocast the product is in its dtype, as the images will be)
        flat = images.reshape(n, 3, -1)
        out = torch.baddbmm(m[:, :3, 3:], m[:, :3, :3], flat).view(images.shape)
    else:  # gray: the mean of the colour rows
        rows = m[:, :3].mean(dim=1)[:, :, None, None]  # [N, 4, 1, 1]
        out = images * rows[:, :3].sum(dim=1, keepdim=True) + rows[:, 3:]
    return torch.where(per_image(selected), out, images)


def rotation_about_luma(theta: torch.Tensor) -> torch.Tensor:
    """Rotation by ``theta`` about (1, 1, 1)/√3 (Rodrigues), as 4×4 matrices [N, 4, 4]."""
    v = 1 / math.sqrt(3)
    cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]
    device = theta.device
    cross = torch.tensor([[0.0, -v, v], [v, 0, -v], [-v, v, 0]], device=device)  # [v]×
    outer = torch.full((3, 3), v * v, device=device)
    rotation = cos * torch.eye(3, device=device) + sin * cross + (1 - cos) * outer
    m = identity(len(theta), 4, device)
    m[:, :3, :3] = rotation
    return m
