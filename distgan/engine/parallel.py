"""How trained networks are synchronised across processes: DDP or DeepSpeed ZeRO 1/2.

Both strategies give the trainer the same small interface: ``module(name)`` for the forward pass
of a network a phase trains, ``zero_grad/backward/step(phase)`` for the networks the phase trains
(one backward of the phase's loss per micro-batch, then one optimizer step per network),
``accumulating(phase, last)`` around each micro-batch (gradients are synchronised across ranks on
the last one only), and optimizer state for checkpoints. Networks a phase does not train are
always called as plain, frozen modules (see families/base.py), which is also what DeepSpeed's
one-engine-per-network setup requires.

DeepSpeed is chosen by the launch config (``launch/deepspeed-zero2.yaml`` sets
``ACCELERATE_USE_DEEPSPEED`` and the JSON file): distgan builds one engine per trained network
itself instead of using accelerate's plugin (one model per plugin; on CPU it needs a gloo
backend and in accelerate 1.15 imports transformers).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from distgan.engine.runtime import Precision
from distgan.errors import ConfigError
from distgan.families.base import Phase


def deepspeed_config_from_launch() -> str | None:
    """The DeepSpeed JSON that ``accelerate launch`` was given, if the launch chose DeepSpeed.

    Removes accelerate's DeepSpeed switch from the environment, so that the Accelerator made
    afterwards only sets up the processes (see the module docstring)."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true":
        return None
    os.environ.pop("ACCELERATE_USE_DEEPSPEED")
    path = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if not path:
        raise ConfigError("DeepSpeed launch without deepspeed_config_file in the launch config")
    return path


def float64_sum_hook(
    state: None, bucket: torch.distributed.GradBucket
) -> torch.futures.Future[torch.Tensor]:
    """DDP's gradient mean, summed in float64 (with more than 2 ranks, on gloo).

    DDP lays its buckets out anew after the first step of every process, so a resumed run's
    first step reduces other slices together than the uninterrupted run did; with 3 or more
    ranks a float32 sum then depends on the order (1 ulp here and there: a 4-process resume was
    not bit-identical). Float64 holds the sum of a few float32 values exactly, so the rounded
    mean no longer depends on the layout. 2 ranks keep DDP's own float32 sum (a + b is exact in
    any order); this sum equals it. Costs twice the all-reduce bytes: only on gloo (CPU), where
    distgan promises bit-identical resumes; NCCL's sums are not bit-deterministic anyway
    (README, "Resuming"), and GPU clusters keep DDP's float32 all-reduce at full speed."""
    del state
    buffer = bucket.buffer()
    total = buffer.div(torch.distributed.get_world_size()).to(torch.float64)
    future = torch.distributed.all_reduce(total, async_op=True).get_future()

    def mean(done: torch.futures.Future) -> torch.Tensor:
        return buffer.copy_(done.value()[0])

    return future.then(mean)


def skip_all_reduce_hook(
    state: None, bucket: torch.distributed.GradBucket
) -> torch.futures.Future[torch.Tensor]:
    """Each rank keeps its own gradients: DDP's bookkeeping without the reduction (only for
    ``distgan bench ddp``, which times the two apart)."""
    del state
    future: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    future.set_result(bucket.buffer())
    return future


# DDP checks the hooks' annotations as objects (this module's are strings)
for _hook in (float64_sum_hook, skip_all_reduce_hook):
    _hook.__annotations__ = {
        "state": None,
        "bucket": torch.distributed.GradBucket,
        "return": torch.futures.Future[torch.Tensor],
    }


class DDPStrategy:
    """DDP through accelerate: a wrapper per trained network (never static_graph)."""

    sharded = False  # optimizer states are identical on every rank: rank 0's are saved
    comm_hook = None  # another gradient reduction (distgan bench ddp: none at all)

    def __init__(
        self,
        accelerator: Accelerator,
        precision: Precision,
        models: dict[str, nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
    ) -> None:
        self.precision = precision
        self.optimizers = optimizers
        self.wrapped = {name: accelerator.prepare_model(models[name]) for name in optimizers}
        exact = accelerator.num_processes > 2 and torch.distributed.get_backend() == "gloo"
        hook = self.comm_hook or (float64_sum_hook if exact else None)
        for module in self.wrapped.values():
            if hook is not None and isinstance(module, nn.parallel.DistributedDataParallel):
                module.register_comm_hook(None, hook)

    def module(self, name: str) -> nn.Module:
        return self.wrapped[name]

    def zero_grad(self, phase: Phase) -> None:
        for name in phase.trains:
            self.optimizers[name].zero_grad(set_to_none=True)

    @contextlib.contextmanager
    def accumulating(self, phase: Phase, last: bool) -> Iterator[None]:
        """Around one micro-batch's forward and backward: before the last micro-batch of an
        optimizer step, DDP only accumulates gradients locally (``no_sync``)."""
        with contextlib.ExitStack() as stack:
            if not last:
                for name in phase.trains:
                    if isinstance(self.wrapped[name], nn.parallel.DistributedDataParallel):
                        stack.enter_context(self.wrapped[name].no_sync())
            yield

    def backward(self, phase: Phase, loss: torch.Tensor, micro_batches: int, last: bool) -> None:
        """Gradients of the mean loss over the micro-batches (summed into ``.grad``)."""
        del last  # DDP's all-reduce happens in the backward outside ``no_sync``
        self.precision.backward(loss / micro_batches if micro_batches > 1 else loss, phase.name)

    def step(self, phase: Phase) -> torch.Tensor | None:
        """Under fp16, a device flag that is False where the grad scaler skipped the step."""
        return self.precision.step([self.optimizers[n] for n in phase.trains], phase.name)

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "scalers": {n: s.state_dict() for n, s in self.precision.scalers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for name, scaler in self.precision.scalers.items():
            scaler.load_state_dict(state["scalers"][name])


class DeepSpeedStrategy:
    """One DeepSpeed engine per trained network (ZeRO stage 1 or 2), the family's optimizers.

    Weights, gradients and the optimizer stay fp32 (DeepSpeed's own bf16/fp16 modes are off):
    ``train.precision=bf16`` is distgan's autocast around the forward passes, exactly as under
    DDP, so a ZeRO run computes what the DDP run computes and only the reductions differ.

    The forward pass goes through ``engine.module``: gradients reach DeepSpeed through its
    parameter hooks, and a gradient penalty's double backward fails through the engine itself.
    """

    sharded = True  # each rank holds only its partition of the optimizer state

    def __init__(
        self,
        config_file: str,
        precision: Precision,
        models: dict[str, nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        phases: list[Phase],
        batch_size: int,
        world_size: int,
        accumulate: int = 1,
    ) -> None:
        for phase in phases:
            if len(phase.trains) > 1:
                raise ConfigError(
                    f"phase '{phase.name}' trains {' and '.join(phase.trains)} with one loss: "
                    "DeepSpeed keeps one engine per network and cannot back-propagate one loss "
                    "into several engines; launch this family with DDP (e.g. "
                    "launch/1node-gpus.yaml)"
                )
        if precision.mode == "fp16":
            raise ConfigError(
                "train.precision=fp16 does not combine with the DeepSpeed launch (its loss scaling "
                "would fight distgan's GradScaler): use bf16 or no"
            )
        os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
        import deepspeed

        try:
            config = json.loads(Path(config_file).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(
                f"DeepSpeed config '{config_file}' is not readable JSON: {err}"
            ) from None
        stage = config.get("zero_optimization", {}).get("stage", 0)
        if stage not in (1, 2):
            raise ConfigError(f"'{config_file}': ZeRO stage {stage} is not supported (use 1 or 2)")
        asked = config.get("gradient_accumulation_steps", "auto")
        if asked not in ("auto", accumulate):
            raise ConfigError(
                f"'{config_file}' sets gradient_accumulation_steps {asked}: set distgan's "
                "train.accumulate instead (it drives DeepSpeed's) and remove it from the JSON"
            )
        config.update(
            train_micro_batch_size_per_gpu=batch_size,
            train_batch_size=batch_size * accumulate * world_size,
            gradient_accumulation_steps=accumulate,
            bf16={"enabled": False},
            fp16={"enabled": False},
        )
        config.setdefault("gradient_clipping", 0.0)  # DeepSpeed's default would clip at 1.0
        self.engines = {}
        for name, optimizer in optimizers.items():
            engine, *_ = deepspeed.initialize(
                model=models[name], optimizer=optimizer, config=config, dist_init_required=False
            )
            self.engines[name] = engine

    def module(self, name: str) -> nn.Module:
        return self.engines[name].module

    def zero_grad(self, phase: Phase) -> None:
        self.engines[phase.trains[0]].zero_grad()

    @contextlib.contextmanager
    def accumulating(self, phase: Phase, last: bool) -> Iterator[None]:
        """DeepSpeed reduces (ZeRO-2: partitions) the gradients at the boundary we mark."""
        self.engines[phase.trains[0]].set_gradient_accumulation_boundary(last)
        yield

    def backward(self, phase: Phase, loss: torch.Tensor, micro_batches: int, last: bool) -> None:
        """DeepSpeed divides the loss by its gradient_accumulation_steps (train.accumulate)."""
        del micro_batches, last
        self.engines[phase.trains[0]].backward(loss)

    def step(self, phase: Phase) -> torch.Tensor | None:
        self.engines[phase.trains[0]].step()
        return None

    def state_dict(self) -> dict[str, Any]:
        """This rank's partition: the base optimizer's state and the fp32 master weights (plain
        tensors, so the checkpoint still loads with ``weights_only=True``)."""
        state = {}
        for name, engine in self.engines.items():
            zero = engine.optimizer
            state[name] = {
                "base": zero.optimizer.state_dict(),
                "fp32": [t.detach().clone() for t in zero.single_partition_of_fp32_groups],
            }
        return {"optimizers": state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, engine in self.engines.items():
            zero, saved = engine.optimizer, state["optimizers"][name]
            zero.optimizer.load_state_dict(saved["base"])
            with torch.no_grad():
                for master, value in zip(
                    zero.single_partition_of_fp32_groups, saved["fp32"], strict=True
                ):
                    master.copy_(value)
