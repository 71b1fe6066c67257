"""The latent tools' pictures: image grids (torchvision), labelled figures (matplotlib, drawn
off-screen), and their upload to the run's W&B run (``--wandb``)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torchvision.utils import make_grid, save_image

if TYPE_CHECKING:
    from distgan.trained.model import Model


def save_grid(images: torch.Tensor, path: Path, per_row: int) -> None:
    """Images in [0, 1] as a PNG grid, ``per_row`` to a row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.float(), path, nrow=per_row, padding=2, pad_value=1.0)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(figure)


def _image(tensor: torch.Tensor) -> np.ndarray:
    """A [C, H, W] grid in [0, 1] as an array matplotlib shows (gray as gray)."""
    array = tensor.clamp(0, 1).permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[2] == 1 else array


def traversal(
    rows: torch.Tensor, values: list[float], labels: list[str], title: str, path: Path
) -> None:
    """One layer's traversal: ``rows`` [R, K, C, H, W] (one latent dimension a row, K values)."""
    plt = _pyplot()
    count, per_row = rows.shape[:2]
    grid = make_grid(rows.flatten(0, 1), nrow=per_row, padding=2, pad_value=1.0)
    side = rows.shape[-1] + 2
    figure, axes = plt.subplots(figsize=(1.0 + 0.55 * per_row, 0.35 + 0.55 * count))
    axes.imshow(_image(grid), cmap="gray", vmin=0, vmax=1)
    axes.set_yticks([side * (r + 0.5) for r in range(count)], labels)
    axes.set_xticks([side * (k + 0.5) for k in range(per_row)], [f"{v:+.1f}" for v in values])
    axes.tick_params(length=0, labelsize=7)
    axes.set_title(title, fontsize=9)
    for spine in axes.spines.values():
        spine.set_visible(False)
    _save(figure, path)


def histograms(z: np.ndarray, path: Path, title: str) -> None:
    """Each latent dimension's histogram against the N(0, 1) density (up to 30 dimensions)."""
    plt = _pyplot()
    dims = min(z.shape[1], 30)
    cols = min(dims, 10)
    rows = math.ceil(dims / cols)
    figure, axes = plt.subplots(
        rows, cols, figsize=(1.6 * cols, 1.5 * rows), squeeze=False, constrained_layout=True
    )
    grid = np.linspace(-4, 4, 200)
    density = np.exp(-(grid**2) / 2) / np.sqrt(2 * np.pi)
    for d, ax in enumerate(axes.flat):
        if d >= dims:
            ax.axis("off")
            continue
        ax.hist(z[:, d], bins=30, range=(-4, 4), density=True, color="tab:blue", alpha=0.7)
        ax.plot(grid, density, color="tab:red", linewidth=1)
        ax.set_title(f"z{d}", fontsize=7)
        ax.set_xticks([-3, 0, 3])
        ax.set_yticks([])
        ax.tick_params(labelsize=6)
    figure.suptitle(title, fontsize=9)
    _save(figure, path)


def scatter(points: np.ndarray, colours: np.ndarray, names: list[str], path: Path, title: str):
    """2-D points coloured by class (one legend entry per name)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 5.5))
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for k, name in enumerate(names):
        chosen = colours == k
        axes.scatter(*points[chosen].T, s=6, color=palette(k % palette.N), label=name)
    axes.legend(markerscale=2.5, fontsize=7, loc="best", frameon=False)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(title, fontsize=9)
    _save(figure, path)


def log_to_wandb(model: Model, tool: str, paths: list[Path]) -> None:
    """Log the figures into the checkpoint's W&B run (its id; offline unless logged in)."""
    from distgan.engine.reporting import resolve_wandb_mode
    from distgan.engine.trackers import wandb_init_args

    mode, _ = resolve_wandb_mode(model.cfg.log.wandb)
    if mode == "disabled":
        print("distgan: --wandb: W&B is disabled for this run (log.wandb)", file=sys.stderr)
        return
    import wandb

    names = wandb_init_args(model.cfg.log, model.cfg.name)
    run = wandb.init(
        **{k: v for k, v in names.items() if k in ("project", "entity")},  # the run's own
        id=model.state.get("wandb_id"),
        resume="allow",
        dir=str(model.cfg.run_dir),
        mode=mode,
        settings=wandb.Settings(silent=True, console="off"),
    )
    images = [p for p in paths if p.suffix.lower() == ".png"]
    if images:
        run.log({f"latent/{tool}": [wandb.Image(str(p), caption=p.name) for p in images]})
    run.finish()
    wandb.teardown()  # stop the wandb-core service now (the notebook or CLI goes on)
    print(f"distgan: logged {len(images)} figure(s) to W&B run {run.id} ({mode})", file=sys.stderr)
