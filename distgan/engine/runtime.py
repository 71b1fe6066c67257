"""Processes, devices and precision: everything that differs between a laptop CPU and a cluster.

* One process per device, started by ``accelerate launch`` (or ``torchrun``, or plainly).
* On a machine without CUDA, several processes use gloo (``Accelerator(cpu=True)``); the
  world size actually seen is checked against the one the launcher asked for, because
  ``accelerate launch --cpu --num_processes 2`` silently starts ONE process, and
  ``torchrun``/``--multi_gpu`` without CPU mode starts N processes that each think they are alone.
* Precision: fp32, bf16 autocast (CPU and CUDA), fp16 autocast + one GradScaler per phase
  (CUDA only). ``train.precision`` and the speed switches are resolved once per run
  (:func:`resolve_settings`), and everything else reads the result.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

from distgan.config import Config
from distgan.engine.ddp_options import ddp_kwargs
from distgan.errors import ConfigError, LaunchError, TrainingDiverged
from distgan.penalties import loss_scale

log = logging.getLogger("distgan")


def requested_world_size(cfg: Config) -> int | None:
    """What the user or launcher asked for: ``train.num_processes``, else the launcher's env."""
    if cfg.train.num_processes:
        return cfg.train.num_processes
    for var in ("WORLD_SIZE", "ACCELERATE_NUM_PROCESSES"):
        if os.environ.get(var):
            return int(os.environ[var])
    return None


CPU_TRAP = (
    "`accelerate launch --cpu --num_processes N` starts only ONE process (accelerate 1.15); on a "
    "CPU-only machine use `accelerate launch --config_file launch/cpu-2proc.yaml -m distgan "
    "train …` (or ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N -m distgan train …)"
)


def fell_into_cpu_trap() -> bool:
    """accelerate's --cpu launcher sets MASTER_ADDR only when asked for several processes, yet
    starts one process without WORLD_SIZE: that combination is the trap."""
    env = os.environ
    return bool(env.get("ACCELERATE_USE_CPU")) and "MASTER_ADDR" in env and "WORLD_SIZE" not in env


def process_accelerator(collective_timeout: float) -> Accelerator:
    """The Accelerator of this process (no checks): gloo on CPU-only machines, and how every
    trained network is wrapped in DDP (the trainer and ``distgan bench`` use the same)."""
    # A dead rank must not hang the others forever.
    kwargs = [InitProcessGroupKwargs(timeout=timedelta(seconds=collective_timeout))]
    cpu = not torch.cuda.is_available()
    accelerator = Accelerator(cpu=cpu, mixed_precision="no", kwargs_handlers=kwargs)
    # no static graph, no buffer sync per forward pass (engine/ddp_options.py says why this
    # attribute, which prepare() reads, and not kwargs_handlers)
    accelerator.ddp_handler = ddp_kwargs()
    return accelerator


def gpus_present() -> bool:
    """NVIDIA GPUs on this machine, whether or not this torch can use them (device files)."""
    return any(Path("/dev").glob("nvidia[0-9]*"))


def check_gpus_usable(cfg: Config) -> None:
    """A machine with GPUs that torch cannot use (a driver older than the CUDA of the installed
    wheel, a CPU-only wheel) would otherwise train on the CPU with only a log line."""
    if cfg.train.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before the first CUDA call: none is made
        return
    if gpus_present() and not torch.cuda.is_available():
        raise LaunchError(
            f"this machine has NVIDIA GPUs but torch {torch.__version__} cannot use them (CUDA "
            f"build {torch.version.cuda or 'none'}; an older driver or a CPU-only wheel?): "
            "install the torch build for its CUDA (README 'Installing for your GPU'), or train "
            "on the CPU with train.device=cpu"
        )


def configure_gpu_kernels(deterministic: bool) -> None:
    """cuDNN picks the fastest convolution algorithms for the (fixed) shapes, and fp32 matmuls
    and convolutions use TF32 tensor cores (10-bit mantissa inputs, fp32 accumulation: the usual
    trade for GANs, off under ``train.deterministic``). ``deterministic``: cuDNN's and cuBLAS's
    deterministic algorithms and ``use_deterministic_algorithms`` for exact GPU resume."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.allow_tf32 = not deterministic
    torch.set_float32_matmul_precision("highest" if deterministic else "high")


def make_accelerator(cfg: Config) -> Accelerator:
    if fell_into_cpu_trap():
        raise LaunchError(CPU_TRAP)
    check_gpus_usable(cfg)
    if torch.cuda.is_available():
        configure_gpu_kernels(cfg.train.deterministic)
    accelerator = process_accelerator(cfg.train.collective_timeout)
    asked = requested_world_size(cfg)
    seen = accelerator.num_processes
    if asked is not None and asked != seen:
        raise LaunchError(
            f"{asked} processes were asked for but this process sees a world of {seen} "
            f"(distributed type {accelerator.distributed_type.value}). {CPU_TRAP}"
        )
    return accelerator


def describe(accelerator: Accelerator) -> str:
    backend = "none"
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        backend = torch.distributed.get_backend()
    return (
        f"rank {accelerator.process_index}/{accelerator.num_processes} "
        f"backend={backend} device={accelerator.device} "
        f"type={accelerator.distributed_type.value} threads={torch.get_num_threads()} "
        f"cpus={len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}"
    )


def cores_per_rank(accelerator: Accelerator) -> int:
    """The CPU cores this process may use, shared with the other ranks on its machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    return max(1, (cores or 1) // max(local, 1))


def broadcast_buffers(modules: list[torch.nn.Module]) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank. DDP broadcasts a trained network's
    buffers at its next forward, but between steps each rank holds the statistics of its own last
    batch (and so do the EMA copies): evaluation uses rank 0's, the ones checkpoints keep."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    for module in modules:
        for buffer in module.buffers():
            torch.distributed.broadcast(buffer, src=0)


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` on every rank (for per-rank RNG states and data positions)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj, weights_only=True)
    return out


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor (in dicts, lists, tuples) moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {key: to_cpu(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(value) for value in obj)
    return obj


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` on rank 0 (None elsewhere), its tensors moved to the CPU first: a
    pickled CUDA tensor would open a context on its GPU in every process that unpickles it
    (which exclusive-process GPUs refuse), and only rank 0 writes checkpoints."""
    obj = to_cpu(obj)
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    main = torch.distributed.get_rank() == 0
    out: list[Any] | None = [None] * torch.distributed.get_world_size() if main else None
    torch.distributed.gather_object(obj, out, dst=0, weights_only=True)
    return out


def params_digest(models: dict[str, torch.nn.Module]) -> str:
    """A short hash of every parameter: equal on all ranks iff DDP kept them in sync."""
    digest = hashlib.sha256()
    for name in sorted(models):
        for tensor in models[name].parameters():
            flat = tensor.detach().cpu().reshape(-1)  # logical order, whatever the memory format
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def check_ranks_in_sync(models: dict[str, torch.nn.Module], step: int) -> None:
    digests = gather(params_digest(models))
    if len(set(digests)) > 1:
        raise RuntimeError(
            f"ranks diverged at step {step}: parameter digests {digests}; this is a bug, "
            "please report it with your launch command"
        )
    if len(digests) > 1:
        log.info(
            "step %d: parameters identical on all %d ranks (digest %s)",
            step,
            len(digests),
            digests[0],
        )


def cpu_info() -> tuple[str, set[str]]:
    """(model name, flags) of this machine's first CPU in /proc/cpuinfo (("", set()) without)."""
    model, flags = "", set()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return model, flags
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model, flags


# oneDNN instruction sets without bf16 arithmetic. ONEDNN_MAX_CPU_ISA=AVX2 (with
# ATEN_CPU_CAPABILITY=avx2) gives an AVX-512 machine an AVX2-only CPU's kernels: then bf16 is slow
# there too, whatever /proc/cpuinfo says.
ISAS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                     "AVX512_CORE_VNNI"}  # fmt: skip


def cpu_has_fast_bf16() -> bool:
    """bf16 matmuls in hardware (AVX512-BF16 or AMX) that oneDNN may use; elsewhere bf16 on CPU
    is emulated, slow."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in ISAS_WITHOUT_BF16:
        return False
    return bool(cpu_info()[1] & {"avx512_bf16", "amx_bf16"})


def gpu_has_bf16() -> bool:
    """bf16 in the GPU's hardware (Ampere and later). ``is_bf16_supported()`` alone also counts
    emulation, which V100 and T4 offer: slow, and fp16 + GradScaler is what they are built for."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(mode: str, device: torch.device) -> str:
    """``auto`` → bf16 on GPUs and CPUs with bf16 hardware, fp16 on older GPUs, else fp32."""
    if mode != "auto":
        return mode
    if device.type == "cuda":
        return "bf16" if gpu_has_bf16() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "no"


class Precision:
    """Autocast + gradient scaling for one training run: one GradScaler per phase, since a phase
    back-propagates one (scaled) loss into every network it trains."""

    DTYPES: ClassVar[dict[str, torch.dtype | None]] = {
        "no": None,
        "bf16": torch.bfloat16,
        "fp16": torch.float16,
    }

    def __init__(
        self,
        mode: str,
        device: torch.device,
        phase_names: list[str],
        max_skipped_in_a_row: int = 50,
    ) -> None:
        """``mode``: a resolved precision (no, bf16, fp16; see :func:`resolve_settings`)."""
        if mode == "fp16" and device.type != "cuda":
            raise ConfigError(
                "train.precision=fp16 needs a CUDA GPU (GradScaler); use train.precision=bf16 "
                "or no on CPU"
            )
        if mode == "bf16" and device.type == "cuda" and not gpu_has_bf16():
            raise ConfigError("train.precision=bf16: this GPU has no bf16 hardware; use fp16")
        self.mode = mode
        self.device = device
        self.dtype = self.DTYPES[mode]
        use_scaler = mode == "fp16"
        self.scalers = {
            name: torch.amp.GradScaler(device.type, enabled=use_scaler) for name in phase_names
        }
        # fp16 optimizer steps skipped since start-up, in a row, and the longest run since the
        # last ``check``: device tensors, read on the host only when logged
        self.skipped_steps, self.skipped_in_a_row, self.longest_in_a_row = (
            torch.zeros((), dtype=torch.int64, device=device) for _ in range(3)
        )
        self.max_skipped_in_a_row = max_skipped_in_a_row

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.dtype is None:
            yield
        else:
            with torch.autocast(self.device.type, dtype=self.dtype):
                yield

    def backward(self, loss: torch.Tensor, phase: str) -> None:
        self.scalers[phase].scale(loss).backward()

    def step(self, optimizers: list[torch.optim.Optimizer], phase: str) -> torch.Tensor | None:
        """One step of each optimizer. Under fp16, a device flag (no host sync), False where the
        scaler skipped them for inf/NaN gradients, which is exactly when it lowers its scale;
        skips are counted (logged as ``amp/skipped_steps``). None without a scaler."""
        scaler = self.scalers[phase]
        if not scaler.is_enabled():
            for optimizer in optimizers:
                optimizer.step()
            return None
        before = torch.as_tensor(loss_scale(scaler), device=self.device).clone()
        for optimizer in optimizers:
            scaler.step(optimizer)
        scaler.update()
        skipped = loss_scale(scaler) < before
        self.skipped_steps += skipped
        self.skipped_in_a_row = (self.skipped_in_a_row + 1) * skipped
        self.longest_in_a_row = torch.maximum(self.longest_in_a_row, self.skipped_in_a_row)
        return ~skipped

    def check(self) -> None:
        """At each log (a host sync anyway): ``max_skipped_in_a_row`` fp16 steps skipped in a
        row mean a diverged run; it stops rather than go on without learning."""
        in_a_row = int(self.longest_in_a_row)  # (always 0 without fp16)
        self.longest_in_a_row.zero_()
        if in_a_row >= self.max_skipped_in_a_row:
            scale = ", ".join(f"{n} {s.get_scale():.3g}" for n, s in self.scalers.items())
            raise TrainingDiverged(
                f"fp16: {in_a_row} optimizer steps in a row were skipped for inf/NaN "
                f"gradients (loss scales now {scale}); lower the learning rates, use "
                "train.precision=bf16, or resume from an earlier checkpoint"
            )


@dataclass(frozen=True)
class Settings:
    """The precision and speed switches of a run, resolved for its device (``auto`` → the
    measured defaults). Resolved once; everything else reads them from here."""

    precision: str  # no | bf16 | fp16
    compile: bool
    channels_last: bool
    fused_optimizers: bool

    def apply(self, modules: list[torch.nn.Module]) -> None:
        """channels_last for every network. (Compilation is per pass: ``StepContext.compiled``.)"""
        if self.channels_last:
            for module in modules:
                module.to(memory_format=torch.channels_last)

    @property
    def compile_backend(self) -> str | None:
        return "inductor" if self.compile else None

    def batch(self, batch: dict) -> dict:
        """The batch in the networks' memory format (nested batches of named streams too)."""
        if not self.channels_last:
            return batch
        out = {}
        for key, value in batch.items():
            if isinstance(value, dict):
                value = self.batch(value)
            elif isinstance(value, torch.Tensor) and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
            out[key] = value
        return out


def resolve_settings(cfg: Config, device: torch.device, deepspeed: bool = False) -> Settings:
    """``auto`` follows what ``distgan bench step`` measured (README, "Training speed": what
    ``auto`` picks, and what each lever gave): channels_last on (the 256 px batch-1 translation
    recipes, slower with it, turn it off in their YAML), fused Adam on, torch.compile off (never
    yet measured on a GPU; on CPU it did not pay). DeepSpeed keeps fp32 weights and gradients
    and composes with distgan's bf16 autocast, not with fp16 (engine/parallel.py): there
    ``auto`` never means fp16, and parameters stay contiguous (DeepSpeed flattens them; it
    cannot broadcast channels_last weights)."""
    t = cfg.train
    precision = resolve_precision(t.precision, device)
    if deepspeed and t.precision == "auto" and precision == "fp16":
        precision = "no"
    if deepspeed and t.channels_last is True:
        raise ConfigError("train.channels_last=true does not work with the DeepSpeed launch")

    def resolve(value: bool | str, auto: bool) -> bool:
        return auto if value == "auto" else bool(value)

    return Settings(
        precision=precision,
        compile=resolve(t.compile, False),
        channels_last=resolve(t.channels_last, not deepspeed),
        fused_optimizers=resolve(t.fused_optimizers, True),
    )
