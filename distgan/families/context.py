"""The step context: what a family's loss may ask of the engine during one step (see
distgan/families/base.py for the contract as a whole)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

log = logging.getLogger("distgan")


class StepContext:
    """What a loss may ask of the engine: the device, this rank's noise (``randn``/``rand``/
    ``randint``), the engine step (for lazy regularization and schedules), the phase's GradScaler
    (for gradient penalties under fp16: see distgan/penalties.py), the augmentation stage
    (``augment``), ``tally`` for run-wide statistics, and ``scratch``, a dict cleared at the start
    of every step in which phases of one step share work (e.g. the D phase's fakes for the G
    phase: see ``Phase.prepares``).

    With gradient accumulation (``train.accumulate = K``) each phase runs its loss on K
    micro-batches. ``scratch`` is then one dict per micro-batch, and the draws are split-free: a
    draw's first dimension is the batch, micro-batch 0 draws for all K micro-batches at once and
    each micro-batch takes its slice, so K micro-batches of n see exactly the noise of one batch
    of K·n. Every micro-batch must therefore draw the same shapes in the same order (per-sample
    draws; a 0-d draw is one value for the whole step).
    """

    def __init__(
        self,
        device: torch.device,
        generator: torch.Generator,
        compile_backend: str | None = None,
        augment: Any = None,
    ) -> None:
        self.device = device
        self.generator = generator
        self.step = 0
        self.scaler: torch.amp.GradScaler | None = None
        self.compile_backend = compile_backend  # set by the engine from train.compile
        self.augment_stage = augment  # the recipe's aug: section (distgan/augment.py)
        self.micro_batches = 1
        self.micro_batch = 0
        self.tallies: dict[str, torch.Tensor] = {}  # summed until the run-wide reduction
        self._prepares: tuple[str, ...] = ()  # the current phase's Phase.prepares
        self._scratch: list[dict[str, Any]] = [{}]
        self._draws: list[torch.Tensor] = []  # this phase's draws for all its micro-batches
        self._next_draw = 0
        self._compiled: dict[int, nn.Module] = {}

    def compiled(self, module: nn.Module) -> nn.Module:
        """``module`` through ``torch.compile`` when ``train.compile`` is on, for the plain passes
        only: a gradient penalty's double backward must go through ``module`` itself (see
        distgan/penalties.py). Compiled once per module, then cached."""
        if self.compile_backend is None:
            return module
        if id(module) not in self._compiled:
            compiled = torch.compile(module, backend=self.compile_backend)
            self._compiled[id(module)] = CompiledOrEager(module, compiled)
        return self._compiled[id(module)]

    # ------------------------------------------------------------------ set by the engine

    def begin_step(self, step: int, micro_batches: int = 1) -> None:
        self.step, self.micro_batches = step, micro_batches
        self._scratch = [{} for _ in range(micro_batches)]

    def enter(
        self, step: int, scaler: torch.amp.GradScaler | None, prepares: tuple[str, ...] = ()
    ) -> StepContext:
        """Enter a phase (at ``step``, with its scaler and ``Phase.prepares``): its first
        micro-batch comes next."""
        self.step, self.scaler, self._prepares = step, scaler, prepares
        self._draws = []
        self.enter_micro_batch(0)
        return self

    def leave(self) -> None:
        """The phase is done: its draws for all micro-batches are freed."""
        self._draws = []

    def enter_micro_batch(self, index: int) -> None:
        self.micro_batch, self._next_draw = index, 0

    # ------------------------------------------------------------------ for losses

    @property
    def scratch(self) -> dict[str, Any]:
        """Work shared between the phases of this step, for the current micro-batch."""
        return self._scratch[self.micro_batch]

    def prepares(self, name: str) -> bool:
        """Whether this phase's forward pass of ``name`` is kept, with its graph, for a later
        phase (``Phase.prepares``). False under gradient accumulation, where one optimizer step
        spans several micro-batches: the later phase then runs ``name`` again (from the inputs
        the family kept in ``scratch``, e.g. z). The result is the same where ``name`` keeps no
        randomness or state outside the context: its dropout (global RNG) draws new masks, and
        BatchNorm's running statistics and spectral norm's power iteration see one more pass."""
        return name in self._prepares and self.micro_batches == 1

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` through the recipe's augmentation stage (identity without ``aug:``)."""
        return self.augment_stage(images, self) if self.augment_stage else images

    def augment_feedback(self, real_outputs: torch.Tensor) -> None:
        """D's outputs on augmented real images, from families that augment D's inputs: an
        adaptive stage (ADA) tallies its overfitting heuristic from them."""
        if self.augment_stage:
            self.augment_stage.feedback(real_outputs, self)

    def tally(self, name: str, value: torch.Tensor | float) -> None:
        """Add ``value`` to the statistic ``name`` (float64, on the device: no host sync); every
        ``run_state_every`` steps the engine sums it over the ranks and hands the totals to the
        family's ``update_run_state`` (names ``aug/…``: the augmentation stage's; see
        distgan/engine/run_state.py). Every rank must tally the same names."""
        value = torch.as_tensor(value, dtype=torch.float64, device=self.device).detach()
        self.tallies[name] = self.tallies[name] + value if name in self.tallies else value

    def randn(self, *shape: int) -> torch.Tensor:
        return self._draw(torch.randn, shape)

    def rand(self, *shape: int) -> torch.Tensor:
        return self._draw(torch.rand, shape)

    def randint(self, high: int, *shape: int) -> torch.Tensor:
        return self._draw(functools.partial(torch.randint, high), shape)

    def _draw(self, fn: Callable[..., torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
        """``fn(shape)`` from this rank's generator, split-free across micro-batches."""

        def draw(size: tuple[int, ...]) -> torch.Tensor:
            return fn(size, device=self.device, generator=self.generator)

        k = self.micro_batches
        if k == 1:
            return draw(shape)
        whole_shape = (shape[0] * k, *shape[1:]) if shape else shape
        if self.micro_batch == 0:
            self._draws.append(draw(whole_shape))
        if self._next_draw >= len(self._draws) or (
            tuple(self._draws[self._next_draw].shape) != tuple(whole_shape)
        ):
            raise RuntimeError(
                f"micro-batch {self.micro_batch} drew {list(shape)} where micro-batch 0 drew "
                "otherwise: with train.accumulate every micro-batch must draw the same shapes"
            )
        whole = self._draws[self._next_draw]
        self._next_draw += 1
        if not shape:
            return whole
        n = shape[0]
        return whole[self.micro_batch * n : (self.micro_batch + 1) * n]


class CompiledOrEager:
    """A network's compiled pass that falls back to the eager one, with one line, when
    compilation fails (an op the compiler cannot handle, a backend missing on this machine):
    the run goes on at eager speed instead of dying at its first step."""

    def __init__(self, eager: nn.Module, compiled: Callable[..., Any]) -> None:
        self.eager, self.compiled = eager, compiled

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except torch._dynamo.exc.TorchDynamoException as err:
                reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
                log.warning(
                    "torch.compile failed for %s (%s): it runs eagerly",
                    type(self.eager).__name__,
                    reason,
                )
                self.compiled = None
        return self.eager(*args, **kwargs)
