"""Where the tools of a trained model write, checked before any work: an ``--out`` of the right
kind and extension, outputs that fit in memory, on disk and in an image viewer, and files written
under their own name (``np.savez`` appends ``.npz`` to ``S.NPZ``) by a rename, never half."""

from __future__ import annotations

import os
import resource
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from distgan.errors import ConfigError

# The largest grid written as one image: what Pillow opens without a decompression-bomb warning.
GRID_PIXELS = 89_478_485


def check_out(out: Path, suffixes: tuple[str, ...], what: str, option: str = "--out") -> Path:
    """``out`` as a file name with one of ``suffixes`` (any case), not a folder."""
    if out.is_dir():
        raise ConfigError(f"{option} {out} is a folder; give a {what} file name")
    if out.suffix.lower() not in suffixes:
        raise ConfigError(f"{option} {out}: use a {what} file name ({', '.join(suffixes)})")
    return out


def available_memory() -> int:
    """Bytes this process may still allocate: the system's available memory, and no more than
    its address-space limit (``ulimit -v``) leaves."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit != resource.RLIM_INFINITY:
        try:
            pages = int(Path("/proc/self/statm").read_text().split()[0])
            available = min(available, limit - pages * resource.getpagesize())
        except OSError:
            pass
    return max(available, 0)


def _size(count: float) -> str:
    return f"{count / 2**30:.1f} GB" if count >= 2**30 else f"{count / 2**20:.0f} MB"


def check_fits(
    option: str, what: str, out: Path, memory: int, disk: int, grid_pixels: int = 0
) -> None:
    """Refuse ``option`` in one line when ``what`` (written to ``out``) needs more memory than is
    available, more disk than is free there, or a grid image larger than :data:`GRID_PIXELS`."""
    if grid_pixels > GRID_PIXELS:
        raise ConfigError(
            f"{option}: {what} does not fit in one image ({grid_pixels / 1e6:,.0f} megapixels; "
            f"at most {GRID_PIXELS / 1e6:.0f}); ask for fewer or write .npz"
        )
    free = available_memory()
    if memory > free:
        raise ConfigError(
            f"{option}: {what} does not fit in memory (about {_size(memory)} needed, "
            f"{_size(free)} available); ask for fewer"
        )
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    space = shutil.disk_usage(folder).free
    if disk > space:
        raise ConfigError(
            f"{option}: {what} does not fit on the disk of '{folder}' (about {_size(disk)} "
            f"needed, {_size(space)} free); ask for fewer or write elsewhere"
        )


def save_npz(out: Path, **arrays: Any) -> None:
    """Compressed arrays in exactly the file ``out`` (whatever its suffix's case), renamed into
    place once complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        with open(partial, "wb") as file:
            np.savez_compressed(file, **arrays)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
