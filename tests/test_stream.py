"""The stream: epoch and resampled modes across ranks × workers, exact resume, transforms,
L*a*b*, bad data."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from distgan.data.loader import ResumableLoader, resolve_loader_processes
from distgan.data.shards import Sample, ShardError, encode_sample, write_shards
from distgan.data.stream import ShardStream, decode_sample
from distgan.data.transforms import Transforms, lab_to_rgb, rgb_to_lab
from distgan.errors import ConfigError

TOTAL, PER_SHARD = 57, 6  # 10 shards: 9 of 6 samples and one of 3


def make_shards(out: Path, truncate: str | None = None, pairs: bool = False) -> list[str]:
    """Random 8×8 RGB samples with labels and 3 attributes. ``truncate``: cut that key's PNG in
    half (a corrupt image inside a valid tar); ``pairs``: a target equal to the image."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(TOTAL):
        image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        attrs = [int(v) for v in rng.integers(0, 2, 3)]
        target = image if pairs else None
        record = encode_sample(Sample(f"k{i:03d}", image, i % 3, {"attrs": attrs}, target))
        if record["__key__"] == truncate:
            record["png"] = record["png"][: len(record["png"]) // 2]
        records.append(record)
    meta = {"source": "test", "split": "all", "resolution": 8, "channels": 3}
    write_shards(
        records, out, samples_per_shard=PER_SHARD, meta={**meta, "class_names": ["a", "b", "c"]}
    )
    return [r["__key__"] for r in records]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    make_shards(out)
    return out


def make_loader(
    path: Path, rank=0, world=1, workers=2, batch=4, seed=5, processes=None, **kw
) -> ResumableLoader:
    stream = ShardStream(
        path, batch_size=batch, seed=seed, rank=rank, world_size=world, num_workers=workers, **kw
    )
    return ResumableLoader(stream, workers if processes is None else processes)


def take(loader: ResumableLoader, n: int) -> list[tuple[int, dict]]:
    """``n`` batches, each with the logical worker it came from."""
    out = []
    for _ in range(n):
        worker = loader.next_worker
        out.append((worker, next(loader)))
    return out


def test_epoch_mode_2_ranks_2_workers_every_key_exactly_once(shards: Path) -> None:
    """Batches of 4 from uneven shards: no sample dropped, every batch full, epoch 0 of the
    2 × 2 workers holds every key once (batches run on into epoch 1)."""
    seen: list[str] = []
    for rank in range(2):
        loader = make_loader(shards, rank=rank, world=2, workers=2, batch=4)
        need = [loader.stream.samples_in_epoch(0, w) for w in range(2)]
        got: dict[int, list[str]] = {0: [], 1: []}
        while any(len(got[w]) < need[w] for w in range(2)):
            worker, batch = take(loader, 1)[0]
            assert len(batch["key"]) == 4
            got[worker] += batch["key"]
        seen += got[0][: need[0]] + got[1][: need[1]]
    assert len(seen) == TOTAL and len(set(seen)) == TOTAL


def test_fewer_shards_than_ranks_times_workers_are_cut_into_ranges(shards: Path) -> None:
    """10 shards, 6 ranks × 2 workers: epoch mode deals contiguous sample ranges of the shards,
    still every key exactly once per epoch (and once again in the next); fewer samples than
    ranks × workers is one clear error; resampled mode serves any number of ranks."""
    for epoch in (0, 1):
        seen = [
            sample["__key__"]
            for rank in range(6)
            for worker in range(2)
            for sample in make_loader(shards, rank=rank, world=6).stream.epoch_samples(
                epoch, worker
            )
        ]
        assert len(seen) == TOTAL and len(set(seen)) == TOTAL
    first = make_loader(shards, rank=5, world=6, workers=2, batch=4)
    assert all(len(b["key"]) == 4 for _, b in take(first, 10))  # batches run on, full
    with pytest.raises(ShardError, match=r"holds 57 samples, fewer than 30 ranks × 2 loader"):
        make_loader(shards, world=30, workers=2)
    streams = []
    for rank in range(2):  # resampled mode: shards drawn with replacement
        loader = make_loader(shards, rank=rank, world=6, workers=2, batch=4, mode="resampled")
        batches = [b for _, b in take(loader, 20)]
        assert all(len(b["key"]) == 4 for b in batches)
        streams.append([k for b in batches for k in b["key"]])
    assert streams[0] != streams[1]
    again = make_loader(shards, rank=1, world=6, workers=2, batch=4, mode="resampled")
    assert [k for _, b in take(again, 20) for k in b["key"]] == streams[1]


@pytest.mark.parametrize(
    ("mode", "consumed", "processes"), [("epoch", 3, 2), ("epoch", 17, 0), ("resampled", 11, 1)]
)  # mid-epoch; past an epoch boundary of both workers; resampled
def test_restored_position_yields_exactly_the_remaining_batches(
    tmp_path: Path, mode: str, consumed: int, processes: int
) -> None:
    """… also when the resumed loader reads the 2 logical workers with 0 (the test's own
    process) or 1 loader process: the number of processes never changes the batches."""
    make_shards(tmp_path, truncate="k010")  # with a bad sample: positions count raw samples
    kw = {"mode": mode, "transforms": Transforms(flip=True, crop=0.75), "batch": 3}
    uninterrupted = make_loader(tmp_path, **kw)
    take(uninterrupted, consumed)
    state = uninterrupted.state_dict()
    expected = take(uninterrupted, 12)

    resumed = make_loader(tmp_path, processes=processes, **kw)
    resumed.load_state_dict(state)
    got = take(resumed, 12)
    for (w_exp, b_exp), (w_got, b_got) in zip(expected, got, strict=True):
        assert w_exp == w_got and b_exp["key"] == b_got["key"]
        for name in ("image", "label", "attrs"):
            assert torch.equal(b_exp[name], b_got[name]), name
    assert resumed.bad_samples == uninterrupted.bad_samples >= 1


def test_loader_processes_auto_by_cores_and_a_divisor_of_the_logical_workers() -> None:
    assert resolve_loader_processes("auto", 2, cores_per_rank=2) == 0  # the trainer reads
    assert resolve_loader_processes("auto", 2, cores_per_rank=8) == 2
    assert resolve_loader_processes(1, 4, cores_per_rank=1) == 1
    with pytest.raises(ConfigError, match=r"data\.loader_processes=3 must divide"):
        resolve_loader_processes(3, 4, cores_per_rank=8)


def test_truncated_image_is_skipped_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = make_shards(tmp_path, truncate="k020")
    loader = make_loader(tmp_path, workers=0, batch=1)
    with caplog.at_level(logging.WARNING, logger="distgan.data"):
        got = [b["key"][0] for _, b in take(loader, TOTAL - 1)]
    assert sorted(got) == sorted(set(keys) - {"k020"})  # everything else, once
    assert loader.bad_samples == 1
    assert "skipping sample 'k020' in shard 'shard-000003.tar'" in caplog.text


def test_missing_truncated_and_altered_shards_are_errors_naming_them(tmp_path: Path) -> None:
    make_shards(tmp_path)
    shard = tmp_path / "shard-000002.tar"
    data = shard.read_bytes()

    shard.write_bytes(data[:2700])  # cut off inside the second member: unreadable
    before = {p.pid for p in psutil.Process().children()}
    loader = make_loader(tmp_path, workers=2, batch=4)
    with pytest.raises(ShardError, match=r"shard '.*shard-000002\.tar' is unreadable"):
        take(loader, 20)
    # The error stopped the loader's workers (they ignore SIGTERM: left running, they would
    # block the interpreter's exit forever).
    assert {p.pid for p in psutil.Process().children()} == before
    with pytest.raises(ShardError, match=r"shard-000002\.tar' is corrupt: sha256"):
        make_loader(tmp_path, verify=True)

    shard.unlink()
    with pytest.raises(ShardError, match=r"shard '.*shard-000002\.tar' listed .* is missing"):
        make_loader(tmp_path)


def test_batches_carry_labels_attrs_and_a_target_transformed_alike(tmp_path: Path) -> None:
    make_shards(tmp_path, pairs=True)
    loader = make_loader(tmp_path, batch=5, transforms=Transforms(flip=True, crop=0.5))
    batch = take(loader, 1)[0][1]
    assert batch["image"].shape == batch["target"].shape == (5, 3, 8, 8)
    assert batch["attrs"].shape == (5, 3) and batch["attrs"].dtype == torch.float32
    assert set(batch["attrs"].unique().tolist()) <= {0.0, 1.0}
    assert batch["label"].dtype == torch.long
    assert torch.equal(batch["image"], batch["target"])  # same crop and flip for both


def test_augmentation_is_a_pure_function_of_seed_epoch_and_key(tmp_path: Path) -> None:
    make_shards(tmp_path)
    stream = ShardStream(tmp_path, batch_size=1, seed=0)
    raw = next(stream._raw_samples(stream.manifest["shards"][:1]))
    plain = decode_sample(raw, 3)["image"]
    flip = Transforms(flip=True)
    per_epoch = [decode_sample(raw, 3, flip, seed=0, epoch=e)["image"] for e in range(8)]
    for e in range(8):  # repeatable for the same (seed, epoch, key) ...
        assert torch.equal(per_epoch[e], decode_sample(raw, 3, flip, seed=0, epoch=e)["image"])
    flipped = [torch.equal(x, plain.flip(-1)) for x in per_epoch]
    assert any(flipped) and not all(flipped)  # ... and varies from epoch to epoch
    assert all(f or torch.equal(x, plain) for f, x in zip(flipped, per_epoch, strict=True))

    gray = Transforms(grayscale=True).colour(plain)
    rgb = plain.double() / 255
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    assert gray.shape == (1, 8, 8) and torch.allclose(gray[0].double(), luma * 2 - 1, atol=1e-6)
    gray_stream = ShardStream(tmp_path, batch_size=1, seed=0, transforms=Transforms(grayscale=True))
    assert gray_stream.info.channels == 1


def reference_lab(r: float, g: float, b: float) -> tuple[float, float, float]:
    """CIE 1976 L*a*b* of an sRGB colour, written from the CIE/Lindbloom formulas with ε, κ
    (an independent form of the cube-root/linear branch), D65 reference white."""

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    rl, gl, bl = linear(r), linear(g), linear(b)
    x = 0.4124564 * rl + 0.3575761 * gl + 0.1804375 * bl
    y = 0.2126729 * rl + 0.7151522 * gl + 0.0721750 * bl
    z = 0.0193339 * rl + 0.1191920 * gl + 0.9503041 * bl
    eps, kappa = 216 / 24389, 24389 / 27

    def f(t: float) -> float:
        return t ** (1 / 3) if t > eps else (kappa * t + 16) / 116

    fx, fy, fz = f(x / 0.95047), f(y / 1.0), f(z / 1.08883)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def test_lab_matches_the_reference_formula_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    rgb = torch.from_numpy(rng.random((3, 6, 7)))
    rgb[:, 0, 0] = torch.tensor([1.0, 0.0, 0.0])  # pure red
    rgb[:, 0, 1] = torch.tensor([1.0, 1.0, 1.0])  # white
    rgb[:, 0, 2] = torch.tensor([0.01, 0.02, 0.005])  # dark: the linear branch
    lab = rgb_to_lab(rgb)
    for i in range(6):
        for j in range(7):
            expected = reference_lab(*rgb[:, i, j].tolist())
            assert np.allclose(lab[:, i, j].tolist(), expected, atol=1e-6), (i, j)
    assert np.allclose(lab[:, 0, 0].tolist(), [53.2408, 80.0925, 67.2032], atol=2e-3)  # Lindbloom
    assert np.allclose(lab[:, 0, 1].tolist(), [100.0, 0.0, 0.0], atol=1e-3)
    assert torch.allclose(lab_to_rgb(lab), rgb, atol=1e-9)
    batch = rgb.float()[None].repeat(2, 1, 1, 1)
    assert torch.allclose(lab_to_rgb(rgb_to_lab(batch)), batch, atol=1e-5)  # float32, [B,3,H,W]


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_fast_decoder_gives_pillows_pixels(fmt: str) -> None:
    """torchvision decodes shards' images (faster); the pixels are Pillow's, and a colour
    conversion (RGB shards read as one channel) is Pillow's too."""
    import io

    from PIL import Image

    from distgan.data.decode import _pixels
    from distgan.data.shards import encode_image

    rgb = np.random.default_rng(1).integers(0, 256, (16, 12, 3), dtype=np.uint8)
    data = encode_image(rgb, fmt)
    for channels, mode in ((3, "RGB"), (1, "L")):
        with Image.open(io.BytesIO(data)) as pil:
            expected = np.array(pil.convert(mode))
        got = _pixels(data, channels)
        assert got.dtype == torch.uint8 and got.shape == (channels, 16, 12)
        assert np.array_equal(got.permute(1, 2, 0).numpy().reshape(expected.shape), expected)


def test_decode_threads_and_uint8_batches_never_change_the_data(shards: Path) -> None:
    """Several decode threads per worker (data.decode_threads) read ahead but hand the samples
    over in order; uint8 batches (colour_in_batches=False) convert to the same floats."""
    plain = make_loader(shards, workers=2, processes=0)
    threaded = make_loader(
        shards, workers=2, processes=0, decode_threads=3, colour_in_batches=False
    )
    colour = threaded.stream.transforms.colour_batch
    for (_, a), (_, b) in zip(take(plain, 8), take(threaded, 8), strict=True):
        assert b["image"].dtype == torch.uint8 and a["key"] == b["key"]
        assert torch.equal(colour(b)["image"], a["image"])
