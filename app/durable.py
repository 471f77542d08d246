"""Making what was written survive a power cut: ``fsync`` of a file, and of a directory
after a rename in it (a leaf: the standard library only)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    # The rename itself is only durable once the directory is synced.
    with contextlib.suppress(OSError):
        fsync_file(path)
