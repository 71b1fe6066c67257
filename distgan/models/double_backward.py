"""Critic layers whose second derivatives are cheap: gradient penalties (WGAN-GP, R1) run them.

A penalty takes ∇ₓD(x) with ``create_graph=True`` and back-propagates a function of it to D's
weights: a *double backward*. With PyTorch's own layers that pass costs about twice what it must
(the measurements: README, "Training speed", critic layers with cheap second derivatives):

* The derivative of ``leaky_relu_backward`` with respect to its input is a tensor of zeros,
  which autograd then carries back through the critic's whole forward graph, and
  ``convolution_backward``'s double backward also hands its input a gradient of zeros: both run
  full convolution backwards on zeros. Here the activation's slope mask is a constant and the
  input gradient of a convolution is a function of the output gradient and the weight only, so
  that pass never runs.
* PyTorch computes the weight gradient of the input-gradient convolution as a convolution with
  batch and channels swapped (and copies of the weight), slower than the ordinary weight
  gradient kernel used here.

The first derivatives are PyTorch's kernels: bit for bit without autocast; under autocast each
pass's low-precision weight gradient reaches the fp32 weight on its own and is summed in fp32
(autocast's one cached cast sums them in bf16 first). Inside :func:`input_gradient_pass` (the
penalty's ∇ₓD) no weight gradient is computed, since only the input's is asked for. Tested:
tests/test_losses.py (against nn's layers), tests/ddp_penalty_check.py (2 ranks vs 1 process).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

aten = torch.ops.aten
_input_gradient_pass = [False]  # global, not thread-local: CUDA runs backward in its own threads


@contextlib.contextmanager
def input_gradient_pass() -> Iterator[None]:
    """Inside: ``autograd.grad`` asks for an input's gradient only, so this module's layers
    skip their weight gradients (``penalties.input_gradients`` takes ∇ₓD in one)."""
    previous, _input_gradient_pass[0] = _input_gradient_pass[0], True
    try:
        yield
    finally:
        _input_gradient_pass[0] = previous


class _LeakyReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, slope: float) -> torch.Tensor:
        y = F.leaky_relu(x, slope)
        ctx.save_for_backward(y)
        ctx.slope = slope
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (y,) = ctx.saved_tensors
        # The sign of y is x's; detached, a double backward stops here (its derivative is 0).
        return aten.leaky_relu_backward(grad, y.detach(), ctx.slope, True), None


class LeakyReLU(nn.Module):
    """LeakyReLU (ReLU for slope 0) with a constant slope mask in its gradient."""

    def __init__(self, slope: float = 0.01) -> None:
        super().__init__()
        self.slope = float(slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LeakyReLUFunction.apply(x, self.slope)

    def extra_repr(self) -> str:
        return f"slope={self.slope}"


def _conv_args(conv: dict[str, Any]) -> tuple:
    return conv["stride"], conv["padding"], conv["dilation"], False, (0, 0), conv["groups"]


class _ConvInputGradient(torch.autograd.Function):
    """∇ₓ of a convolution, g ↦ conv_transposeᵂ(g), as a function of g and W only."""

    @staticmethod
    def forward(ctx: Any, grad: torch.Tensor, weight: torch.Tensor, x_like: torch.Tensor, conv):
        ctx.save_for_backward(grad, weight)
        ctx.conv = conv
        mask = [True, False, False]
        return aten.convolution_backward(grad, x_like, weight, None, *_conv_args(conv), mask)[0]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gg: torch.Tensor) -> tuple:
        grad, weight = ctx.saved_tensors
        conv, needs = ctx.conv, ctx.needs_input_grad
        d_grad = d_weight = None
        if needs[0]:  # the transpose of the transpose: the convolution itself
            d_grad = F.conv2d(gg, weight, None, conv["stride"], conv["padding"],
                              conv["dilation"], conv["groups"])  # fmt: skip
        if needs[1]:  # as the weight gradient of a convolution of gg giving grad
            mask = [False, True, False]
            d_weight = aten.convolution_backward(grad, gg, weight, None, *_conv_args(conv), mask)[1]
        return d_grad, d_weight, None, None


class _Conv2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias, conv) -> torch.Tensor:
        y = F.conv2d(x, weight, bias, conv["stride"], conv["padding"], conv["dilation"],
                     conv["groups"])  # fmt: skip
        ctx.save_for_backward(x, weight)
        ctx.conv, ctx.has_bias = conv, bias is not None
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        x, weight = ctx.saved_tensors
        conv, needs = ctx.conv, ctx.needs_input_grad
        x, weight = x.to(grad.dtype), weight.to(grad.dtype)  # autocast ran the forward in it
        want_params = (needs[1] or needs[2]) and not _input_gradient_pass[0]
        mask = [needs[0], want_params and needs[1], want_params and ctx.has_bias and needs[2]]
        bias_sizes = [weight.shape[0]] if ctx.has_bias else None
        if not torch.is_grad_enabled():  # a plain backward: PyTorch's kernel, all in one call
            g_x, g_w, g_b = aten.convolution_backward(
                grad, x, weight, bias_sizes, *_conv_args(conv), mask
            )
            return g_x, g_w, g_b, None
        # create_graph: ∇ₓ stays differentiable through (grad, W); a weight gradient asked for
        # here is taken through PyTorch's own op, so that its derivatives stay exact too.
        g_x = _ConvInputGradient.apply(grad, weight, x.detach(), conv) if needs[0] else None
        g_w = g_b = None
        if mask[1] or mask[2]:
            _, g_w, g_b = aten.convolution_backward(
                grad, x, weight, bias_sizes, *_conv_args(conv), [False, mask[1], mask[2]]
            )
        return g_x, g_w, g_b, None


class Conv2d(nn.Conv2d):
    """nn.Conv2d (same parameters, state dict and forward) with cheap second derivatives.
    Zero padding only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError("distgan's Conv2d takes numeric zero padding only")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = {
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
        }
        return _Conv2dFunction.apply(x, self.weight, self.bias, conv)
