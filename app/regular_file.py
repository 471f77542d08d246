"""A file opened for reading only when it is a regular file, never through a symbolic
link as its last part, and without blocking on a FIFO (a leaf: Stage0's corpus reads a
repository's files through it, the evidence reader a bundle's)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO


def open_regular(path: Path, expect: os.stat_result | None = None) -> BinaryIO:
    """``path`` opened for reading (``O_NOFOLLOW``, ``O_NONBLOCK``). ``expect``: the file's
    lstat, which the opened file must still match (it was not swapped since). OSError
    otherwise: a link, a FIFO, a device or a folder is no file to read."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if expect is not None and (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino):
            raise OSError(errno.ESTALE, "replaced while it was read", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
