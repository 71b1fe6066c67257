"""The DCGAN family whose first evaluation fails on rank 1 only (tests/test_reliability_eval.py):
a fault in one rank's part of an evaluation, as a LinAlgError in an evaluator or a rank without
samples once were. The ranks must agree that it failed (none left in a collective), log one line
and train on; the checkpoint of that step is written before it."""

from __future__ import annotations

import numpy as np
import torch

from distgan.families.base import Batch, Nets
from distgan.families.dcgan import DCGAN


class FlakyEval(DCGAN):
    calls = 0  # sample() calls in this process

    def sample(
        self, nets: Nets, n: int, generator: torch.Generator, batch: Batch | None = None
    ) -> torch.Tensor:
        FlakyEval.calls += 1
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        if rank == 1 and FlakyEval.calls == 1:
            raise np.linalg.LinAlgError("injected: SVD did not converge")
        return super().sample(nets, n, generator, batch)


FAMILY = FlakyEval
