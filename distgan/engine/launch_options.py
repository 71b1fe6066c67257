"""The ``accelerate launch`` options that overlap distgan's own keys, under one precedence rule.

accelerate hands its launch options (config file or flags) to the processes as environment
variables (accelerate 1.15, ``accelerate/utils/launch.py``): ``ACCELERATE_MIXED_PRECISION``,
``ACCELERATE_DYNAMO_BACKEND``, ``ACCELERATE_GRADIENT_ACCUMULATION_STEPS`` (DeepSpeed launches),
``ACCELERATE_USE_FSDP``, ``ACCELERATE_USE_MEGATRON_LM``, ``ACCELERATE_USE_PARALLELISM_CONFIG``.
distgan does its own precision (autocast), compilation (per pass, eager where a pass cannot be
compiled, as gradient penalties' double backward) and accumulation, so left alone these options
would be ignored (precision, accumulation) or fight distgan (dynamo compiles the critic whole and
breaks every penalty).

**The rule.** distgan's key decides: ``train.precision``, ``train.compile``,
``train.accumulate``. A launch option is honoured when the key is left open (``auto``;
``train.accumulate`` not set in the recipe or on the command line), accepted when it says the
same as the key, and refused in one line naming the key otherwise. Launch options distgan has no
key for (FSDP, Megatron-LM, a parallelism config, fp8, dynamo backends other than inductor) are
refused in one line. DeepSpeed's JSON ``gradient_accumulation_steps`` must then be ``"auto"`` or
equal ``train.accumulate`` (engine/parallel.py). The launch's dynamo backend is then cleared, so
accelerate never compiles a network itself.
"""

from __future__ import annotations

import os

from distgan.config import Config
from distgan.errors import ConfigError

UNSUPPORTED = {
    "ACCELERATE_USE_FSDP": "FSDP",
    "ACCELERATE_USE_MEGATRON_LM": "Megatron-LM",
    "ACCELERATE_USE_PARALLELISM_CONFIG": "a parallelism config (tensor/context parallel)",
}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def honour_launch_options(cfg: Config) -> list[str]:
    """Apply the rule above to ``cfg.train`` (in place) from this process's environment; one
    line per launch option that filled in a key (for the log). Raises ConfigError."""
    for var, what in UNSUPPORTED.items():
        if _flag(var):
            raise ConfigError(
                f"the launch config chooses {what}, which distgan does not run: launch with DDP "
                "(launch/1node-gpus.yaml) or DeepSpeed ZeRO-2 (launch/deepspeed-zero2.yaml, "
                "optimizer states and gradients sharded)"
            )
    t, updates, notes = cfg.train, {}, []

    precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").strip().lower() or "no"
    if precision == "fp8":
        raise ConfigError(
            "the launch asks mixed_precision fp8, which distgan does not train in: set "
            "mixed_precision: 'no' in the launch config and train.precision=bf16|fp16|no"
        )
    if precision != "no" and precision != t.precision:
        if t.precision != "auto":
            raise ConfigError(
                f"the launch asks mixed_precision {precision} but train.precision={t.precision}: "
                "train.precision decides; set the same in both, or mixed_precision: 'no'"
            )
        updates["precision"] = precision
        notes.append(f"train.precision={precision} (from the launch's mixed_precision)")

    backend = os.environ.get("ACCELERATE_DYNAMO_BACKEND", "NO").strip().upper() or "NO"
    if backend != "NO":
        if backend != "INDUCTOR":
            raise ConfigError(
                f"the launch asks dynamo_backend {backend}: distgan compiles each pass itself, "
                "with inductor only (train.compile=true); set dynamo_backend: 'no'"
            )
        if t.compile is False:
            raise ConfigError(
                "the launch asks dynamo_backend inductor but train.compile=false: train.compile "
                "decides; set train.compile=true, or dynamo_backend: 'no'"
            )
        if t.compile == "auto":
            updates["compile"] = True
            notes.append("train.compile=true (from the launch's dynamo_backend inductor)")
        os.environ["ACCELERATE_DYNAMO_BACKEND"] = "NO"  # accelerate must not compile as well

    steps = os.environ.get("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "auto").strip().lower()
    if steps not in ("", "auto"):
        if not steps.isdigit() or int(steps) < 1:
            raise ConfigError(f"the launch's gradient_accumulation_steps {steps!r}: not a count")
        if int(steps) != t.accumulate:
            if "accumulate" in t.model_fields_set:
                raise ConfigError(
                    f"the launch asks gradient_accumulation_steps {steps} but "
                    f"train.accumulate={t.accumulate}: train.accumulate decides; set the same in "
                    "both, or remove gradient_accumulation_steps from the launch"
                )
            updates["accumulate"] = int(steps)
            notes.append(
                f"train.accumulate={steps} (from the launch's gradient_accumulation_steps)"
            )
    if updates:
        cfg.train = t.model_copy(update=updates)
    return notes
