"""How every trained network is wrapped in DDP (the trainer, ``distgan eval`` and ``distgan
bench`` alike): :func:`ddp_kwargs`, accelerate's kwargs handler for it.

* Never ``static_graph``: it silently gives wrong critic gradients with gradient penalties.
* No buffer sync before every forward pass (each one a collective, a point where the ranks wait
  for each other): BatchNorm statistics in train mode do not touch training, rank 0's are the
  ones checkpoints keep and evaluation broadcasts (runtime.broadcast_buffers), and spectral
  norm's power iteration evolves alike on every rank. PyTorch 2.13 renamed the switch
  ``forward_sync_buffers`` (``broadcast_buffers`` now warns on every run); accelerate 1.15's
  handler does not know the new name, so a subclass adds it where this PyTorch has it. As
  ``Accelerator(kwargs_handlers=…)`` accepts only accelerate's own handler classes, the handler
  is set as ``accelerator.ddp_handler``, the attribute ``prepare()`` reads. (The new switch
  also syncs buffers once at wrapping time, from rank 0: every rank starts from equal buffers.)
* Gradients live in DDP's buckets (no copy).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from accelerate.utils import DistributedDataParallelKwargs
from torch.nn.parallel import DistributedDataParallel


@dataclass
class _WithForwardSyncBuffers(DistributedDataParallelKwargs):
    forward_sync_buffers: bool | None = None  # DDP's default; only a set value is passed


def has_forward_sync_buffers() -> bool:
    return "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters


def ddp_kwargs() -> DistributedDataParallelKwargs:
    common = dict(static_graph=False, gradient_as_bucket_view=True)
    if has_forward_sync_buffers():
        return _WithForwardSyncBuffers(**common, forward_sync_buffers=False)
    return DistributedDataParallelKwargs(**common, broadcast_buffers=False)
