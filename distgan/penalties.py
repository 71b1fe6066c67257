"""Gradient regularizers of the discriminator: WGAN-GP and R1, with lazy regularization.

* **WGAN-GP** (Gulrajani et al., 2017): λ·E[(‖∇D(x̂)‖₂ − 1)²] on random interpolates
  x̂ = ε·x + (1 − ε)·G(z), ε ~ U[0, 1] per sample: a soft 1-Lipschitz constraint for the critic.
* **R1** (Mescheder et al., 2018): γ/2·E[‖∇D(x)‖²] on real images only (zero-centred).
* **Lazy regularization** (Karras et al., 2020): with ``loss.reg_every = k`` the penalty is added
  to the D loss only on steps where ``step % k == 0``, multiplied by k, so its expected gradient
  per step is unchanged while k − 1 of k double-backward passes are saved. It is *folded into*
  the D step of those steps (not a separate optimizer step), so k = 1 is exactly WGAN-GP's
  Algorithm 1 and the number of D optimizer steps never depends on k.

How the penalty stays correct
-----------------------------
*fp32.* ∇D(x̂) is taken with ``create_graph=True`` and the norm and penalty are computed in
fp32 with autocast disabled, whatever the precision of D's forward pass.

*fp16 autocast* follows PyTorch's AMP gradient-penalty recipe: the input gradient is taken of the
*scaled* output (so small gradients do not underflow in fp16), then unscaled in fp32 before the
norm; the total loss is then scaled and back-propagated as usual by the engine. If the scaled
gradient overflows, the penalty becomes inf/NaN, so do D's parameter gradients, and the
GradScaler skips that optimizer step and halves its scale: the engine counts these steps
(``amp/skipped_steps``) and leaves their losses out of the logged means. We scale by
``scale / batch`` rather than ``scale`` (and unscale accordingly) because the upstream gradient of
a *sum* of outputs is 1 per sample, which at the default scale 2¹⁶ would overflow fp16 (max
65504) on every first step. *bf16* needs no scaler (same exponent range as fp32).

*DDP.* The penalty's forward pass runs through the same DDP-wrapped critic as the real/fake
passes, in the same D phase, before the one ``backward``. ``autograd.grad(…, inputs=x̂)`` only
reaches x̂, never the parameters' gradient accumulators, so DDP's all-reduce hooks fire once per
parameter in the final backward, with the sum of adversarial and penalty gradients. Every loss is
a per-rank batch *mean* and DDP averages over ranks, so the result equals one process on the
concatenated global batch (tested: ``tests/ddp_penalty_check.py``). Never ``static_graph=True``:
it silently gives wrong critic gradients with a penalty (see engine/runtime.py). The critic must
not use BatchNorm (the per-sample gradient would depend on the batch, and on how it is split).

*Cost.* The critics' layers (distgan/models/double_backward.py) make the double backward cost
what its FLOPs say (the step with and without the penalty: ``distgan bench gp``, README
"Training speed"); ``∇ₓD`` is taken inside ``input_gradient_pass()``, so no weight gradient is
computed there.

*torch.compile.* Double backward through an aot_autograd-compiled module is unsupported. With
``train.compile`` on, a recipe compiles only the plain passes through ``ctx.compiled`` (G, and D
on real/fake images); the penalty's D pass goes through the *uncompiled* module, which holds the
same parameters, so the gradients are those of the eager model (tested in tests/test_losses.py
with the aot_eager backend; with inductor and 2 DDP processes the weights after 6 WGAN-GP steps
matched an eager run to 3e-7).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from distgan.models.double_backward import input_gradient_pass

Critic = Callable[[torch.Tensor], torch.Tensor]


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _autocast_off(device: torch.device):
    return torch.autocast(device.type, enabled=False)


def loss_scale(scaler: torch.amp.GradScaler) -> torch.Tensor | float:
    """The scaler's current loss scale without a host sync: its device tensor (``get_scale()``
    would copy it to the host, stalling a GPU once per call), or the initial scale as a float
    before the first ``scale()`` created the tensor. ``_get_scale_async`` is private but is what
    ``get_scale`` itself reads (torch 1.6 to 2.14)."""
    scale = scaler._get_scale_async()
    return scaler.get_scale() if scale is None else scale


def input_gradients(
    outputs: torch.Tensor, inputs: torch.Tensor, scaler: torch.amp.GradScaler | None = None
) -> torch.Tensor:
    """∇ₓ D(x) per sample, in fp32 (or fp64), keeping the graph for the backward of the penalty.

    ``outputs``: one value per sample; ``inputs``: the tensor they were computed from
    (``requires_grad=True``). With an enabled ``scaler`` (fp16) the gradient is taken of the
    scaled outputs and unscaled in fp32 (see the module docstring).
    """
    n = outputs.shape[0]
    if scaler is not None and scaler.is_enabled():
        scale = loss_scale(scaler) / n
        upstream = torch.ones_like(outputs) * scale
        with input_gradient_pass():
            (grad,) = torch.autograd.grad(outputs, inputs, upstream, create_graph=True)
        return _at_least_fp32(grad) * (1.0 / scale)
    with input_gradient_pass():  # only ∇ₓ: the critic's own layers skip weight gradients
        (grad,) = torch.autograd.grad(outputs.sum(), inputs, create_graph=True)
    return _at_least_fp32(grad)


def _norms(grad: torch.Tensor) -> torch.Tensor:
    with _autocast_off(grad.device):
        # The epsilon keeps d‖g‖/dg finite where g = 0 (relative bias < 1e-6 for ‖g‖ ≥ 1e-3).
        return torch.sqrt(_at_least_fp32(grad).flatten(1).pow(2).sum(1) + 1e-12)


def interpolate(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x̂ = ε·x + (1 − ε)·x̃ per sample, as a leaf that requires grad."""
    eps = eps.to(real.dtype).view(-1, *([1] * (real.dim() - 1)))
    return (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)


def gradient_penalty(
    critic: Critic,
    real: torch.Tensor,
    fake: torch.Tensor,
    eps: torch.Tensor,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """WGAN-GP's E[(‖∇D(x̂)‖₂ − 1)²] (without λ) and the mean gradient norm (for the logs).

    ``critic`` maps images to one output per sample (bind labels with a lambda); ``eps`` holds
    one U[0, 1] number per sample.
    """
    x_hat = interpolate(real, fake, eps)
    norms = _norms(input_gradients(critic(x_hat), x_hat, scaler))
    with _autocast_off(norms.device):
        penalty = ((norms - 1.0) ** 2).mean()
    return penalty, norms.detach().mean()


def r1_penalty(
    real_outputs: torch.Tensor, real: torch.Tensor, scaler: torch.amp.GradScaler | None = None
) -> torch.Tensor:
    """R1's E[‖∇D(x)‖²] on reals (without γ/2); ``real`` must require grad before D's pass."""
    grad = input_gradients(real_outputs, real, scaler)
    with _autocast_off(grad.device):
        return grad.flatten(1).pow(2).sum(1).mean()


def lazy_gain(step: int, every: int) -> int:
    """Lazy regularization: the regularizer's weight at engine step ``step`` (k or 0)."""
    return every if step % every == 0 else 0
