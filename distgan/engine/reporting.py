"""What a person watches: the console progress, W&B, sample grids and a loss curve (rank 0 only).

* Console: a rich progress bar on a terminal; plain lines every ``log.every`` steps otherwise
  (CI logs, SLURM output files).
* W&B: ``auto`` = online when logged in and the W&B server answers within 3 s, else offline
  (with a hint about ``wandb sync``); the run id lives in the checkpoint, so a resumed run
  continues the same W&B run. Its names, tags and artifacts: engine/trackers.py.
* TensorBoard (``log.trackers``): the same scalars, grids and evaluation figures.
* Files in ``run.dir``: ``metrics.jsonl`` (every logged scalar), ``samples/step-XXXXXXXX.png``
  and, at the end, ``loss.png``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torchvision.utils import make_grid, save_image

from distgan.engine.trackers import TensorBoard, log_artifact, wandb_init_args, wandb_run_id

if TYPE_CHECKING:
    from distgan.config.sections import LogConfig

log = logging.getLogger("distgan")


def setup_console_logging(rank: int) -> None:
    level = logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(
        level=level, format=f"[distgan r{rank}] %(message)s", stream=sys.stderr, force=True
    )


def resolve_wandb_mode(setting: str) -> tuple[str, str | None]:
    """(mode, hint) for ``log.wandb``; ``WANDB_MODE`` in the environment wins over ``auto``."""
    if setting != "auto":
        return setting, None
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return env, None
    from distgan.engine.wandb_offline import base_url, logged_in

    if logged_in():
        unreachable = unreachable_host(base_url())
        if unreachable is None:
            return "online", None
        return "offline", (
            f"W&B: {unreachable}, logging offline; upload later with `wandb sync <run.dir>/wandb/"
            "offline-run-*`"
        )
    return "offline", (
        "W&B: not logged in, logging offline; upload later with `wandb sync <run.dir>/wandb/"
        "offline-run-*` (or `wandb login` before training)"
    )


def unreachable_host(url: str, timeout: float = 3.0) -> str | None:
    """None if a TCP connection to the W&B server of ``url`` opens within ``timeout`` seconds,
    else why not (one phrase). Online W&B on a node without network stalls for minutes before
    it fails; ``auto`` asks this first. Name resolution runs in a thread, so it is bounded too."""
    parts = urlsplit(url)
    host = parts.hostname or "api.wandb.ai"
    port = parts.port or (80 if parts.scheme == "http" else 443)
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as err:
            outcome.append(err.strerror or str(err) or type(err).__name__)

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout + 0.5)
    if outcome and outcome[0] is None:
        return None
    why = outcome[0] if outcome else f"no answer within {timeout:g} s"
    return f"{host}:{port} is unreachable ({why})"


class RunLogger:
    """Rank 0's view of a run; on other ranks every method is a no-op."""

    def __init__(
        self,
        *,
        active: bool,
        run_dir: Path,
        total_steps: int,
        start_step: int,
        start_images: int,
        config: dict[str, Any],
        log_config: LogConfig,
        wandb_id: str | None,
    ) -> None:
        self.active = active
        self.run_dir = run_dir
        self.every = log_config.every
        self.wandb_run = None
        self.wandb_id = wandb_id
        self.tensorboard: TensorBoard | None = None
        self._progress: Progress | None = None
        self._task = None
        self._last_time = time.perf_counter()
        self._last_images = start_images
        self._warned_write = False
        if not active:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "samples").mkdir(exist_ok=True)
        if "wandb" in log_config.trackers:
            mode, hint = resolve_wandb_mode(log_config.wandb)
            if mode != "disabled":
                self._start_wandb(mode, wandb_init_args(log_config, config["name"]), config)
            if hint:
                log.info(hint)
        if "tensorboard" in log_config.trackers:
            self.tensorboard = TensorBoard(run_dir / "tensorboard", start_step)
        if sys.stderr.isatty():
            self._progress = Progress(
                TextColumn("step {task.completed}/{task.total}"),
                BarColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._task = self._progress.add_task(
                "train", total=total_steps, completed=start_step, stats=""
            )
            self._progress.start()

    def _start_wandb(self, mode: str, names: dict[str, Any], config: dict[str, Any]) -> None:
        import wandb

        self.wandb_id = wandb_run_id(self.wandb_id)
        self.wandb_run = wandb.init(
            **names,
            dir=str(self.run_dir),
            id=self.wandb_id,
            resume="allow",
            mode=mode,
            config=config,
            settings=wandb.Settings(silent=True, console="off"),
        )

    # -- scalars
    def scalars(self, step: int, images_seen: int, values: dict[str, float]) -> None:
        if not self.active:
            return
        now = time.perf_counter()
        rate = (images_seen - self._last_images) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_images = now, images_seen
        record = {"step": step, "images": images_seen, "img_per_s": round(rate, 1), **values}
        self._append_metrics(record)
        if self.wandb_run is not None:
            self.wandb_run.log({**values, "images": images_seen, "img_per_s": rate}, step=step)
        if self.tensorboard is not None:
            self.tensorboard.scalars(step, {**values, "images": images_seen, "img_per_s": rate})
        text = _format_stats(values, rate)
        if self._progress is not None:
            self._progress.update(self._task, completed=step, stats=text)
        else:
            log.info("step %d  %s", step, text)

    def record(self, step: int, values: dict[str, float]) -> None:
        """Figures outside the scalar interval (evaluation): metrics.jsonl, W&B, console."""
        if not self.active or not values:
            return
        self._append_metrics({"step": step, **values})
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=step)
        if self.tensorboard is not None:
            self.tensorboard.scalars(step, values)
        text = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
        if self._progress is not None:
            self._progress.console.print(f"step {step}  {text}")
        else:
            log.info("step %d  %s", step, text)

    def _append_metrics(self, record: dict[str, Any]) -> None:
        path = self.run_dir / "metrics.jsonl"
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW  # a planted link: refused
        try:
            with os.fdopen(os.open(path, flags, 0o644), "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:
            self._write_failed(path, err)

    def _write_failed(self, path: Path, err: OSError) -> None:
        """Logs and grids are not worth a run: warn (once) and go on; a checkpoint that cannot
        be written stops the run with one line (engine/checkpoint.py)."""
        if not self._warned_write:
            log.warning("could not write %s (%s); training goes on", path, err.strerror or err)
            self._warned_write = True

    def advance(self, step: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step)

    # -- images
    def grid(self, step: int, images: torch.Tensor, nrow: int) -> Path | None:
        if not self.active:
            return None
        grid = make_grid(images.float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1))
        path = self.run_dir / "samples" / f"step-{step:08d}.png"
        try:
            save_image(grid, path)
        except OSError as err:
            self._write_failed(path, err)
            return None
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log(
                {"samples": wandb.Image(str(path), caption=f"step {step}")}, step=step
            )
        if self.tensorboard is not None:
            self.tensorboard.image(step, "samples", grid)
        return path

    def artifact(self, path: Path, kind: str, aliases: list[str]) -> None:
        """A file as a W&B artifact (``log.artifacts``); nothing without a W&B run."""
        if self.active and self.wandb_run is not None:
            log_artifact(self.wandb_run, path, kind, aliases)

    def close(self) -> None:
        if not self.active:
            return
        if self._progress is not None:
            self._progress.stop()
        if self.wandb_run is not None:
            self.wandb_run.finish()
        if self.tensorboard is not None:
            self.tensorboard.close()
        try:
            plot_losses(self.run_dir / "metrics.jsonl", self.run_dir / "loss.png")
        except OSError as err:
            self._write_failed(self.run_dir / "loss.png", err)


def _format_stats(values: dict[str, float], rate: float) -> str:
    """Every ``loss/*`` value a family logs (named without the prefix), D's accuracies, ADA's p
    and r_t."""
    accuracy = {"D/acc_real": "D(x)✓", "D/acc_fake": "D(G(z))✓", "aug/p": "p", "aug/rt": "rt"}
    parts = [
        f"{k.removeprefix('loss/')} {v:.3f}" for k, v in values.items() if k.startswith("loss/")
    ]
    parts += [f"{accuracy[k]} {v:.3f}" for k, v in values.items() if k in accuracy]
    return "  ".join([*parts, f"{rate:.0f} img/s"])


def plot_losses(metrics_file: Path, out: Path) -> None:
    """Loss curves from ``metrics.jsonl`` (records of one step merged; a resumed run's repeated
    steps: the last value wins), and under them ADA's p and r_t when the run adapted p."""
    if not metrics_file.is_file():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_step: dict[int, dict[str, float]] = {}
    for line in metrics_file.read_text().splitlines():
        try:
            record = json.loads(line)
            by_step.setdefault(record["step"], {}).update(record)  # scalars + evaluation
        except (ValueError, KeyError, TypeError):
            continue  # an empty line, or one cut short by a crash
    steps = sorted(by_step)
    keys = sorted({k for r in by_step.values() for k in r if k.startswith("loss/")})
    augmented = any("aug/rt" in r for r in by_step.values())
    fig, axes = plt.subplots(2 if augmented else 1, figsize=(7, 6.5 if augmented else 4),
                             sharex=True, squeeze=False)  # fmt: skip
    panels = [(axes[0, 0], keys, "loss")]
    if augmented:
        panels.append((axes[1, 0], ["aug/p", "aug/rt"], "ADA"))
    for ax, panel_keys, ylabel in panels:
        for key in panel_keys:
            points = [(s, by_step[s][key]) for s in steps if key in by_step[s]]
            ax.plot([p[0] for p in points], [p[1] for p in points], label=key)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
