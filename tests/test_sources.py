"""Converters on fixtures in the real downloads' formats; determinism; inspect; training on them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import formats
import numpy as np
import pytest
import webdataset as wds
from conftest import TINY, launch_cmd, run
from PIL import Image

from distgan.cli import main
from distgan.data.shards import iter_samples


def shards(source: str, src: Path, out: Path, *extra: str, workers: int = 2) -> dict:
    """Convert through the command line, as users do; return the manifest."""
    argv = ["shards", source, "--src", str(src), "--out", str(out), "--workers", str(workers)]
    assert main([*argv, *extra]) == 0
    return json.loads((out / "manifest.json").read_text())


def read_all(shard_dir: Path) -> dict[str, dict]:
    """Every sample of a shard folder, by key, with images decoded to uint8 arrays."""
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    out = {}
    for shard in manifest["shards"]:
        with open(shard_dir / shard["file"], "rb") as f:
            members = wds.tariterators.tar_file_expander([{"url": shard["file"], "stream": f}])
            for sample in wds.tariterators.group_by_keys(members):
                for name in [k for k in sample if k.endswith(("png", "jpg"))]:
                    sample[name] = np.asarray(Image.open(io.BytesIO(sample[name])))
                out[sample["__key__"]] = sample
    return out


def assert_byte_identical(a: Path, b: Path) -> None:
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_cifar10_tar_gz_keeps_pixels_labels_and_is_byte_identical(tmp_path: Path) -> None:
    archive, batches = formats.cifar10(tmp_path / "dl")
    # 2 workers from the tar.gz vs 1 worker from the extracted folder: identical bytes
    one = shards("cifar10", archive, tmp_path / "a", "--samples-per-shard", "13")
    two = shards("cifar10", tmp_path / "dl", tmp_path / "b", "--samples-per-shard", "13", workers=1)
    assert_byte_identical(tmp_path / "a", tmp_path / "b")
    assert one == two and one["total"] == 50 and len(one["shards"]) == 4
    assert one["class_names"] == formats.CIFAR_CLASSES and one["resolution"] == 32
    assert [s["count"] for s in one["shards"]] == [13, 13, 13, 11]

    samples = read_all(tmp_path / "a")
    data, labels = batches["data_batch_3"]
    sample = samples["data_batch_3-00004"]
    assert int(sample["cls"]) == labels[4]
    expected = data[4].reshape(3, 32, 32).transpose(1, 2, 0)  # R plane, G plane, B plane
    assert np.array_equal(sample["png"], expected)

    # --classes horse: the seed exercise "generate horses"
    horses = shards("cifar10", archive, tmp_path / "h", "--classes", "horse", "--split", "all")
    assert horses["class_names"] == ["horse"] and horses["class_subset_of"][7] == "horse"
    wanted = sum(lab == 7 for _, labs in batches.values() for lab in labs)
    assert horses["total"] == wanted >= 6
    assert {int(s["cls"]) for s in read_all(tmp_path / "h").values()} == {0}


def test_celeba_zip_attributes_partition_and_crop(tmp_path: Path) -> None:
    src, attrs, partition = formats.celeba(tmp_path / "dl")
    manifest = shards("celeba", src, tmp_path / "a", "--size", "32", "--samples-per-shard", "2")
    again = shards("celeba", src / "img_align_celeba.zip", tmp_path / "b", "--size", "32",
                   "--samples-per-shard", "2", workers=1)  # fmt: skip
    assert_byte_identical(tmp_path / "a", tmp_path / "b")
    assert manifest == again
    assert manifest["attribute_names"] == formats.CELEBA_ATTRIBUTES
    train = sorted(f[:-4] for f, p in partition.items() if p == "0")
    samples = read_all(tmp_path / "a")
    assert sorted(samples) == train and len(manifest["shards"]) == 4
    for key, sample in samples.items():
        assert json.loads(sample["json"])["attrs"] == attrs[f"{key}.jpg"]
        assert sample["png"].shape == (32, 32, 3)
    val = shards("celeba", src, tmp_path / "v", "--split", "val")
    assert val["total"] == 2 and val["resolution"] == 64


def test_places365_small_images_and_easy_format(tmp_path: Path) -> None:
    src, labels = formats.places365(tmp_path / "dl")
    manifest = shards("places365", src, tmp_path / "a", "--split", "all", "--size", "32")
    assert manifest["class_names"] == ["airfield", "bakery/shop", "canyon"]
    shards("places365", src, tmp_path / "a2", "--split", "all", "--size", "32", workers=1)
    assert_byte_identical(tmp_path / "a", tmp_path / "a2")
    samples = read_all(tmp_path / "a")
    assert {k: int(s["cls"]) for k, s in samples.items()} == labels

    easy = formats.places365_easyformat(tmp_path / "easy")
    manifest = shards("places365", easy, tmp_path / "e", "--size", "32")
    got = {k: int(s["cls"]) for k, s in read_all(tmp_path / "e").items()}
    assert got == {
        "train-train_airfield_00000001": 0,
        "train-train_bakery-shop_00000001": 1,
        "train-train_canyon_00000001": 2,
    }


def test_paired_side_by_side_and_unpaired_domains(tmp_path: Path) -> None:
    src = formats.facades(tmp_path / "facades")
    manifest = shards("paired", src, tmp_path / "p", "--size", "32")
    assert manifest["paired"] and manifest["total"] == 4
    shards("paired", src, tmp_path / "p2", "--size", "32", workers=1)
    assert_byte_identical(tmp_path / "p", tmp_path / "p2")
    sample = read_all(tmp_path / "p")["train-1"]
    assert sample["png"].shape == sample["target.png"].shape == (32, 32, 3)
    assert sample["png"][..., 0].mean() > 150 > sample["target.png"][..., 0].mean()  # A = red
    shards("paired", src, tmp_path / "q", "--size", "32", "--direction", "BtoA")
    assert read_all(tmp_path / "q")["train-1"]["png"][..., 2].mean() > 150  # B = blue first

    src = formats.cyclegan(tmp_path / "horse2zebra")
    manifest = shards("unpaired", src, tmp_path / "u", "--size", "32", "--split", "all")
    assert manifest["class_names"] == ["A", "B"] and manifest["total"] == 12
    shards("unpaired", src, tmp_path / "u2", "--size", "32", "--split", "all", workers=1)
    assert_byte_identical(tmp_path / "u", tmp_path / "u2")
    domains = {k: int(s["cls"]) for k, s in read_all(tmp_path / "u").items()}
    assert domains["trainA-trainA_0"] == 0 and domains["testB-testB_2"] == 1


def test_folder_by_bytes_and_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    for name in ("cats", "dogs"):
        (tmp_path / "img" / name).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(formats.smooth_image(rng, 40, 60)).save(
                tmp_path / "img" / name / f"{i}.png"
            )
    manifest = shards("folder", tmp_path / "img", tmp_path / "f", "--size", "32",
                      "--shard-bytes", "12KB")  # fmt: skip
    assert manifest["class_names"] == ["cats", "dogs"] and manifest["total"] == 10
    assert len(manifest["shards"]) > 1  # by bytes: tar pads each file up to 10 KiB (10240)
    assert all(s["bytes"] <= 20480 for s in manifest["shards"])
    shards("folder", tmp_path / "img", tmp_path / "f2", "--size", "32",
           "--shard-bytes", "12KB", workers=1)  # fmt: skip
    assert_byte_identical(tmp_path / "f", tmp_path / "f2")
    capsys.readouterr()

    sheet_path = tmp_path / "sheet.png"
    assert (
        main(["shards", "inspect", str(tmp_path / "f"), "--n", "6", "--out", str(sheet_path)]) == 0
    )
    out = capsys.readouterr().out
    assert "folder" in out and "10 at 32 px" in out and "cats, dogs" in out
    sheet = Image.open(sheet_path)
    assert sheet.width == 8 * 64 and sheet.height == 64 + 12  # 32 px tiles shown at 2×


def truncate_one_image(shard: Path) -> str:
    """Rewrite ``shard`` with its second image cut in half (the tar itself stays valid)."""
    samples = list(iter_samples(shard))
    samples[1]["png"] = samples[1]["png"][: len(samples[1]["png"]) // 2]
    with open(shard, "wb") as f:
        writer = wds.TarWriter(f)
        for sample in samples:
            writer.write(sample)
        writer.close()
    return samples[1]["__key__"]


@pytest.mark.slow
def test_train_two_processes_on_converted_cifar10_and_celeba(tmp_path: Path) -> None:
    """Acceptance: `distgan train` with 2 processes on CIFAR-10- and CelebA-format shards; the
    CelebA run has a truncated image, skips it and reports it in data/bad_samples."""
    archive, _ = formats.cifar10(tmp_path / "cifar")
    src, _, _ = formats.celeba(tmp_path / "celeba", n=20)
    shards("cifar10", archive, tmp_path / "cifar-shards", "--samples-per-shard", "12")
    shards("celeba", src, tmp_path / "celeba-shards", "--size", "64", "--samples-per-shard", "4")
    bad_key = truncate_one_image(tmp_path / "celeba-shards" / "shard-000000.tar")
    for name in ("cifar", "celeba"):
        run_dir = tmp_path / f"run-{name}"
        args = [
            f"data.shards={tmp_path / f'{name}-shards'}",
            "model.conditional=false",
            "train.batch_size=4",
            "train.steps=4",
            "data.flip=true",
            "log.wandb=disabled",
            f"run.dir={run_dir}",
        ]
        proc = run(launch_cmd(2, "train", "digits-cdcgan", *TINY, *args))
        assert (run_dir / "checkpoints" / "step-00000004.pt").is_file()
        last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
        if name == "celeba":
            assert last["data/bad_samples"] >= 1
            assert f"skipping sample '{bad_key}' in shard 'shard-000000.tar'" in proc.stderr
        else:
            assert last["data/bad_samples"] == 0
