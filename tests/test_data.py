"""The embedded shards and the resumable stream."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from conftest import SHARDS

from distgan.data.loader import ResumableLoader
from distgan.data.sources import digits
from distgan.data.stream import ShardStream


def test_digits_conversion_reproduces_the_committed_shards(tmp_path: Path) -> None:
    manifest = digits.convert(argparse.Namespace(out=str(tmp_path), size=32, shards=8))
    committed = json.loads((SHARDS / "manifest.json").read_text())
    assert manifest["total"] == 1797 and len(manifest["shards"]) == 8
    assert manifest["class_names"] == [str(d) for d in range(10)]
    assert [s["sha256"] for s in manifest["shards"]] == [s["sha256"] for s in committed["shards"]]
    for shard in committed["shards"]:
        assert (tmp_path / shard["file"]).read_bytes() == (SHARDS / shard["file"]).read_bytes()


def take(loader: ResumableLoader, n: int) -> list[tuple[int, dict]]:
    """``n`` batches, each with the logical worker it came from."""
    out = []
    for _ in range(n):
        worker = loader.next_worker
        out.append((worker, next(loader)))
    return out


def make_loader(rank: int = 0, world: int = 1, workers: int = 2, batch: int = 16, seed: int = 5):
    stream = ShardStream(
        SHARDS, batch_size=batch, seed=seed, rank=rank, world_size=world, num_workers=workers
    )
    return ResumableLoader(stream, workers)


def test_two_ranks_two_workers_partition_every_epoch() -> None:
    """Per epoch, the 2 × 2 workers read disjoint shards that together hold every sample."""
    seen: list[str] = []
    for rank in range(2):
        loader = make_loader(rank=rank, world=2, workers=2, batch=1)
        per_worker = [loader.stream.batches_in_epoch(0, w) for w in range(2)]
        got: dict[int, list[str]] = {0: [], 1: []}
        while any(len(got[w]) < per_worker[w] for w in range(2)):
            worker, batch = take(loader, 1)[0]
            if len(got[worker]) < per_worker[worker]:
                got[worker].extend(batch["key"])
        seen += got[0] + got[1]
    assert len(seen) == 1797
    assert len(set(seen)) == 1797


def test_stream_is_deterministic_and_seed_dependent() -> None:
    a = [b["key"] for _, b in take(make_loader(seed=1), 4)]
    b = [b["key"] for _, b in take(make_loader(seed=1), 4)]
    c = [b["key"] for _, b in take(make_loader(seed=2), 4)]
    assert a == b and a != c


@pytest.mark.parametrize("consumed", [3, 60])  # mid-epoch, and past an epoch boundary
def test_restored_position_yields_exactly_the_remaining_batches(consumed: int) -> None:
    uninterrupted = make_loader()
    take(uninterrupted, consumed)
    state = uninterrupted.state_dict()
    expected = take(uninterrupted, 9)

    resumed = make_loader()
    resumed.load_state_dict(state)
    got = take(resumed, 9)
    for (w_exp, b_exp), (w_got, b_got) in zip(expected, got, strict=True):
        assert w_exp == w_got
        assert b_exp["key"] == b_got["key"]
        assert torch.equal(b_exp["image"], b_got["image"])
        assert torch.equal(b_exp["label"], b_got["label"])


def test_batches_are_images_in_range_with_labels() -> None:
    _, batch = take(make_loader(workers=0 + 2, batch=8), 1)[0]
    assert batch["image"].shape == (8, 1, 32, 32) and batch["image"].dtype == torch.float32
    assert -1.0 <= batch["image"].min() < batch["image"].max() <= 1.0
    assert batch["label"].dtype == torch.long and 0 <= batch["label"].min() <= 9
    # the label stored with each key matches the source data set
    from sklearn.datasets import load_digits

    targets = load_digits().target
    for key, label in zip(batch["key"], batch["label"].tolist(), strict=True):
        assert targets[int(key.split("-")[1])] == label


@pytest.mark.parametrize("ranks", [16, 32])
def test_the_digits_serve_16_and_32_ranks_in_epoch_mode(ranks: int) -> None:
    """The README's 8 GPUs × 2 workers and 4 nodes × 8 GPUs (× 2 workers) on the 8 digit
    shards: every rank × worker reads a disjoint, non-empty part; the epoch holds each sample
    once (issue: the start-up check used to refuse both)."""
    parts = [
        [s["__key__"] for s in make_loader(rank, ranks, 2).stream.epoch_samples(0, worker)]
        for rank in range(ranks)
        for worker in range(2)
    ]
    keys = [key for part in parts for key in part]
    total = json.loads((SHARDS / "manifest.json").read_text())["total"]
    assert all(parts) and len(keys) == len(set(keys)) == total
