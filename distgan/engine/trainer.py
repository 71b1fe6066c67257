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

from distgan.config import Config, ConfigError, to_yaml
from distgan.data.stream import ResumableLoader, ShardStream
from distgan.engine import checkpoint as ckpt
from distgan.engine.ema import make_ema, update_ema
from distgan.engine.reporting import RunLogger, setup_console_logging
from distgan.engine.runtime import Precision, describe, make_accelerator
from distgan.recipes import get_recipe
from distgan.recipes.base import Nets, StepContext

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
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
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


def train(cfg: Config) -> Path:
    accelerator = make_accelerator(cfg)
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    is_main = accelerator.is_main_process
    setup_console_logging(rank)
    log.info("%s", describe(accelerator))
    for line in _gather(describe(accelerator))[1:]:
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
    )
    loader = ResumableLoader(stream, cfg.data.num_workers, pin_memory=device.type == "cuda")

    # --- networks: identical initialisation on every rank, then per-rank randomness
    recipe = get_recipe(cfg.family)(cfg, stream.info)
    set_seed(t.seed)
    models = {name: m.to(device) for name, m in recipe.build_models().items()}
    ema_name = f"{recipe.ema_of}_ema" if recipe.ema_of else None
    if ema_name:
        models[ema_name] = make_ema(models[recipe.ema_of])
    optimizers = recipe.build_optimizers(models)
    precision = Precision(t.precision, device, list(optimizers))
    # Each trained network gets its own DDP wrapper (never static_graph; see runtime.py).
    wrapped = {name: accelerator.prepare_model(models[name]) for name in optimizers}
    set_seed(t.seed + 1_000_003 * rank)
    noise = torch.Generator(device).manual_seed(t.seed * 7919 + rank)
    ctx = StepContext(device, noise)

    # --- resume
    step, images_seen, wandb_id = 0, 0, None
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
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
            precision.scalers[name].load_state_dict(state["scalers"][name])
        step, images_seen, wandb_id = state["step"], state["images_seen"], state.get("wandb_id")
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
        del state
    elif is_main and step == 0:
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)

    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
    reporter = RunLogger(
        active=is_main,
        run_dir=run_dir,
        total_steps=t.steps,
        start_step=step,
        config=cfg.model_dump(mode="json"),
        wandb_setting=cfg.log.wandb,
        wandb_project=cfg.log.project,
        wandb_id=wandb_id,
        every=cfg.log.every,
    )
    log.info(
        "training %s: %d steps, global batch %d = %d × %d processes, precision %s, run.dir %s",
        cfg.name,
        t.steps,
        t.batch_size * world,
        t.batch_size,
        world,
        t.precision,
        run_dir,
    )

    def save_checkpoint() -> None:
        check_ranks_in_sync(models, step)
        rng_states = _gather(ckpt.capture_rng(noise))
        data_states = _gather(loader.state_dict())
        if is_main:
            state = {
                "models": {name: m.state_dict() for name, m in models.items()},
                "optimizers": {name: o.state_dict() for name, o in optimizers.items()},
                "scalers": {name: s.state_dict() for name, s in precision.scalers.items()},
                "step": step,
                "images_seen": images_seen,
                "rng": rng_states,
                "data": data_states,
                "config": cfg.model_dump(mode="json"),
                "data_info": dataclasses.asdict(stream.info),
                "wandb_id": reporter.wandb_id,
            }
            ckpt.save_atomic(state, ckpt.checkpoint_path(run_dir, step))
            ckpt.prune(run_dir, cfg.run.keep_last)
        accelerator.wait_for_everyone()

    def sample_grid() -> None:
        if is_main:
            G = models[ema_name or recipe.ema_of or "G"]
            with torch.no_grad(), precision.autocast():
                images, nrow = recipe.grid(G, seed=t.seed, per_row=cfg.log.samples_per_class)
            reporter.grid(step, images, nrow)

    # --- the loop
    phases = recipe.phases
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    try:
        while step < t.steps:
            batch = {
                k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in next(loader).items()
            }
            for phase in phases:
                if step % phase.every:
                    continue
                for name, module in models.items():
                    module.requires_grad_(name == phase.trains)
                nets = Nets({n: wrapped[n] if n == phase.trains else m for n, m in models.items()})
                optimizer = optimizers[phase.trains]
                optimizer.zero_grad(set_to_none=True)
                ctx.enter(step, precision.scalers[phase.trains])
                with precision.autocast():
                    loss, logs = phase.loss(nets, batch, ctx)
                precision.backward(loss, phase.trains)
                if not precision.step(optimizer, phase.trains):
                    continue  # fp16 skipped it (inf/NaN): counted, its losses not logged
                for key, value in logs.items():
                    sums[key] = sums.get(key, 0) + value.detach().float()
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
                values["data/bad_samples"] = float(loader.bad_samples)
                if t.precision == "fp16":
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
    finally:
        reporter.close()
    accelerator.end_training()
    return run_dir


def check_config(cfg: Config) -> None:
    """Cheap checks that need no processes (used by ``distgan config``)."""
    if cfg.train.precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("train.precision=fp16 needs a CUDA GPU; use bf16 or no on CPU")
