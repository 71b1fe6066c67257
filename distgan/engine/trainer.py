"""The training loop. Read :func:`train` top to bottom: lock the run folder and decide how the
run starts → build the run → restore it from a checkpoint → for each step: one batch, the
family's phases, EMA, then the interval actions (log, preview, checkpoint, evaluate) and the
ranks' agreed stop check.

The trainer composes the other engine modules and knows nothing about any family: the family
says what to optimise (networks, phases, losses, outputs; distgan/families/base.py).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from distgan.config import Config, parse_duration, to_yaml
from distgan.engine import checkpoint, resume_checks, rundir, transfer
from distgan.engine.actions import Evaluate, LogArtifacts, LogScalars, Preview, SaveCheckpoint
from distgan.engine.build import Run, build_run, start_processes
from distgan.engine.launch_options import honour_launch_options
from distgan.engine.reporting import RunLogger, setup_console_logging
from distgan.engine.runtime import describe, gather
from distgan.engine.signals import StopFlag, StopTraining
from distgan.engine.step import advance
from distgan.engine.trackers import check_trackers
from distgan.errors import OutOfMemory

log = logging.getLogger("distgan")


def train(cfg: Config) -> Path:
    check_trackers(cfg.log)
    notes = honour_launch_options(cfg)  # accelerate launch's precision, dynamo, accumulation
    accelerator, deepspeed_config = start_processes(cfg)
    setup_console_logging(accelerator.process_index)
    for line in [*gather(describe(accelerator)), *notes]:
        log.info("%s", line)
    plan, lock = rundir.prepare(cfg, accelerator)
    with lock:  # released however the run ends (other ranks hold none)
        run = build_run(cfg, accelerator, deepspeed_config)
        resume(run, plan)
        stopped = loop(run, open_reporter(run, "deepspeed" if deepspeed_config else None))
    if stopped is not None:
        log.warning("%s", stopped)
        # Every rank stops after the same step. The launcher kills the other ranks as soon as one
        # exits (non-zero), so none may exit before all have closed their logs and W&B run.
        accelerator.wait_for_everyone()
        raise stopped
    accelerator.end_training()
    return cfg.run_dir


def loop(run: Run, reporter: RunLogger) -> StopTraining | None:
    """Train to ``train.steps``, or to the ranks' agreed stop (signal, time limit): then one
    checkpoint is written and the stop returned."""
    actions = [
        LogScalars(reporter),
        Preview(run, reporter),
        SaveCheckpoint(),
        Evaluate(run, reporter),  # after the checkpoint: a failed evaluation cannot cost it
        LogArtifacts(reporter),  # best.pt and the final export, once evaluated
    ]
    t = run.cfg.train
    stop = StopFlag(parse_duration(t.time_limit), t.stop_check_every, run.device)
    stopped: StopTraining | None = None
    first_step, started = run.step, time.perf_counter()
    try:
        while run.step < t.steps:
            try:
                logged = advance(run, run.next_batches())
            except torch.OutOfMemoryError:
                raise OutOfMemory(out_of_memory_hint(run)) from None
            for action in actions:
                action.after_step(run, logged)
            reason = stop.should_stop(run.step)
            if reason and run.step < t.steps:
                if run.step % t.checkpoint_every:
                    checkpoint.save(run)
                stopped = StopTraining(reason, run.step)
                break
    finally:
        run.data.close()
        stop.restore()
        reporter.close()
    seconds = time.perf_counter() - started
    log.info(
        "trained steps %d → %d in %.1f s (%.0f img/s, with evaluations and checkpoints)",
        first_step,
        run.step,
        seconds,
        (run.step - first_step) * run.images_per_step / max(seconds, 1e-9),
    )
    return stopped


def out_of_memory_hint(run: Run) -> str:
    """One line for a device that ran out of memory: the per-process batch, and how to keep the
    global batch with less memory (gradient accumulation)."""
    t = run.cfg.train
    half = max(1, t.batch_size // 2)
    return (
        f"{run.device} ran out of memory at step {run.step} with train.batch_size={t.batch_size} "
        f"per process (× {t.accumulate} micro-batches): e.g. train.batch_size={half} "
        f"train.accumulate={t.accumulate * 2} keeps the global batch of {run.images_per_step} "
        "in less memory"
    )


def resume(run: Run, plan: rundir.Plan) -> None:
    """Restore ``run`` from the checkpoint the plan chose (engine/rundir.py), if any: in its own
    folder it continues the lineage and the W&B run; from another folder it starts new ones."""
    run.run_id, run.parent = plan.run_id, plan.parent
    if plan.source is None:
        if plan.init is not None:
            transfer.initialise(run, plan.init)  # weights only: a new run (engine/transfer.py)
        return
    if run.cfg.init.from_ is not None:
        log.info("init.from is not used: the run continues from its checkpoint %s", plan.source)
    state = checkpoint.load(plan.source)
    if run.is_main:
        resume_checks.report(run.cfg, state)  # what changed since the checkpoint, one line each
    checkpoint.restore(run, state, plan.source)
    if plan.same_wandb_run:
        run.wandb_id = state.get("wandb_id")
    if run.is_main:
        rundir.trim_metrics(run.cfg.run_dir, run.step)  # the killed run's later rows recur
    log.info("resumed from %s at step %d", plan.source, run.step)


def open_reporter(run: Run, parallel: str | None) -> RunLogger:
    """The run folder's config, console progress and W&B run (rank 0), continuing the W&B run
    of the checkpoint the run resumed from."""
    cfg, t = run.cfg, run.cfg.train
    if run.is_main:
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        rundir.write_replacing(cfg.run_dir / "config.yaml", to_yaml(cfg))  # (never via a link)
    reporter = RunLogger(
        active=run.is_main,
        run_dir=cfg.run_dir,
        total_steps=t.steps,
        start_step=run.step,
        start_images=run.images_seen,
        config={
            **cfg.model_dump(mode="json"),
            "lineage": {"run_id": run.run_id, "parent": run.parent, "init_from": run.init_from},
            "runtime": {
                "world_size": run.world,
                "parallel": parallel or ("ddp" if run.world > 1 else "none"),
                "device": str(run.device),
            },
        },
        log_config=cfg.log,
        wandb_id=run.wandb_id,
    )
    run.wandb_id = reporter.wandb_id
    micro = f" × {t.accumulate} micro-batches" if t.accumulate > 1 else ""
    log.info(
        "training %s: %d steps, global batch %d = %d%s × %d processes, precision %s, %s, "
        "run.dir %s",
        cfg.name,
        t.steps,
        run.images_per_step,
        t.batch_size,
        micro,
        run.world,
        run.precision.mode,
        "DeepSpeed" if parallel else "DDP" if run.world > 1 else "1 process",
        cfg.run_dir,
    )
    return reporter
