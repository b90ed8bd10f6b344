"""Atomic file writes: a temporary file in the destination's folder, renamed over the destination when complete.

A crash or an error mid-write leaves the old file (or none), never half of a new one, and no temporary file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "temporary_beside"]


def temporary_beside(path: str | os.PathLike[str], suffix: str = ".tmp") -> tuple[int, str]:
    """Create an empty temporary file in ``path``'s folder (made if missing) with the usual mode of a new file;
    returns (open descriptor, its path). The caller writes it and renames it over ``path``, or removes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600 files
    return fd, tmp


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", *, durable: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing (``"wb"`` or ``"w"``); on success rename it to ``path``.

    ``durable=True`` also flushes the data and the rename to disk (fsync), for files that must survive a power cut
    (checkpoints).
    """
    path = Path(path)
    fd, tmp = temporary_beside(path)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        try:
            dir_fd = os.open(path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
