"""distgan among the tools around it: TensorBoard and W&B settings (names, groups, tags,
artifacts, W&B's own environment variables), checkpoints of the earlier release (schema 2,
tests/fixtures/schema2-digits-cdcgan.pt: a tiny digits-cdcgan run written by distgan at commit
3dc2f0b, before contract v3) that still resume, sample and export, and exports that load."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, distgan_cmd, run
from wandb_reader import read_offline_run

import distgan
from distgan.cli import main

SCHEMA2 = ROOT / "tests" / "fixtures" / "schema2-digits-cdcgan.pt"
# the fixture's run: widths, batch, seed and data settings it was trained with (step 4)
SCHEMA2_RUN = [
    "data.shards=shards/digits",
    "model.g_width=4",
    "model.d_width=4",
    "model.z_dim=4",
    "model.embed_dim=4",
    "train.batch_size=4",
    "train.seed=3",
    "train.precision=no",
    "data.num_workers=1",
    "data.shuffle_buffer=8",
]


def events(folder: Path) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """The steps of every scalar and image tag, read by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    reader.Reload()
    scalars = {tag: [e.step for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}
    images = {tag: [e.step for e in reader.Images(tag)] for tag in reader.Tags()["images"]}
    return scalars, images


def session_starts(folder: Path) -> list[int]:
    """Steps of the 'session start' events (the purge marks a resumed writer leaves)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog

    return [
        event.step
        for path in sorted(folder.glob("events.out.tfevents.*"))
        for event in EventFileLoader(str(path)).Load()
        if event.HasField("session_log") and event.session_log.status == SessionLog.START
    ]


def offline_runs(run_dir: Path) -> list[dict]:
    return [read_offline_run(f) for f in sorted((run_dir / "wandb").glob("offline-run-*"))]


@pytest.mark.slow
def test_a_schema2_run_resumes_into_tensorboard_and_named_wandb_runs(tmp_path: Path) -> None:
    """A schema-2 checkpoint resumes (step 4 → 8) with both trackers: TensorBoard holds the
    scalars, the preview grids and the evaluation figures; the W&B run has the configured name,
    group, tags and notes and the artifacts (best.pt, the final export). Resumed again from step
    6 in the same folder, TensorBoard still holds each step once, and with the keys unset W&B's
    own environment variables name the run."""
    run_dir = tmp_path / "run"
    common = ["train", "digits-cdcgan", *SCHEMA2_RUN, f"run.dir={run_dir}", "train.steps=8"]
    common += ["train.checkpoint_every=2", "log.every=1", "log.sample_every=4", "eval.every=8"]
    common += [
        "eval.n=8",
        "eval.batch_size=4",
        "log.wandb=offline",
        "log.trackers=wandb,tensorboard",
    ]
    named = ["log.name=trial-7", "log.group=sweep-a", "log.tags=tiny,schema2"]
    named += ["log.notes=from the fixture", "log.artifacts=true"]
    first = run(distgan_cmd(*common, f"resume={SCHEMA2}", *named))
    assert re.search(r"resumed from \S+schema2-digits-cdcgan.pt at step 4", first.stderr)
    (record,) = offline_runs(run_dir)
    assert record["run"]["name"] == "trial-7" and record["run"]["group"] == "sweep-a"
    assert record["run"]["tags"] == ["tiny", "schema2"]
    assert record["run"]["notes"] == "from the fixture"
    assert sorted(record["artifacts"]) == [f"{record['id']}-best", f"{record['id']}-export"]
    assert distgan.load(run_dir / "export.safetensors").step == 8

    # Resumed from step 6: steps 7 and 8 are logged again, and purged from the first writer.
    (run_dir / "checkpoints" / "step-00000008.pt").unlink()
    names = {"WANDB_NAME": "from-env", "WANDB_RUN_GROUP": "env-group", "WANDB_TAGS": "a,b"}
    second = run(distgan_cmd(*common), env=names)
    assert re.search(r"resumed from \S+step-00000006.pt at step 6", second.stderr)
    scalars, images = events(run_dir / "tensorboard")
    assert scalars["loss/D"] == scalars["images"] == [5, 6, 7, 8]
    assert scalars["eval/digits_accuracy"] == [8] and images["samples"] == [8]
    assert session_starts(run_dir / "tensorboard") == [5, 7]
    resumed = offline_runs(run_dir)[-1]
    assert resumed["id"] == record["id"]  # the same W&B run, continued
    assert resumed["run"]["name"] == "from-env" and resumed["run"]["group"] == "env-group"
    assert resumed["run"]["tags"] == ["a", "b"]


def test_a_schema2_checkpoint_samples_and_exports_and_its_export_samples_alike(
    tmp_path: Path,
) -> None:
    """The earlier release's checkpoint is migrated when loaded: ``distgan sample`` and
    ``distgan export`` work on it, and the export samples the same images bit for bit."""
    out, export = tmp_path / "ckpt.npz", tmp_path / "nets.safetensors"
    assert main(["sample", "--ckpt", str(SCHEMA2), "--n", "6", "--out", str(out)]) == 0
    assert main(["export", "--ckpt", str(SCHEMA2), "--out", str(export)]) == 0
    again = tmp_path / "export.npz"
    assert main(["sample", "--ckpt", str(export), "--n", "6", "--out", str(again)]) == 0
    assert np.array_equal(np.load(out)["images"], np.load(again)["images"])
    model = distgan.load(export)
    assert model.step == 4 and model.weights == "ema" and set(model.ema) == {"G"}
    assert torch.equal(model.sample(6, seed=2), distgan.load(SCHEMA2).sample(6, seed=2))
    raw = distgan.load(export, weights="raw").sample(6, seed=2)
    assert torch.equal(raw, distgan.load(SCHEMA2, weights="raw").sample(6, seed=2))


def test_an_export_that_is_not_distgans_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import save_file

    stranger = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(stranger), metadata={"format": "pt"})
    out = tmp_path / "s.png"
    assert main(["sample", "--ckpt", str(stranger), "--out", str(out)]) == 1
    assert "is not a file of distgan export (format 'pt'" in capsys.readouterr().err
    assert not out.exists()


def read(path: Path) -> np.ndarray:
    """The images of a written .npz or image file."""
    from PIL import Image

    return np.load(path)["images"] if path.suffix == ".npz" else np.asarray(Image.open(path))


@pytest.mark.slow
def test_colorize_translate_and_latent_take_an_export(trained, tmp_path: Path) -> None:
    """``colorize``, ``translate`` and ``latent`` write from an export exactly what they write
    from its checkpoint (tiny runs of the shared launch)."""
    from PIL import Image

    photo = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(photo)
    uses = {  # the command, and its arguments after --ckpt
        "cifar10-colorize": (["colorize"], [str(photo)]),
        "horse2zebra-cyclegan": (["translate"], ["--direction", "BtoA", str(photo)]),
        "digits-vae": (["latent", "interpolate"], ["--seeds", "0,1", "--steps", "4"]),
    }
    for name, (command, options) in uses.items():
        ckpt = trained[0] / name / "checkpoints" / "step-00000012.pt"
        export = tmp_path / f"{name}.safetensors"
        assert main(["export", "--ckpt", str(ckpt), "--out", str(export)]) == 0
        written = []
        for source in (ckpt, export):
            out = tmp_path / f"{name}-{source.suffix[1:]}"
            out = out.with_suffix(".npz") if command[0] == "latent" else out
            assert main([*command, "--ckpt", str(source), *options, "--out", str(out)]) == 0
            files = sorted(out.iterdir()) if out.is_dir() else [out]
            written.append([read(f) for f in files])
        assert len(written[0]) == 1
        assert np.array_equal(written[0][0], written[1][0]), name


def test_a_sweep_trial_gets_a_run_folder_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a W&B sweep agent the default run.dir names the trial (a second trial would
    otherwise resume the first); a run.dir set by hand is kept; outside a sweep nothing changes."""
    from distgan.engine.rundir import for_sweep_trial
    from distgan.recipe import load_recipe

    monkeypatch.setenv("WANDB_RUN_ID", "abc123")
    outside = load_recipe("digits-cdcgan")
    for_sweep_trial(outside)
    assert outside.run_dir == Path("runs/digits-cdcgan")
    monkeypatch.setenv("WANDB_SWEEP_ID", "sw1")
    trial, chosen = load_recipe("digits-cdcgan"), load_recipe("digits-cdcgan", ["run.dir=mine"])
    for_sweep_trial(trial)
    for_sweep_trial(chosen)
    assert trial.run_dir == Path("runs/digits-cdcgan-abc123")
    assert chosen.run_dir == Path("mine")
