"""Atomic file writes: a file appears whole or not at all (temporary file + rename).

Temporary files are created next to their destination (so the final rename stays on one file
system) with the mode the umask asks for, ``0o666 & ~umask``, like files other tools write, so
outputs are readable by colleagues (or QGIS run by another user) exactly when theirs would be.
:func:`tempfile.mkstemp`, by contrast, always creates files with mode 0600.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

#: Attempts at finding an unused temporary name before giving up.
_ATTEMPTS = 100


def create_temporary(path: str | Path, suffix: str = ".tmp") -> Path:
    """Create an empty, uniquely named hidden file in the folder of ``path``.

    The file is created with ``O_EXCL`` and mode ``0o666``, which the kernel reduces by the
    process umask (``0o666 & ~umask``); the caller removes or renames it.

    Args:
        path: the destination the temporary file stands in for (its folder must exist).
        suffix: ending of the temporary name.

    Returns:
        the temporary file, ``.<name>.<random>.<suffix>`` next to ``path``.

    Raises:
        FileExistsError: if no unused name was found.
    """
    path = Path(path)
    for _ in range(_ATTEMPTS):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{path}: no unused temporary name in {path.parent}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file to write in place of ``path``, renamed into place on success.

    Parent folders are created. When the ``with`` block raises, the temporary file is removed
    and an existing destination is left untouched.

    Args:
        path: destination.

    Yields:
        the temporary file (created empty, see :func:`create_temporary`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temporary(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write a file through a temporary file in the same folder, then rename it into place.

    Args:
        path: destination; parent folders are created.
        write: called with the open binary temporary file.

    Returns:
        the destination path. On error the temporary file is removed and an existing
        destination is left untouched.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write a UTF-8 text file atomically."""
    return atomic_write(path, lambda f: f.write(text.encode()))


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the ``with`` block.

    Other processes asking for the same lock wait (an advisory ``flock``, which also holds
    across the nodes of a cluster file system that supports it). Used where many processes
    would otherwise make the same files at once, e.g. every DDP rank or SLURM task of a run
    building the same training copies: one builds, the others then find them up to date.
    Without ``fcntl`` (Windows) the block runs unlocked; writes stay atomic either way.

    Args:
        path: the lock file; parent folders are created.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


__all__ = ["atomic_path", "atomic_write", "create_temporary", "file_lock", "write_text"]
