"""Offline evaluation: the metric maths on known inputs, the same figures on 1 and 2 processes,
Inception weights that are missing or wrong are one line (never a download), `distgan eval`
reproduces what a run logged, and a 1-process run with evaluation trains like one without."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    ROOT,
    SHARDS,
    STEPS,
    TINY,
    assert_bit_identical,
    final_weights,
    launch_cmd,
    run,
)

from distgan.cli import main
from distgan.evaluation._features import FrechetSums, frechet_distance
from distgan.features import INCEPTION_ENV, INCEPTION_FILE


def test_frechet_distance_matches_the_closed_form_and_is_zero_for_one_set() -> None:
    # two Gaussians with diagonal covariances: ‖μ₁ − μ₂‖² + Σ (σ₁ + σ₂ − 2√(σ₁σ₂))
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, 0.0, 1.0])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 1.0])
    closed = ((mu1 - mu2) ** 2).sum() + (var1 + var2 - 2 * np.sqrt(var1 * var2)).sum()
    value = frechet_distance(
        {"mu": mu1, "sigma": np.diag(var1)}, {"mu": mu2, "sigma": np.diag(var2)}
    )
    assert value == pytest.approx(closed, rel=1e-6)
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sums = FrechetSums(8, torch.device("cpu"))
    for part in x.split(77):  # streamed in uneven batches = computed at once
        sums.add(part)
    stats = sums.statistics(lambda t: t)
    np.testing.assert_allclose(stats["sigma"], np.cov(x.numpy(), rowvar=False), rtol=1e-10)
    assert abs(frechet_distance(stats, stats)) < 1e-6


def test_kid_of_one_distribution_is_zero_within_its_std_and_is_of_uniform_logits_is_one() -> None:
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 1500, 16, generator=generator, dtype=torch.float64)
    kid = kid_features_to_metric(a, b, kid_subset_size=500, rng_seed=2020, verbose=False)
    assert abs(kid["kernel_inception_distance_mean"]) <= kid["kernel_inception_distance_std"]
    shifted = kid_features_to_metric(a, b + 1, kid_subset_size=500, verbose=False)
    assert shifted["kernel_inception_distance_mean"] > 10 * shifted["kernel_inception_distance_std"]
    score = isc_features_to_metric(torch.zeros(100, 1008, dtype=torch.float64), splits=10)
    assert score["inception_score_mean"] == pytest.approx(1.0, abs=1e-12)


def test_held_out_blocks_and_their_noise_do_not_depend_on_the_number_of_processes() -> None:
    """The protocol deals blocks of eval.batch_size samples to the ranks in turn; each block's
    noise generator depends on train.seed and the block alone."""
    from distgan.evaluation import protocol
    from distgan.recipe import load_recipe

    cfg = load_recipe("digits-cdcgan", [f"data.shards={SHARDS}", "eval.batch_size=7"])
    cpu = torch.device("cpu")

    def blocks(world: int) -> dict[int, tuple[list[int], torch.Tensor]]:
        dealt = {}
        for rank in range(world):
            for batch in protocol.held_out(cfg, 40, 7, rank, world):
                noise = torch.randn(3, generator=protocol.noise(cfg, batch, cpu))
                dealt[int(batch["index"][0])] = (batch["index"].tolist(), noise, batch["key"])
        return dealt

    one = blocks(1)
    assert [i for first in sorted(one) for i in one[first][0]] == list(range(40))
    for world in (2, 3):
        other = blocks(world)
        assert other.keys() == one.keys()
        for first, (places, noise, keys) in other.items():
            assert places == one[first][0] and keys == one[first][2]
            assert torch.equal(noise, one[first][1])
    assert not torch.equal(one[0][1], one[7][1])


@pytest.mark.slow
def test_two_processes_give_the_figures_of_one(tmp_path: Path) -> None:
    script = str(ROOT / "tests" / "eval_ranks_check.py")
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    run([sys.executable, script, str(one)], env={"OMP_NUM_THREADS": "1"})  # as each rank
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    config = str(ROOT / "launch" / "cpu-2proc.yaml")
    run([accelerate, "launch", "--config_file", config, script, str(two)])
    single, double = json.loads(one.read_text()), json.loads(two.read_text())
    assert single.keys() == double.keys() >= {"eval/fid", "eval/kid", "eval/precision"}
    for key, value in single.items():
        assert double[key] == pytest.approx(value, rel=1e-6, abs=1e-12), key
    assert single["eval/fid"] > 0


def test_missing_or_wrong_inception_weights_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch.hub

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    wrong = tmp_path / INCEPTION_FILE
    wrong.write_bytes(b"not the weights")
    from distgan.features import inception_path

    for given, needle in (
        (None, f"need its weights file {INCEPTION_FILE}"),
        (str(tmp_path / "absent.pth"), "do not exist"),
        (str(wrong), "its sha256 is"),
    ):
        with pytest.raises(Exception, match=needle) as info:
            inception_path(given)
        assert info.value.exit_code == 2 and "\n" not in str(info.value)


@pytest.mark.slow
def test_distgan_eval_reproduces_the_logged_figures(
    trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tiny digits-cdcgan of the shared 2-process launch evaluated itself at its last step
    (the recipe's `digits` metric); `distgan eval` on 2 processes gives the same numbers, and on
    1 process too: each held-out sample's noise depends on the seed and its place, not the rank."""
    run_dir = trained[0] / "digits-cdcgan"
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "eval/digits_accuracy" in r][-1]
    assert logged["step"] == STEPS
    proc = run(launch_cmd(2, "eval", "--ckpt", str(run_dir), "--json"))
    figures = json.loads(proc.stdout)
    assert figures["digits_accuracy"] == logged["eval/digits_accuracy"]
    assert figures["digits_fd"] == logged["eval/digits_fd"]
    assert figures["protocol"]["processes"] == 2 and figures["protocol"]["n"] == 1000
    assert "train.seed" in figures["protocol"]["seeding"]
    written = json.loads((run_dir / "eval" / f"step-{STEPS:08d}.json").read_text())
    assert written["figures"]["digits_fd"] == figures["digits_fd"]
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(run_dir), "--json"]) == 0  # 1 process, in this one
    single = json.loads(capsys.readouterr().out)
    assert single["protocol"]["processes"] == 1
    for key in ("digits_accuracy", "digits_fd"):
        assert single[key] == pytest.approx(figures[key], rel=1e-7, abs=1e-12), key
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    code = main(["eval", "--ckpt", str(run_dir), "--metrics", "fid", "--inception", "/absent"])
    assert code == 2


@pytest.mark.slow
def test_one_process_with_evaluation_trains_like_one_without(tmp_path: Path) -> None:
    common = ["train", "digits-cdcgan", *TINY, "train.steps=8", "train.checkpoint_every=8"]
    common += ["log.wandb=disabled", "eval.n=30", "eval.batch_size=8"]
    plain, evaluated = tmp_path / "plain", tmp_path / "evaluated"
    run(launch_cmd(1, *common, f"run.dir={plain}", "eval.every=0"))
    extra = ["eval.every=3", "eval.metrics=[digits,fid,kid,pr]", "eval.extractor=random"]
    run(launch_cmd(1, *common, f"run.dir={evaluated}", *extra))
    assert_bit_identical(final_weights(plain, 8), final_weights(evaluated, 8))
    rows = [json.loads(x) for x in (evaluated / "metrics.jsonl").read_text().splitlines()]
    figures = [r for r in rows if "eval/fid" in r]
    assert [r["step"] for r in figures] == [3, 6, 8]
    assert all(math.isfinite(r["eval/kid"]) and r["eval/fid"] > 0 for r in figures)


@pytest.mark.skipif(
    not os.environ.get(INCEPTION_ENV), reason=f"set {INCEPTION_ENV} to the Inception weights file"
)
def test_inception_fid_equals_torch_fidelity(tmp_path: Path) -> None:
    """With the real weights: distgan's FID of two sets of 1,000 images equals torch-fidelity's
    own end-to-end computation on the same PNG files within 1e-3."""
    import torch_fidelity
    from PIL import Image

    from distgan.data.info import DatasetInfo
    from distgan.evaluation import build_evaluators
    from distgan.families import build_family
    from distgan.recipe import load_recipe

    generator = torch.Generator().manual_seed(0)
    sets = {
        "real": torch.randint(0, 256, (1000, 3, 32, 32), dtype=torch.uint8, generator=generator),
        "fake": (torch.rand(1000, 3, 32, 32, generator=generator) * 200).to(torch.uint8),
    }
    for name, images in sets.items():
        (tmp_path / name).mkdir()
        for i, image in enumerate(images):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / name / f"{i:04d}.png")
    cfg = load_recipe("cifar10-dcgan", ["eval.metrics=[fid]"])
    family = build_family(cfg, {"": DatasetInfo(32, 3, [], 1000)})
    (evaluator,) = build_evaluators(cfg, family, torch.device("cpu"))
    for start in range(0, 1000, 100):
        part = {k: v[start : start + 100].float() / 127.5 - 1 for k, v in sets.items()}
        evaluator.update(part["fake"], part["real"], {})
    ours = evaluator.finish(lambda t: t)["eval/fid"]
    theirs = torch_fidelity.calculate_metrics(
        input1=str(tmp_path / "fake"),
        input2=str(tmp_path / "real"),
        fid=True,
        feature_extractor_weights_path=os.environ[INCEPTION_ENV],
        verbose=False,
    )["frechet_inception_distance"]
    assert ours == pytest.approx(theirs, rel=1e-3)


@pytest.mark.slow
def test_reference_statistics_are_cached_next_to_the_shards(
    trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`distgan eval ref` caches the real images' statistics; `distgan eval` then reads them (the
    figures are those of a fresh computation, and change if the cache is tampered with)."""
    import shutil

    shards = tmp_path / "digits"
    shutil.copytree(ROOT / "shards" / "digits", shards)
    ckpt = str(trained[0] / "digits-cdcgan")
    common = ["--ckpt", ckpt, "--shards", str(shards), "--n", "101", "--extractor", "random"]
    assert main(["eval", "ref", *common]) == 0
    (cached,) = (shards / ".distgan-reference").glob("random-*-n101.npz")

    def evaluate(metrics: str) -> dict:
        capsys.readouterr()
        assert main(["eval", *common, "--metrics", metrics, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    from_cache = evaluate("fid,kid,pr")
    cached.unlink()
    fresh = evaluate("fid,kid,pr")  # computed afresh, and cached again
    assert cached.is_file()
    for key in ("fid", "kid", "precision", "recall"):
        assert fresh[key] == pytest.approx(from_cache[key], rel=1e-9, abs=1e-12), key
    with np.load(cached) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["sums"][1:] *= 2  # tampered: another reference
    np.savez(cached, **arrays)
    assert evaluate("fid")["fid"] != pytest.approx(fresh["fid"], rel=1e-3)
