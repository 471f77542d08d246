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

The file: a header line ``switchyard-spool 1 <id> [<id of the file it replaced>]``, then
one record per line, ``<crc32 as 8 hex digits> <payload>``; a payload holds no newline.
Readers parse complete lines only (a record being written is not read half-way). Whoever
holds the lock next cuts off what a writer killed mid-``write`` left (a ``write`` of
several pages can be cut short by SIGKILL: the records it completed stand, the one it cut
does not check) or what a power cut left (bytes that do not check).

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
import re
import secrets
import sqlite3
import time
import zlib
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from app.durable import fsync_dir
from app.sqlite import Busy, is_busy

MAGIC = b"switchyard-spool 1 "
#: a fully folded spool larger than this is replaced by an empty one
ROTATE_BYTES = 4 * 2**20
#: a store folds on the request path once this many of its records wait
FOLD_RECORDS = 512
#: … unless another store of this process ended a fold less than this long ago (the audit
#: log and the ledger reach their batch on the same request: two folds in one request
#: were its p99.9, ~13 ms); never past twice the batch
FOLD_SPACING_S = 0.02
#: … and this long after a write, on the store's loop when it next runs callbacks
IDLE_S = 0.25
#: a writer waits this long at most for a lock another process holds (SQLite's busy
#: timeout was the same): a process stopped while it holds one is an error, not a hang
LOCK_TIMEOUT_S = 30.0

log = logging.getLogger(__name__)
T = TypeVar("T")
#: when a fold of this process last committed, and the id of its Spooled (Spooled.wrote)
_last_fold: tuple[float, int] = (-1e9, 0)


class NotASpool(OSError):
    """A file in a spool's place that is not one (no header, or a damaged one): what
    the store was given, which it cannot read (exit 2, as a file that is no database)."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(errno.EINVAL, f"not a Switchyard spool file ({what})", str(path))


class ShortWrite(OSError):
    """A write cut short (a full disk): the first ``standing`` records stand, the rest do
    not (:meth:`Spool.write`)."""

    def __init__(self, path: Path, standing: int) -> None:
        stand = f": the first {standing} of its records stand" if standing else ""
        super().__init__(errno.ENOSPC, f"short write to {path}{stand}")
        self.standing = standing


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
        #: the id of the file this one replaced ("" for a first file)
        self.prev = ""
        #: set when a move skipped a file (replaced twice since this handle last looked):
        #: what that file held was folded, and the owner reads its state from the tables
        self.missed = False
        #: where the records start (after the header)
        self.start = 0
        #: how far this handle has read or written
        self.offset = 0
        self._gone = False
        #: records read under a lock that could not be kept (see :meth:`acquire`)
        self._carry: list[bytes] = []
        self._attach()

    # ── the file ─────────────────────────────────────────────────────────────────────────

    def _attach(self) -> None:
        """Open the file at ``path`` (made with its header when missing or empty)."""
        opened = _open_locked(self.path)
        assert opened is not None  # (waited for)
        fcntl.flock(opened[0], fcntl.LOCK_UN)
        self._use(*opened)

    def _use(self, fd: int, header: bytes) -> None:
        self.fd = fd
        ident, _, prev = header[len(MAGIC) : -1].decode("ascii").partition(" ")
        self.ident, self.prev = ident, prev
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
        (other writers', across a rotation too). None when ``blocking`` is off and the
        lock (or a rotation's new file's) is taken: nothing is held then, and what was
        read already is kept for the next call."""
        if not _lock(self.fd, self.path, blocking=blocking):
            return None
        new, self._carry = self._carry, []
        try:
            new += self._read_rest(cut=True)
            while self._gone:
                # Everything in the old file was folded before it was replaced, and this
                # handle has read the rest of it (news to its owner: the tail moved).
                was = self.ident
                if not self._move(blocking=blocking):
                    self._carry = new
                    fcntl.flock(self.fd, fcntl.LOCK_UN)
                    return None
                if self.prev != was:
                    # A file came and went between the two: its records are in the
                    # tables only (a rotation folds a file whole first); see ``missed``.
                    self.missed = True
                new += self._read_rest(cut=True)
        except BaseException:
            self._carry = new  # read, not yet told: the next call returns them
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            raise
        return new

    def _move(self, *, blocking: bool) -> bool:
        """From the replaced file (locked) to the one now at ``path``, locked (False, and
        nothing moved, when that lock is taken and ``blocking`` is off)."""
        opened = _open_locked(self.path, blocking=blocking)
        if opened is None:
            return False
        old = self.fd
        fcntl.flock(old, fcntl.LOCK_UN)
        os.close(old)
        self._use(*opened)
        return True

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def current(self) -> bool:
        """True when nothing was appended since this handle last looked and its file is
        still the spool (one ``fstat``, no lock): what its owner has read is all there is,
        as of now. A reader may answer from that without the lock; a writer may not."""
        if self._carry or self.missed:
            return False
        st = os.fstat(self.fd)
        return st.st_nlink > 0 and st.st_size == self.offset

    def write(self, payloads: list[bytes]) -> None:
        """Append ``payloads`` (under the lock, after :meth:`acquire`) in one ``write``.

        A short write (a full disk) keeps the records it completed and cuts off the one it
        cut short, then raises :class:`ShortWrite` saying how many stand: a fold in another
        process reads records without the lock, so a record that checks may be folded the
        moment it is written, and is never taken back. (A lone record is never completed by
        a short write: it is all there, or none of it is.) A process killed in the middle
        of a write of several pages leaves the same: the records it had completed."""
        for p in payloads:
            if 0x0A in p:  # (a newline as an int: a bytes needle is first tried as one)
                raise ValueError("a spool record cannot hold a newline")
        frames = [frame(p) for p in payloads]
        data = b"".join(frames)
        try:
            written = os.write(self.fd, data)
        except OSError:
            self._cut(self.offset)
            raise
        if written != len(data):
            standing, end = 0, self.offset
            for f in frames:
                if end - self.offset + len(f) > written:
                    break
                standing, end = standing + 1, end + len(f)
            self._cut(end)
            self.offset = end
            raise ShortWrite(self.path, standing)
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
        (a reading handle: it takes no lock, so a fold holding the database's write lock
        never waits for a writer holding the spool's; a file not there yet or without its
        header is followed next time)."""
        if not self._replaced():
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            header = _header(fd, self.path)
        except BaseException:
            os.close(fd)
            raise
        if header is None:
            os.close(fd)
            return
        os.close(self.fd)
        self._use(fd, header)

    def rotate(self, folded: Callable[[], tuple[str, int]]) -> bool:
        """Replace the file by an empty one when it is larger than :data:`ROTATE_BYTES`
        and ``folded()`` (called under the lock: it folds what is left, makes the folds
        durable, and gives the folded id and offset) says all of it is folded. Writers
        holding the old file move over the next time they take the lock."""
        try:  # never waited for: a rotation is tried again at the next fold
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            size = self.size()
            if self._replaced() or size <= _rotate_bytes() or folded() != (self.ident, size):
                return False
            tmp = self.path.with_name(f"{self.path.name}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                try:
                    header = _new_header(self.ident)
                    if os.write(fd, header) != len(header):
                        raise OSError(errno.ENOSPC, f"short write to {tmp}")
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            fsync_dir(self.path.parent)
            return True
        finally:
            self.release()


def _rotate_bytes() -> int:
    return ROTATE_BYTES  # (read at each call: a test lowers it)


def _lock(fd: int, path: Path, *, blocking: bool) -> bool:
    """Take ``fd``'s exclusive lock: at once, or (``blocking``) within
    :data:`LOCK_TIMEOUT_S`, else an error naming the file. Waits by polling, off the
    event loop (a blocked ``flock`` could not be given up)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        if not blocking:
            return False
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    pause = 0.0001
    while True:
        time.sleep(pause)
        pause = min(pause * 2, 0.005)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise OSError(
                    errno.EAGAIN,
                    f"locked by another process for more than {LOCK_TIMEOUT_S:g}s",
                    str(path),
                ) from None


#: a header as :func:`_new_header` writes it, and its longest
_HEADER = re.compile(re.escape(MAGIC) + rb"[0-9a-f]{16}(?: [0-9a-f]{16})?\n")
_HEADER_MAX = len(MAGIC) + 34


def _new_header(prev: str = "") -> bytes:
    """A header: the new file's id, and the id of the file it replaces."""
    tail = f" {prev}" if prev else ""
    return MAGIC + f"{secrets.token_hex(8)}{tail}\n".encode("ascii")


def _open_locked(path: Path, *, blocking: bool = True) -> tuple[int, bytes] | None:
    """The file at ``path``, locked, with its header (written when missing or torn); None
    when ``blocking`` is off and the lock is taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        if not _lock(fd, path, blocking=blocking):
            os.close(fd)
            return None
        header = _header(fd, path)
        if header is None:
            os.ftruncate(fd, 0)
            header = _new_header()
            os.write(fd, header)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return fd, header


def _header(fd: int, path: Path) -> bytes | None:
    """The file's header line, or None for an empty file (or one whose header a crash cut
    short: no longer than a header, and nothing after it, as records only follow one).

    Anything else fails closed: a header with a byte changed in a file of records was
    taken for a torn one, and the file was emptied, every record not yet folded with it
    (audit lines, reservations held for calls in flight: an audit)."""
    head = os.pread(fd, 64, 0)
    nl = head.find(b"\n")
    if nl < 0 and (MAGIC.startswith(head) or head.startswith(MAGIC)):
        if os.fstat(fd).st_size <= _HEADER_MAX:
            return None  # empty, or a header a crash cut short
        raise OSError(
            errno.EINVAL, "not a Switchyard spool file (its header is damaged)", str(path)
        )
    if nl < 0 or not _HEADER.fullmatch(head[: nl + 1]):
        raise NotASpool(path, "its header is damaged" if head.startswith(MAGIC) else "no header")
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
    reaches it, or a later one when another store of the process has just ended a
    fold: :data:`FOLD_SPACING_S`), :data:`IDLE_S` after a write (when its loop next
    runs callbacks), before any read of its tables, and when it closes.

    ``fold`` applies records; ``table`` records how far (:func:`watermark`)."""

    def __init__(
        self,
        db_path: Path,
        fold: FoldFn,
        table: str,
    ) -> None:
        self.db_path = db_path
        self.path = db_path.with_name(f"{db_path.name}-spool")
        self._fold = fold
        self._table = table
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
        """Count ``records`` appended; True when the spool is due a fold now: a batch
        waits, and no other store of this process ended a fold in the last
        :data:`FOLD_SPACING_S` (or two batches wait). A fold that fails counts for
        nothing: a store whose folds keep failing never holds another's back."""
        self.waiting += records
        if self.waiting < FOLD_RECORDS:
            return False
        at, by = _last_fold
        return (
            self.waiting >= 2 * FOLD_RECORDS
            or by == id(self)
            or time.monotonic() - at >= FOLD_SPACING_S
        )

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
            folded = self._fold(conn, handle)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self.folded = folded  # (only once committed: a failed commit leaves it behind)
        self.waiting = 0
        global _last_fold
        _last_fold = (time.monotonic(), id(self))

    def behind(self) -> bool:
        """Records were appended past the last fold this process knows of (or the spool
        was replaced: what the new one holds is unknown)."""
        st = os.fstat(self.reads.fd)
        return st.st_nlink == 0 or (self.reads.ident, st.st_size) != self.folded

    def when_idle(self, fold: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """After a write: run ``fold()`` :data:`IDLE_S` later, when the loop next runs
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
        durable, and say how far that is. Once per rotation.

        The folds committed without a sync (synchronous NORMAL). Then one commit under
        ``synchronous = FULL``, which in WAL mode syncs the WAL and with it every fold
        still there (a checkpoint syncs what it moved into the file itself). It must
        write a page to sync anything: SQLite stores no page for a row written as it
        stands, so the watermark is stored otherwise and then as it is (a review: the
        watermark stored as it was, no ``fdatasync`` of the WAL at all). SQLite's own
        descriptor does the sync: an ``fsync`` through one of ours, opened and closed,
        dropped every POSIX lock the process held on the file, SQLite's too (fcntl locks
        are the process's, per file); the next command to close its connection then took
        itself for the last, checkpointed and deleted the WAL under ``serve``, and the log
        was corrupt (a long-life audit: "database disk image is malformed")."""
        self._fold_once(conn, self.reads)
        folded_to = watermark(conn, self._table)
        was = int(conn.execute("PRAGMA synchronous").fetchone()[0])
        conn.execute("PRAGMA synchronous = FULL")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(f"UPDATE {self._table} SET folded = -1 - folded WHERE id = 1")
                mark(conn, self._table, *folded_to)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        finally:
            # (refused inside a transaction a failed ROLLBACK left: the error stands, and
            # the connection syncs more than it need, never less)
            with contextlib.suppress(sqlite3.Error):
                conn.execute(f"PRAGMA synchronous = {was}")
        return folded_to


async def to_the_end(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a worker thread, awaited to its end even when the caller is
    cancelled meanwhile (then the cancellation is raised once it has ended). A thread
    waiting for a spool's lock holds it once it has it, and the lock belongs to the open
    file, not to the thread: the caller's own lock (an ``asyncio.Lock``) must not be let
    go while it runs, or another coroutine of the process would take the spool's lock
    through the same file as well."""
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True  # (raised once the thread has ended, even if it just did)
        except BaseException:
            break  # the thread's own failure: raised below
    if cancelled:
        if not task.cancelled():
            task.exception()  # (retrieved: never reported as lost)
        raise asyncio.CancelledError
    return task.result()


def watermark(db: sqlite3.Connection, table: str) -> tuple[str, int]:
    """The spool id and offset folded so far, as ``table`` (one row, id 1: ``spool``,
    ``folded``) records them; ("", 0) before the first fold."""
    row = db.execute(f"SELECT spool, folded FROM {table} WHERE id = 1").fetchone()
    return (str(row[0]), int(row[1])) if row else ("", 0)


def mark(db: sqlite3.Connection, table: str, ident: str, offset: int) -> None:
    """Record in ``table`` that ``ident`` is folded up to ``offset`` (inside the fold's
    transaction: each record is folded exactly once, whoever folds it)."""
    db.execute(
        f"INSERT INTO {table} (id, spool, folded) VALUES (1, ?, ?) ON CONFLICT (id)"
        " DO UPDATE SET spool = excluded.spool, folded = excluded.folded",
        (ident, offset),
    )


def unfolded(db: sqlite3.Connection, spool: Spool, table: str) -> tuple[list[bytes], int]:
    r"""The records of ``spool``'s file (followed to the newest) after the last fold that
    ``table`` records, and the offset after them: what a fold applies, then
    :func:`mark`\s. With nothing to fold, a start that moved (a new file, a spool that
    lost its tail) is recorded here."""
    spool.follow()
    ident, at = watermark(db, table)
    start = _fold_start(spool, ident, at)
    records, end = spool.read_since(start)
    if not records and (ident, at) != (spool.ident, start):
        mark(db, table, spool.ident, start)
    return records, end


def _fold_start(spool: Spool, ident: str, at: int) -> int:
    """Where a fold of ``spool`` starts, given the spool id and offset folded so far.

    A spool shorter than what was folded from it lost its tail after the fold (a power
    cut keeps the database's commit and not the spool's last pages; a data dir copied
    spool first): what it holds now was folded, so the fold goes on from its end (the
    caller records that), never from an offset past it, where the records appended next
    would be skipped."""
    if ident != spool.ident:
        return spool.start
    size = spool.size()
    if at > size:
        log.error(
            "%s: %d bytes folded from it are gone (a power cut, or a copy made while it was"
            " written); folding goes on from its end",
            spool.path,
            at - size,
        )
        return size
    return at
