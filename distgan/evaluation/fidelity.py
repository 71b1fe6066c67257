"""FID, KID, IS and precision/recall in one pass (``eval.metrics: [fid, kid, is, pr]``): the
features of the outputs and of the held-out images come from ``eval.extractor`` (Inception from
the local weights file, or the seeded random network), once per batch for all four.

* ``eval/fid``: Fréchet distance of the two feature Gaussians (Heusel et al., 2017);
* ``eval/kid`` ± ``eval/kid_std``: KID, 100 subsets of min(1000, N), cubic polynomial kernel
  (Bińkowski et al., 2018);
* ``eval/is`` ± ``eval/is_std``: Inception Score of the outputs, 10 splits (Inception only);
* ``eval/precision``, ``eval/recall``: k-NN manifolds with k = 3 (Kynkäänniemi et al., 2019).

The maths are torch-fidelity's (metric_fid/kid/isc/prc), seeded; the numbers depend on the
extractor, N and the reference images, recorded with them by ``distgan eval``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from distgan.errors import ConfigError
from distgan.evaluation._features import FrechetSums, frechet_distance, gather_in_order, to_uint8
from distgan.evaluation.base import Evaluator
from distgan.families.base import Batch
from distgan.features import get_extractor

METRICS = ("fid", "kid", "is", "pr")
SEED = 2020  # torch-fidelity's default for KID subsets and the IS shuffle


class Fidelity(Evaluator):
    def __init__(self, family, device: torch.device, metrics: list[str]) -> None:
        super().__init__(family, device)
        cfg = family.cfg.eval
        self.metrics = metrics
        self.extractor = get_extractor(cfg.extractor, device, family.data.channels, cfg.weights)
        if "is" in metrics and not self.extractor.has_logits:
            raise ConfigError("eval.metrics 'is' needs eval.extractor=inception (class logits)")
        self.fake_sums: FrechetSums | None = None
        self.real_sums: FrechetSums | None = None
        self.fake, self.real, self.logits = [], [], []

    def update(self, outputs: torch.Tensor, references: torch.Tensor, batch: Batch) -> None:
        fake = self.extractor(to_uint8(outputs))
        real = self.extractor(to_uint8(references))
        if self.fake_sums is None:
            dim = fake["features"].shape[1]
            self.fake_sums, self.real_sums = (
                FrechetSums(dim, self.device),
                FrechetSums(dim, self.device),
            )
        self.fake_sums.add(fake["features"])
        self.real_sums.add(real["features"])
        if "kid" in self.metrics or "pr" in self.metrics:
            self.fake.append(fake["features"].cpu())
            self.real.append(real["features"].cpu())
        if "is" in self.metrics:
            self.logits.append(fake["logits"].cpu())

    def finish(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        from torch_fidelity.metric_isc import isc_features_to_metric
        from torch_fidelity.metric_kid import kid_features_to_metric
        from torch_fidelity.metric_prc import prc_features_to_metric

        out: dict[str, float] = {}
        if "fid" in self.metrics:
            out["eval/fid"] = frechet_distance(
                self.fake_sums.statistics(reduce), self.real_sums.statistics(reduce)
            )
        dim = self.fake_sums.dim
        if "kid" in self.metrics or "pr" in self.metrics:
            fake, real = gather_in_order(self.fake, dim), gather_in_order(self.real, dim)
            if "kid" in self.metrics:
                size = min(1000, len(fake), len(real))
                kid = kid_features_to_metric(
                    fake, real, kid_subset_size=size, rng_seed=SEED, verbose=False
                )
                out["eval/kid"] = kid["kernel_inception_distance_mean"]
                out["eval/kid_std"] = kid["kernel_inception_distance_std"]
            if "pr" in self.metrics:
                pr = prc_features_to_metric(fake, real, verbose=False, save_cpu_ram=True)
                out["eval/precision"], out["eval/recall"] = pr["precision"], pr["recall"]
        if "is" in self.metrics:
            logits = gather_in_order(self.logits, self.logits[0].shape[1])
            score = isc_features_to_metric(logits, splits=10, shuffle=True, rng_seed=SEED)
            out["eval/is"] = score["inception_score_mean"]
            out["eval/is_std"] = score["inception_score_std"]
        return out


EVALUATOR = Fidelity
