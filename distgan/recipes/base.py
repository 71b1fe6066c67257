"""The recipe / engine contract.

A recipe says *what* to optimise; the engine decides *how* (devices, precision, DDP wrapping,
checkpointing, logging). A recipe:

* validates its own ``model:`` section with ``ModelConfig``;
* builds named networks (``build_models``) and their optimizers (``build_optimizers``);
* declares ``phases``: which network an optimizer step trains, how often, with which loss;
* generates images for sample grids and ``distgan sample``.

During a phase the engine hands the loss a :class:`Nets` view in which the trained network is
the distributed (DDP) wrapper and every other network is the plain module with its parameters
frozen, so e.g. the G step back-propagates *through* D without touching D's gradients or its
gradient synchronisation (the same rule DeepSpeed's two-engine setup needs).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from distgan.config import Config
from distgan.data.stream import DatasetInfo

Batch = dict[str, torch.Tensor]
Logs = dict[str, torch.Tensor]


class Nets:
    """Attribute access to the networks of one phase (``nets.G``, ``nets.D``)."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.__dict__.update(modules)

    def __getattr__(self, name: str) -> nn.Module:
        raise AttributeError(f"no network named '{name}' in this recipe")


class StepContext:
    """What a loss may ask of the engine: the device, this rank's noise generator, the engine
    step (for lazy regularization and schedules) and the trained network's GradScaler (for
    gradient penalties under fp16: see distgan/penalties.py). The engine sets ``step`` and
    ``scaler`` before each phase; the scaler is disabled unless ``train.precision=fp16``.
    """

    def __init__(
        self, device: torch.device, generator: torch.Generator, compile_backend: str | None = None
    ) -> None:
        self.device = device
        self.generator = generator
        self.step = 0
        self.scaler: torch.amp.GradScaler | None = None
        self.compile_backend = compile_backend  # set by the engine from train.compile
        self._compiled: dict[int, nn.Module] = {}

    def compiled(self, module: nn.Module) -> nn.Module:
        """``module`` through ``torch.compile`` when ``train.compile`` is on, for the plain passes
        only: a gradient penalty's double backward must go through ``module`` itself (see
        distgan/penalties.py). Compiled once per module, then cached."""
        if self.compile_backend is None:
            return module
        if id(module) not in self._compiled:
            self._compiled[id(module)] = torch.compile(module, backend=self.compile_backend)
        return self._compiled[id(module)]

    def enter(self, step: int, scaler: torch.amp.GradScaler | None) -> StepContext:
        self.step, self.scaler = step, scaler
        return self

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=self.device, generator=self.generator)

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, device=self.device, generator=self.generator)

    def randint(self, high: int, *shape: int) -> torch.Tensor:
        return torch.randint(high, shape, device=self.device, generator=self.generator)


LossFn = Callable[[Nets, Batch, StepContext], tuple[torch.Tensor, Logs]]


@dataclass(frozen=True)
class Phase:
    """One optimizer step of ``trains`` on ``loss``, run on steps where ``step % every == 0``."""

    name: str
    trains: str
    loss: LossFn
    every: int = 1


class ModelSection(BaseModel):
    """Base for a family's ``model:`` schema (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")


class Recipe(ABC):
    ModelConfig: ClassVar[type[ModelSection]]
    ema_of: ClassVar[str | None] = "G"  # the engine keeps an EMA copy named "<ema_of>_ema"

    def __init__(self, cfg: Config, data: DatasetInfo) -> None:
        self.cfg = cfg
        self.data = data
        self.hp = self.ModelConfig.model_validate(cfg.model)

    @abstractmethod
    def build_models(self) -> dict[str, nn.Module]:
        """Named networks, e.g. ``{"G": …, "D": …}``; built identically on every rank."""

    def build_optimizers(
        self, models: dict[str, nn.Module], fused: bool = False
    ) -> dict[str, torch.optim.Optimizer]:
        """Adam for G and D with the learning rates and betas of ``train`` (TTUR-ready)."""
        t = self.cfg.train
        settings = {"G": (t.lr_g, t.betas_g), "D": (t.lr_d, t.betas_d)}
        return {
            name: torch.optim.Adam(
                models[name].parameters(), lr=lr, betas=betas, fused=fused or None
            )
            for name, (lr, betas) in settings.items()
        }

    @property
    @abstractmethod
    def phases(self) -> list[Phase]:
        """The optimisation schedule of one training step."""

    @abstractmethod
    def generate(
        self, G: nn.Module, n: int, generator: torch.Generator, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``n`` images in [-1, 1] (labels chosen by the caller, or at random if conditional)."""

    def grid(self, G: nn.Module, seed: int, per_row: int) -> tuple[torch.Tensor, int]:
        """Sample-grid images from fixed noise: one row per class for conditional models."""
        device = next(G.parameters()).device
        generator = torch.Generator(device).manual_seed(seed)
        classes = self.data.num_classes if getattr(self.hp, "conditional", False) else 0
        if classes:
            labels = torch.arange(classes, device=device).repeat_interleave(per_row)
            return self.generate(G, len(labels), generator, labels), per_row
        return self.generate(G, per_row * per_row, generator), per_row

    def describe(self) -> dict[str, Any]:
        return {"family": self.cfg.family, **self.hp.model_dump()}
