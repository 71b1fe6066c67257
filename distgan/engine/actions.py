"""What the loop does between steps, each at its own interval and after the last step: log the
scalars, draw the preview grid, write a checkpoint, evaluate (after the checkpoint: an evaluation
can never cost one). Each action is a small object with
``after_step(run, logged)``; the trainer calls them in order after every step.
"""

from __future__ import annotations

import logging
import math

import torch

from distgan.data.shards import read_manifest
from distgan.engine import checkpoint
from distgan.engine.build import Run, evaluating, to_device
from distgan.engine.reporting import RunLogger
from distgan.engine.runtime import broadcast_buffers
from distgan.errors import EvaluationFailed, TrainingDiverged
from distgan.evaluation import build_evaluators, protocol
from distgan.families.base import Batch

log = logging.getLogger("distgan")


def due(step: int, every: int, last: int) -> bool:
    return step % every == 0 or step == last


class LogScalars:
    """Every ``log.every`` steps: the means of the logged values over the interval and over the
    ranks, the skipped-sample and skipped-step counts; stops a run whose losses are not finite."""

    def __init__(self, reporter: RunLogger) -> None:
        self.reporter = reporter
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, torch.Tensor | float] = {}

    def after_step(self, run: Run, logged: dict[str, torch.Tensor]) -> None:
        masked = run.precision.mode == "fp16"  # a skipped step's losses arrive as NaN (step.py)
        for key, value in logged.items():
            value = value.float()
            count = torch.isfinite(value).float() if masked else 1.0  # no host sync
            if masked:
                value = torch.where(count > 0, value, 0.0)
            self.sums[key] = self.sums.get(key, 0) + value
            self.counts[key] = self.counts.get(key, 0) + count  # phases may run every k-th step
        if not due(run.step, run.cfg.log.every, run.cfg.train.steps):
            self.reporter.advance(run.step)
            return
        run.precision.check()
        names = sorted(self.sums)  # the same on every rank
        values: dict[str, float] = {}
        if names:  # means over the interval, then over the ranks (fp16 skips are run-wide)
            device = run.device
            counts = torch.stack([torch.as_tensor(self.counts[n], device=device) for n in names])
            sums = torch.stack([self.sums[n] for n in names])
            means = run.accelerator.reduce(sums / counts.clamp(min=1), "mean").tolist()
            values = {n: m for n, m, c in zip(names, means, counts.tolist(), strict=True) if c}
        bad = torch.tensor(float(run.data.bad_samples if run.data else 0), device=run.device)
        values["data/bad_samples"] = run.accelerator.reduce(bad, "sum").item()  # all ranks
        if run.precision.mode == "fp16":
            values["amp/skipped_steps"] = float(run.precision.skipped_steps)  # (synced above)
        if not all(math.isfinite(v) for v in values.values()):
            raise TrainingDiverged(
                f"non-finite loss at step {run.step}: {values}; lower the learning rates or "
                "resume from an earlier checkpoint"
            )
        self.reporter.scalars(run.step, run.images_seen, values)
        self.sums, self.counts = {}, {}


def held_out(run: Run, n: int) -> Batch:
    """The first ``n`` held-out samples as one batch on the device (previews)."""
    batch = next(protocol.held_out(run.cfg, n, n))
    return run.settings.batch(to_device(batch, run.device))


class Preview:
    """Every ``log.sample_every`` steps (rank 0, no collectives): the family's preview grid from
    fixed noise and, for families that preview data (``"preview_batch"`` in their ``needs``), a
    fixed batch of held-out samples."""

    def __init__(self, run: Run, reporter: RunLogger) -> None:
        self.reporter = reporter
        self.batch = None
        if run.is_main and "preview_batch" in run.family.needs:
            n = run.cfg.log.samples_per_class
            self.batch = held_out(run, n)

    def after_step(self, run: Run, logged: dict[str, torch.Tensor]) -> None:
        if not (run.is_main and due(run.step, run.cfg.log.sample_every, run.cfg.train.steps)):
            return
        generator = torch.Generator(run.device).manual_seed(run.cfg.train.seed)
        with evaluating(run.inference_nets()) as nets, run.precision.autocast():
            images, per_row = run.family.preview(nets, self.batch, generator)
        self.reporter.grid(run.step, images, per_row)


class SaveCheckpoint:
    """Every ``train.checkpoint_every`` steps and at the end (all ranks take part)."""

    def after_step(self, run: Run, logged: dict[str, torch.Tensor]) -> None:
        if due(run.step, run.cfg.train.checkpoint_every, run.cfg.train.steps):
            checkpoint.save(run)


class Evaluate:
    """Every ``eval.every`` steps and at the end, on every rank: the ``eval.metrics``
    evaluators on ``eval.n`` held-out samples, under the evaluation protocol
    (distgan/evaluation/protocol.py: its samples, and noise of its own). It runs after that
    step's checkpoint is written, and an evaluation that fails on any rank is one warning on
    every rank (they agree on it, none is left in a collective): the run goes on."""

    def __init__(self, run: Run, reporter: RunLogger) -> None:
        self.reporter = reporter
        self.best = BestCheckpoint(run)
        self.failed = 0  # evaluations that failed in this process's part of the run
        if run.cfg.eval.every:  # missing held-out shards or weights fail now, not later
            shards = protocol.shards_of(run.cfg)
            for folder in shards.values() if isinstance(shards, dict) else [shards]:
                read_manifest(folder)
            build_evaluators(run.cfg, run.family, run.device)
            pool = protocol.reference_pool(run.cfg)
            if run.is_main and pool:
                log.info("evaluation reference: %s, its %s (never trained on)", shards, pool)
            if run.is_main and protocol.on_training_images(run.cfg):
                log.info(
                    "evaluating against training images (eval.shards unset or = data.shards): "
                    "the figures measure fit to the training set; set eval.shards to held-out "
                    "images to measure generalisation"
                )

    def after_step(self, run: Run, logged: dict[str, torch.Tensor]) -> None:
        cfg = run.cfg
        if not (cfg.eval.every and due(run.step, cfg.eval.every, cfg.train.steps)):
            return
        outputs = run.inference_nets()
        broadcast_buffers([outputs.raw(name) for name in outputs])  # the checkpoint's statistics
        try:
            with evaluating(outputs) as nets:
                values = protocol.run(
                    cfg,
                    build_evaluators(cfg, run.family, run.device),
                    run.family,
                    nets,
                    run.device,
                    run.rank,
                    run.world,
                    prepare=lambda batch: run.settings.batch(to_device(batch, run.device)),
                    autocast=run.precision.autocast,
                )
        except EvaluationFailed as err:
            self.failed += 1
            log.warning("step %d: evaluation failed (%s); training goes on", run.step, err)
            return
        self.reporter.record(run.step, values)
        self.best.update(run, values)


class BestCheckpoint:
    """``checkpoints/best.pt``: the run's state at its best ``eval.best`` figure so far (lower
    FID/KID/FD, higher accuracy/IS/…), with ``best: {metric, value, step}`` in it; never pruned,
    and its value survives a resume (read back from the file)."""

    def __init__(self, run: Run) -> None:
        from distgan.config import BEST

        self.metric = run.cfg.eval.best
        self.higher = BEST[self.metric][1] if self.metric else False
        self.path = checkpoint.checkpoint_dir(run.cfg.run_dir) / "best.pt"
        self.value: float | None = None
        if self.metric and self.path.is_file():
            try:
                kept = checkpoint.load(self.path).get("best", {})
            except checkpoint.CheckpointError as err:
                log.warning("ignoring %s", err)
                kept = {}
            if kept.get("metric") == self.metric:
                self.value = kept["value"]

    def update(self, run: Run, values: dict[str, float]) -> None:
        key = f"eval/{self.metric}"
        if not self.metric or key not in values:
            return
        value = values[key]
        better = self.value is None or (value > self.value if self.higher else value < self.value)
        if better:
            best = {"metric": self.metric, "value": value, "step": run.step}
            checkpoint.save(run, self.path, extra={"best": best})
            self.value = value
            if run.is_main:
                log.info(
                    "step %d: best %s so far (%.4g): %s", run.step, self.metric, value, self.path
                )


class LogArtifacts:
    """``log.artifacts``: after the last step (rank 0), ``checkpoints/best.pt`` where evaluation
    kept one, and the final checkpoint exported to ``run.dir/export.safetensors``, as W&B
    artifacts (offline runs keep them for ``wandb sync``)."""

    def __init__(self, reporter: RunLogger) -> None:
        self.reporter = reporter

    def after_step(self, run: Run, logged: dict[str, torch.Tensor]) -> None:
        cfg = run.cfg
        if not (cfg.log.artifacts and run.is_main and run.step == cfg.train.steps):
            return
        from distgan.trained.export import write_export

        best = checkpoint.checkpoint_dir(cfg.run_dir) / "best.pt"
        if best.is_file():
            self.reporter.artifact(best, "model", ["best"])
        export = cfg.run_dir / "export.safetensors"
        write_export(checkpoint.checkpoint_path(cfg.run_dir, run.step), export)
        self.reporter.artifact(export, "model", ["latest", f"step-{run.step}"])
