"""Behaviour unchanged, on two nets.

The float64 run (tests/float64_golden.py) holds on any CPU kind: a few recipes' weights after 4
float64 steps equal stored tensors to rel 1e-9, natively and with AVX2 kernels.

The exact one: the weights of every shipped recipe after 20 steps (1 process, 1 thread, compile
off, tiny networks, fixture shards) hash to digests recorded before the engine contract was
rewritten, in fp32 and in bf16 autocast with channels_last (what ``precision=auto`` picks on
CPUs with bf16 hardware).

Float kernels differ between CPU kinds (AVX2 vs AVX-512, cache sizes), so the digests are keyed
by the CPU kind and torch version; on a kind without a record the test is skipped and prints how
to record it. A change that alters the numerics on purpose re-records the digests in the same
commit and says why in its message:

    DISTGAN_RECORD_GOLDEN=1 python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from pathlib import Path

import pytest
import torch
from conftest import (
    TINY_RECIPES,
    final_weights,
    make_fixture_shards,
    run,
    tiny_recipe,
    train_recipes_cmd,
)

GOLDEN = Path(__file__).parent / "golden" / "weights-after-20-steps.json"
STEPS = 20
SETTINGS = [
    f"train.steps={STEPS}",
    f"train.checkpoint_every={STEPS}",
    "train.batch_size=8",
    "train.seed=5",
    "train.compile=false",
    "log.wandb=disabled",
    "log.every=10",
    f"log.sample_every={STEPS}",
    "log.samples_per_class=2",
    "data.num_workers=0",
    "data.shuffle_buffer=16",
]
VARIANTS = {
    "fp32": ["train.precision=no", "train.channels_last=false"],
    "bf16": ["train.precision=bf16", "train.channels_last=true"],
}
RECORD = os.environ.get("DISTGAN_RECORD_GOLDEN") == "1"


def cpu_kind() -> str:
    """Vendor, family/model and the SIMD flags that select float kernels, plus torch's version."""
    info: dict[str, str] = {}
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("vendor_id", "cpu family", "model") and key not in info:
                info[key] = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        info["vendor_id"] = platform.processor() or platform.machine()
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return (
        f"{info.get('vendor_id', '?')} family {info.get('cpu family', '?')} model "
        f"{info.get('model', '?')} [{' '.join(simd)}] torch {torch.__version__}"
    )


def digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a network's tensors: names, shapes, dtypes and bytes in logical order."""
    h = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        h.update(f"{key}:{list(tensor.shape)}:{tensor.dtype}".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_weights_after_20_steps_match_the_recorded_digests(tmp_path: Path, variant: str) -> None:
    kind = cpu_kind()
    recorded = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    if variant not in recorded.get(kind, {}) and not RECORD:
        pytest.skip(
            f"no {variant} digests recorded for this CPU kind ({kind}); record them on the "
            "commit before a change with DISTGAN_RECORD_GOLDEN=1"
        )
    shards = make_fixture_shards(tmp_path / "shards")
    runs = {
        name: [
            *tiny_recipe(name, shards),
            *SETTINGS,
            *VARIANTS[variant],
            f"run.dir={tmp_path / name}",
        ]
        for name in TINY_RECIPES
    }
    # one thread: the results do not depend on the machine's core count
    run(train_recipes_cmd(1, runs), timeout=900, env={"OMP_NUM_THREADS": "1"})
    digests = {
        name: {net: digest(state) for net, state in final_weights(tmp_path / name, STEPS).items()}
        for name in TINY_RECIPES
    }
    if RECORD:
        recorded.setdefault(kind, {})[variant] = digests
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    expected = recorded[kind][variant]
    differ = [
        f"{name}/{net}"
        for name in expected
        for net in expected[name]
        if digests.get(name, {}).get(net) != expected[name][net]
    ]
    assert not differ, f"{variant} weights after {STEPS} steps changed on {kind}: {differ}"


@pytest.mark.parametrize("kernels", ["native", "avx2"])
def test_float64_weights_match_the_stored_tensors_on_any_cpu(kernels: str) -> None:
    if kernels == "native":
        import float64_golden

        worst = max(float64_golden.differences().items(), key=lambda item: item[1])
        assert worst[1] <= float64_golden.TOLERANCE, f"{worst[0]} differs by {worst[1]:.3g}"
        return
    script = str(Path(__file__).parent / "float64_golden.py")
    avx2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    proc = run([sys.executable, script], env=avx2, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
