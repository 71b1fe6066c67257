"""The shipped digits classifier as a judge (``eval.metrics: [digits]``):

* ``eval/digits_accuracy``: the share of outputs the classifier reads as the class they were
  conditioned on (class-conditional models; the held-out batch's labels);
* ``eval/digits_fd``: the Fréchet distance between outputs and held-out digits in the
  classifier's 128-d feature space.

Works on a fresh clone (the weights ship with distgan); for 32×32 gray digits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from distgan.evaluation._features import FrechetSums, frechet_distance, to_uint8
from distgan.evaluation.base import Evaluator
from distgan.families.base import Batch
from distgan.features import DigitsExtractor

METRICS = ("digits",)
MIN_SAMPLES = {"digits": 2}  # digits_fd: a covariance (n − 1)


class Digits(Evaluator):
    def __init__(self, cfg, family, device: torch.device, metrics: list[str]) -> None:
        super().__init__(cfg, family, device)
        self.extractor = DigitsExtractor(device)
        self.conditional = family.num_classes > 0
        self.fake = FrechetSums(128, device)
        self.real = FrechetSums(128, device)
        self.correct = torch.zeros(2, dtype=torch.float64, device=device)  # right, judged

    def update(self, outputs: torch.Tensor, references: torch.Tensor, batch: Batch) -> None:
        fake = self.extractor(to_uint8(outputs))
        self.fake.add(fake["features"])
        self.real.add(self.extractor(to_uint8(references))["features"])
        if self.conditional:
            labels = batch["label"][: outputs.shape[0]].to(self.device)
            self.correct[0] += (fake["logits"].argmax(1) == labels).sum()
            self.correct[1] += labels.shape[0]

    def finish(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        out = {
            "eval/digits_fd": frechet_distance(
                self.fake.statistics(reduce), self.real.statistics(reduce)
            )
        }
        if self.conditional:
            correct = reduce(self.correct.clone())
            out["eval/digits_accuracy"] = (correct[0] / correct[1].clamp_min(1)).item()
        return out


EVALUATOR = Digits
