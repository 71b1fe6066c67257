"""Bigger worlds and resumes on another world size, with real launches sharing their runs:

* a 4-process ``data.mode=epoch`` run, SIGKILLed after its mid-epoch checkpoint, resumed
  exactly by 4 processes, equal bit for bit to an uninterrupted run of two "nodes" × 2
  processes over the loopback (launch/multinode.yaml);
* the same checkpoint resumed by 2 processes, and that run's mid-catch-up checkpoint resumed
  by 4: the loaders' key logs ($DISTGAN_KEY_LOG) hold each sample of every epoch exactly once;
* the elastic restore of weights and optimizer states, in process.
"""

from __future__ import annotations

import collections
import logging
import sys
from pathlib import Path

import pytest
import torch
from conftest import (
    ROOT,
    STEPS,
    assert_bit_identical,
    final_weights,
    run,
    run_and_kill_after,
    run_nodes,
    tiny_recipe,
)

from distgan.data.info import DatasetInfo
from distgan.data.loader import KEY_LOG, ResumableLoader
from distgan.data.shards import iter_samples, read_manifest
from distgan.data.stream import ShardStream
from distgan.data.subset import Selection, read_spans, selected_shards
from distgan.engine import checkpoint
from distgan.engine.build import build_run
from distgan.engine.elastic import summed_tallies
from distgan.engine.runtime import process_accelerator
from distgan.families._image_pool import ImagePool
from distgan.recipe import load_recipe, recipe_from_dict

# 96 samples in 8 shards; 4 ranks × 2 workers × batch 5: a worker reads 12 samples an epoch, so
# batches straddle epochs and the workers of one rank are in different epochs at step 5
SETTINGS = [
    "train.batch_size=5",
    "train.checkpoint_every=5",
    "train.seed=5",
    "run.keep_last=20",
    "data.num_workers=2",
    "data.shuffle_buffer=8",
    "data.mode=epoch",
    "log.every=5",
    "log.sample_every=1000",
    "log.wandb=disabled",
    "eval.every=0",
    "optim.G.decay_start=1",  # nothing depends on train.steps: runs of other lengths compare
    "optim.D.decay_start=1",
]


def launch(processes: int, *args: str) -> list[str]:
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    config = str(ROOT / "launch" / "cpu-2proc.yaml")
    return [accelerate, "launch", "--config_file", config, "--num_processes", str(processes),
            "-m", "distgan", "train", "cifar10-dcgan", *args]  # fmt: skip


def key_counts(folder: Path, batches: int | None = None) -> collections.Counter:
    """(epoch, key) → times trained on, from a launch's key logs; ``batches``: only each
    rank's first ones (those before the checkpoint a later run resumed from)."""
    counts: collections.Counter = collections.Counter()
    for log in folder.glob("keys-rank*.tsv"):
        for line in log.read_text().splitlines():
            batch, epoch, key = line.split("\t")
            if batches is None or int(batch) < batches:
                counts[(int(epoch), key)] += 1
    return counts


def assert_each_sample_once(counts: collections.Counter, keys: list[str], epochs: int) -> None:
    for epoch in range(epochs):
        trained = sorted(k for (e, k), n in counts.items() if e == epoch for _ in range(n))
        assert trained == keys, f"epoch {epoch}: {len(trained)} keys trained, {len(keys)} exist"


@pytest.fixture(scope="module")
def killed(fixture_shards: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """A 4-process run SIGKILLed after its checkpoint at step 5: (its args, run folder, keys)."""
    root = tmp_path_factory.mktemp("elastic")
    args = [*tiny_recipe("cifar10-dcgan", fixture_shards), *SETTINGS]
    keys = root / "keys-4"
    keys.mkdir()
    run_dir = root / "four"
    checkpoint_5 = run_dir / "checkpoints" / "step-00000005.pt"
    cmd = launch(4, *args, "train.steps=1000", f"run.dir={run_dir}")
    run_and_kill_after(cmd, checkpoint_5, env={"DISTGAN_KEY_LOG": str(keys)})
    return args, run_dir, keys


@pytest.mark.slow
def test_4_processes_resume_exactly_after_sigkill_and_equal_2_nodes_of_2(
    killed, tmp_path: Path
) -> None:
    args, four, _ = killed
    resumed = tmp_path / "resumed"
    resume = f"resume={four / 'checkpoints' / 'step-00000005.pt'}"
    run(launch(4, *args, "train.steps=8", resume, f"run.dir={resumed}"))
    nodes = tmp_path / "nodes"
    out = run_nodes(
        "train", "cifar10-dcgan", *args, "train.steps=8", f"run.dir={nodes}", processes=4
    )
    assert "parameters identical on all 4 ranks" in out
    assert_bit_identical(final_weights(nodes, 8), final_weights(resumed, 8))


@pytest.mark.slow
def test_a_resume_on_another_world_size_trains_each_unseen_sample_once(
    killed, fixture_shards: dict[str, Path], tmp_path: Path
) -> None:
    args, four, keys_4 = killed
    folder = fixture_shards["s32"]
    keys = sorted(
        s["__key__"]
        for shard in read_manifest(folder)["shards"]
        for s in iter_samples(folder / shard["file"])
    )
    two, keys_2 = tmp_path / "two", tmp_path / "keys-2"
    keys_2.mkdir()
    # 4 → 2: step 5 → 25 ends the open epochs 0 and 1 and the next epoch 2 on every worker
    proc = run(
        launch(
            2,
            *args,
            "train.steps=25",
            f"resume={four / 'checkpoints' / 'step-00000005.pt'}",
            f"run.dir={two}",
        ),
        env={"DISTGAN_KEY_LOG": str(keys_2)},
    )
    assert "reads the unseen samples first (8 of epoch 0, 84 of epoch 1), then epoch 2" in (
        proc.stderr
    )
    assert "family 'dcgan' keeps no per-rank state" in proc.stderr
    before = key_counts(keys_4, batches=5)
    assert_each_sample_once(before + key_counts(keys_2), keys, epochs=3)
    # 2 → 4 from the 2-process run's checkpoint at step 10, while it is still catching up
    back, keys_back = tmp_path / "back", tmp_path / "keys-back"
    keys_back.mkdir()
    proc = run(
        launch(
            4,
            *args,
            "train.steps=18",
            f"resume={two / 'checkpoints' / 'step-00000010.pt'}",
            f"run.dir={back}",
        ),
        env={"DISTGAN_KEY_LOG": str(keys_back)},
    )
    assert "then epoch 2" in proc.stderr
    total = before + key_counts(keys_2, batches=5) + key_counts(keys_back)
    assert_each_sample_once(total, keys, epochs=3)


@pytest.mark.slow
def test_weights_and_optimizers_resume_exactly_on_another_world_size(
    killed, tmp_path: Path
) -> None:
    """The 4-process checkpoint restored by 1 process (no data: the accounting is above)."""
    args, four, _ = killed
    path = four / "checkpoints" / "step-00000005.pt"
    state = checkpoint.load(path)
    cfg = load_recipe("cifar10-dcgan", [*args, "train.steps=1000", f"run.dir={tmp_path}"])
    info = {name: DatasetInfo(**fields) for name, fields in state["data_info"].items()}
    run_ = build_run(cfg, process_accelerator(60), data_info=info)
    checkpoint.restore(run_, state, path)
    assert_bit_identical(
        {k: m.state_dict() for k, m in checkpoint.all_networks(run_).items()}, state["networks"]
    )
    mine, saved = run_.strategy.state_dict(), state["optimizers"]
    flat = [(a, b) for a, b in zip(_tensors(mine), _tensors(saved), strict=True)]
    assert flat and all(torch.equal(a, b) for a, b in flat)
    assert run_.step == 5


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for key in sorted(value, key=str) for t in _tensors(value[key])]
    if isinstance(value, list | tuple):
        return [t for item in value for t in _tensors(item)]
    return []


@pytest.mark.parametrize("workers", [(2, 2, 2), (2, 1, 3), "subset"])
def test_the_plan_deals_each_unseen_sample_once_in_process(
    fixture_shards: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers
) -> None:
    """The loaders alone (no launch), 4 ranks → 2 → 4, with the workers per rank changing too
    (and with data.subset=60): the key logs hold every (selected) sample once in each of the
    epochs they cover."""
    monkeypatch.setenv(KEY_LOG, str(tmp_path))
    folder = fixture_shards["s32"]
    selection = Selection(60) if workers == "subset" else None
    workers = (2, 2, 2) if workers == "subset" else workers
    keys = sorted(s["__key__"] for shard in read_manifest(folder)["shards"]
                  for s in iter_samples(folder / shard["file"]))  # fmt: skip
    if selection is not None:
        chosen = selected_shards(folder, read_manifest(folder), selection)
        keys = sorted(s["__key__"] for shard in chosen
                      for s in read_spans(folder / shard["file"], shard["spans"]))  # fmt: skip

    def loaders(world: int, num_workers: int) -> list[ResumableLoader]:
        return [ResumableLoader(ShardStream(folder, batch_size=5, seed=5, rank=rank,
                                            world_size=world, num_workers=num_workers,
                                            shuffle_buffer=8, selection=selection), 0)
                for rank in range(world)]  # fmt: skip

    def take(ranks: list[ResumableLoader], steps: int) -> list[dict]:
        for loader in ranks:
            for _ in range(steps):
                next(loader)
            loader.close()
        return [loader.state_dict() for loader in ranks]

    saved = take(loaders(4, workers[0]), 5)
    two = loaders(2, workers[1])
    for loader in two:
        loader.load_elastic(saved)
    saved = take(two, 5)
    four = loaders(4, workers[2])
    for loader in four:
        loader.load_elastic(saved)
    take(four, 20 if selection is None else 12)
    assert_each_sample_once(key_counts(tmp_path), keys, epochs=3)


def test_pending_tallies_of_the_old_ranks_are_summed_on_the_new_rank_0() -> None:
    values = [(2.0, 1.5), (3.0, 0.5), (1.0, 1.0)]  # three old ranks
    saved = [{"aug/hits": torch.tensor(h), "mean": torch.tensor(m)} for h, m in values]
    ranks = [summed_tallies(saved, rank, torch.device("cpu")) for rank in range(2)]
    assert {k: v.item() for k, v in ranks[0].items()} == {"aug/hits": 6.0, "mean": 3.0}
    assert {k: v.item() for k, v in ranks[1].items()} == {"aug/hits": 0.0, "mean": 0.0}


def test_image_pools_are_dealt_over_the_new_ranks_within_their_size() -> None:
    old = [{"images": [torch.full((1,), 10.0 * r + i) for i in range(3)]} for r in range(4)]
    new = [ImagePool.regroup(old, rank, 2, size=3)["images"] for rank in range(2)]
    assert [[t.item() for t in pool] for pool in new] == [[0, 20, 1], [10, 30, 11]]


def test_cyclegan_pools_of_2_ranks_are_regrouped_for_1(
    trained, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The shared 2-process CycleGAN run's checkpoint resumed by 1 process (in process): its
    pools hold both ranks' images in turns, and the console says so in one line."""
    path = trained[0] / "horse2zebra-cyclegan" / "checkpoints" / f"step-{STEPS:08d}.pt"
    state = checkpoint.load(path)
    saved = state["config"]
    cfg = recipe_from_dict({**saved, "run": {**saved["run"], "dir": str(tmp_path)}})
    info = {name: DatasetInfo(**fields) for name, fields in state["data_info"].items()}
    run_ = build_run(cfg, process_accelerator(60), data_info=info)
    with caplog.at_level(logging.WARNING, logger="distgan"):
        checkpoint.restore(run_, state, path)
    assert "per-rank state (A, B) of 2 ranks is redistributed over 1 ranks" in caplog.text
    for side in "AB":
        pools = [state["family"][rank][side]["images"] for rank in range(2)]
        turns = [image for pair in zip(*pools, strict=True) for image in pair]
        mine = run_.family.state_dict()[side]["images"]
        assert len(mine) == run_.family.pools[side].size == 3
        assert all(torch.equal(a, b) for a, b in zip(mine, turns, strict=False))
