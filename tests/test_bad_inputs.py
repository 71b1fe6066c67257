"""Bad input, careless or malicious, is answered in one line (exit 2 for configuration, 1 for
files) or skipped and counted, never with a traceback: archives that pickle code, odd samples,
decompression bombs, broken manifests, paths out of the shard folder, bad values."""

from __future__ import annotations

import json
import logging
import os
import pickle
import struct
import subprocess
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SHARDS, TINY, distgan_cmd, run

from distgan.cli import main
from distgan.data.loader import ResumableLoader
from distgan.data.shards import Sample, encode_sample, read_manifest, write_shards
from distgan.data.stream import ShardStream
from distgan.errors import ShardError


def one_line(capsys: pytest.CaptureFixture[str], argv: list[str], code: int) -> str:
    assert main(argv) == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("distgan: error: "), lines
    return lines[0]


def train_line(*args: str, code: int) -> str:
    proc = run(distgan_cmd("train", *TINY, "log.wandb=disabled", *args), check=False)
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


# --------------------------------------------------------------------------- converters


class RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_the_cifar10_converter_never_runs_code_from_an_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": RunsCode(marker)}, 2))
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    argv = ["shards", "cifar10", "--src", str(archive), "--out", str(tmp_path / "out")]
    line = one_line(capsys, argv, 1)
    assert "batches.meta is not a CIFAR-10 pickle" in line and "refused to load" in line
    assert "system" in line and not marker.exists()


# --------------------------------------------------------------------------- odd samples


def huge_png(side: int) -> bytes:
    """A valid PNG header claiming side × side gray pixels (the bytes of a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0" * (side + 1) * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def test_odd_samples_are_skipped_logged_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 48 px image in 32 px shards, a label of 99 with 10 classes, a sample without a label and
    a 20000×20000 PNG (refused from its header, never decoded): 4 skipped of 40."""
    rng = np.random.default_rng(0)
    good = [
        encode_sample(Sample(f"s{i:03d}", rng.integers(0, 256, (32, 32, 3), np.uint8), i % 10))
        for i in range(36)
    ]
    big = encode_sample(Sample("big", rng.integers(0, 256, (48, 48, 3), np.uint8), 1))
    label99 = encode_sample(Sample("label99", rng.integers(0, 256, (32, 32, 3), np.uint8), 99))
    unlabelled = encode_sample(Sample("nolabel", rng.integers(0, 256, (32, 32, 3), np.uint8)))
    bomb = {"__key__": "bomb", "png": huge_png(20000), "cls": b"3"}
    records = [*good[:9], big, *good[9:18], label99, *good[18:27], unlabelled, *good[27:], bomb]
    meta = dict(source="t", split="train", resolution=32, channels=3)
    meta["class_names"] = [str(i) for i in range(10)]
    write_shards(records, tmp_path, samples_per_shard=10, meta=meta)

    stream = ShardStream(tmp_path, batch_size=4, seed=0, num_workers=1, shuffle_buffer=4)
    with caplog.at_level(logging.WARNING, logger="distgan.data"):
        decoded = [stream.decode(raw, 0) for raw in stream.epoch_samples(0, 0)]
        loader = ResumableLoader(stream, 0)
        batches = [next(loader) for _ in range(9)]  # 36 good samples: one epoch
    assert len(decoded) == 40 and sum(item is None for item in decoded) == 4
    assert loader.bad_samples >= 3  # (counted with the batch after them: the 4th with the 10th)
    assert all(b["image"].shape == (4, 3, 32, 32) and b["label"].max() < 10 for b in batches)
    text = caplog.text
    assert "'big' in shard 'shard-000000.tar': image is 48×48 px, the shards are 32 px" in text
    assert "'label99'" in text and "label 99 is outside 0–9" in text
    assert "'nolabel'" in text and "no .cls label" in text
    assert "'bomb'" in text and "image is 20000×20000 px" in text


# --------------------------------------------------------------------------- manifests


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda m: 5, "a manifest is a JSON object, not int"),
        (lambda m: {**m, "shards": "shard-000000.tar"}, "'shards' must be a non-empty list"),
        (lambda m: {**m, "shards": [{"count": 3}]}, "shard entry 0 has no 'file' name"),
        (lambda m: {**m, "channels": "x"}, "'channels' must be 1 or 3, not 'x'"),
        (lambda m: {**m, "shards": []}, "'shards' must be a non-empty list"),
        (
            lambda m: {**m, "shards": [{"file": "/etc/passwd", "count": 1}]},
            "names '/etc/passwd', which is not a file of the shard folder itself; refused",
        ),
        (
            lambda m: {**m, "shards": [{"file": "../digits/shard-000000.tar", "count": 1}]},
            "which is not a file of the shard folder itself",
        ),
    ],
)
def test_broken_manifests_are_one_line(tmp_path: Path, edit, needle: str) -> None:
    manifest = json.loads((SHARDS / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps(edit(manifest)))
    with pytest.raises(ShardError, match="re-create the shards") as err:
        read_manifest(tmp_path)
    assert needle in str(err.value) and "root:" not in str(err.value)


def test_manifest_mistakes_in_a_run_are_one_line(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    manifest = json.loads((SHARDS / "manifest.json").read_text())
    (shards / "manifest.json").write_text(json.dumps({**manifest, "shards": []}))
    args = [f"data.shards={shards}", f"run.dir={tmp_path / 'r'}", "data.mode=resampled"]
    assert "'shards' must be a non-empty list" in train_line(*args, code=1)
    for shard in manifest["shards"]:
        (shards / shard["file"]).symlink_to(SHARDS / shard["file"])
        del shard["sha256"]
    (shards / "manifest.json").write_text(json.dumps(manifest))
    line = train_line(
        f"data.shards={shards}", f"run.dir={tmp_path / 'r'}", "data.verify=true", code=1
    )
    assert "data.verify=true, but" in line and "has no sha256 for shard" in line


# --------------------------------------------------------------------------- values and paths


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.betas_d=[2,3]", "Adam's betas must each lie in [0, 1)"),
        ("train.seed=-1", "'train.seed': -1"),
        (f"train.seed={2**32}", "less than 4294967296"),
        ("train.collective_timeout=inf", "finite number"),
        ("optim.G.lr=nan", "finite number"),
        ("model.z_dim=-3", "'model.z_dim': -3"),
        ("train.time_limit=-5", "a time limit must be positive (null: no limit)"),
        ("train.time_limit=0", "a time limit must be positive"),
    ],
)
def test_bad_values_are_one_line(
    capsys: pytest.CaptureFixture[str], override: str, needle: str
) -> None:
    assert needle in one_line(capsys, ["config", "digits-cdcgan", override], 2)


def test_bad_recipes_checkpoints_and_run_folders_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "broken.yaml").write_text("train: {steps: [1,\n")
    line = one_line(capsys, ["config", str(tmp_path / "list.yaml")], 2)
    assert "is a YAML list, not a mapping of sections" in line
    assert "is not valid YAML (line" in one_line(
        capsys, ["config", str(tmp_path / "broken.yaml")], 2
    )

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1}\n')
    line = one_line(capsys, ["sample", "--ckpt", str(metrics), "--out", str(tmp_path / "x.png")], 1)
    assert "is not a checkpoint file" in line and "delete" not in line
    evil = tmp_path / "evil.pt"
    import torch

    torch.save({"models": RunsCode(tmp_path / "pwned"), "step": 1}, evil)
    line = one_line(capsys, ["sample", "--ckpt", str(evil), "--out", str(tmp_path / "x.png")], 1)
    assert "was refused: it is not a plain-tensor checkpoint" in line
    assert not (tmp_path / "pwned").exists()

    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert "is a file, not a folder" in train_line(f"run.dir={a_file}", code=2)


def test_a_read_only_run_folder_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: a read-only file system instead
        if subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)]
        ).returncode:
            pytest.skip("root without a way to make a read-only folder (mount refused)")
    else:
        folder.chmod(0o555)
    try:
        line = train_line(f"run.dir={folder}", code=1)
        assert f"run.dir '{folder}'" in line and "not writable" in line
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(folder)], check=True)


# --------------------------------------------------------------------------- sample


def test_sample_checks_its_arguments_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "missing.pt"  # never opened: the arguments fail first
    argv = ["sample", "--ckpt", str(ckpt)]
    assert "use a .png/.jpg (grid) or .npz" in one_line(
        capsys, [*argv, "--n", "20000", "--out", str(tmp_path / "big.txt")], 2
    )
    for n in ("0", "-5"):
        line = one_line(capsys, [*argv, "--n", n, "--out", str(tmp_path / "x.npz")], 2)
        assert f"--n {n}: draw at least 1 sample" in line
    line = one_line(capsys, [*argv, "--n", "4", "--out", str(tmp_path / "X.NPZ")], 1)
    assert "does not exist" in line  # .NPZ is accepted like .npz; then the checkpoint is read


def test_slurm_stop_files_lie_in_a_private_directory_of_the_job(tmp_path: Path) -> None:
    script = (
        f"SLURM_JOB_ID=42 TMPDIR={tmp_path}; source slurm/requeue.sh; "
        'stat -c %a "$DISTGAN_JOB_DIR"; echo "$DISTGAN_STOP_REQUEST"'
    )
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True)
    mode, request = out.stdout.split()
    assert mode == "700" and request.startswith(f"{tmp_path}/distgan-42.")
    assert request != f"{tmp_path}/distgan-42.stop-request"  # not predictable
    assert not list(tmp_path.iterdir())  # removed when the job script exits
