"""The README's launch commands at the world size they name: 8 processes (gloo on this CPU
machine, standing in for 8 GPUs) launched for real with `launch/1node-gpus.yaml`, each recipe
with its own data settings (loader workers, epoch mode) on shard folders the size of a small
real one. The 16- and 32-rank start-up checks are unit tests (tests/test_data.py)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TINY_RECIPES, run

EVALUATED = ["photos-colorize", "facades-pix2pix", "horse2zebra-cyclegan"]  # their eval.shards
RECIPES = ["digits-cdcgan", "photos-colorize", "cifar10-horse-dcgan", "facades-pix2pix",
           "horse2zebra-cyclegan"]  # fmt: skip
SMALL = [
    "train.batch_size=2",
    "train.steps=2",
    "train.checkpoint_every=2",
    "log.every=1",
    "log.sample_every=2",
    "log.samples_per_class=2",
    "log.wandb=disabled",
    "eval.n=16",
    "eval.batch_size=2",
]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory, fixture_shards) -> dict[str, Path]:
    """The fixtures of conftest plus facades and horse2zebra with 16 images: more samples than
    8 ranks × 2 loader workers (the embedded digits and photos are the recipes' own)."""
    import formats

    from distgan.cli import build_parser
    from distgan.data.sources import SOURCES

    root = tmp_path_factory.mktemp("scale")
    folders = dict(fixture_shards)

    def convert(name: str, source: str, src: Path, *options: str) -> None:
        folders[name] = root / name
        argv = ["shards", source, "--src", str(src), "--out", str(folders[name]), *options]
        SOURCES[source].convert(build_parser().parse_args([*argv, "--workers", "1"]))

    convert("facades", "paired", formats.facades(root / "facades-src", n=16), "--size", "64")
    horses = formats.cyclegan(root / "h2z-src", n=16)
    for domain in "AB":
        convert(f"h2z{domain}", "unpaired", horses, "--size", "64", "--domain", domain)
    return folders


@pytest.mark.slow
def test_the_8_gpu_launch_command_runs_every_recipe_with_8_processes(
    shards: dict[str, Path], tmp_path: Path
) -> None:
    folders = {key: str(path) for key, path in shards.items()}
    argv = []
    for name in RECIPES:
        own = [arg.format(**folders) for arg in TINY_RECIPES[name]]  # data settings: the recipe's
        argv += [name, "\n".join([*own, *SMALL, f"run.dir={tmp_path / name}"])]
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    cmd = [accelerate, "launch", "--config_file", str(ROOT / "launch" / "1node-gpus.yaml"),
           "--num_processes", "8", str(ROOT / "tests" / "train_recipes.py"), *argv]  # fmt: skip
    proc = run(cmd, timeout=900, env={"OMP_NUM_THREADS": "1"})
    for name in RECIPES:
        assert f"trained {name} in" in proc.stderr, proc.stderr[-3000:]
        assert (tmp_path / name / "checkpoints" / "step-00000002.pt").is_file()
    assert "parameters identical on all 8 ranks" in proc.stderr
    for name in EVALUATED:  # evaluated at the last step over the 8 ranks, after its checkpoint
        rows = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        figures = [row for row in map(json.loads, rows) if "eval/n" in row]
        assert [row["step"] for row in figures] == [2], name
        assert figures[0]["eval/n"] == 16, name  # eval.n held-out samples, dealt over 8 ranks
        assert all(math.isfinite(v) for k, v in figures[0].items() if k.startswith("eval/")), name
