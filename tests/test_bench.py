"""Each `distgan bench` command runs end to end for 2 steps and reports consistent figures
(correctness of the harness; speed itself is measured by running the benchmarks, never here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_DCGAN, TINY_WGAN, distgan_cmd, run

from distgan.bench._common import SPEED_FLAGS


def bench(*args: str) -> dict:
    out = run(distgan_cmd("bench", *args, "--json")).stdout
    return json.loads(out[out.index("{\n") :])


def test_bench_step_with_baseline() -> None:
    r = bench(
        "step",
        "--recipe",
        "digits-cdcgan",
        "--batch",
        "8",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--baseline",
        "--compare",
        "aug.diffaug=translation",
        *TINY_DCGAN,
    )
    assert r["recipe"] == "digits-cdcgan" and r["batch"] == 8 and r["resolution"] == 32
    assert r["step_s"] > 0 and r["img_per_s"] == pytest.approx(8 / r["step_s"], rel=1e-6)
    assert r["gflop_per_step"] > 0 and r["ceiling_gflop_s"] > 0
    expected = 100 * r["gflop_per_step"] / r["step_s"] / r["ceiling_gflop_s"]
    assert r["utilisation_pct"] == pytest.approx(expected, rel=1e-6)
    assert r["baseline"].startswith("PyTorch DCGAN example")
    assert r["speedup"] == pytest.approx(r["baseline_step_s"] / r["step_s"], rel=1e-6)
    cost = 100 * (r["compare_step_s"] / r["step_s"] - 1)  # timed in the same turns
    assert r["compare"] == "aug.diffaug=translation" and r["compare_cost_pct"] == pytest.approx(
        cost
    )
    # every figure names its machine: CPU model, the kernel-picking flags, what `auto` chose
    machine = r["machine"]
    flags = set(Path("/proc/cpuinfo").read_text().split())
    assert machine["cpu"] and machine["cores"] >= 1
    assert set(machine["flags"]) == {f for f in SPEED_FLAGS if f in flags}
    bf16 = "avx512_bf16" in flags or "amx_bf16" in flags
    assert machine["auto_precision"] == ("bf16" if bf16 else "no")
    assert machine["kernels"].startswith("ATen ")


def test_auto_precision_follows_the_kernels_onednn_may_use(monkeypatch) -> None:
    """Limited to AVX2 kernels (how an AVX-512 machine stands in for a Zen 3), bf16 would be
    emulated: ``auto`` picks fp32 there, as on the real AVX2 CPU."""
    from distgan.engine.runtime import resolve_precision

    cpu = torch.device("cpu")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert resolve_precision("auto", cpu) == "no"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")
    bf16 = {"avx512_bf16", "amx_bf16"} & set(Path("/proc/cpuinfo").read_text().split())
    assert resolve_precision("auto", cpu) == ("bf16" if bf16 else "no")


def test_bench_gp_and_ddp() -> None:
    gp = bench(
        "gp",
        "--recipe",
        "digits-wgangp",
        "--batch",
        "8",
        "--steps",
        "2",
        "--warmup",
        "1",
        *TINY_WGAN,
    )
    assert gp["critic_step_with_gp_s"] > 0 and gp["critic_step_without_gp_s"] > 0
    ratio = gp["critic_step_with_gp_s"] / gp["critic_step_without_gp_s"]
    assert gp["gp_overhead_ratio"] == pytest.approx(ratio, rel=1e-6)

    ddp = bench(
        "ddp",
        "--recipe",
        "digits-cdcgan",
        "--procs",
        "1,2",
        "--batch",
        "4",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--rounds",
        "1",
        *TINY_DCGAN,
    )
    one, two = ddp["rows"]
    assert (one["processes"], two["processes"]) == (1, 2) and not two["oversubscribed"]
    efficiency = 100 * one["step_ms"] / two["step_ms"]
    assert two["weak_efficiency_pct"] == pytest.approx(efficiency, rel=1e-6)
    parts = two["bookkeeping_ms"] + two["all_reduce_ms"]  # the decomposition adds up
    assert parts == pytest.approx(two["step_ms"] - one["step_ms"], rel=1e-6)
    assert two["all_reduce_mb_per_step"] > 0


def test_bench_data_on_a_fixture(tmp_path) -> None:
    r = bench(
        "data",
        "--make-fixture",
        "64",
        "--work",
        str(tmp_path),
        "--batch",
        "16",
        "--warmup",
        "1",
        "--rounds",
        "1",
    )
    assert r["resolution"] == 64 and r["batch"] == 16
    stream, folder = r["stream"]["images_per_s"], r["imagefolder"]["images_per_s"]
    assert stream > 0 and folder > 0
    assert r["ratio"] == pytest.approx(stream / folder, rel=0.01)
