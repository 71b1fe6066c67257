"""Fixed training subsets (``data.subset``, ``data.exclude``) on the committed digits: the same
samples for any seed, ranks, workers and resume, each once per epoch; stratified by class; the
evaluation's reference is the complement; bad values are one line."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from conftest import SHARDS, TINY

from distgan.cli import main
from distgan.data.loader import ResumableLoader
from distgan.data.shards import read_manifest
from distgan.data.stream import ShardStream
from distgan.data.subset import Selection, choose, quotas, read_index
from distgan.engine.resume_checks import differences
from distgan.errors import ConfigError
from distgan.evaluation import protocol
from distgan.recipe import load_recipe

LABELS = {s.key: s.label for shard in read_index(SHARDS, read_manifest(SHARDS)) for s in shard}


def subset(n: int | None, seed: int = 0, exclude: tuple[str, ...] = ()) -> frozenset[str]:
    index = read_index(SHARDS, read_manifest(SHARDS))
    return choose(index, Selection(n, seed, exclude), SHARDS)


def epoch_keys(selection: Selection, world: int, workers: int, seed: int, epoch: int) -> list:
    """Every key the ranks' workers read in ``epoch`` (the streams' raw samples)."""
    keys = []
    for rank in range(world):
        stream = ShardStream(
            SHARDS,
            batch_size=8,
            seed=seed,
            rank=rank,
            world_size=world,
            num_workers=workers,
            selection=selection,
        )
        for worker in range(workers):
            assert stream.samples_in_epoch(epoch, worker) > 0  # no worker without samples
            keys += [raw["__key__"] for raw in stream.epoch_samples(epoch, worker)]
    return keys


@pytest.mark.parametrize(("n", "world", "workers", "seed"), [(100, 1, 1, 0), (100, 2, 2, 7)])
def test_an_epoch_reads_exactly_the_subset_once_for_any_ranks_workers_and_seed(
    n: int, world: int, workers: int, seed: int
) -> None:
    """100 of 1797 digits over 8 shards, read by 1 × 1 or 2 ranks × 2 workers with another
    train.seed: the same 100 keys, each once per epoch (also the next epoch)."""
    expected = subset(n)
    for epoch in (0, 1):
        keys = epoch_keys(Selection(n), world, workers, seed, epoch)
        assert len(keys) == n and set(keys) == expected


def test_batches_of_a_tiny_subset_flow_on_every_rank_and_resume_exactly() -> None:
    """A subset of 10 (most shards hold none of it) over 2 ranks × 2 workers: every worker
    yields full batches across epochs of only subset keys, in epoch and resampled mode; a
    restored position gives exactly the batches that followed."""
    chosen = subset(10)
    for mode in ("epoch", "resampled"):
        for rank in range(2):
            loader = make_loader(rank, mode)
            keys = [key for _ in range(12) for key in next(loader)["key"]]
            assert set(keys) <= chosen and len(keys) == 12 * 4
    loader = make_loader(1, "epoch")
    for _ in range(5):
        next(loader)
    state = loader.state_dict()
    expected = [next(loader)["key"] for _ in range(6)]
    resumed = make_loader(1, "epoch")
    resumed.load_state_dict(state)
    assert [next(resumed)["key"] for _ in range(6)] == expected
    other = ResumableLoader(
        ShardStream(SHARDS, batch_size=4, seed=3, rank=1, world_size=2, num_workers=2), 0
    )
    other.load_state_dict(state)  # another subset: the position is not taken over
    assert other.positions == [(0, 0), (0, 0)]


def make_loader(rank: int, mode: str) -> ResumableLoader:
    stream = ShardStream(
        SHARDS,
        batch_size=4,
        seed=3,
        rank=rank,
        world_size=2,
        num_workers=2,
        mode=mode,
        selection=Selection(10),
    )
    return ResumableLoader(stream, 0)


def test_stratified_counts_the_remainder_rule_and_subset_seed() -> None:
    assert collections.Counter(LABELS[k] for k in subset(100)) == dict.fromkeys(range(10), 10)
    counts = collections.Counter(LABELS[k] for k in subset(105))
    assert [counts[c] for c in range(10)] == [11] * 5 + [10] * 5  # the first classes get one more
    assert quotas({0: 2, 1: 50, 2: 50}, 30) == {0: 2, 1: 14, 2: 14}  # a small class gives all
    assert subset(100, seed=1) != subset(100) and len(subset(100, seed=1)) == 100
    assert subset(100) == subset(100)
    left_out = sorted(subset(100))[:3]
    without = subset(100, exclude=tuple(left_out))
    assert not without & set(left_out) and len(without) == 100


def test_the_evaluation_reference_is_the_complement_and_says_so() -> None:
    """Reference on the training shards: the 1697 digits not in data.subset=100 (no overlap),
    recorded in the evaluation's protocol; data.exclude alone: the excluded keys are the
    reference; eval.shards elsewhere: unchanged."""
    cfg = load_recipe("digits-cdcgan", [f"data.shards={SHARDS}", "data.subset=100"])
    keys = [k for b in protocol.held_out(cfg, 5000, 500) for k in b["key"]]
    assert len(keys) == len(set(keys)) == 1697 and not set(keys) & subset(100)
    recorded = protocol.describe(cfg, 1, 500)
    assert "1697 samples not in data.subset=100" in recorded["reference"]
    assert recorded["reference_is_training_data"] is False
    left_out = sorted(LABELS)[:2]
    cfg = load_recipe("digits-cdcgan", [f"data.shards={SHARDS}", f"data.exclude={left_out}"])
    assert sorted(k for b in protocol.held_out(cfg, 100, 50) for k in b["key"]) == left_out
    assert epoch_keys(Selection.of(cfg.data), 1, 1, 0, 0).count(left_out[0]) == 0
    cfg.eval.shards = str(SHARDS / ".." / "digits")  # the same folder, spelt otherwise
    assert len([k for b in protocol.held_out(cfg, 100, 50) for k in b["key"]]) == 2
    old = load_recipe("digits-cdcgan", [f"data.shards={SHARDS}"]).model_dump(mode="json")
    new = load_recipe("digits-cdcgan", [f"data.shards={SHARDS}", "data.subset=100"])
    assert list(differences(old, new.model_dump(mode="json"))) == ["data.subset"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.subset=5000", "data.subset=5000 is more than the 1797 samples of"),
        ("data.subset=5", "data.subset=5 is fewer than the 10 classes of"),
        ("data.exclude=[nokey]", "data.exclude names 'nokey', which is no sample key of"),
    ],
)
def test_bad_subsets_are_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, message: str
) -> None:
    argv = ["train", "digits-cdcgan", *TINY, "log.wandb=disabled", f"run.dir={tmp_path}/run"]
    assert main([*argv, "train.steps=1", override]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("distgan: error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    with pytest.raises(ConfigError, match="not named streams"):
        load_recipe("digits-cdcgan", ["data.shards={A: x, B: y}", "data.subset=10"])
