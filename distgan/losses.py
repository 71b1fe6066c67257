"""Adversarial losses as small pure functions of discriminator logits (computed in fp32).

Non-saturating GAN loss (Goodfellow et al., 2014), with optional one-sided label smoothing of
the real target (Salimans et al., 2016): D learns towards ``real_label`` (e.g. 0.9) on real data
and 0 on fakes; G maximises log D(G(z)) instead of minimising log(1 − D(G(z))).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_nonsaturating(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: float = 1.0
) -> torch.Tensor:
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    target = torch.full_like(real_logits, real_label)
    real_term = F.binary_cross_entropy_with_logits(real_logits, target)
    return real_term + F.softplus(fake_logits).mean()


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits.float()).mean()


def accuracy(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The classic training-log figures: how often D calls real 'real' and fake 'fake'."""
    return {
        "D/acc_real": (real_logits > 0).float().mean(),
        "D/acc_fake": (fake_logits < 0).float().mean(),
    }
