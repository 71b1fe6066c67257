"""Exponential moving average of a network's weights (the generator used for samples)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(module: nn.Module) -> nn.Module:
    ema = copy.deepcopy(module).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, module: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·module for parameters; buffers (BatchNorm stats) copied."""
    ema_params = list(ema.parameters())
    params = [p.detach() for p in module.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), module.buffers(), strict=True):
        ema_buffer.copy_(buffer)
