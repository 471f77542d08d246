"""A file replaced whole or not at all: written beside itself, renamed over it on success.

For what a command writes to a path the user names (``audit export -o FILE``): an error
halfway (a tampered line, a full disk, Ctrl-C) leaves the file as it was, not truncated
and half written. A target that is not a regular file (``/dev/stdout``, a FIFO,
``/dev/full``) is written in place: renaming over it would replace the device itself.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path


def temp_beside(target: Path) -> Path:
    """A name for ``target``'s next version, beside it, unique to this write: the
    process's id alone was shared by two writes in one process (two ACP sessions on one
    repository built one Stage0 snapshot at once, and the second rename found nothing:
    an ACP audit)."""
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """The path to write instead of ``target``; on a clean exit it becomes ``target``
    (an existing file's permissions kept), on an error it is removed."""
    try:
        st = target.stat()
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        yield target
        return
    tmp = temp_beside(target)
    # O_EXCL: never write through a file or link someone left under that name;
    # 0o666 less the umask, as the file opened directly would have been.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        if st is not None:
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
