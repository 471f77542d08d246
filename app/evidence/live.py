"""Whether a run is still going, from any process: its maker holds a lock on a marker
(``.switchyard/live/<run id>``, apart from the bundles: a tool listing ``runs/`` finds
bundles only) from the bundle's creation to its seal.

A second workbench (or ``switchyard merge`` in another terminal) took a live run in
another process for an abandoned one: "not sealed", "the bundle does not verify", and a
merge refusal naming a missing manifest written into the shared audit (a TUI audit).
The kernel lets go of the lock when the process ends however it ends, so a run killed
mid-way reads as not running (its bundle unsealed), as before. Its marker stayed, for
good: :func:`sweep` removes such markers when a run starts and when the runs are listed.

A marker is removed only by a holder of its lock, while its name still names the file
locked: its run at the seal (the exclusive lock), or a sweep (a shared one, had only
while no run holds the exclusive one; readers take the same, so a sweep never makes a
dead run read as running). A sweep can find a new run's marker between the run's open
and its lock: the run checks that its name still names the file it locked, and makes
it again if not.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from pathlib import Path
from typing import Literal

from app.errors import ConfigError, UsageError
from app.evidence.runid import validate_run_id

#: the markers' folder in the repository's state dir (beside ``runs``)
LIVE_DIR = "live"
#: no link followed, and no open that waits (a FIFO planted as a marker hung the screen)
_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
#: how often a run tries to hold its marker when a sweep or a reader has it for a moment
_ATTEMPTS = 10


def marker(bundle: Path) -> Path:
    """The marker of the bundle at ``REPO/.switchyard/runs/<id>``: ``…/live/<id>``."""
    return bundle.parent.parent / LIVE_DIR / bundle.name


def hold(bundle: Path) -> int | None:
    """Take the marker's lock for the run making ``bundle``; the descriptor that holds it
    (None when it could not be made: a run is not stopped for it, it reads as not live).
    Markers of runs that died are swept first."""
    from app.paths import repo_state_dir

    try:
        # its folder made as the state dir's are: real folders, no link on the way
        repo_state_dir(bundle.parent.parent.parent, LIVE_DIR)
    except (OSError, ConfigError):
        return None
    sweep(bundle.parent.parent)
    path = marker(bundle)
    for _ in range(_ATTEMPTS):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _FLAGS, 0o600)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError("not a regular file")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a sweep or a reader, for a moment
            os.close(fd)
            time.sleep(0.002)
            continue
        except OSError:
            os.close(fd)
            return None
        if _names(path, fd):
            return fd
        os.close(fd)  # swept between the open and the lock: made again
    return None


def let_go(bundle: Path, fd: int | None) -> None:
    """The run has sealed its bundle (or given it up): the marker goes, then the lock."""
    if fd is None:
        return
    with contextlib.suppress(OSError):
        marker(bundle).unlink()
    with contextlib.suppress(OSError):
        os.close(fd)


def look(bundle: Path) -> Literal["held", "free", "unknown"]:
    """Whether a process (this one included) holds the lock of ``bundle``'s run: "free"
    when its marker is gone (sealed, swept, never held) or its lock could be taken here;
    "unknown" when it cannot be looked at (a marker this user may not open, a lock the
    filesystem refuses, a FIFO a repository planted there: never waited on)."""
    try:
        fd = os.open(marker(bundle), os.O_RDONLY | _FLAGS)
    except FileNotFoundError:
        return "free"
    except OSError:
        return "unknown"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "unknown"
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return "held"
    except OSError:
        return "unknown"
    finally:
        os.close(fd)  # (a shared lock taken is let go with it)
    return "free"


def running(bundle: Path) -> bool:
    """Whether a process (this one included) holds the lock of ``bundle``'s run."""
    return look(bundle) == "held"


def sweep(state: Path) -> None:
    """Remove the markers in ``state``'s ``live`` folder whose lock nobody holds: runs
    that died before they sealed (a SIGKILL, a crash). Nothing that is not a regular
    file is opened or removed (a link, a FIFO a repository planted), nor is a link
    followed to the folder; nothing is waited on. Best effort: an error skips."""
    try:
        top = os.open(state, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        folder = os.open(
            LIVE_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=top
        )
    except OSError:
        return
    finally:
        os.close(top)
    try:
        with contextlib.suppress(OSError):
            for name in os.listdir(folder):
                with contextlib.suppress(OSError):
                    _drop_if_dead(folder, name)
    finally:
        os.close(folder)


def _drop_if_dead(folder: int, name: str) -> None:
    try:
        validate_run_id(name)
    except UsageError:
        return  # named as no run is: not a marker (a review)
    if not stat.S_ISREG(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode):
        return  # not a marker: never opened, never removed
    fd = os.open(name, os.O_RDONLY | _FLAGS, dir_fd=folder)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return  # (swapped since)
        try:
            # shared, as a reader's: to be had only while no run holds the exclusive lock
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its run is alive
        if _names(name, fd, folder):
            os.unlink(name, dir_fd=folder)
    finally:
        os.close(fd)


def _names(name: str | Path, fd: int, folder: int | None = None) -> bool:
    """Whether ``name`` (in ``folder``) still names the file open as ``fd``."""
    try:
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except OSError:
        return False  # removed (by a sweep, or at a seal)
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)
