"""The family contract (distgan/families/base.py) beyond one G and one D: a family of the tests'
own (tests/plugins/toy_cycle.py) with two generators trained in one phase, two critics, named
streams, a per-rank image pool, a linear LR decay and a data-conditioned preview resumes
bit-exactly after SIGKILL with 2 processes; evaluation during training changes no weight."""

from __future__ import annotations

import json
import math
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import (
    TINY,
    assert_bit_identical,
    distgan_cmd,
    final_weights,
    launch_cmd,
    run,
    run_and_kill_after,
)
from PIL import Image
from wandb_reader import read_offline_run

from distgan import losses
from distgan.cli import main
from distgan.config import parse_config, read_recipe
from distgan.data.info import DatasetInfo
from distgan.data.shards import Sample, write_shards
from distgan.engine.parallel import DeepSpeedStrategy
from distgan.errors import ConfigError
from distgan.families import build_family, get_family
from distgan.families.base import Nets, Phase, check_phases
from distgan.recipe import load_recipe
from distgan.schedules import linear_decay

STEPS, EVERY, BASE_LR = 12, 4, 2e-3


def domain_shards(root: Path) -> dict[str, Path]:
    """Two unpaired domains of random 16 px RGB images, 8 shards of 6 each."""
    rng = np.random.default_rng(1)
    folders = {}
    for side, offset in (("A", 0), ("B", 128)):
        samples = [
            Sample(f"{side}{i:04d}", rng.integers(offset, offset + 128, (16, 16, 3), np.uint8))
            for i in range(48)
        ]
        meta = dict(source="synthetic", split="train", resolution=16, channels=3)
        folders[side] = root / side
        write_shards(samples, folders[side], samples_per_shard=6, meta=meta)
    return folders


def toy_recipe(path: Path, shards: dict[str, Path]) -> Path:
    optim = {"lr": BASE_LR, "betas": [0.5, 0.999], "decay_start": 0.5}
    recipe = {
        "name": "toy-cycle",
        "family": "plugins.toy_cycle",
        "data": {"shards": {k: str(v) for k, v in shards.items()}, "num_workers": 1},
        "train": {"steps": STEPS, "batch_size": 2, "seed": 3, "precision": "no"},
        "optim": {name: optim for name in ("G_AB", "G_BA", "D_A", "D_B")},
        "loss": {"cycle_weight": 10.0, "pool_size": 3},
        "log": {"every": 3, "sample_every": STEPS, "samples_per_class": 3, "wandb": "disabled"},
        "model": {"width": 8},
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.slow
def test_two_generator_family_resumes_bit_exactly_with_2_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = str(toy_recipe(tmp_path / "toy-cycle.yaml", domain_shards(tmp_path / "shards")))

    def args(run_dir: Path) -> list[str]:
        return ["train", recipe, f"run.dir={run_dir}", f"train.checkpoint_every={EVERY}"]

    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    ref = run(launch_cmd(2, *args(reference)))
    first = interrupted / "checkpoints" / f"step-{EVERY:08d}.pt"
    run_and_kill_after(launch_cmd(2, *args(interrupted)), first)
    resumed = run(launch_cmd(2, *args(interrupted)))
    match = re.search(r"resumed from \S+ at step (\d+)", resumed.stderr)
    assert match and EVERY <= int(match.group(1)) < STEPS, resumed.stderr[-3000:]
    assert f"step {STEPS}: parameters identical on all 2 ranks" in ref.stderr

    assert_bit_identical(final_weights(reference, STEPS), final_weights(interrupted, STEPS))
    states = [
        torch.load(d / "checkpoints" / f"step-{STEPS:08d}.pt", weights_only=True)
        for d in (reference, interrupted)
    ]
    # the family's own state: one image pool per domain and rank, full, equal after the resume
    pools = [[rank[side]["images"] for rank in s["family"] for side in "AB"] for s in states]
    assert [len(p) for p in pools[0]] == [3, 3, 3, 3]
    for a, b in zip(*pools, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(pools[0][0][0], pools[0][2][0])  # rank 0's pool ≠ rank 1's
    # the learning rate decayed linearly over the second half: its last step ran at step 11
    for state in states:
        for name in ("G_AB", "G_BA", "D_A", "D_B"):
            lr = state["optimizers"]["optimizers"][name]["param_groups"][0]["lr"]
            assert lr == pytest.approx(BASE_LR * linear_decay(STEPS - 1, STEPS, 0.5))
    assert linear_decay(STEPS - 1, STEPS, 0.5) == pytest.approx(1 / 6)
    # logged: every loss/* key of the family, also on the console line
    rows = [json.loads(x) for x in (reference / "metrics.jsonl").read_text().splitlines()]
    assert {"loss/G", "loss/cycle", "loss/D"} <= set(rows[-1])
    assert re.search(r"step 12 +D \S+ +G \S+ +cycle \S+", ref.stderr), ref.stderr[-2000:]
    # the preview from held-out data: rows A | A→B | A→B→A, 3 images each (16 px, padding 2)
    with Image.open(reference / "samples" / f"step-{STEPS:08d}.png") as grid:
        assert grid.size == (3 * 18 + 2, 3 * 18 + 2)

    # sampling translates held-out A images; a family without EMA samples its trained weights
    monkeypatch.setenv("DISTGAN_ALLOW_PLUGINS", "plugins.toy_cycle")  # (a checkpoint names it)
    ckpt = str(reference / "checkpoints" / f"step-{STEPS:08d}.pt")
    out = tmp_path / "ab.npz"
    assert main(["sample", "--ckpt", ckpt, "--n", "4", "--out", str(out)]) == 0
    assert np.load(out)["images"].shape == (4, 16, 16, 3)
    assert main(["sample", "--ckpt", ckpt, "--n", "4", "--weights", "raw", "--out", str(out)]) == 0
    assert main(["export", "--ckpt", ckpt, "--out", str(tmp_path / "g.safetensors")]) == 0


def test_asking_for_ema_weights_of_a_family_without_ema_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """(uses a checkpoint written by the 1-process engine, 2 steps)"""
    monkeypatch.setenv("DISTGAN_ALLOW_PLUGINS", "plugins.toy_cycle")
    recipe = str(toy_recipe(tmp_path / "toy.yaml", domain_shards(tmp_path / "shards")))
    run(distgan_cmd("train", recipe, f"run.dir={tmp_path / 'r'}", "train.steps=2"))
    ckpt = str(tmp_path / "r" / "checkpoints" / "step-00000002.pt")
    for argv in (
        ["sample", "--ckpt", ckpt, "--weights", "ema", "--out", str(tmp_path / "x.png")],
        ["export", "--ckpt", ckpt, "--weights", "ema", "--out", str(tmp_path / "x.safetensors")],
    ):
        assert main(argv) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert "keeps no EMA copy of G_AB, G_BA" in line and "--weights raw" in line
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_evaluation_changes_no_weight_and_is_logged(tmp_path: Path) -> None:
    """2 processes: the same run with and without evaluation every 5 steps (45 held-out
    samples: an odd count over 2 ranks; every metric, the random-network features for FID/KID/PR)
    ends bit-identical; the figures reach metrics.jsonl and the offline W&B run, and
    checkpoints/best.pt holds the state at the best class accuracy."""
    common = ["train", "digits-cdcgan", *TINY, "train.steps=20", "train.checkpoint_every=20"]
    common += ["train.precision=no", "log.wandb=offline"]
    plain, evaluated = tmp_path / "plain", tmp_path / "evaluated"
    run(launch_cmd(2, *common, f"run.dir={plain}", "eval.every=0"))
    metrics = ["eval.metrics=[moments,digits,fid,kid,pr]", "eval.extractor=random"]
    run(launch_cmd(2, *common, f"run.dir={evaluated}", "eval.every=5", "eval.n=45", *metrics))
    assert_bit_identical(final_weights(plain, 20), final_weights(evaluated, 20))

    rows = [json.loads(x) for x in (evaluated / "metrics.jsonl").read_text().splitlines()]
    figures = [r for r in rows if "eval/moments_distance" in r]
    assert [r["step"] for r in figures] == [5, 10, 15, 20]
    assert all(r["eval/images"] == 45 and r["eval/moments_distance"] > 0 for r in figures)
    for key in ("fid", "kid", "precision", "recall", "digits_fd", "digits_accuracy"):
        assert all(math.isfinite(r[f"eval/{key}"]) for r in figures), key
    best = torch.load(evaluated / "checkpoints" / "best.pt", weights_only=True)["best"]
    accuracy = {r["step"]: r["eval/digits_accuracy"] for r in figures}
    assert best["metric"] == "digits_accuracy" and best["value"] == max(accuracy.values())
    assert accuracy[best["step"]] == best["value"]
    (folder,) = list((evaluated / "wandb").glob("offline-run-*"))
    history = read_offline_run(folder)["history"]
    logged = [row["_step"] for row in history if "eval/moments_distance" in row]
    assert logged == [5, 10, 15, 20]


def test_deepspeed_refuses_a_phase_that_trains_two_networks() -> None:
    phases = [Phase("G", trains=("G_AB", "G_BA"), loss=lambda *a: None)]
    with pytest.raises(ConfigError, match="phase 'G' trains G_AB and G_BA with one loss"):
        DeepSpeedStrategy("unused.json", None, {}, {}, phases, batch_size=1, world_size=1)


def test_targets_broadcast_over_patch_outputs() -> None:
    """Per-sample targets over a PatchGAN map: B = 30 = the map's width must not broadcast
    along the width (the silent bug of (n,)-shaped targets)."""
    real, fake = torch.randn(30, 1, 30, 30), torch.randn(30, 1, 30, 30)
    targets = losses.d_targets(30, real.device, real_label=0.9)
    expected = 0.5 * ((real - 0.9) ** 2).mean() + 0.5 * (fake**2).mean()
    torch.testing.assert_close(losses.d_lsgan(real, fake, targets), expected)
    bce = losses.d_cross_entropy(real, fake, targets)
    torch.testing.assert_close(
        bce,
        torch.nn.functional.binary_cross_entropy_with_logits(real, torch.full_like(real, 0.9))
        + torch.nn.functional.softplus(fake).mean(),
    )
    with pytest.raises(ValueError, match="one target per sample"):
        losses.per_sample(torch.ones(4), torch.ones(30, 1, 30, 30))


def test_nets_wrapped_raw_and_names() -> None:
    plain, wrapped = torch.nn.Linear(2, 2), torch.nn.Identity()
    nets = Nets({"G": plain, "D": torch.nn.Linear(2, 1)}, {"G": wrapped})
    assert nets.G is wrapped and nets.raw("G") is plain and nets["D"] is nets.D
    with pytest.raises(AttributeError, match=r"no network named 'E' \(networks: G, D\)"):
        _ = nets.E


def test_a_phase_prepares_only_for_a_later_phase_that_trains_it() -> None:
    def loss(nets, batch, ctx):
        return torch.zeros(()), {}

    later = Phase("G", trains="G", loss=loss)
    check_phases([Phase("D", trains="D", loss=loss, prepares="G"), later])
    assert Phase("D", trains="D", loss=loss, prepares="G").live == ("D", "G")
    for phases in (
        [later, Phase("D", trains="D", loss=loss, prepares="G")],  # G trained before, not after
        [Phase("D", trains="D", loss=loss, prepares="G"), Phase("G", "G", loss, every=2)],
    ):
        with pytest.raises(ValueError, match="phase 'D' prepares 'G', but no later phase"):
            check_phases(phases)


def test_schedules_are_pure_functions_of_the_step() -> None:
    assert [linear_decay(s, 10, 1.0) for s in (0, 5, 10)] == [1.0, 1.0, 1.0]
    assert [linear_decay(s, 10, 0.5) for s in (0, 5, 6, 10)] == [1.0, 1.0, 0.8, 0.0]
    assert [linear_decay(s, 4) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["optim.E.lr=1e-3"], "optim.E: family 'dcgan' has no network 'E'; its networks: G, D"),
        (["optim.G.lrr=1"], "unknown key 'optim.G.lrr' (did you mean 'lr'?)"),
        (["loss.cycle_weight=3"], "unknown key 'loss.cycle_weight'"),
        (["data.shards={A: x, B: y}"], "data.shards: family 'dcgan' reads one folder"),
        (["eval.metrics=[fid9]"], "eval.metrics: unknown metric 'fid9'"),
        (["family=nosuch.module"], "family 'nosuch.module' cannot be imported"),
    ],
)
def test_contract_mistakes_are_one_line(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_recipe("digits-cdcgan", overrides)
    assert needle in str(err.value)


def test_a_family_is_built_from_its_checked_sections_and_the_run_facts() -> None:
    cfg = load_recipe("digits-cdcgan", ["model.z_dim=8", "train.steps=7"])
    labelled = {"": DatasetInfo(32, 1, [str(i) for i in range(10)], 100)}
    family = build_family(cfg, labelled)
    assert family.hp is cfg.model and family.loss_cfg is cfg.loss  # validated once, in the recipe
    assert (family.hp.z_dim, family.facts.steps, family.facts.recipe) == (8, 7, "digits-cdcgan")
    assert not hasattr(family, "cfg")
    assert family.num_classes == 10  # conditional: the shards' classes
    unconditional = load_recipe("digits-cdcgan", ["model.conditional=false"])
    assert build_family(unconditional, labelled).num_classes == 0
    with pytest.raises(TypeError, match="not checked"):  # a schema-only config
        build_family(parse_config(read_recipe("digits-cdcgan")), labelled)


def test_declared_needs_are_checked_when_the_family_is_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from plugins.toy_cycle import ToyCycle

    module = types.ModuleType("plugins.needy")
    monkeypatch.setitem(sys.modules, "plugins.needy", module)
    module.FAMILY = type("Needy", (ToyCycle,), {"needs": frozenset({"labels", "sample_batch"})})
    with pytest.raises(ConfigError, match="declares unknown needs labels; valid: sample_batch"):
        get_family("plugins.needy")
    module.FAMILY.needs = frozenset({"sample_batch"})
    with pytest.raises(ConfigError, match="needs 'sample_batch', so also 'preview_batch'"):
        get_family("plugins.needy")
    assert "paired_data" in get_family("pix2pix").needs
    assert get_family("vae").needs == {"preview_batch"} and not get_family("dcgan").needs
