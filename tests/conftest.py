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
    # the default recipe's evaluation and lr decay off: the tests that build on it check other
    # things (tests/test_eval.py and the shared launch keep them on)
    "eval.every=0",
    "optim.G.decay_start=1",
    "optim.D.decay_start=1",
]
TINY_DCGAN = ["model.g_width=8", "model.d_width=8", "model.z_dim=16", "model.embed_dim=8"]
TINY_WGAN = ["model.g_channels=[16,8,8]", "model.d_channels=[8,8,8]", "model.z_dim=8"]
TINY = [*TINY_RUN, *TINY_DCGAN]  # for digits-cdcgan

# Tiny networks for each shipped recipe. "{name}" stands for a shard folder of
# make_fixture_shards (str.format; literal braces doubled).
_DCGAN = ["model.g_width=8", "model.d_width=8", "model.z_dim=8"]
_RESNET = ["model.g_channels=[16,16,16,16]", "model.d_channels=[16,16,16,16]", "model.z_dim=8"]
_COLORIZE = ["model.encoder=[8,8,8,8,8]", "model.decoder=[8,8,8,8]", "model.d_channels=[8,8,8,8]"]
_VAE = ["model.encoder=[8,8,8]", "model.decoder=[8,8]", "model.z_dim=4"]
_EIGEN = ["model.eps_dim=8", "model.width=0.125", "model.max_channels=16", "model.d_fc=16"]
_SG2 = ["model.z_dim=8", "model.w_dim=8", "model.map_layers=2", "model.d_map_layers=2"]
_SG2 += ["model.channel_base=128", "model.channel_max=8"]
_EVAL = ["eval.n=8", "eval.batch_size=4"]  # evaluation once, at the end of the tiny runs
TINY_RECIPES: dict[str, list[str]] = {
    "digits-wgangp": [
        f"data.shards={SHARDS}",
        "model.g_channels=[16,8,8]",
        "model.d_channels=[8,8,8]",
    ],
    "digits-cdcgan": [f"data.shards={SHARDS}", *_DCGAN, "model.embed_dim=8"],
    "celeba64-wgangp": [
        "data.shards={s64}",
        "model.g_channels=[16,8,8,8]",
        "model.d_channels=[8,8,8,8]",
    ],
    "celeba64-dcgan": ["data.shards={s64}", *_DCGAN],
    "celeba64-mlpgan": [
        "data.shards={s64}",
        "model.base_channels=2",
        "model.conv_channels=8",
        "model.d_hidden=[16]",
    ],
    "cifar10-dcgan": ["data.shards={s32}", *_DCGAN],
    "cifar10-horse-dcgan": ["data.shards={s32}", *_DCGAN],
    "cifar10-sngan": ["data.shards={s32}", *_RESNET],
    "cifar10-sagan": ["data.shards={s32}", *_RESNET],
    "cifar10-colorize": ["data.shards={cifar10}", "eval.shards={cifar10}", *_COLORIZE, *_EVAL],
    "places365-colorize": [
        "data.shards={places365}",
        "eval.shards={places365}",
        "data.resolution=32",
        *_COLORIZE,
        "model.decoder_dropout=[0.5,0,0,0]",
        *_EVAL,
    ],
    "photos-colorize": [*_COLORIZE, *_EVAL],  # the embedded shards/photos
    "facades-pix2pix": [
        "data.shards={facades}",
        "eval.shards={facades}",
        "data.resolution=64",
        "model.width=8",
        "model.downsamplings=6",
        "model.d_channels=[8,8,8,8]",
        *_EVAL,
    ],
    "digits-vae": [f"data.shards={SHARDS}", *_VAE],
    "celeba128-vae": ["data.shards={celeba}", "data.resolution=32", *_VAE],
    "digits-eigengan": [f"data.shards={SHARDS}", *_EIGEN],
    "celeba64-eigengan": ["data.shards={celeba}", "data.resolution=32", *_EIGEN],
    "digits-stylegan2": [f"data.shards={SHARDS}", *_SG2],
    "cifar10-stylegan2": ["data.shards={s32}", *_SG2],
    "celeba64-stylegan2": ["data.shards={s64}", *_SG2],
    "ffhq256-stylegan2": ["data.shards={celeba}", "data.resolution=32", *_SG2],
    "horse2zebra-cyclegan": [
        "data.shards={{A: {h2zA}, B: {h2zB}}}",
        "eval.shards={{A: {h2zA}, B: {h2zB}}}",
        "data.resolution=64",
        "model.width=8",
        "model.blocks=2",
        "model.d_channels=[8,8,8,8]",
        "loss.pool_size=3",
        *_EVAL,
    ],
}


def make_fixture_shards(root: Path) -> dict[str, Path]:
    """Shard folders for the tiny recipes: random uint8 RGB images at 32 and 64 px with 10
    class names (``s32``, ``s64``), and shards made by distgan's own converters from fixture
    archives in the real download layouts (tests/formats.py): ``cifar10``, ``places365``
    (32 px), ``celeba`` (32 px, 40 attributes), ``facades`` (64 px pairs), ``h2zA``/``h2zB``
    (64 px horse2zebra domains)."""
    import formats
    import numpy as np

    from distgan.cli import build_parser
    from distgan.data.shards import Sample, write_shards
    from distgan.data.sources import SOURCES

    rng = np.random.default_rng(0)
    folders = {}
    for res in (32, 64):
        samples = [
            Sample(f"s{i:05d}", rng.integers(0, 256, (res, res, 3), dtype=np.uint8), i % 10)
            for i in range(96)
        ]
        meta = dict(source="synthetic", split="train", resolution=res, channels=3)
        meta["class_names"] = [f"class{i}" for i in range(10)]
        folders[f"s{res}"] = root / f"synthetic{res}"
        write_shards(samples, folders[f"s{res}"], samples_per_shard=12, meta=meta)

    def convert(name: str, source: str, src: Path, *options: str) -> None:
        folders[name] = root / name
        argv = ["shards", source, "--src", str(src), "--out", str(folders[name]), *options]
        SOURCES[source].convert(build_parser().parse_args([*argv, "--workers", "1"]))

    downloads = root / "downloads"
    convert(
        "cifar10", "cifar10", formats.cifar10(downloads / "cifar10")[0], "--samples-per-shard", "8"
    )
    places = formats.places365(downloads / "places365")[0]
    convert("places365", "places365", places, "--size", "32", "--samples-per-shard", "3")
    facades = formats.facades(downloads / "facades", n=8)
    convert("facades", "paired", facades, "--size", "64", "--samples-per-shard", "2")
    celeba = formats.celeba(downloads / "celeba", n=16)[0]
    convert("celeba", "celeba", celeba, "--size", "32", "--samples-per-shard", "4")
    horses = formats.cyclegan(downloads / "horse2zebra", n=6)
    for domain in "AB":
        options = ["--size", "64", "--samples-per-shard", "2", "--domain", domain]
        convert(f"h2z{domain}", "unpaired", horses, *options)
    return folders


def tiny_recipe(name: str, shards: dict[str, Path]) -> list[str]:
    """The overrides of TINY_RECIPES[name] with the fixture shard folders filled in."""
    folders = {key: str(path) for key, path in shards.items()}
    return [arg.format(**folders) for arg in TINY_RECIPES[name]]


# The shared 2-process runs of every shipped recipe (fixture `trained`).
STEPS, EVERY = 12, 4
COMMON = [
    "train.batch_size=4",
    f"train.steps={STEPS}",
    f"train.checkpoint_every={EVERY}",
    "train.seed=3",
    "log.every=3",
    f"log.sample_every={STEPS}",
    "log.samples_per_class=2",
    "log.wandb=disabled",
    "data.num_workers=1",
    "data.shuffle_buffer=8",
]


def recipe_args(name: str, shards: dict[str, Path], run_dir: Path) -> list[str]:
    return [*tiny_recipe(name, shards), *COMMON, f"run.dir={run_dir}"]


@pytest.fixture(scope="session")
def fixture_shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_fixture_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture(scope="session")
def trained(fixture_shards: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """Every shipped recipe, trained by the real engine in ONE 2-process launch (see
    tests/train_recipes.py): (runs folder, the launch's stderr)."""
    root = tmp_path_factory.mktemp("runs")
    runs = [(name, recipe_args(name, fixture_shards, root / name)) for name in TINY_RECIPES]
    runs.append(("digits-cdcgan", transfer_args(fixture_shards, root)))
    proc = run(train_recipes_cmd(2, runs), timeout=900)
    return root, proc.stderr


# A FreezeD transfer run from the 2-process digits-cdcgan run, in the same launch (its DDP must
# accept frozen parameters): run folder root / "transfer" (tests/test_transfer.py).
TRANSFER_STEPS = 4


def transfer_args(shards: dict[str, Path], root: Path) -> list[str]:
    source = root / "digits-cdcgan"
    extra = [f"train.steps={TRANSFER_STEPS}", f"init.from={source}", "init.freeze_d=2"]
    return [*recipe_args("digits-cdcgan", shards, root / "transfer"), *extra]


def train_recipes_cmd(
    processes: int, runs: dict[str, list[str]] | list[tuple[str, list[str]]]
) -> list[str]:
    """Train several recipes one after the other in the same processes (tests/train_recipes.py):
    ``{recipe: overrides}``, or ``[(recipe, overrides), …]`` to train one recipe twice."""
    pairs = runs.items() if isinstance(runs, dict) else runs
    argv = [item for name, args in pairs for item in (name, "\n".join(args))]
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


def run_and_kill_after(
    cmd: list[str], path: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> str:
    """Start ``cmd`` (the tests' environment plus ``env``); SIGKILL its whole process tree once
    ``path`` exists."""
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**env_for_tests(), **(env or {})},
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


def multinode_cmd(machine_rank: int, port: int, *args: str, processes: int = 2) -> list[str]:
    """``accelerate launch`` of one of two loopback "nodes" (launch/multinode.yaml); ``processes``
    counts both nodes' processes."""
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    return [accelerate, "launch", "--config_file", str(ROOT / "launch" / "multinode.yaml"),
            "--num_machines", "2", "--machine_rank", str(machine_rank),
            "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
            "--num_processes", str(processes), "-m", "distgan", *args]  # fmt: skip


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_nodes(*args: str, processes: int = 2, timeout: float = 300) -> str:
    """Two loopback "nodes" started together and waited for; both must exit 0. Returns node 0's
    output (stdout and stderr)."""
    port = free_port()
    procs = [
        subprocess.Popen(
            multinode_cmd(rank, port, *args, processes=processes),
            cwd=ROOT,
            env=env_for_tests(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    return outputs[0]
