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
from distgan.evaluation import _reference as reference
from distgan.evaluation import protocol
from distgan.evaluation._features import FrechetSums, frechet_distance, gather_in_order, to_uint8
from distgan.evaluation.base import Evaluator
from distgan.families.base import Batch
from distgan.features import get_extractor

METRICS = ("fid", "kid", "is", "pr")
# the fewest samples each figure is defined on: a covariance (n − 1), KID's unbiased kernel
# means over pairs, IS's 10 splits, the 3rd neighbour of each sample other than itself
MIN_SAMPLES = {"fid": 2, "kid": 2, "is": 10, "pr": 4}
SEED = 2020  # torch-fidelity's default for KID subsets and the IS shuffle


class Reference:
    """The real images' side: their Fréchet sums and (KID/PR) features in held-out order, read
    from the cache next to the shards (``read_cache``) or computed from this pass, then cached."""

    def __init__(self, cfg, extractor, keep_features: bool, read_cache: bool = True) -> None:
        self.extractor, self.keep_features = extractor, keep_features
        self.sums = FrechetSums(extractor.dim, extractor.device)  # (a rank may get no sample)
        self.features, self.places = [], []
        self.cache_file, self.cached = None, None
        self.saved = False  # (rank 0) whether statistics() wrote the cache
        shards = protocol.shards_of(cfg)
        if isinstance(shards, str):  # (named streams: no cache)
            selection = protocol.reference_selection(cfg, shards)
            tag = selection.tag() if selection else ""
            self.cache_file = reference.cache_path(shards, extractor, cfg, cfg.eval.n, tag)
        if self.cache_file is not None and read_cache:
            self.cached = reference.load(self.cache_file, keep_features)
        if not all_ranks(self.cached is not None):  # (ranks on machines that do not share it)
            self.cached = None

    def add(self, references: torch.Tensor, places: torch.Tensor) -> None:
        """The real images of a held-out batch (``places``: the batch's ``index``)."""
        real = self.extractor(to_uint8(references))["features"]
        self.sums.add(real)
        if self.keep_features:
            self.features.append(real.cpu())
            self.places.append(places.cpu())

    def statistics(self, reduce: Callable) -> tuple[dict, torch.Tensor | None]:
        """The Fréchet statistics and (KID/PR) features over all ranks: from the cache, else from
        this pass, then cached (rank 0)."""
        if self.cached is not None:
            sums = FrechetSums.from_sums(self.cached["sums"])
            features = self.cached.get("features")
            return sums.statistics(lambda t: t), (
                torch.from_numpy(features) if features is not None else None
            )
        dim = self.sums.dim
        features = gather_in_order(self.features, self.places, dim) if self.keep_features else None
        reduced = FrechetSums.from_sums(reduce(self.sums.sums.clone()).cpu().numpy())
        if self.cache_file is not None and is_main_process():
            arrays = features.numpy() if features is not None else None
            self.saved = reference.save(self.cache_file, reduced.sums.numpy(), arrays)
        return reduced.statistics(lambda t: t), features


class Fidelity(Evaluator):
    def __init__(self, cfg, family, device: torch.device, metrics: list[str]) -> None:
        super().__init__(cfg, family, device)
        e = cfg.eval
        self.metrics = metrics
        self.extractor = get_extractor(e.extractor, device, family.data.channels, e.weights)
        if "is" in metrics and not self.extractor.has_logits:
            raise ConfigError("eval.metrics 'is' needs eval.extractor=inception (class logits)")
        self.keep_features = "kid" in metrics or "pr" in metrics
        self.real = Reference(cfg, self.extractor, self.keep_features)
        self.fake_sums = FrechetSums(self.extractor.dim, device)  # (a rank may get no sample)
        self.fake, self.logits, self.places = [], [], []  # places: rows' held-out order

    def update(self, outputs: torch.Tensor, references: torch.Tensor, batch: Batch) -> None:
        fake = self.extractor(to_uint8(outputs))
        self.fake_sums.add(fake["features"])
        places = protocol.sample_indices(batch).cpu()
        self.places.append(places)
        if self.keep_features:
            self.fake.append(fake["features"].cpu())
        if "is" in self.metrics:
            self.logits.append(fake["logits"].cpu())
        if self.real.cached is None:
            self.real.add(references, places)

    def finish(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        from torch_fidelity.metric_isc import isc_features_to_metric
        from torch_fidelity.metric_kid import kid_features_to_metric
        from torch_fidelity.metric_prc import prc_features_to_metric

        real_stats, real = self.real.statistics(reduce)
        out: dict[str, float] = {}
        if "fid" in self.metrics:
            out["eval/fid"] = frechet_distance(self.fake_sums.statistics(reduce), real_stats)
        if self.keep_features:
            fake = gather_in_order(self.fake, self.places, self.fake_sums.dim)
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
            logits = gather_in_order(self.logits, self.places, self.extractor.logits)
            score = isc_features_to_metric(logits, splits=10, shuffle=True, rng_seed=SEED)
            out["eval/is"] = score["inception_score_mean"]
            out["eval/is_std"] = score["inception_score_std"]
        return out


def all_ranks(flag: bool) -> bool:
    """True only if ``flag`` is true on every rank (a collective)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    value = torch.tensor([int(flag)])
    if torch.distributed.get_backend() != "gloo":
        value = value.cuda()
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
    return bool(value.item())


def is_main_process() -> bool:
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return not distributed or torch.distributed.get_rank() == 0


EVALUATOR = Fidelity
