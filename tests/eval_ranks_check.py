"""FID/KID/PR of fixed images on 1 or N processes (tests only): blocks of BLOCK samples go to the
ranks in turn, each with its samples' places, as the evaluation protocol deals held-out samples
(distgan/evaluation/protocol.py); prints the figures as JSON.

    python tests/eval_ranks_check.py OUT.json              (1 process)
    accelerate launch --config_file launch/cpu-2proc.yaml tests/eval_ranks_check.py OUT.json
"""

from __future__ import annotations

import json
import sys

import torch

from distgan.data.info import DatasetInfo
from distgan.engine.runtime import process_accelerator
from distgan.evaluation import build_evaluators
from distgan.evaluation.base import all_reduce_sum
from distgan.families import build_family
from distgan.recipe import load_recipe

N_IMAGES = 601  # odd (the ranks hold 320 and 281), more than the 512 features
BLOCK = 64


def images(kind: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1 if kind == "real" else 2)
    x = torch.rand(N_IMAGES, 3, 16, 16, generator=generator) * 2 - 1
    return x * (0.5 if kind == "fake" else 1.0)


def main(out: str) -> None:
    state = process_accelerator(collective_timeout=120)
    cfg = load_recipe("cifar10-dcgan", ["eval.extractor=random", "eval.metrics=[fid,kid,pr]"])
    family = build_family(cfg, {"": DatasetInfo(16, 3, [], N_IMAGES)})
    (evaluator,) = build_evaluators(cfg, family, torch.device("cpu"))
    rank, world = state.process_index, state.num_processes
    real, fake = images("real"), images("fake")
    for start in range(rank * BLOCK, N_IMAGES, world * BLOCK):  # several batches per rank
        block = slice(start, start + BLOCK)
        index = torch.arange(N_IMAGES)[block]
        evaluator.update(fake[block], real[block], {"index": index})
    figures = evaluator.finish(all_reduce_sum)
    if state.is_main_process:
        with open(out, "w") as f:
            json.dump(figures, f)


if __name__ == "__main__":
    main(sys.argv[1])
    from distgan.cli import exit_before_finalizing

    exit_before_finalizing(0)  # (a gloo rank may abort in interpreter finalization: cli.py)
