"""distgan: train GANs on one CPU or across many GPUs and nodes.

``distgan.load(checkpoint_or_run_folder)`` gives a trained model for notebooks (see
distgan/trained/model.py): ``sample``, ``encode``, ``decode``, ``translate``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distgan.version import __version__

if TYPE_CHECKING:
    from distgan.trained.model import Model

__all__ = ["__version__", "load"]


def load(path: Any, device: Any = "cpu", weights: str | None = None) -> Model:
    """A trained model from a checkpoint file or a run folder (see :func:`distgan.trained.load`)."""
    from distgan.trained.model import load as load_model  # (torch is imported on first use only)

    return load_model(path, device, weights)
