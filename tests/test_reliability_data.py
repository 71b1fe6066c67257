"""Shard folders are the user's: a conversion replaces one only when asked, atomically, one at a
time; a failed, killed or starved conversion leaves the old folder as it was and says why in one
line; every source file left out is listed; inspect writes nothing into a shard folder.
(Issue 21, findings 3, 18 and 19.)"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, distgan_cmd, env_for_tests, kill_tree
from PIL import Image

from distgan.cli import main


def noise_images(folder: Path, n: int, side: int = 16, first: int = 0) -> Path:
    """``n`` random RGB PNGs (noise: they barely compress), named ``00.png`` …"""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(first)
    for i in range(first, first + n):
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return folder


def folder_argv(src: Path, out: Path, *extra: str) -> list[str]:
    return ["shards", "folder", "--src", str(src), "--out", str(out), "--size", "16",
            "--workers", "1", *extra]  # fmt: skip


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    """Staging folders, folders set aside and lock files a conversion left behind."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") or p.suffix == ".lock")


def error_line(capsys: pytest.CaptureFixture[str], argv: list[str], code: int) -> str:
    """The command fails with ``code`` and says why in one line (its last, no traceback)."""
    assert main(argv) == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and lines, err
    assert lines[-1].startswith("distgan: error: ") and err.count("distgan: error:") == 1, err
    return lines[-1]


@pytest.fixture
def converted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    """A source folder of 6 images and its shard folder ``out`` (2 shards)."""
    src = noise_images(tmp_path / "src", 6)
    assert main(folder_argv(src, tmp_path / "out", "--samples-per-shard", "3")) == 0
    capsys.readouterr()
    return src, tmp_path / "out"


# --------------------------------------------------------------------------- finding 3


def test_a_shard_folder_is_replaced_only_with_overwrite(
    converted: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src, out = converted
    before = contents(out)
    line = error_line(capsys, folder_argv(src, out), 2)
    assert f"'{out}' already holds shards; pass --overwrite" in line
    assert contents(out) == before

    # a folder holding files distgan did not write is never replaced, --overwrite or not
    mine = out.parent / "mine"
    noise_images(mine, 1)
    line = error_line(capsys, folder_argv(src, mine, "--overwrite"), 2)
    assert "holds 1 file(s) distgan did not write (e.g. '00.png')" in line
    assert (mine / "00.png").is_file()

    cache = out / ".distgan-reference"  # keyed by the manifest: it stays valid, so it moves over
    cache.mkdir()
    (cache / "stats.npz").write_bytes(b"cached")
    assert main(folder_argv(src, out, "--samples-per-shard", "3", "--overwrite")) == 0
    assert contents(out) == before and (cache / "stats.npz").read_bytes() == b"cached"
    assert leftovers(out.parent) == []


def test_colliding_keys_are_refused_before_the_old_folder_is_touched(
    converted: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src, out = converted
    before = contents(out)
    Image.open(src / "01.png").save(src / "01.jpg")  # 01.png and 01.jpg: key '01' twice
    line = error_line(capsys, folder_argv(src, out, "--overwrite"), 1)
    assert f"'{src / '01.jpg'}' and '{src / '01.png'}' both give the sample key '01'" in line
    assert contents(out) == before and leftovers(out.parent) == []


def test_a_killed_conversion_keeps_the_old_folder_and_a_second_one_is_refused(
    converted: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src, out = converted
    before = contents(out)
    os.mkfifo(src / "99.png")  # the conversion blocks on it, after writing 6 shards
    argv = [*folder_argv(src, out, "--overwrite", "--samples-per-shard", "1")]
    proc = subprocess.Popen(distgan_cmd(*argv), cwd=ROOT, env=env_for_tests(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(out.parent.glob(".out.converting-*/shard-000005.tar")):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the conversion wrote no shards"
            time.sleep(0.05)
        # finding 18: a second conversion of the same folder meanwhile
        line = error_line(capsys, argv, 1)
        assert f"'{out}' is being written by another conversion (pid {proc.pid} on" in line
        assert contents(out) == before
    finally:
        kill_tree(proc.pid)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert contents(out) == before  # the kill left the old folder as it was
    assert list(out.parent.glob(".out.converting-*"))

    (src / "99.png").unlink()
    assert main(folder_argv(src, out, "--samples-per-shard", "3", "--overwrite")) == 0
    assert contents(out) == before and leftovers(out.parent) == []  # the staging folder is gone


# --------------------------------------------------------------------------- finding 18


def test_a_full_disk_ends_in_one_line_and_keeps_the_old_folder(
    converted: tuple[Path, Path],
) -> None:
    """The disk fills up while a shard is written (a file-size limit: writes fail with EFBIG)."""
    src, out = converted
    before = contents(out)
    noise_images(src, 6, side=64, first=10)  # 12 KB each: one shard of 12 outgrows the limit

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    argv = folder_argv(src, out, "--size", "64", "--samples-per-shard", "100", "--overwrite")
    proc = subprocess.run(distgan_cmd(*argv), cwd=ROOT, env=env_for_tests(), capture_output=True,
                          text=True, preexec_fn=small_disk, timeout=300)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"distgan: error: could not write the shards of '{out}' (File too large); its old "
        "shards are intact"
    )
    assert contents(out) == before and leftovers(out.parent) == []


def test_digits_and_photos_take_samples_per_shard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "digits"
    assert main(["shards", "digits", "--out", str(out), "--samples-per-shard", "600"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["count"] for s in manifest["shards"]] == [600, 600, 597]
    out = tmp_path / "photos"
    argv = ["shards", "photos", "--split", "test", "--out", str(out), "--samples-per-shard", "50"]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["count"] for s in manifest["shards"]] == [50, 50, 50, 18]


# --------------------------------------------------------------------------- finding 19


def test_inspect_writes_its_sheet_outside_the_shard_folder(
    converted: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, out = converted
    before = contents(out)
    elsewhere = out.parent / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["shards", "inspect", str(out), "--n", "4"]) == 0
    assert contents(out) == before  # a later `shards folder` of it finds no stray image
    assert Image.open(elsewhere / "out-contact-sheet.png").width == 8 * 64
    capsys.readouterr()
    line = error_line(capsys, ["shards", "inspect", str(out)], 2)
    assert "out-contact-sheet.png exists; pass --force" in line
    assert main(["shards", "inspect", str(out), "--force"]) == 0
    line = error_line(capsys, ["shards", "inspect", str(out), "--out", str(out / "s.png")], 2)
    assert "is a shard folder; write the contact sheet elsewhere" in line
    assert contents(out) == before


def test_every_skipped_file_is_listed_and_manifests_are_byte_identical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = noise_images(tmp_path / "src", 3)
    Image.open(src / "00.png").save(src / "anim.gif")
    (src / "notes.txt").write_text("where these came from")
    (src / "broken.png").write_bytes(b"not a png")
    assert main(folder_argv(src, tmp_path / "a")) == 0
    err = capsys.readouterr().err
    assert main([*folder_argv(src, tmp_path / "b"), "--workers", "2"]) == 0
    manifest = (tmp_path / "a" / "manifest.json").read_bytes()
    assert manifest == (tmp_path / "b" / "manifest.json").read_bytes()
    assert json.loads(manifest)["skipped_sources"] == [
        f"{src / 'anim.gif'}: not an image file distgan reads (.gif)",
        f"{src / 'notes.txt'}: not an image file distgan reads (.txt)",
        f"{src / 'broken.png'}: not an image Pillow can identify",
    ]
    assert json.loads(manifest)["total"] == 3
    skipped_lines = [line for line in err.splitlines() if "skipped 3 source file(s)" in line]
    assert len(skipped_lines) == 1 and "anim.gif" in skipped_lines[0], err
