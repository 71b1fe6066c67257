"""What the feature-space evaluators share: images → uint8, Fréchet statistics accumulated as
(n, Σx, Σxxᵀ) in float64 and summed over the ranks (no sample lost or counted twice for any N),
and features gathered from every rank back into the held-out order (each batch carries its
samples' places), so figures that subsample (KID, IS) are the same for any number of ranks.
The metric maths are torch-fidelity's."""

from __future__ import annotations

from collections.abc import Callable

import torch


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] → uint8 (how images are stored and what the extractors read)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class FrechetSums:
    """n, Σx and Σxxᵀ of features, in float64."""

    def __init__(self, dim: int, device: torch.device) -> None:
        self.sums = torch.zeros(1 + dim + dim * dim, dtype=torch.float64, device=device)
        self.dim = dim

    @classmethod
    def from_sums(cls, sums) -> FrechetSums:
        """Summed statistics (a tensor or array laid out as ``sums``), e.g. from a cache."""
        sums = torch.as_tensor(sums, dtype=torch.float64)
        out = cls(int(round((4 * (len(sums) - 1) + 1) ** 0.5 - 1) // 2), sums.device)
        out.sums = sums.clone()
        return out

    def add(self, features: torch.Tensor) -> None:
        x = features.to(self.sums)
        self.sums[0] += x.shape[0]
        self.sums[1 : 1 + self.dim] += x.sum(0)
        self.sums[1 + self.dim :] += (x.t() @ x).flatten()

    def statistics(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict:
        """{"mu", "sigma"} (numpy, the unbiased covariance as np.cov) over all ranks."""
        sums = reduce(self.sums.clone()).cpu()
        n, d = sums[0], self.dim
        mu = sums[1 : 1 + d] / n
        sigma = (sums[1 + d :].view(d, d) - n * torch.outer(mu, mu)) / (n - 1)
        return {"mu": mu.numpy(), "sigma": sigma.numpy(), "n": int(n)}


def frechet_distance(a: dict, b: dict) -> float:
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    return fid_statistics_to_metric(a, b, verbose=False)["frechet_inception_distance"]


def gather_in_order(
    parts: list[torch.Tensor], places: list[torch.Tensor], dim: int
) -> torch.Tensor:
    """This rank's rows, and their ``places`` in the held-out order (each batch's ``index``),
    from every rank, sorted back into the held-out order, on the CPU (float64)."""
    rows = torch.cat(parts).double() if parts else torch.zeros(0, dim, dtype=torch.float64)
    where = torch.cat(places).double() if places else torch.zeros(0, dtype=torch.float64)
    mine = torch.cat([where.to(rows.device)[:, None], rows], 1)  # (exact below 2**53)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        mine = _all_gather_rows(mine)
    return mine[mine[:, 0].argsort()][:, 1:].cpu()


def collective_device() -> torch.device:
    """Where this process's collectives take their tensors: the CPU under gloo, this process's
    GPU under NCCL (which cannot move CPU tensors, wherever the rows were kept)."""
    if torch.distributed.get_backend() == "gloo":
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def _all_gather_rows(mine: torch.Tensor) -> torch.Tensor:
    """Every rank's rows (any number each), concatenated."""
    world = torch.distributed.get_world_size()
    device = collective_device()
    count = torch.tensor([mine.shape[0]], device=device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    torch.distributed.all_gather(counts, count)
    most = int(max(c.item() for c in counts))
    padded = torch.zeros(most, mine.shape[1], dtype=torch.float64, device=device)
    padded[: mine.shape[0]] = mine.to(device)
    gathered = [torch.zeros_like(padded) for _ in range(world)]
    torch.distributed.all_gather(gathered, padded)
    return torch.cat([rows[: int(c.item())] for rows, c in zip(gathered, counts, strict=True)])
