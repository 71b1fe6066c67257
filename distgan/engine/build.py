"""Building a run: processes → data → family, networks, EMA copies, optimizers, precision and
the parallel strategy. The trainer and ``distgan bench`` use the same builder, so a benchmark
times exactly what training runs.

Everything stateful ends up in one :class:`Run`, which the checkpoint saves and restores
(engine/checkpoint.py) and the loop advances (engine/trainer.py).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn

from distgan.augment import Augment, build_augment
from distgan.config import Config
from distgan.data.info import DatasetInfo
from distgan.data.loader import TrainingData, resolve_decode_threads, resolve_loader_processes
from distgan.data.subset import Selection
from distgan.data.transforms import Transforms
from distgan.engine.ema import make_ema, update_ema
from distgan.engine.parallel import DDPStrategy, DeepSpeedStrategy, deepspeed_config_from_launch
from distgan.engine.runtime import (
    Precision,
    Settings,
    cores_per_rank,
    make_accelerator,
    process_accelerator,
    resolve_settings,
)
from distgan.errors import ConfigError
from distgan.families import build_family, get_family
from distgan.families.base import Family, Nets, Phase, StepContext, check_phases
from distgan.models.freeze import freeze_input_blocks
from distgan.schedules import ema_decay_by_images, linear_decay

log = logging.getLogger("distgan")


@dataclass
class Run:
    """One process's part of a training run: what the loop advances and checkpoints save."""

    cfg: Config
    accelerator: Accelerator
    family: Family
    networks: dict[str, nn.Module]
    ema: dict[str, nn.Module]  # network name → its EMA copy ("<name>_ema" in checkpoints)
    optimizers: dict[str, torch.optim.Optimizer]
    settings: Settings
    precision: Precision
    strategy: DDPStrategy | DeepSpeedStrategy
    phases: list[Phase]
    noise: torch.Generator  # this rank's noise, saved in checkpoints
    ctx: StepContext
    data: TrainingData | None = None
    step: int = 0
    images_seen: int = 0
    wandb_id: str | None = None
    run_id: str | None = None  # the lineage of its checkpoints (engine/rundir.py)
    parent: dict[str, Any] | None = None  # the checkpoint of another folder it continues
    init_from: dict[str, Any] | None = None  # where its weights came from (init.from)
    frozen: list[nn.Parameter] = field(default_factory=list)  # init.freeze_d's (FreezeD)
    base_lr: dict[str, float] = field(default_factory=dict)
    base_betas: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def images_per_step(self) -> int:
        """Images of one optimizer step over all ranks: batch × micro-batches × processes."""
        return self.cfg.train.batch_size * self.cfg.train.accumulate * self.world

    def next_batches(self) -> list[dict[str, Any]]:
        """The next step's ``train.accumulate`` micro-batches on this rank's device, in the
        networks' memory format (data positions count micro-batches)."""
        return [self._on_device(next(self.data)) for _ in range(self.cfg.train.accumulate)]

    @functools.cached_property
    def transforms(self) -> Transforms:
        """The data's colour conversion, resolved once (it runs on every batch)."""
        return transforms_of(self.cfg)

    def _on_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A loader batch (uint8 images) on the device, colour-converted there (gray, L*a*b*,
        [-1, 1]) and in the networks' memory format."""
        batch = to_device(batch, self.device)
        colour = self.transforms.colour_batch
        if self.data is not None and self.data.named:
            batch = {name: colour(stream) for name, stream in batch.items()}
        else:
            batch = colour(batch)
        return self.settings.batch(batch)

    def set_learning_rates(self, phase: Phase) -> None:
        """Each trained network's lr at this step: a pure function of the step (exact resume)."""
        for name in phase.trains:
            scale = linear_decay(
                self.step, self.cfg.train.steps, self.cfg.optimizer(name).decay_start
            )
            for group in self.optimizers[name].param_groups:
                group["lr"] = self.base_lr[name] * scale

    def set_live(self, live: tuple[str, ...]) -> None:
        """Gradients on for the networks ``live`` (a phase trains or prepares), off for the
        others, and never for frozen parameters."""
        for name, module in self.networks.items():
            module.requires_grad_(name in live)
        for parameter in self.frozen:
            parameter.requires_grad_(False)

    def update_ema(self) -> None:
        t = self.cfg.train
        decay = t.ema_decay
        if t.ema_kimg is not None:  # by images seen before this step's (StyleGAN2-ADA)
            decay = ema_decay_by_images(
                self.images_seen, self.images_per_step, t.ema_kimg, t.ema_rampup
            )
        for name, copy in self.ema.items():
            update_ema(copy, self.networks[name], decay)

    def inference_nets(self, weights: str = "ema") -> Nets:
        """The networks for outputs: EMA copies where the family keeps them (``weights="ema"``),
        else the trained ones."""
        return Nets.for_outputs(self.networks, self.ema, use_ema=weights == "ema")


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors (also in the nested batches of named streams) moved to ``device``."""
    return {
        k: to_device(v, device)
        if isinstance(v, dict)
        else v.to(device, non_blocking=True)
        if isinstance(v, torch.Tensor)
        else v
        for k, v in batch.items()
    }


@contextlib.contextmanager
def evaluating(nets: Nets) -> Iterator[Nets]:
    """Networks in eval mode (BatchNorm statistics frozen, no dropout, no spectral-norm power
    iteration), restored afterwards: previews and evaluation change no training state."""
    modules = [nets.raw(name) for name in nets]
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with torch.no_grad():
            yield nets
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)


def transforms_of(cfg: Config) -> Transforms:
    d = cfg.data
    return Transforms(flip=d.flip, crop=d.crop, grayscale=d.grayscale, lab=d.lab)


def open_data(cfg: Config, accelerator: Accelerator) -> TrainingData:
    """This rank's training streams (``data.shards``: one folder or named folders)."""
    d, cores = cfg.data, cores_per_rank(accelerator)
    processes = resolve_loader_processes(d.loader_processes, d.num_workers, cores)
    return TrainingData(
        d.shards,
        batch_size=cfg.train.batch_size,
        seed=cfg.train.seed,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        num_workers=d.num_workers,
        loader_processes=processes,
        decode_threads=resolve_decode_threads(d.decode_threads, processes, cores),
        pin_memory=accelerator.device.type == "cuda",
        shuffle_buffer=d.shuffle_buffer,
        verify=d.verify,
        mode=d.mode,
        resolution=d.resolution,
        transforms=transforms_of(cfg),
        colour_in_batches=False,  # uint8 to the device, converted there (Run.next_batches)
        selection=Selection.of(d),
    )


def start_processes(cfg: Config) -> tuple[Accelerator, str | None]:
    """This process's Accelerator (checked against the launch) and the DeepSpeed config if the
    launch chose DeepSpeed (read first: the Accelerator must not set DeepSpeed up itself)."""
    deepspeed_config = deepspeed_config_from_launch()
    return make_accelerator(cfg), deepspeed_config


def build_run(
    cfg: Config,
    accelerator: Accelerator,
    deepspeed_config: str | None = None,
    data_info: dict[str, DatasetInfo] | None = None,
) -> Run:
    """Everything of one process, ready for the loop. Without ``data_info`` the training streams
    are opened (the shapes come from their manifests); with it (``distgan bench``) no data is read.
    """
    data = open_data(cfg, accelerator) if data_info is None else None
    family = build_family(cfg, data.info if data else data_info)
    device, rank, t = accelerator.device, accelerator.process_index, cfg.train

    # networks: identical initialisation on every rank, then per-rank randomness
    set_seed(t.seed)
    networks = {name: m.to(device) for name, m in family.build_networks().items()}
    if sorted(networks) != sorted(family.networks):
        raise ConfigError(
            f"family '{cfg.family}' built networks {sorted(networks)}, but declares "
            f"{sorted(family.networks)}"
        )
    frozen = freeze_input_blocks(networks, family.discriminators, cfg.init.freeze_d, cfg.family)
    ema = {name: make_ema(networks[name]) for name in family.ema}
    settings = resolve_settings(cfg, device, deepspeed=deepspeed_config is not None)
    settings.apply([*networks.values(), *ema.values()])
    set_seed((t.seed + 1_000_003 * rank) % 2**32)  # numpy takes seeds below 2³²
    noise = torch.Generator(device).manual_seed(t.seed * 7919 + rank)

    # optimizers for every network a phase trains, and how they are synchronised across ranks
    phases = family.phases
    check_phases(phases)
    trained = [n for n in family.networks if any(n in p.trains for p in phases)]
    ratio = lazy_regularization_ratios(phases)
    optimizers = {
        name: torch.optim.Adam(
            [p for p in networks[name].parameters() if p.requires_grad],  # not frozen ones
            lr=cfg.optimizer(name).lr * ratio.get(name, 1),
            betas=tuple(b ** ratio.get(name, 1) for b in cfg.optimizer(name).betas),
            fused=settings.fused_optimizers or None,
        )
        for name in trained
    }
    precision = Precision(settings.precision, device, [p.name for p in phases], t.max_skipped_steps)
    if deepspeed_config:
        strategy = DeepSpeedStrategy(
            deepspeed_config,
            precision,
            networks,
            optimizers,
            phases,
            t.batch_size,
            accelerator.num_processes,
            t.accumulate,
        )
    else:
        strategy = DDPStrategy(accelerator, precision, networks, optimizers)
    return Run(
        cfg=cfg,
        accelerator=accelerator,
        family=family,
        networks=networks,
        ema=ema,
        optimizers=optimizers,
        settings=settings,
        precision=precision,
        strategy=strategy,
        phases=phases,
        noise=noise,
        ctx=StepContext(
            device,
            noise,
            settings.compile_backend,
            augment_stage(cfg, t.batch_size * t.accumulate * accelerator.num_processes),
        ),
        data=data,
        frozen=frozen,
        base_lr={name: optimizers[name].param_groups[0]["lr"] for name in trained},
        base_betas={name: optimizers[name].param_groups[0]["betas"] for name in trained},
    )


def lazy_regularization_ratios(phases: list[Phase]) -> dict[str, float]:
    """StyleGAN2's correction for networks regularized by a phase of their own every k steps
    (``Phase.lazy_correction``): their Adam takes lr × r and betas ** r, r = k / (k + 1), so the
    extra optimizer steps do not change the effective step size and momentum."""
    ratios = {}
    for phase in phases:
        if not phase.lazy_correction:
            continue
        for name in phase.trains:
            others = [p for p in phases if name in p.trains and p is not phase]
            if name in ratios or any(p.every != 1 or p.lazy_correction for p in others):
                raise ConfigError(
                    f"phase '{phase.name}': lazy_correction assumes one regularization phase "
                    f"of '{name}' beside main phases that run every step"
                )
            ratios[name] = phase.every / (phase.every + 1)
    return ratios


def augment_stage(cfg: Config, images_per_step: int) -> Augment | None:
    """The ``aug:`` stage (checked against ``Family.augments`` by distgan/recipe.py); ADA's p
    moves by the images of all ranks (``Run.images_per_step``)."""
    return build_augment(cfg.aug, images_per_step) or None


def build_for_bench(cfg: Config, info: DatasetInfo) -> Run:
    """:func:`build_run` for ``distgan bench``: synthetic data shapes, this process's group."""
    accelerator = process_accelerator(cfg.train.collective_timeout)
    streams = {name: info for name in get_family(cfg.family).streams} or {"": info}
    return build_run(cfg, accelerator, data_info=streams)
