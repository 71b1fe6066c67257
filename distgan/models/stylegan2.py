"""StyleGAN2's generator (Karras et al. 2020, config F as in stylegan2-ada-pytorch): a mapping
network z (+ label) → w, and a synthesis network from a learned constant 4×4 input through
modulated/demodulated 3×3 convolutions with per-layer noise, summing RGB outputs upsampled from
every resolution ("skip" architecture).

Hooks for the tools: ``G.mapping(z, c)`` → ws [N, num_ws, w_dim] (with ``truncation``) and
``G.synthesis(ws, noise_mode)`` → images; ``noise_mode`` is ``"const"`` (the layers' fixed
noise buffers: one image per w), ``"random"`` (``noise``: one tensor [N, 1, r, r] per layer, as
``noise_shapes`` lists; drawn here from the global RNG if not given) or ``"none"``.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from distgan.models.stylegan2_ops import (
    FullyConnected,
    at_least_fp32,
    bias_act,
    blur_filter,
    modulated_conv2d,
    normalize_2nd_moment,
    upsample2d,
)

NOISE_MODES = ("const", "random", "none")


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    """The reference's widths: channel_base / resolution, at most channel_max."""
    return min(channel_base // resolution, channel_max)


class MappingNetwork(nn.Module):
    """z (normalised) and an embedded, normalised label → w through ``num_layers`` LeakyReLU
    layers with lr multiplier 0.01. ``w_avg`` tracks the mean w (decay 0.995) in training, per
    class in a conditional model (the centre that class-aware truncation pulls towards)."""

    def __init__(
        self,
        z_dim: int,
        num_classes: int,
        w_dim: int,
        num_layers: int,
        track_w_avg: bool = True,
        lr_multiplier: float = 0.01,
        w_avg_beta: float = 0.995,
    ) -> None:
        super().__init__()
        self.z_dim, self.num_classes, self.w_dim = z_dim, num_classes, w_dim
        self.w_avg_beta = w_avg_beta
        embed = w_dim if num_classes else 0
        features = [z_dim + embed] + [w_dim] * num_layers
        self.embed = FullyConnected(num_classes, embed) if num_classes else None
        self.layers = nn.ModuleList(
            FullyConnected(a, b, activation=True, lr_multiplier=lr_multiplier)
            for a, b in itertools.pairwise(features)
        )
        if track_w_avg:
            self.register_buffer("w_avg", torch.zeros(max(num_classes, 1), w_dim))

    def forward(
        self,
        z: torch.Tensor | None,
        labels: torch.Tensor | None,
        truncation: float = 1.0,
        update_w_avg: bool = False,
    ) -> torch.Tensor:
        parts = []
        if self.z_dim:
            parts.append(normalize_2nd_moment(at_least_fp32(z)))
        if self.num_classes:
            one_hot = self._one_hot(labels, self.embed.weight.dtype)
            parts.append(normalize_2nd_moment(self.embed(one_hot)))
        x = torch.cat(parts, dim=1)
        for layer in self.layers:
            x = layer(x)
        if update_w_avg:
            self._track(x.detach().to(self.w_avg.dtype), labels)
        if truncation != 1:
            centre = self.w_avg[labels.long()] if self.num_classes else self.w_avg[0]
            x = torch.lerp(centre.to(x.dtype), x, truncation)
        return x

    def _one_hot(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Labels as one-hot rows (a comparison, not F.one_hot: no data-dependent check)."""
        classes = torch.arange(self.num_classes, device=labels.device)
        return (labels.long()[:, None] == classes).to(dtype)

    @torch.no_grad()
    def _track(self, w: torch.Tensor, labels: torch.Tensor | None) -> None:
        if not self.num_classes:
            self.w_avg.copy_(torch.lerp(w.mean(0, keepdim=True), self.w_avg, self.w_avg_beta))
            return
        one_hot = self._one_hot(labels, w.dtype)  # [N, C]
        counts = one_hot.sum(0)
        means = (one_hot.t() @ w) / counts.clamp(min=1)[:, None]
        updated = torch.lerp(means, self.w_avg, self.w_avg_beta)
        self.w_avg.copy_(torch.where(counts[:, None] > 0, updated, self.w_avg))


class SynthesisLayer(nn.Module):
    """Modulated 3×3 conv (optionally ×2 up), noise with a learned strength, bias, LeakyReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        up: bool = False,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", blur_filter(1), persistent=False)

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: str,
        noise: torch.Tensor | None,
        fused: bool,
        gain: float = 1.0,
    ) -> torch.Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(
            x, self.weight, styles, up=self.up, resample_filter=self.resample_filter, fused=fused
        )
        if noise_mode == "random":
            if noise is None:
                noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device)
            x = x + (noise * self.noise_strength).to(x.dtype)
        elif noise_mode == "const":
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, gain=gain, clamp=clamp)


class ToRGB(nn.Module):
    """Modulated 1×1 conv to the image channels (no demodulation), bias, clamp."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None
    ) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused)
        return bias_act(x, self.bias, activation=False, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (constant input | ×2 up conv), conv, and its RGB output added to the
    upsampled image of the blocks before."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        conv_clamp: float | None,
    ) -> None:
        super().__init__()
        self.first = in_channels == 0
        if self.first:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, w_dim, resolution, up=True, conv_clamp=conv_clamp
            )
        self.conv1 = SynthesisLayer(
            out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp
        )
        self.torgb = ToRGB(out_channels, img_channels, w_dim, conv_clamp)
        self.num_conv = 1 if self.first else 2
        self.register_buffer("resample_filter", blur_filter(1), persistent=False)

    def layers(self) -> list[SynthesisLayer]:
        return [self.conv1] if self.first else [self.conv0, self.conv1]

    def forward(self, x, img, ws, noise_mode, noises, fused):
        ws = ws.unbind(dim=1)
        if self.first:
            x = self.const.unsqueeze(0).expand(ws[0].shape[0], -1, -1, -1)
        for layer, w, noise in zip(self.layers(), ws, noises, strict=False):
            x = layer(x.to(w.dtype) if self.first else x, w, noise_mode, noise, fused)
        rgb = at_least_fp32(self.torgb(x, ws[-1], fused))
        img = rgb if img is None else upsample2d(img, self.resample_filter) + rgb
        return x, img


class SynthesisNetwork(nn.Module):
    """Blocks from 4×4 to ``resolution``; ``num_ws`` w vectors (one per conv, plus the last
    RGB output's), each block reading its convs' and its RGB output's."""

    def __init__(
        self,
        w_dim: int,
        resolution: int,
        img_channels: int,
        channel_base: int,
        channel_max: int,
        conv_clamp: float | None,
    ) -> None:
        super().__init__()
        log2 = int(math.log2(resolution))
        if resolution < 4 or 2**log2 != resolution:
            raise ValueError(f"StyleGAN2 needs a power-of-two resolution ≥ 4, not {resolution}")
        self.w_dim, self.resolution = w_dim, resolution
        self.resolutions = [2**i for i in range(2, log2 + 1)]
        self.blocks = nn.ModuleList()
        for res in self.resolutions:
            in_ch = channels_at(res // 2, channel_base, channel_max) if res > 4 else 0
            out_ch = channels_at(res, channel_base, channel_max)
            self.blocks.append(SynthesisBlock(in_ch, out_ch, w_dim, res, img_channels, conv_clamp))
        self.num_ws = sum(b.num_conv for b in self.blocks) + 1

    def noise_shapes(self) -> list[int]:
        """The side of each noise input, in the order ``forward``'s ``noise`` lists them."""
        return [layer.resolution for b in self.blocks for layer in b.layers()]

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: str = "const",
        noise: list[torch.Tensor] | None = None,
        fused: bool | None = None,
    ) -> torch.Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode {noise_mode!r}: use one of {', '.join(NOISE_MODES)}")
        if fused is None:  # the reference's choice: per-sample weights outside training
            fused = not self.training
        noises = iter(noise or [])
        x = img = None
        start = 0
        for block in self.blocks:
            block_ws = ws.narrow(1, start, block.num_conv + 1)
            start += block.num_conv
            block_noise = [next(noises, None) for _ in range(block.num_conv)]
            x, img = block(x, img, block_ws, noise_mode, block_noise, fused)
        return img


class StyleGAN2Generator(nn.Module):
    """``forward(z, labels)``: images with constant noise (for sampling). Training passes
    ``noise`` (random noise inputs), ``mix`` ((z₂, cutoff): style mixing, the ws from layer
    ``cutoff`` on come from z₂) and ``return_ws`` (the path-length penalty's ∂img/∂ws)."""

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        resolution: int,
        channels: int,
        num_classes: int = 0,
        map_layers: int = 8,
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = 256,
        mapping_lr: float = 0.01,
    ) -> None:
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        self.synthesis = SynthesisNetwork(
            w_dim, resolution, channels, channel_base, channel_max, conv_clamp
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim, num_classes, w_dim, map_layers, lr_multiplier=mapping_lr
        )

    def ws(
        self,
        z: torch.Tensor,
        labels: torch.Tensor | None = None,
        truncation: float = 1.0,
        update_w_avg: bool = False,
    ) -> torch.Tensor:
        """The mapping's w broadcast to every layer: [N, num_ws, w_dim]."""
        w = self.mapping(z, labels, truncation, update_w_avg)
        return w.unsqueeze(1).expand(-1, self.num_ws, -1)

    def forward(
        self,
        z: torch.Tensor,
        labels: torch.Tensor | None = None,
        noise: list[torch.Tensor] | None = None,
        mix: tuple[torch.Tensor, torch.Tensor] | None = None,
        return_ws: bool = False,
        update_w_avg: bool = False,
    ):
        ws = self.ws(z, labels, update_w_avg=update_w_avg)
        if mix is not None:  # a 0-d cutoff tensor (num_ws: no mixing), so no host sync
            z2, cutoff = mix
            layer = torch.arange(self.num_ws, device=ws.device)
            ws = torch.where((layer < cutoff)[None, :, None], ws, self.ws(z2, labels))
        img = self.synthesis(ws, "random" if noise is not None else "const", noise)
        return (img, ws) if return_ws else img
