"""Reference statistics cached next to the shards: the features of the first N held-out real
images cost as much as the outputs' (README, "Evaluation": CPU cost), and they do not change
between evaluations.

``<shards>/.distgan-reference/<extractor>-<sha256[:12]>-<resize>-m<manifest sha256[:12]>-s<seed>
-n<N><-gray><-lab><-selection>.npz`` holds n, Σx, Σxxᵀ (float64) and, when KID/PR asked for them,
the features in held-out order. The key names everything the numbers depend on: the extractor's
weights, how images reach it, the exact shards (their manifest), which samples (seed, N) and the
colour conversion. A folder that cannot be written is evaluated without a cache (one warning).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np

log = logging.getLogger("distgan")
FOLDER = ".distgan-reference"
_warned: set[Path] = set()  # cache folders already warned about


def cache_path(folder: str | Path, extractor, cfg, n: int, selection: str = "") -> Path | None:
    """Where the reference of ``n`` held-out samples of ``folder`` is cached (None: no shards);
    ``selection``: which samples, when not all (the complement of ``data.subset``)."""
    folder = Path(folder)
    if not (folder / "manifest.json").is_file():
        return None
    manifest = hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()[:12]
    resize = re.sub(r"[^a-z0-9]+", "_", extractor.resize.lower()).strip("_")[:24]
    colour = ("-gray" if cfg.data.grayscale else "") + ("-lab" if cfg.data.lab else "")
    name = (
        f"{extractor.name}-{extractor.sha256[:12]}-{resize}-m{manifest}-s{cfg.train.seed}"
        f"-n{n}{colour}{'-' + selection if selection else ''}.npz"
    )
    return folder / FOLDER / name


def load(path: Path, need_features: bool) -> dict[str, np.ndarray] | None:
    """The cached statistics, or None (absent, unreadable, or without the features needed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as err:
        log.warning("ignoring the reference cache %s (%s)", path, err)
        return None
    if need_features and "features" not in data:
        return None
    return data


def save(path: Path, sums: np.ndarray, features: np.ndarray | None) -> bool:
    """Write atomically; a folder that cannot be written (read-only mount, no permission, full
    disk) only costs the cache: one warning, never an error (the evaluation of a training step
    and ``distgan eval`` go on). True if the cache was written."""
    arrays = {"sums": sums} if features is None else {"sums": sums, "features": features}
    tmp = path.with_name(path.name + ".tmp.npz")
    try:
        path.parent.mkdir(exist_ok=True)
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        return True
    except OSError as err:
        # (removing a file that was never created raises EROFS, not ENOENT, on a read-only mount)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if path.parent not in _warned:  # once per folder, not at every evaluation of a run
            _warned.add(path.parent)
            log.warning(
                "not caching the reference statistics: %s cannot be written (%s); each "
                "evaluation computes them again",
                path.parent,
                err.strerror or err,
            )
        return False
