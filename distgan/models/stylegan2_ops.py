"""StyleGAN2's layers in plain PyTorch (no compiled extension): equalized learning rate,
bilinear resampling with the [1, 3, 3, 1] filter, bias + activation with the ``conv_clamp``
bound, and the modulated/demodulated convolution as one grouped convolution.

The reference (NVlabs/stylegan2-ada-pytorch) fuses these into custom CUDA kernels (upfirdn2d,
bias_act) that are compiled at start-up; here each is two or three standard ops of the same
arithmetic, so the networks build instantly on any device and support double backward (R1,
path-length regularization) through PyTorch's own derivatives.

Equalized learning rate (Karras et al. 2018): weights are stored as N(0, 1) / lr_multiplier and
scaled by lr_multiplier / √fan_in at every use, so Adam's per-parameter step sizes act alike on
every layer; the mapping network's lr_multiplier 0.01 slows its layers a hundredfold.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_GAIN = math.sqrt(2.0)  # keeps the activations' variance through LeakyReLU(0.2)


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 tensors in fp32; fp32 and fp64 as they are (float64 checks stay float64)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def blur_filter(channels: int, taps: tuple[int, ...] = (1, 3, 3, 1)) -> torch.Tensor:
    """The separable low-pass filter, normalised to sum 1, as a depthwise kernel [C, 1, k, k]."""
    row = torch.tensor(taps, dtype=torch.float32)
    kernel = torch.outer(row, row)
    kernel = kernel / kernel.sum()
    return kernel.expand(channels, 1, *kernel.shape).contiguous()


def _depthwise(x: torch.Tensor, filt: torch.Tensor) -> torch.Tensor:
    return filt.to(x.dtype).expand(x.shape[1], 1, *filt.shape[-2:])


class _FixedConv(torch.autograd.Function):
    """A convolution by a constant filter, y = Aₓ (``aten.convolution``), whose derivative is
    its transpose and the transpose's is A again, so it can be differentiated any number of
    times (R1 and path length back-propagate through ∇). PyTorch's own double backward of a
    grouped convolution computes the filter's gradient, needed or not, one group at a time: a
    convolution per channel of every resampling (1,846 small convolutions in one path-length
    step of celeba64-stylegan2, most of its time in bf16)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, args: tuple) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.args, ctx.x_shape = args, x.shape
        return torch.ops.aten.convolution(x, weight, None, *args)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple:
        (weight,) = ctx.saved_tensors
        return _FixedConvTranspose.apply(grad, weight, ctx.args, ctx.x_shape), None, None


class _FixedConvTranspose(torch.autograd.Function):
    """The transpose of :class:`_FixedConv`: g ↦ Aᵀg (a convolution's input gradient)."""

    @staticmethod
    def forward(
        ctx, grad: torch.Tensor, weight: torch.Tensor, args: tuple, x_shape
    ) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.args = args
        weight = weight.to(grad.dtype)  # the forward may have run under autocast
        x_like = grad.new_zeros(()).expand(x_shape)  # (only its shape is read)
        mask = [True, False, False]
        return torch.ops.aten.convolution_backward(grad, x_like, weight, None, *args, mask)[0]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple:
        (weight,) = ctx.saved_tensors
        return _FixedConv.apply(grad, weight.to(grad.dtype), ctx.args), None, None, None


def fixed_conv(
    x: torch.Tensor, weight: torch.Tensor, stride: int = 1, padding: int = 0, up: bool = False
) -> torch.Tensor:
    """A depthwise convolution (transposed with ``up``) by a constant ``weight`` [C, 1, k, k]."""
    args = ([stride] * 2, [padding] * 2, [1, 1], up, [0, 0], x.shape[1])
    if torch.is_autocast_enabled(x.device.type) and x.dtype != torch.float64:
        dtype = torch.get_autocast_dtype(x.device.type)  # as autocast would run the conv
        x, weight = x.to(dtype), weight.to(dtype)
    return _FixedConv.apply(x, weight.to(x.dtype), args)


def upsample2d(x: torch.Tensor, filt: torch.Tensor) -> torch.Tensor:
    """×2 bilinear-like upsampling: zeros between the pixels, then the filter (gain 4)."""
    return fixed_conv(x, _depthwise(x, filt) * 4, stride=2, padding=1, up=True)


def downsample2d(x: torch.Tensor, filt: torch.Tensor) -> torch.Tensor:
    """÷2: the filter, then every second pixel."""
    return fixed_conv(x, _depthwise(x, filt), stride=2, padding=1)


def blur(x: torch.Tensor, filt: torch.Tensor, pad: int, gain: float = 1.0) -> torch.Tensor:
    """The filter at stride 1 on ``x`` padded by ``pad`` on every side."""
    x = F.pad(x, [pad] * 4)
    return fixed_conv(x, _depthwise(x, filt) * gain)


def bias_act(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    activation: bool = True,
    gain: float = 1.0,
    clamp: float | None = None,
) -> torch.Tensor:
    """x + b, LeakyReLU(0.2) × √2 (``activation``), × ``gain``, clamped to ±``clamp``
    (``conv_clamp``: keeps fp16 activations from overflowing; the reference applies it in any
    precision, so do we)."""
    if bias is not None:
        x = x + bias.to(x.dtype).view(1, -1, *([1] * (x.dim() - 2)))
    if activation:
        x = F.leaky_relu(x, 0.2)
        gain = gain * LRELU_GAIN
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x / RMS(x) per sample (the mapping network's input normalisation)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class FullyConnected(nn.Module):
    """Equalized-lr dense layer, optionally with LeakyReLU; ``lr_multiplier`` slows it."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: bool = False,
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain
        if not self.activation:
            return F.linear(x, w.to(x.dtype), b.to(x.dtype))
        return bias_act(F.linear(x, w.to(x.dtype)), b)


class Conv2dLayer(nn.Module):
    """Equalized-lr convolution with optional ×2 down-sampling (filter, then stride 2) and
    LeakyReLU; D's layers and its residual skips."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: bool = True,
        down: bool = False,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.register_buffer("resample_filter", blur_filter(1), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        k = w.shape[-1]
        if self.down and k == 1:  # filter and decimate, then the 1×1 conv
            x = F.conv2d(downsample2d(x, self.resample_filter), w)
        elif self.down:  # filter (padded so that the stride-2 conv halves the size), then conv
            x = F.conv2d(blur(x, self.resample_filter, pad=(k + 1) // 2), w, stride=2)
        else:
            x = F.conv2d(x, w, padding=self.padding)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, self.activation, gain, clamp)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: bool = False,
    resample_filter: torch.Tensor | None = None,
    fused: bool = True,
) -> torch.Tensor:
    """StyleGAN2's convolution: the weight scaled per sample by ``styles`` [N, I] and, with
    ``demodulate``, divided by the norm of each output channel's scaled weight.

    ``fused``: one grouped convolution with a weight per sample (groups = N), as the reference
    does outside training; else the same arithmetic as activations × styles, a shared-weight
    convolution and × the demodulation coefficients (faster for large batches; the reference's
    training path). ``up``: a stride-2 transposed convolution followed by the filter.
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:  # pre-normalise so that fp16 cannot overflow
        weight = weight * (
            1 / math.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True)
        )
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    dcoefs = None
    if demodulate:  # Σᵢₖ (W·s)² = Σᵢ sᵢ² Σₖ W²: a matmul, not a weight per sample [N, O, I, k, k]
        with torch.autocast(x.device.type, enabled=False):  # in fp32 (or fp64), as before
            energy = at_least_fp32(styles).square() @ weight.square().sum(dim=[2, 3]).t()
        dcoefs = (energy + 1e-8).rsqrt()  # [N, O]
    if fused:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, O, I, k, k]
        if dcoefs is not None:
            w = w * dcoefs.reshape(n, -1, 1, 1, 1)
        x = x.reshape(1, -1, *x.shape[2:])
        if up:
            w = w.transpose(1, 2).reshape(n * in_ch, out_ch, kh, kw)
            x = F.conv_transpose2d(x, w.to(x.dtype), stride=2, groups=n)
        else:
            w = w.reshape(n * out_ch, in_ch, kh, kw)
            x = F.conv2d(x, w.to(x.dtype), padding=kh // 2, groups=n)
        x = x.reshape(n, -1, *x.shape[2:])
    else:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        if up:
            x = F.conv_transpose2d(x, weight.transpose(0, 1).to(x.dtype), stride=2)
        else:
            x = F.conv2d(x, weight.to(x.dtype), padding=kh // 2)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
    if up:  # 2H + 1 after the transposed conv; the padded filter brings it to 2H
        x = blur(x, resample_filter, pad=1, gain=4)
    return x
