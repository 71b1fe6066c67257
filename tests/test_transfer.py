"""Transfer learning (issue 24, acceptance 7): ``init.from`` starts a new lineage from another
run's weights, ``init.freeze_d`` keeps D's first blocks bit-identical (FreezeD, also under DDP
with 2 processes), a requeued transfer run continues from its own checkpoint, and a checkpoint
that does not fit is one line naming the tensors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import (
    SHARDS,
    STEPS,
    TINY,
    TRANSFER_STEPS,
    assert_bit_identical,
    distgan_cmd,
    final_weights,
    run_and_kill_after,
)

from distgan.cli import main
from distgan.families.dcgan import DCGAN
from distgan.models.dcgan import DCGANDiscriminator

STEPS_HERE = 6
COMMON = ["log.wandb=disabled", "train.precision=no", "data.num_workers=1", "train.seed=5"]


def train_argv(run_dir: Path, *extra: str) -> list[str]:
    return ["train", "digits-cdcgan", *TINY, *COMMON, f"run.dir={run_dir}", *extra]


def frozen_keys(k: int) -> set[str]:
    """The D tensors (parameters and BatchNorm statistics) of the first ``k`` input blocks of
    the tiny digits-cdcgan, as named in checkpoints."""
    d = DCGANDiscriminator(32, 1, 8, num_classes=10)
    inside = {id(m) for block in d.input_blocks()[:k] for m in block.modules()}
    return {
        f"D.{name}.{key}"
        for name, module in d.named_modules()
        if id(module) in inside
        for key in module.state_dict(keep_vars=True)
        if "." not in key and key != "num_batches_tracked"
    }


def compare(source: dict, transferred: dict, k: int) -> None:
    """The frozen blocks' tensors equal the source's; every other G and D tensor changed."""
    frozen = frozen_keys(k)
    assert len(frozen) == 6 and DCGAN.discriminators == ("D",)  # 2 convs, a BatchNorm
    for net in ("G", "D"):
        for key in source[net]:
            if not key.endswith("num_batches_tracked"):
                same = torch.equal(source[net][key], transferred[net][key])
                assert same == (f"{net}.{key}" in frozen), f"{net}.{key}: same {same}"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step digits-cdcgan run: the weights to transfer."""
    run_dir = tmp_path_factory.mktemp("source") / "run"
    assert main(train_argv(run_dir, "train.steps=2", "train.seed=1")) == 0
    return run_dir


def test_freeze_d_keeps_blocks_and_a_killed_transfer_run_continues(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    transfer = [f"train.steps={STEPS_HERE}", "train.checkpoint_every=2", f"init.from={source}"]
    transfer.append("init.freeze_d=2")
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    assert main(train_argv(reference, *transfer)) == 0
    origin = torch.load(source / "checkpoints" / "step-00000002.pt", weights_only=True)
    done = final_weights(reference, STEPS_HERE)
    compare(origin["networks"], done, k=2)
    state = torch.load(reference / "checkpoints" / f"step-{STEPS_HERE:08d}.pt", weights_only=True)
    assert state["parent"] is None and state["run_id"] != origin["run_id"]  # a new lineage
    assert state["init_from"]["run_id"] == origin["run_id"] and state["init_from"]["step"] == 2

    # killed after its first checkpoint, the same command again: it continues its own lineage
    first = interrupted / "checkpoints" / "step-00000002.pt"
    run_and_kill_after(distgan_cmd(*train_argv(interrupted, *transfer)), first)
    capsys.readouterr()
    assert main(train_argv(interrupted, *transfer)) == 0
    err = capsys.readouterr().err
    match = re.search(r"resumed from \S+ at step (\d+)", err)
    assert match and 2 <= int(match.group(1)) < STEPS_HERE, err[-3000:]
    assert "init.from is not used" in err
    assert_bit_identical(done, final_weights(interrupted, STEPS_HERE))
    resumed = torch.load(
        interrupted / "checkpoints" / f"step-{STEPS_HERE:08d}.pt", weights_only=True
    )
    assert resumed["init_from"] == state["init_from"] and resumed["run_id"] != state["run_id"]


def test_a_checkpoint_that_does_not_fit_is_one_line(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wider = train_argv(tmp_path / "wider", f"init.from={source}", "model.d_width=16")
    assert main([*wider, "train.steps=1"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(
        r"distgan: error: init\.from \S+step-00000002\.pt: D\.features\.0\.weight has shape "
        r"\[16,1,4,4\] here, \[8,1,4,4\] in the checkpoint; also \d+ more",
        line,
    ), line
    too_many = train_argv(tmp_path / "deep", f"init.from={source}", "init.freeze_d=4")
    assert main([*too_many, "train.steps=1"]) == 2
    assert "D has 3 blocks" in capsys.readouterr().err
    vae = ["train", "digits-vae", f"data.shards={SHARDS}", *COMMON, f"run.dir={tmp_path / 'vae'}"]
    assert main([*vae, f"init.from={source}", "train.steps=1"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        "(the checkpoint is of family 'dcgan', recipe 'digits-cdcgan'; this run's is 'vae')" in line
    )


@pytest.mark.slow
def test_freeze_d_under_ddp_with_2_processes(trained) -> None:
    """The transfer run of the shared 2-process launch (tests/conftest.py)."""
    root, log = trained
    assert f"trained digits-cdcgan in {root / 'transfer'}" in log
    assert f"step {TRANSFER_STEPS}: parameters identical on all 2 ranks" in log
    source = final_weights(root / "digits-cdcgan", STEPS)
    compare(source, final_weights(root / "transfer", TRANSFER_STEPS), k=2)
