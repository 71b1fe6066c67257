"""Adversarial losses as small pure functions of discriminator outputs (computed in fp32).

Every loss is a pair ``(d_loss(real, fake, targets) , g_loss(fake))`` of batch means:

* ``minimax`` (Goodfellow et al., 2014): D maximises log D(x) + log(1 − D(G(z))), G *minimises*
  log(1 − D(G(z))). This is the JS-divergence game; G's gradient vanishes when D wins early.
* ``nonsaturating``: the same D, but G maximises log D(G(z)) (strong gradients early on).
* ``hinge`` (Lim & Ye 2017; SNGAN, SAGAN): D: relu(1 − D(x)) + relu(1 + D(G(z))); G: −D(G(z)).
* ``wasserstein`` (Arjovsky et al., 2017): the critic maximises D(x) − D(G(z)); needs a Lipschitz
  constraint (gradient penalty, see :mod:`distgan.penalties`, or spectral norm).
* ``lsgan`` (Mao et al., 2017): least squares towards targets 1 (real) and 0 (fake).

The cross-entropy and least-squares losses take per-sample *targets* for real and fake images, so
the classic "GAN hacks" compose with them: one-sided label smoothing (real target 0.9, Salimans
et al., 2016), label noise and label flipping (:func:`d_targets`). D may output one value per
image or a map of patch values (PatchGAN, ``[B, 1, H, W]``): per-sample targets are broadcast
over each sample's values, and every loss is a mean over all of them.

Families compose these small pieces (with :mod:`distgan.penalties`): ``ADVERSARIAL[name].d`` and
``.g``, :func:`d_targets`, :func:`instance_noise` and :func:`accuracy`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Per-sample (real, fake) targets; a fake target of None means 0 for every sample.
Targets = tuple[torch.Tensor, torch.Tensor | None]


# --------------------------------------------------------------------------- D targets


def d_targets(
    n: int,
    device: torch.device,
    rand: Callable[[int], torch.Tensor] | None = None,
    real_label: float = 1.0,
    noise: float = 0.0,
    flip: float = 0.0,
) -> Targets:
    """Per-sample (real, fake) targets for the cross-entropy / least-squares D losses.

    ``real_label`` < 1 is one-sided smoothing (fakes stay at 0); ``noise`` draws targets
    uniformly from [real_label − noise, real_label] and [0, noise]; ``flip`` swaps the two targets
    of a random fraction of the samples. ``rand(n)``: n uniform draws in [0, 1) (a step
    context's ``ctx.rand``). With the defaults no random number is drawn.
    """
    if rand is None:
        rand = functools.partial(torch.rand, device=device)
    real = torch.full((n,), real_label, device=device)
    if noise == 0 and flip == 0:
        return real, None
    fake = torch.zeros(n, device=device)
    if noise > 0:
        real = real - noise * rand(n)
        fake = fake + noise * rand(n)
    if flip > 0:
        swap = rand(n) < flip
        real, fake = torch.where(swap, fake, real), torch.where(swap, real, fake)
    return real, fake


def per_sample(target: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample values ``[B]`` broadcast over D's outputs ``[B]`` or ``[B, 1, H, W]``."""
    if target.shape != like.shape[:1]:
        raise ValueError(
            f"targets of shape {list(target.shape)} for D outputs of shape {list(like.shape)}: "
            "one target per sample expected"
        )
    return target.view(-1, *([1] * (like.dim() - 1))).expand_as(like)


def instance_noise(
    images: torch.Tensor, std: float, randn: Callable[..., torch.Tensor] | None = None
) -> torch.Tensor:
    """Gaussian noise on D's inputs (Sønderby et al., 2017); no random numbers drawn at std 0.
    Anneal ``std`` with :func:`distgan.schedules.linear_decay`. ``randn(*shape)``: standard
    normal draws (a step context's ``ctx.randn``)."""
    if std == 0:
        return images
    if randn is None:
        randn = functools.partial(torch.randn, device=images.device)
    noise = randn(*images.shape)
    return images + std * noise.to(images.dtype)


# --------------------------------------------------------------------------- the losses


def d_nonsaturating(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """D's cross-entropy; a float ``real_label`` is the one-sided smoothed real target."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    target = (
        per_sample(real_label, real_logits)
        if isinstance(real_label, torch.Tensor)
        else torch.full_like(real_logits, real_label)
    )
    real_term = F.binary_cross_entropy_with_logits(real_logits, target)
    return real_term + F.softplus(fake_logits).mean()


def d_cross_entropy(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, targets: Targets
) -> torch.Tensor:
    real_t, fake_t = targets
    if fake_t is None:  # fakes → 0: softplus(logit), as the DCGAN loss always was
        return d_nonsaturating(real_logits, fake_logits, real_t)
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    real_term = F.binary_cross_entropy_with_logits(real_logits, per_sample(real_t, real_logits))
    fake_term = F.binary_cross_entropy_with_logits(fake_logits, per_sample(fake_t, fake_logits))
    return real_term + fake_term


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits.float()).mean()


def g_minimax(fake_logits: torch.Tensor) -> torch.Tensor:
    """The original game: G minimises log(1 − D(G(z))) = log(1 − σ(l)) = −softplus(l)."""
    return -F.softplus(fake_logits.float()).mean()


def d_hinge(real: torch.Tensor, fake: torch.Tensor, targets: Targets | None = None) -> torch.Tensor:
    return F.relu(1 - real.float()).mean() + F.relu(1 + fake.float()).mean()


def g_hinge(fake: torch.Tensor) -> torch.Tensor:
    return -fake.float().mean()


def d_wasserstein(
    real: torch.Tensor, fake: torch.Tensor, targets: Targets | None = None
) -> torch.Tensor:
    """The critic's loss E[D(G(z))] − E[D(x)]: minus the Wasserstein-1 estimate."""
    return fake.float().mean() - real.float().mean()


def g_wasserstein(fake: torch.Tensor) -> torch.Tensor:
    return -fake.float().mean()


def d_lsgan(real: torch.Tensor, fake: torch.Tensor, targets: Targets) -> torch.Tensor:
    real_t, fake_t = targets
    fake_t = torch.zeros_like(real_t) if fake_t is None else fake_t
    real, fake = real.float(), fake.float()
    real_term = ((real - per_sample(real_t, real)) ** 2).mean()
    return 0.5 * real_term + 0.5 * ((fake - per_sample(fake_t, fake)) ** 2).mean()


def g_lsgan(fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((fake.float() - 1) ** 2).mean()


@dataclass(frozen=True)
class Adversarial:
    """One adversarial loss: D's and G's halves, and whether D's targets (smoothing, noise,
    flipping) mean anything for it."""

    d: Callable[[torch.Tensor, torch.Tensor, Targets], torch.Tensor]
    g: Callable[[torch.Tensor], torch.Tensor]
    uses_targets: bool
    logits: bool  # D outputs a logit (a probability after sigmoid): accuracy is meaningful


ADVERSARIAL: dict[str, Adversarial] = {
    "minimax": Adversarial(d_cross_entropy, g_minimax, uses_targets=True, logits=True),
    "nonsaturating": Adversarial(d_cross_entropy, g_nonsaturating, uses_targets=True, logits=True),
    "hinge": Adversarial(d_hinge, g_hinge, uses_targets=False, logits=False),
    "wasserstein": Adversarial(d_wasserstein, g_wasserstein, uses_targets=False, logits=False),
    "lsgan": Adversarial(d_lsgan, g_lsgan, uses_targets=True, logits=False),
}


def accuracy(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The classic training-log figures: how often D calls real 'real' and fake 'fake'."""
    return {
        "D/acc_real": (real_logits > 0).float().mean(),
        "D/acc_fake": (fake_logits < 0).float().mean(),
    }
