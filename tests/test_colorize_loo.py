"""Leave-one-photo-out for the colorization demo: the fold's shards and the bench's verdict."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import _COLORIZE, distgan_cmd, run
from PIL import Image

from distgan.bench.colorize_loo import verdict
from distgan.cli import main
from distgan.data.shards import iter_samples
from distgan.data.sources.photos import PHOTOS, load_photo, tiles


def _samples(folder: Path) -> dict[str, np.ndarray]:
    """key → RGB pixels of every sample in a shard folder."""
    return {
        s["__key__"]: np.asarray(Image.open(io.BytesIO(s["png"])))
        for shard in sorted(folder.glob("shard-*.tar"))
        for s in iter_samples(shard)
    }


def test_verdict_needs_gray_or_better_ab_and_half_to_all_of_the_real_colourfulness() -> None:
    fold = {"ab_l1": 0.10, "ab_l1_gray": 0.12, "colorfulness": 30.0, "colorfulness_real": 40.0}
    assert verdict(fold)
    assert not verdict({**fold, "colorfulness": 0.0})  # a gray model
    assert not verdict({**fold, "colorfulness": 19.9})  # under half the real photo's
    assert not verdict({**fold, "colorfulness": 40.1})  # more colour than the photo has
    assert not verdict({**fold, "ab_l1": 0.1201})  # worse than leaving it gray
    assert verdict({**fold, "ab_l1": 0.12, "colorfulness": 20.0})  # the bounds are inclusive


def test_a_fold_leaves_its_photo_out_of_training_and_the_bench_judges_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tiny fold run as users run it: the held-out photo's tiles are the whole test set and
    appear in no training crop; the table, its verdicts and the picture are written; --force
    trains again from scratch."""
    pytest.importorskip("skimage", reason="scikit-image holds the photos")
    held_out = "hubble_deep_field"
    tiny = [*_COLORIZE, "train.steps=2", "train.batch_size=8", "data.shuffle_buffer=8"]
    tiny += ["log.every=1", "train.checkpoint_every=2"]
    argv = ["bench", "colorize-loo", "--photos", held_out, "--crops", "3", "--out", str(tmp_path)]
    run(distgan_cmd(*argv, *tiny))

    shards = tmp_path / held_out / "shards"
    train, test = _samples(shards / "train"), _samples(shards / "test")
    assert {key.split("-train-")[0] for key in train} == set(PHOTOS) - {held_out}
    assert len(train) == 6 * 3
    expected = tiles(load_photo(held_out), 32)  # 4 rows × 5 columns (the last one flush)
    assert len(test) == len(expected) == 20 and all(k.startswith(held_out) for k in test)
    assert all((test[k] == t).all() for k, t in zip(sorted(test), expected, strict=True))
    assert not any((crop == t).all() for crop in train.values() for t in expected)
    manifest = json.loads((shards / "train" / "manifest.json").read_text())
    assert manifest["leave_out"] == held_out

    results = json.loads((tmp_path / "colorize-loo.json").read_text())
    figures = results[held_out]
    assert figures["passed"] == verdict(figures)
    assert figures["ab_l1_gray"] > 0 and figures["colorfulness_real"] > 0
    table = (tmp_path / "colorize-loo.md").read_text()
    assert f"| {held_out} |" in table and ("yes" if figures["passed"] else "NO") in table
    with Image.open(tmp_path / "colorize-loo.png") as picture:  # gray | model | real
        assert picture.height == 128 and picture.width == 3 * 147 + 2 * 4
    # the same --out again replaces nothing without --force: one line, exit 2, before any work
    assert main([*argv, *tiny]) == 2
    assert "--force" in capsys.readouterr().err
    # with --force the fold trains afresh: the run already there is never resumed
    assert main([*argv, "--force", *tiny]) == 0
    assert "resumed from" not in (tmp_path / held_out / "train.log").read_text()
