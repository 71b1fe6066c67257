"""Building blocks shared by the families: spectral norm, self-attention (SAGAN), conditional
BatchNorm, "same"-padded strided convolutions, and a dropout that is fast on CPUs."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def sn(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Spectral normalisation (Miyato et al., 2018): W / σ_max(W), σ_max estimated by one power
    iteration per training-mode forward pass (the u, v vectors are buffers, so they are
    checkpointed, copied to the EMA and kept equal on all ranks)."""
    return spectral_norm(module) if enabled else module


def sigma_max(module: nn.Module) -> float:
    """The largest singular value of a layer's (effective) weight, as a matrix out × rest."""
    weight = module.weight.detach()
    if isinstance(module, nn.ConvTranspose2d):
        weight = weight.transpose(0, 1)
    return torch.linalg.matrix_norm(weight.flatten(1), ord=2).item()


def same_padding(kernel_size: int, stride: int = 2) -> tuple[int, int]:
    """(padding, output_padding) so that a stride-2 conv halves and a transposed conv doubles
    the size (Keras' padding="same"); kernel sizes divisible by the stride avoid checkerboards."""
    if stride != 2:
        raise ValueError("same_padding is written for stride 2")
    padding = (kernel_size - 1) // 2
    return padding, 2 + 2 * padding - kernel_size


class SelfAttention(nn.Module):
    """SAGAN's self-attention block (Zhang et al., 2019).

    θ, φ (1×1 convs to C/8) give the attention map softmaxₖ(θ(x)ᵢ·φ(x)ₖ) over all N = H·W
    positions; g (1×1 conv to C/2) gives the values and o (1×1 conv) maps them back to C. The
    output is x + γ·o(attention) with γ initialised at 0, so the block starts as the identity and
    the network learns how much non-local evidence to use.
    """

    def __init__(self, channels: int, spectral_norm: bool = True) -> None:
        super().__init__()
        if channels < 8:
            raise ValueError(f"self-attention needs at least 8 channels, not {channels}")
        key, value = channels // 8, channels // 2
        self.theta = sn(nn.Conv2d(channels, key, 1, bias=False), spectral_norm)
        self.phi = sn(nn.Conv2d(channels, key, 1, bias=False), spectral_norm)
        self.g = sn(nn.Conv2d(channels, value, 1, bias=False), spectral_norm)
        self.o = sn(nn.Conv2d(value, channels, 1, bias=False), spectral_norm)
        self.gamma = nn.Parameter(torch.zeros(1))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map, B × N (queries) × N (keys); each row sums to 1."""
        theta = self.theta(x).flatten(2)  # B × C/8 × N
        phi = self.phi(x).flatten(2)
        return torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        values = self.g(x).flatten(2)  # B × C/2 × N
        out = (values @ self.attention(x).transpose(1, 2)).view(b, -1, h, w)
        return x + self.gamma * self.o(out)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose scale and shift are looked up per class (de Vries et al., 2017), as in
    the class-conditional generators of SNGAN/SAGAN/BigGAN. Starts as plain BatchNorm."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.scale = nn.Embedding(num_classes, num_features)
        self.shift = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        h = self.bn(x)
        return self.scale(label)[:, :, None, None] * h + self.shift(label)[:, :, None, None]


class Norm2d(nn.Module):
    """BatchNorm, or conditional BatchNorm when ``num_classes`` > 0 (same call signature)."""

    def __init__(self, num_features: int, num_classes: int = 0) -> None:
        super().__init__()
        self.norm = (
            ConditionalBatchNorm2d(num_features, num_classes)
            if num_classes
            else nn.BatchNorm2d(num_features)
        )

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(self.norm, ConditionalBatchNorm2d):
            if label is None:
                raise ValueError("this generator is class-conditional: pass a label")
            return self.norm(x, label)
        return self.norm(x)


def projection(
    logit: torch.Tensor, features: torch.Tensor, embed: nn.Module | None, label: torch.Tensor | None
) -> torch.Tensor:
    """Projection discriminator (Miyato & Koyama, 2018): logit + ⟨embed(y), φ(x)⟩."""
    if embed is None:
        return logit
    if label is None:
        raise ValueError("this discriminator is class-conditional: pass a label")
    return logit + (embed(label) * features).sum(dim=1)


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same scaling; the drop rate rounded to 1/65536) with a cheaper mask on
    CPUs, where ``bernoulli_`` has no vectorised kernel and one random number per element is
    the cost: each 64-bit random draw gives four 16-bit uniform lanes, one per element (its
    timings: README, "Training speed", cheaper dropout masks). GPUs keep the fused kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        keep = uniform_int16(x.shape, x.device) >= round(self.p * 65536) - 32768
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))


def uniform_int16(shape: torch.Size, device: torch.device) -> torch.Tensor:
    """Uniform int16 numbers of ``shape`` from the global generator, four per 64-bit draw."""
    n = shape.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    bits.random_(-(2**63), 2**63 - 1)  # the whole 64-bit range (less one value in 2⁶⁴)
    return bits.view(torch.int16)[:n].view(shape)


def activation(slope: float) -> nn.Module:
    """LeakyReLU(slope), ReLU for slope 0. Critics that take a gradient penalty use
    double_backward.LeakyReLU instead (cheap second derivatives)."""
    return nn.LeakyReLU(slope) if slope > 0 else nn.ReLU()


def output_layer(kind: str) -> list[nn.Module]:
    """The generator's last activation: ``tanh`` (images in [-1, 1]) or ``linear``."""
    if kind not in ("tanh", "linear"):
        raise ValueError(f"output must be tanh or linear, not {kind!r}")
    return [nn.Tanh()] if kind == "tanh" else []


def upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def init_args(local_vars: dict[str, Any]) -> dict[str, Any]:
    """A network's constructor arguments, i.e. its hyper-parameters: call ``init_args(locals())``
    first thing in ``__init__`` and keep the result in ``self.hparams`` (used by export).
    Tuples become lists, so the result is plain JSON."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in local_vars.items()
        if key not in ("self", "__class__")
    }
