"""Shared helpers: run distgan as users do (real subprocesses, real accelerate launch)."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARDS = ROOT / "shards" / "digits"

# Tiny runs and networks: fast enough for tests, the same code paths as the default job.
TINY_RUN = [
    f"data.shards={SHARDS}",
    "train.batch_size=16",
    "log.every=5",
    "log.sample_every=10",
    "log.samples_per_class=4",
]
TINY_DCGAN = ["model.g_width=8", "model.d_width=8", "model.z_dim=16", "model.embed_dim=8"]
TINY_WGAN = ["model.g_channels=[16,8,8]", "model.d_channels=[8,8,8]", "model.z_dim=8"]
TINY = [*TINY_RUN, *TINY_DCGAN]  # for digits-cdcgan

# Tiny networks for each shipped recipe ("{32}"/"{64}": fixture shards at that resolution, made
# by make_fixture_shards).
_DCGAN = ["model.g_width=8", "model.d_width=8", "model.z_dim=8"]
_RESNET = ["model.g_channels=[16,16,16,16]", "model.d_channels=[16,16,16,16]", "model.z_dim=8"]
TINY_RECIPES: dict[str, list[str]] = {
    "digits-wgangp": [
        f"data.shards={SHARDS}",
        "model.g_channels=[16,8,8]",
        "model.d_channels=[8,8,8]",
    ],
    "digits-cdcgan": [f"data.shards={SHARDS}", *_DCGAN, "model.embed_dim=8"],
    "celeba64-wgangp": ["{64}", "model.g_channels=[16,8,8,8]", "model.d_channels=[8,8,8,8]"],
    "celeba64-dcgan": ["{64}", *_DCGAN],
    "celeba64-mlpgan": [
        "{64}",
        "model.base_channels=2",
        "model.conv_channels=8",
        "model.d_hidden=[16]",
    ],
    "cifar10-dcgan": ["{32}", *_DCGAN],
    "cifar10-horse-dcgan": ["{32}", *_DCGAN],
    "cifar10-sngan": ["{32}", *_RESNET],
    "cifar10-sagan": ["{32}", *_RESNET],
}


def make_fixture_shards(root: Path) -> dict[int, Path]:
    """Random uint8 RGB images at 32 and 64 px with 10 class names, 8 shards of 12 each."""
    import numpy as np

    from distgan.data.shards import Sample, write_shards

    rng = np.random.default_rng(0)
    folders = {}
    for res in (32, 64):
        samples = [
            Sample(f"s{i:05d}", rng.integers(0, 256, (res, res, 3), dtype=np.uint8), i % 10)
            for i in range(96)
        ]
        meta = dict(source="synthetic", split="train", resolution=res, channels=3)
        meta["class_names"] = [f"class{i}" for i in range(10)]
        folders[res] = root / f"synthetic{res}"
        write_shards(samples, folders[res], samples_per_shard=12, meta=meta)
    return folders


def tiny_recipe(name: str, shards: dict[int, Path]) -> list[str]:
    """The overrides of TINY_RECIPES[name] with the fixture shard folders filled in."""
    return [f"data.shards={shards[int(a[1:-1])]}" if a[0] == "{" else a for a in TINY_RECIPES[name]]


def train_recipes_cmd(processes: int, runs: dict[str, list[str]]) -> list[str]:
    """Train several recipes one after the other in the same processes (tests/train_recipes.py)."""
    argv = [item for name, args in runs.items() for item in (name, " ".join(args))]
    script = str(ROOT / "tests" / "train_recipes.py")
    if processes == 1:
        return [sys.executable, script, *argv]
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    config = str(ROOT / "launch" / "cpu-2proc.yaml")
    return [accelerate, "launch", "--config_file", config, script, *argv]


def env_for_tests() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("WANDB_API_KEY", None)
    env["WANDB_MODE"] = "offline"  # never reach the network, whatever the recipe says
    env["PYTHONUNBUFFERED"] = "1"
    # the tests' own families (tests/plugins/, `family: plugins.NAME`) are importable
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "tests"), env.get("PYTHONPATH")]))
    return env


def distgan_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "distgan", *args]


def launch_cmd(processes: int, *args: str) -> list[str]:
    """The documented command: 1 process plainly, N through accelerate with launch/cpu-2proc."""
    if processes == 1:
        return distgan_cmd(*args)
    assert processes == 2, "launch/cpu-2proc.yaml starts 2 processes"
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    config = str(ROOT / "launch" / "cpu-2proc.yaml")
    return [accelerate, "launch", "--config_file", config, "-m", "distgan", *args]


def run(
    cmd: list[str], timeout: float = 600, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``cmd`` in the repository with the tests' environment (plus ``env``)."""
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env={**env_for_tests(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant (torchrun starts workers in their own sessions)."""
    parent = psutil.Process(pid)
    for proc in [*parent.children(recursive=True), parent]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)


def run_and_kill_after(cmd: list[str], path: Path, timeout: float = 300) -> str:
    """Start ``cmd``; SIGKILL its whole process tree once ``path`` exists."""
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env_for_tests(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {path} appeared:\n{proc.stdout.read()[-6000:]}")
        if time.monotonic() > deadline:
            kill_tree(proc.pid)
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.02)
    kill_tree(proc.pid)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == -signal.SIGKILL, f"expected SIGKILL, got {proc.returncode}"
    return output


def final_weights(run_dir: Path, step: int) -> dict[str, dict[str, torch.Tensor]]:
    state = torch.load(
        run_dir / "checkpoints" / f"step-{step:08d}.pt", map_location="cpu", weights_only=True
    )
    assert state["step"] == step
    return state["networks"]


def assert_bit_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for net in a:
        assert a[net].keys() == b[net].keys(), net
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), f"{net}.{key} differs"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """A test must not leave child processes behind: loader workers ignore SIGTERM, and one left
    running blocks the interpreter's exit for ever (pytest prints its summary, then hangs)."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    gc.collect()  # unreferenced loaders shut their workers down when collected
    deadline = time.monotonic() + 10
    while True:
        left = [p for p in me.children(recursive=True) if p.pid not in before and p.is_running()]
        left = [p for p in left if p.status() != psutil.STATUS_ZOMBIE]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    names = []
    for proc in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            names.append(" ".join(proc.cmdline()[:6]) or proc.name())
            proc.kill()
    assert not left, f"the test left {len(left)} processes running: {names}"
