"""The training loop. Read it top to bottom: set up → (resume) → for each step: one batch, the
recipe's phases, EMA, logging, samples, checkpoints.

The trainer composes the other engine modules and knows nothing about any GAN family: the recipe
says what to optimise (networks, optimizers, phases, losses, samples).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import broadcast_object_list, set_seed

from distgan.config import Config, to_yaml
from distgan.data.stream import ResumableLoader, ShardStream
from distgan.data.transforms import Transforms
from distgan.engine import checkpoint as ckpt
from distgan.engine.ema import make_ema, update_ema
from distgan.engine.parallel import DataParallel, DeepSpeedParallel, deepspeed_config_from_launch
from distgan.engine.reporting import RunLogger, setup_console_logging
from distgan.engine.runtime import Precision, describe, make_accelerator, speed_settings
from distgan.engine.signals import StopFlag, StopTraining, parse_duration
from distgan.recipes import get_recipe
from distgan.recipes.base import Nets, Phase, StepContext

log = logging.getLogger("distgan")


class TrainingDiverged(RuntimeError):
    """A loss became inf/NaN outside fp16's skipped steps."""


def _resume_source(cfg: Config, run_dir: Path, is_main: bool) -> Path | None:
    """Which checkpoint to resume from (decided by rank 0, then shared with every rank)."""
    if cfg.resume == "never":
        return None
    if cfg.resume != "auto":
        return Path(cfg.resume)
    if not is_main:
        return None
    found = ckpt.latest_valid(run_dir)
    return found[0] if found else None


def _gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` on every rank (for per-rank RNG states and data positions)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj, weights_only=True)
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
    digests = _gather(params_digest(models))
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


def train_step(
    phases: list[Phase],
    step: int,
    models: dict[str, torch.nn.Module],
    parallel: DataParallel | DeepSpeedParallel,
    precision: Precision,
    ctx: StepContext,
    batch: dict[str, Any],
) -> dict[str, torch.Tensor]:
    """One training step: every phase due at ``step`` does one optimizer step of its network.

    Returns the logged values of the phases that stepped (detached tensors: no host sync)."""
    logged: dict[str, torch.Tensor] = {}
    for phase in phases:
        if step % phase.every:
            continue
        trained = phase.trains
        for name, module in models.items():
            module.requires_grad_(name == trained)
        nets = Nets({**models, trained: parallel.module(trained)})
        parallel.zero_grad(trained)
        ctx.enter(step, precision.scalers[trained])
        with precision.autocast():
            loss, logs = phase.loss(nets, batch, ctx)
        parallel.backward(trained, loss)
        if not parallel.step(trained):
            continue  # fp16 skipped it (inf/NaN gradients): counted, its losses not logged
        logged.update({key: value.detach() for key, value in logs.items()})
    return logged


def train(cfg: Config) -> Path:
    deepspeed_config = deepspeed_config_from_launch()
    accelerator = make_accelerator(cfg)
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    is_main = accelerator.is_main_process
    setup_console_logging(rank)
    for line in _gather(describe(accelerator)):
        log.info("%s", line)
    run_dir = cfg.run_dir
    t = cfg.train

    # --- data
    stream = ShardStream(
        cfg.data.shards,
        batch_size=t.batch_size,
        seed=t.seed,
        rank=rank,
        world_size=world,
        num_workers=cfg.data.num_workers,
        shuffle_buffer=cfg.data.shuffle_buffer,
        verify=cfg.data.verify,
        mode=cfg.data.mode,
        resolution=cfg.data.resolution,
        transforms=Transforms(
            flip=cfg.data.flip, crop=cfg.data.crop, grayscale=cfg.data.grayscale, lab=cfg.data.lab
        ),
    )
    loader = ResumableLoader(stream, cfg.data.num_workers, pin_memory=device.type == "cuda")

    # --- networks: identical initialisation on every rank, then per-rank randomness
    recipe = get_recipe(cfg.family)(cfg, stream.info)
    set_seed(t.seed)
    models = {name: m.to(device) for name, m in recipe.build_models().items()}
    ema_name = f"{recipe.ema_of}_ema" if recipe.ema_of else None
    if ema_name:
        models[ema_name] = make_ema(models[recipe.ema_of])
    speed = speed_settings(cfg, device)
    speed.apply(models)
    set_seed(t.seed + 1_000_003 * rank)
    noise = torch.Generator(device).manual_seed(t.seed * 7919 + rank)
    ctx = StepContext(device, noise, speed.compile_backend)

    # --- resume: weights before the networks are wrapped (DeepSpeed copies them at wrap time)
    step, images_seen, wandb_id, state = 0, 0, None, None
    source = broadcast_object_list([_resume_source(cfg, run_dir, is_main)])[0]
    if source is not None:
        state = ckpt.load(source)
        try:
            for name, module in models.items():
                module.load_state_dict(state["models"][name])
        except (KeyError, RuntimeError) as err:
            raise ckpt.CheckpointError(
                f"checkpoint '{source}' does not fit recipe '{cfg.name}' "
                f"({str(err).splitlines()[0][:120]}); use another run.dir or resume=never"
            ) from None
        step, images_seen, wandb_id = state["step"], state["images_seen"], state.get("wandb_id")

    # --- optimizers, precision, and how trained networks are synchronised (DDP or DeepSpeed)
    optimizers = recipe.build_optimizers(models, fused=speed.fused_optimizers)
    # DeepSpeed runs in fp32 for now (see engine/parallel.py): `auto` means fp32 there.
    mode = "no" if deepspeed_config and t.precision == "auto" else t.precision
    precision = Precision(mode, device, list(optimizers))
    if deepspeed_config:
        parallel = DeepSpeedParallel(
            deepspeed_config, precision, models, optimizers, t.batch_size, world
        )
    else:
        parallel = DataParallel(accelerator, precision, models, optimizers)
    if state is not None:
        sharded = state["parallel_sharded"]
        if sharded != parallel.sharded or (sharded and len(state["parallel"]) != world):
            raise ckpt.CheckpointError(
                f"checkpoint '{source}' was written by another parallel setup (DDP vs DeepSpeed, "
                "or another number of DeepSpeed ranks); resume it with the launch that wrote it"
            )
        parallel.load_state_dict(state["parallel"][rank] if sharded else state["parallel"])
        if len(state["rng"]) == world:
            ckpt.restore_rng(state["rng"][rank], noise)
            loader.load_state_dict(state["data"][rank])
        else:
            log.warning(
                "checkpoint was written by %d processes, this run has %d: weights and "
                "optimizers resume exactly, random streams and data order start afresh",
                len(state["rng"]),
                world,
            )
        log.info("resumed from %s at step %d", source, step)
        state = None

    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
    reporter = RunLogger(
        active=is_main,
        run_dir=run_dir,
        total_steps=t.steps,
        start_step=step,
        start_images=images_seen,
        config={
            **cfg.model_dump(mode="json"),
            "runtime": {
                "world_size": world,
                "parallel": "deepspeed" if deepspeed_config else "ddp" if world > 1 else "none",
                "device": str(device),
            },
        },
        wandb_setting=cfg.log.wandb,
        wandb_project=cfg.log.project,
        wandb_id=wandb_id,
        every=cfg.log.every,
    )
    log.info(
        "training %s: %d steps, global batch %d = %d × %d processes, precision %s, %s, run.dir %s",
        cfg.name,
        t.steps,
        t.batch_size * world,
        t.batch_size,
        world,
        precision.mode,
        "DeepSpeed" if deepspeed_config else "DDP" if world > 1 else "1 process",
        run_dir,
    )

    def save_checkpoint() -> None:
        check_ranks_in_sync(models, step)
        rng_states = _gather(ckpt.capture_rng(noise))
        data_states = _gather(loader.state_dict())
        optimizer_state = parallel.state_dict()
        if parallel.sharded:
            optimizer_state = _gather(optimizer_state)
        if is_main:
            checkpoint = {
                "models": {name: m.state_dict() for name, m in models.items()},
                "parallel": optimizer_state,
                "parallel_sharded": parallel.sharded,
                "step": step,
                "images_seen": images_seen,
                "rng": rng_states,
                "data": data_states,
                "config": cfg.model_dump(mode="json"),
                "data_info": dataclasses.asdict(stream.info),
                "wandb_id": reporter.wandb_id,
            }
            ckpt.save_atomic(checkpoint, ckpt.checkpoint_path(run_dir, step))
            ckpt.prune(run_dir, cfg.run.keep_last)
        accelerator.wait_for_everyone()

    def sample_grid() -> None:
        if is_main:
            G = models[ema_name or recipe.ema_of or "G"]
            with torch.no_grad(), precision.autocast():
                images, nrow = recipe.grid(G, seed=t.seed, per_row=cfg.log.samples_per_class)
            reporter.grid(step, images, nrow)

    # --- the loop
    stop = StopFlag(parse_duration(t.time_limit), t.stop_check_every, device)
    phases = recipe.phases
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    stopped: StopTraining | None = None
    try:
        while step < t.steps:
            batch = speed.batch(
                {
                    k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                    for k, v in next(loader).items()
                }
            )
            logged = train_step(phases, step, models, parallel, precision, ctx, batch)
            for key, value in logged.items():
                sums[key] = sums.get(key, 0) + value.float()
                counts[key] = counts.get(key, 0) + 1  # phases may run every k-th step
            if ema_name:
                update_ema(models[ema_name], models[recipe.ema_of], t.ema_decay)
            step += 1
            images_seen += t.batch_size * world

            if step % cfg.log.every == 0 or step == t.steps:
                names = sorted(sums)
                # (empty only if fp16 skipped every step of the interval)
                means = [sums[n] / counts[n] for n in names]
                means = accelerator.reduce(
                    torch.stack(means or [torch.zeros((), device=device)]), "mean"
                )
                values = dict(zip(names, means.tolist(), strict=False))
                bad = torch.tensor(float(loader.bad_samples), device=device)
                values["data/bad_samples"] = accelerator.reduce(bad, "sum").item()  # all ranks
                if precision.mode == "fp16":
                    values["amp/skipped_steps"] = float(precision.skipped_steps)
                if not all(math.isfinite(v) for v in values.values()):
                    raise TrainingDiverged(
                        f"non-finite loss at step {step}: {values}; lower the learning rates or "
                        "resume from an earlier checkpoint"
                    )
                reporter.scalars(step, images_seen, values)
                sums, counts = {}, {}
            else:
                reporter.advance(step)
            if step % cfg.log.sample_every == 0 or step == t.steps:
                sample_grid()
            if step % t.checkpoint_every == 0 or step == t.steps:
                save_checkpoint()
            reason = stop.should_stop(step)
            if reason and step < t.steps:
                if step % t.checkpoint_every:
                    save_checkpoint()
                stopped = StopTraining(reason, step)
                break
    finally:
        loader.close()
        stop.restore()
        reporter.close()
    if stopped is not None:
        log.warning("%s", stopped)
        # Every rank stops after the same step. The launcher kills the other ranks as soon as one
        # exits (non-zero), so none may exit before all have closed their logs and W&B run.
        accelerator.wait_for_everyone()
        raise stopped
    accelerator.end_training()
    return run_dir
