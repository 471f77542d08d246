"""Whether a run is still going, from any process: its maker holds a lock on a marker
(``.switchyard/live/<run id>``, apart from the bundles: a tool listing ``runs/`` finds
bundles only) from the bundle's creation to its seal.

A second workbench (or ``switchyard merge`` in another terminal) took a live run in
another process for an abandoned one: "not sealed", "the bundle does not verify", and a
merge refusal naming a missing manifest written into the shared audit (a TUI audit).
The kernel lets go of the lock when the process ends however it ends, so a run killed
mid-way reads as not running (its bundle unsealed), as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path

from app.errors import ConfigError

#: the markers' folder in the repository's state dir (beside ``runs``)
LIVE_DIR = "live"
#: no link followed, and no open that waits (a FIFO planted as a marker hung the screen)
_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def marker(bundle: Path) -> Path:
    """The marker of the bundle at ``REPO/.switchyard/runs/<id>``: ``…/live/<id>``."""
    return bundle.parent.parent / LIVE_DIR / bundle.name


def hold(bundle: Path) -> int | None:
    """Take the marker's lock for the run making ``bundle``; the descriptor that holds it
    (None when it could not be made: a run is not stopped for it, it reads as not live)."""
    from app.paths import repo_state_dir

    try:
        # its folder made as the state dir's are: real folders, no link on the way
        repo_state_dir(bundle.parent.parent.parent, LIVE_DIR)
        fd = os.open(marker(bundle), os.O_RDWR | os.O_CREAT | _FLAGS, 0o600)
    except (OSError, ConfigError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError("not a regular file")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def let_go(bundle: Path, fd: int | None) -> None:
    """The run has sealed its bundle (or given it up): the marker goes, then the lock."""
    if fd is None:
        return
    with contextlib.suppress(OSError):
        marker(bundle).unlink()
    with contextlib.suppress(OSError):
        os.close(fd)


def running(bundle: Path) -> bool:
    """Whether a process (this one included) holds the lock of ``bundle``'s run."""
    try:
        fd = os.open(marker(bundle), os.O_RDONLY | _FLAGS)
    except OSError:
        return False  # no marker: sealed, never held, or a Switchyard from before it
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False  # (a FIFO a repository planted there: never waited on)
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # (a shared lock taken is let go with it)
    return False
