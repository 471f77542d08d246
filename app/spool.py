"""A spool: an append-only file of records that several processes share, written under an
exclusive ``flock`` and folded into a SQLite database later, in batches (a leaf beside
:mod:`app.sqlite`, the one module of Switchyard it imports).

Why (issue 20): a write that must stand before an effect (the audit line before a cloud
call) cost a SQLite write transaction on the request path: BEGIN IMMEDIATE, a few
statements, a COMMIT writing whole pages to the WAL, about 60 µs each. Appending the same
record to a file is one ``write`` under a lock. It is as durable as the WAL with
``synchronous = NORMAL``: a record ``write`` returned for survives the process being
killed at any point (it is in the page cache); a power cut may lose the last records,
never leave a bad one behind that is read as good (each carries a CRC, and reading stops
at the first that does not check).

The file: a header line ``switchyard-spool 1 <id>``, then one record per line, ``<crc32
as 8 hex digits> <payload>``; a payload holds no newline. Readers parse complete lines only
(a record being written is not read half-way). Whoever holds the lock next cuts off what
a writer killed mid-record left (nothing: a ``write`` to a file is not interrupted by a
signal) or what a power cut left (bytes that do not check).

Folding is the owner's (:class:`Spooled` says when): it reads
from the last folded offset, applies the records, and stores the new offset in the same
transaction, so each record is folded exactly once whoever folds it. Once everything is
folded and the file has grown past :data:`ROTATE_BYTES`, :meth:`Spool.rotate` puts a fresh
file in its place (a new id); a writer holding the old one reads the rest of it and moves
over the next time it takes the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import secrets
import sqlite3
import zlib
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from app.sqlite import Busy, is_busy

MAGIC = b"switchyard-spool 1 "
#: a fully folded spool larger than this is replaced by an empty one
ROTATE_BYTES = 4 * 2**20
#: a store folds on the request path once this many of its records wait
FOLD_RECORDS = 512
#: … and sooner, once its event loop has been free this long after a write
IDLE_S = 0.25

log = logging.getLogger(__name__)


def frame(payload: bytes) -> bytes:
    """One record as it is written: its CRC, a space, the payload, a newline."""
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def parse(data: bytes) -> tuple[list[bytes], int]:
    """The payloads of the complete, checked records at the start of ``data``, and how many
    bytes they take. Stops at a line that is incomplete or does not check."""
    out: list[bytes] = []
    pos = 0
    find = data.find
    while True:
        nl = find(b"\n", pos)
        if nl < 0:
            break
        if nl - pos < 9 or data[pos + 8] != 0x20:
            break
        payload = data[pos + 9 : nl]
        try:
            crc = int(data[pos : pos + 8], 16)
        except ValueError:
            break
        if crc != zlib.crc32(payload):
            break
        out.append(payload)
        pos = nl + 1
    return out, pos


class Spool:
    """One process's handle on a spool file. Not thread-safe: its owner serialises."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.fd = -1
        self.ident = ""
        #: where the records start (after the header)
        self.start = 0
        #: how far this handle has read or written
        self.offset = 0
        self._gone = False
        self._attach()

    # ── the file ─────────────────────────────────────────────────────────────────────────

    def _attach(self) -> None:
        """Open the file at ``path`` (made with its header when missing or empty)."""
        fd, header = _open_locked(self.path)
        fcntl.flock(fd, fcntl.LOCK_UN)
        self._use(fd, header)

    def _use(self, fd: int, header: bytes) -> None:
        self.fd = fd
        self.ident = header[len(MAGIC) : -1].decode("ascii")
        self.start = self.offset = len(header)
        self._gone = False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    # ── under the lock ───────────────────────────────────────────────────────────────────

    def acquire(self, *, blocking: bool) -> list[bytes] | None:
        """Take the lock and read the records appended since this handle last looked
        (other writers', across a rotation too). None when ``blocking`` is off and
        another holds the lock (or a rotation's new file is locked): nothing is held."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        try:
            new = self._read_rest(cut=True)
            while self._gone:
                # Everything in the old file was folded before it was replaced, and this
                # handle has read the rest of it (news to its owner: the tail moved).
                self._move()
                new += self._read_rest(cut=True)
        except BaseException:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            raise
        return new

    def _move(self) -> None:
        """From the replaced file (locked) to the one now at ``path`` (locked: a wait of
        microseconds, an appender's or the rotation's own)."""
        old = self.fd
        fd, header = _open_locked(self.path)
        fcntl.flock(old, fcntl.LOCK_UN)
        os.close(old)
        self._use(fd, header)

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def write(self, payloads: list[bytes]) -> None:
        """Append ``payloads`` (under the lock, after :meth:`acquire`): all of them, in one
        ``write``, or none (a short write on a full disk is cut off and raised)."""
        for p in payloads:
            if b"\n" in p:
                raise ValueError("a spool record cannot hold a newline")
        data = b"".join(frame(p) for p in payloads)
        try:
            written = os.write(self.fd, data)
        except OSError:
            self._cut(self.offset)
            raise
        if written != len(data):
            self._cut(self.offset)
            raise OSError(errno.ENOSPC, f"short write to {self.path}")
        self.offset += written

    def _read_rest(self, *, cut: bool) -> list[bytes]:
        st = os.fstat(self.fd)
        # A file replaced (a rotation renamed a new one over it) or removed has no link
        # left: the one fstat tells both, no stat of the path on every lock.
        self._gone = st.st_nlink == 0
        size = st.st_size
        if size <= self.offset:
            return []
        data = os.pread(self.fd, size - self.offset, self.offset)
        payloads, used = parse(data)
        self.offset += used
        if cut and self.offset < size:
            # What no record checks (a power cut's garbage): nobody is writing now.
            log.warning("%s: %d bytes that are no record cut off", self.path, size - self.offset)
            self._cut(self.offset)
        return payloads

    def _cut(self, at: int) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, at)

    def _replaced(self) -> bool:
        return os.fstat(self.fd).st_nlink == 0

    # ── folding ──────────────────────────────────────────────────────────────────────────

    def read_since(self, offset: int) -> tuple[list[bytes], int]:
        """The complete records from ``offset`` (no lock needed: records are only ever
        appended), and the offset after the last of them."""
        size = os.fstat(self.fd).st_size
        if size <= offset:
            return [], offset
        payloads, used = parse(os.pread(self.fd, size - offset, offset))
        return payloads, offset + used

    def follow(self) -> None:
        """Move this handle to the file now at ``path`` when the one it has was replaced
        (a reading handle: it holds no lock)."""
        if self._replaced():
            fd, header = _open_locked(self.path)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self._use(fd, header)

    def rotate(self, folded: Callable[[], tuple[str, int]]) -> bool:
        """Replace the file by an empty one when it is larger than :data:`ROTATE_BYTES`
        and ``folded()`` (called under the lock: it folds what is left, makes the folds
        durable, and gives the folded id and offset) says all of it is folded. Writers
        holding the old file move over the next time they take the lock."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            size = self.size()
            if self._replaced() or size <= _rotate_bytes() or folded() != (self.ident, size):
                return False
            tmp = self.path.with_name(f"{self.path.name}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, _new_header())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            with contextlib.suppress(OSError):
                dfd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            return True
        finally:
            self.release()


def _rotate_bytes() -> int:
    return ROTATE_BYTES  # (read at each call: a test lowers it)


def _new_header() -> bytes:
    return MAGIC + secrets.token_hex(8).encode() + b"\n"


def _open_locked(path: Path) -> tuple[int, bytes]:
    """The file at ``path``, locked, with its header (written when missing or torn)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        header = _header(fd)
        if header is None:
            os.ftruncate(fd, 0)
            header = _new_header()
            os.write(fd, header)
    except BaseException:
        os.close(fd)
        raise
    return fd, header


def _header(fd: int) -> bytes | None:
    """The file's header line, or None for an empty file (or one whose header is torn)."""
    head = os.pread(fd, 64, 0)
    nl = head.find(b"\n")
    if nl < 0 and (MAGIC.startswith(head) or head.startswith(MAGIC)):
        return None  # empty, or a header a crash cut short
    if nl < 0 or not head.startswith(MAGIC):
        raise OSError(errno.EINVAL, "not a Switchyard spool file")
    return head[: nl + 1]


#: ``fold(conn, handle)``: inside a write transaction the caller holds, apply the records
#: of ``handle``'s file after the last fold; the spool id and offset folded to
FoldFn = Callable[[sqlite3.Connection, Spool], tuple[str, int]]


class Spooled:
    """A SQLite file's spool as its store uses it: a handle for the appends (under the
    lock), one for the folds (under the store's own lock), how far the spool is folded,
    and when to fold.

    Folds run in the store's own thread (the event loop's, or the connection's when the
    file is busy), never on a thread of their own: in CPython a thread folding beside
    the request path holds the GIL between its statements, and every system call of the
    request path (the lock, the ``write``) then waits for it; measured so, a request cost
    more than the folds themselves (issue 20). A store folds when :data:`FOLD_RECORDS`
    of its records wait (a few milliseconds in one transaction, on the request that
    reaches it), when its loop has been free for :data:`IDLE_S` after a write, before any
    read of its tables, and when it closes.

    ``fold`` applies records; ``watermark(conn)`` reads the committed (id, offset)."""

    def __init__(
        self,
        db_path: Path,
        fold: FoldFn,
        watermark: Callable[[sqlite3.Connection], tuple[str, int]],
    ) -> None:
        self.db_path = db_path
        self.path = db_path.with_name(f"{db_path.name}-spool")
        self._fold = fold
        self._watermark = watermark
        self.appends = Spool(self.path)
        try:
            self.reads = Spool(self.path)
        except BaseException:
            self.appends.close()
            raise
        #: the spool id and offset folded so far, as far as this process knows
        self.folded: tuple[str, int] = ("", 0)
        #: records this process appended since it last folded
        self.waiting = 0
        self._idle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def wrote(self, records: int) -> bool:
        """Count ``records`` appended; True when the spool is due a fold now."""
        self.waiting += records
        return self.waiting >= FOLD_RECORDS

    def fold(self, conn: sqlite3.Connection, handle: Spool | None = None) -> None:
        """One whole fold transaction on ``conn`` (``handle``: the reads' unless the
        caller holds the lock on the appends' and passes it); then, when the spool has
        grown past :data:`ROTATE_BYTES`, its replacement."""
        self._fold_once(conn, handle or self.reads)
        if handle is None and self.reads.size() > _rotate_bytes():
            self.reads.rotate(lambda: self._fold_rest(conn))

    def fold_inline(self, conn: sqlite3.Connection, inline: bool) -> None:
        """:meth:`fold` as an :class:`app.sqlite.SQLiteRunner` transaction function: on
        the event loop it raises :class:`app.sqlite.Busy` rather than wait for the file."""
        try:
            self.fold(conn)
        except sqlite3.Error as exc:
            if inline and is_busy(exc):
                raise Busy from exc
            raise

    def _fold_once(self, conn: sqlite3.Connection, handle: Spool) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            self.folded = self._fold(conn, handle)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self.waiting = 0

    def behind(self) -> bool:
        """Records were appended past the last fold this process knows of (or the spool
        was replaced: what the new one holds is unknown)."""
        st = os.fstat(self.reads.fd)
        return st.st_nlink == 0 or (self.reads.ident, st.st_size) != self.folded

    def when_idle(self, fold: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """After a write: run ``fold()`` once the loop has been free for :data:`IDLE_S`
        (one timer at a time; a fold that fails is logged: the next read folds, and
        raises)."""
        if self._idle is None and not self._closed:
            self._idle = asyncio.get_running_loop().call_later(IDLE_S, self._start, fold)

    def _start(self, fold: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._idle = None
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._quietly(fold))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quietly(self, fold: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await fold()
        except Exception as exc:
            log.warning("%s: folding its spool failed: %s", self.db_path, exc)

    async def stop(self) -> None:
        """No idle fold from now on (the store folds what is left itself)."""
        self._closed = True
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def close(self) -> None:
        for handle in (self.appends, self.reads):
            handle.close()

    def _fold_rest(self, conn: sqlite3.Connection) -> tuple[str, int]:
        """Under the spool's lock (no record comes in): fold what is left, make every fold
        durable, and say how far that is. The folds committed without a sync (synchronous
        NORMAL): the WAL and the file are synced before the records leave the spool (a
        checkpoint syncs what it moved into the file itself). Once per rotation."""
        self._fold_once(conn, self.reads)
        mark = self._watermark(conn)
        for name in (f"{self.db_path}-wal", str(self.db_path)):
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(name, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        return mark
