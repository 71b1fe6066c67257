"""Replacing a shard folder as a whole, so that a manifest never lists files it did not write.

A conversion writes into a staging folder next to the target (``.<name>.converting-<pid>``, same
file system) and swaps it in only when every shard and the manifest are written: the old folder
is renamed aside (``.<name>.replaced-<pid>``), the new one renamed in, the old one deleted. A
conversion that fails (a full disk, a refused source) or is killed leaves the old folder as it
was; the next conversion of the same folder removes the staging folder left behind, and puts a
folder left aside back if a kill fell between the two renames.

* **Explicit replacement.** A folder that already holds shards is replaced only with
  ``overwrite=True`` (``--overwrite``); a folder holding files distgan did not write is never
  replaced. The reference-statistics cache (``.distgan-reference/``, keyed by the manifest's
  sha256) moves into the new folder.
* **One conversion per folder.** An exclusive ``flock`` on ``<parent>/<name>.lock`` (opened
  without following symlinks) for the whole conversion; a second conversion of the same folder
  stops with one line naming the holder. The kernel releases the lock however the holder ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from distgan.errors import ConfigError, ShardError

MANIFEST = "manifest.json"
REFERENCE_CACHE = ".distgan-reference"  # distgan.evaluation._reference.FOLDER
# what a shard folder may hold besides its shards: its manifest (and the temporary file it is
# written through), the reference cache, and the contact sheet `shards inspect` used to write
OWN_FILES = {MANIFEST, MANIFEST + ".tmp", REFERENCE_CACHE, "contact-sheet.png"}
LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC  # a planted symlink: refused


def staging_name(target: Path) -> str:
    return f".{target.name}.converting-"


def aside_name(target: Path) -> str:
    return f".{target.name}.replaced-"


class FolderLock:
    """An exclusive lock on ``<parent>/<name>.lock`` while one conversion writes ``target``."""

    def __init__(self, target: Path) -> None:
        self.path = target.with_name(f"{target.name}.lock")
        for _ in range(5):  # the holder may unlink the file between our open and our flock
            try:
                fd = os.open(self.path, LOCK_FLAGS, 0o644)
            except OSError as err:
                raise ShardError(
                    f"cannot lock '{target}': '{self.path}' cannot be opened ({err.strerror})"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise ShardError(
                    f"'{target}' is being written by another conversion ({holder}); wait for it "
                    "to finish or choose another --out"
                ) from None
            if self._still_ours(fd):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
                self.fd = fd
                return
            os.close(fd)
        raise ShardError(f"'{target}' is being written by another conversion; try again")

    def _still_ours(self, fd: int) -> bool:
        """The lock is valid only if the name still refers to the file we locked."""
        try:
            return os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # before unlocking: a waiter then finds a fresh file
        os.close(self.fd)


def check_replaceable(target: Path, overwrite: bool, prefix: str = "shard") -> bool:
    """Whether ``target`` holds shards (``<prefix>-*.tar``, a manifest) to replace; refuse (one
    line, exit 2) a folder that must not be replaced."""
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--out '{target}' is a file, not a folder; choose another --out")
    if not target.is_dir():
        return False
    names = sorted(p.name for p in target.iterdir())
    foreign = [n for n in names if n not in OWN_FILES and not _is_shard(n, prefix)]
    if foreign:
        raise ConfigError(
            f"--out '{target}' holds {len(foreign)} file(s) distgan did not write (e.g. "
            f"'{foreign[0]}'); choose a new or empty folder"
        )
    holds_shards = any(n == MANIFEST or _is_shard(n, prefix) for n in names)
    if holds_shards and not overwrite:
        raise ConfigError(
            f"--out '{target}' already holds shards; pass --overwrite to replace them (the old "
            "ones stay until the new ones are complete)"
        )
    return holds_shards


def _is_shard(name: str, prefix: str) -> bool:
    return name.endswith(".tar") and name.startswith(f"{prefix}-")


def recover(target: Path) -> None:
    """Clean up after a conversion that was killed (we hold the lock): put back a folder moved
    aside just before the kill, remove staging folders."""
    parent = target.parent
    for aside in sorted(parent.glob(aside_name(target) + "*")):
        if not target.exists() and _holds_manifest(aside):  # killed between the two renames
            aside.rename(target)
        else:
            shutil.rmtree(aside)
    for staging in parent.glob(staging_name(target) + "*"):
        shutil.rmtree(staging)


@contextlib.contextmanager
def replacing(target: Path, overwrite: bool = False, prefix: str = "shard") -> Iterator[Path]:
    """Yield an empty staging folder; when the block ends without an error, it becomes
    ``target`` in one swap. An error leaves ``target`` as it was and removes the staging folder;
    an ``OSError`` (a full disk) becomes one line naming the folder and the cause."""
    target = Path(target)
    if target.is_symlink() or target.name in ("", ".", ".."):  # the folder itself, not a link
        target = target.resolve()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ShardError(f"cannot create '{target.parent}' ({err.strerror})") from None
    lock = FolderLock(target)
    staging: Path | None = None
    try:
        recover(target)
        check_replaceable(target, overwrite, prefix)
        staging = target.with_name(f"{staging_name(target)}{os.getpid()}")
        staging.mkdir()
        if target.is_dir():
            staging.chmod(target.stat().st_mode & 0o7777)
        yield staging
        _sync(staging)
        _swap(staging, target)
        staging = None
    except OSError as err:
        kept = "its old shards are intact" if _holds_manifest(target) else "nothing was written"
        raise ShardError(
            f"could not write the shards of '{target}' ({err.strerror or err}); {kept}"
        ) from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        lock.release()


def _holds_manifest(target: Path) -> bool:
    return (target / MANIFEST).is_file()


def _sync(folder: Path) -> None:
    """Flush the new files to disk before the swap makes them the folder's content."""
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _sync_dir(folder)


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap(staging: Path, target: Path) -> None:
    """staging → target: the old folder aside, the new one in, the old one deleted."""
    if not target.exists():
        staging.rename(target)
    else:
        cache = target / REFERENCE_CACHE
        if cache.is_dir():  # keyed by the manifest's sha256: entries of other shards never match
            cache.rename(staging / REFERENCE_CACHE)
        aside = target.with_name(f"{aside_name(target)}{os.getpid()}")
        target.rename(aside)
        staging.rename(target)
        (aside / MANIFEST).unlink(missing_ok=True)  # first: a half-deleted folder is no shards
        shutil.rmtree(aside)
    _sync_dir(target.parent)
