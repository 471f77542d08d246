"""A spool: an append-only file of records that several processes share, written under an
exclusive ``flock`` and folded into a SQLite database later, off the request path (a leaf:
it imports nothing of Switchyard).

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

Folding is the owner's (:class:`Folder` runs its function on a thread of its own): it reads
from the last folded offset, applies the records, and stores the new offset in the same
transaction, so each record is folded exactly once whoever folds it. Once everything is
folded and the file has grown past :data:`ROTATE_BYTES`, :meth:`Spool.rotate` puts a fresh
file in its place (a new id); a writer holding the old one reads the rest of it and moves
over the next time it takes the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

MAGIC = b"switchyard-spool 1 "
#: a fully folded spool larger than this is replaced by an empty one
ROTATE_BYTES = 4 * 2**20

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
        self._ino = 0
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
        self._ino = os.fstat(fd).st_ino

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
            while self._replaced():
                # Everything in the old file was folded before it was replaced; what this
                # handle had not read of it is still news to its owner (the tail moved).
                new += self._read_rest(cut=False)
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
        size = os.fstat(self.fd).st_size
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
        try:
            return os.stat(self.path).st_ino != self._ino
        except FileNotFoundError:
            return True

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
        and ``folded()`` (read under the lock: the folded id and offset) says all of it is
        folded. The caller has made that fold durable first (a fsync'd commit). Writers
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


class Folder:
    """Runs ``fold(conn)`` (one whole transaction: it begins and commits) on a daemon
    thread with a connection of its own, ``delay_s`` after it is poked, so that a burst of
    appends is folded in one transaction. The thread starts on the first poke and ends
    after ``idle_s`` without one; it never keeps a process alive. A fold that fails is
    logged and tried again on the next poke (a reader folds before it reads, and raises)."""

    def __init__(
        self,
        db_path: Path,
        fold: Callable[[sqlite3.Connection], object],
        *,
        delay_s: float = 0.02,
        idle_s: float = 5.0,
        busy_timeout_ms: int = 30_000,
    ) -> None:
        self.db_path = db_path
        self.fold = fold
        self.delay_s = delay_s
        self.idle_s = idle_s
        self.busy_timeout_ms = busy_timeout_ms
        self._wake = threading.Event()
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: the folds that failed since the last that did not (tests)
        self.failures = 0

    def poke(self) -> None:
        if self._wake.is_set():
            return
        with self._guard:
            if self._closed:
                return
            self._wake.set()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._main, name=f"fold {self.db_path.name}", daemon=True
                )
                self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        with self._guard:
            self._closed = True
            thread = self._thread
            self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _main(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                woken = self._wake.wait(self.idle_s)
                with self._guard:
                    if self._closed or not woken:
                        self._thread = None
                        return
                if self.delay_s:
                    time.sleep(self.delay_s)  # let a burst gather
                with self._guard:
                    if self._closed:
                        self._thread = None
                        return
                    self._wake.clear()
                try:
                    if conn is None:
                        conn = sqlite3.connect(self.db_path, isolation_level=None)
                        conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
                        conn.execute("PRAGMA synchronous = NORMAL")
                    self.fold(conn)
                    self.failures = 0
                except Exception as exc:  # told by the next reader, which folds itself
                    self.failures += 1
                    if self.failures == 1:
                        log.warning("%s: folding its spool failed: %s", self.db_path, exc)
        finally:
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()


#: ``fold(conn, handle)``: inside a write transaction the caller holds, apply the records
#: of ``handle``'s file after the last fold; the spool id and offset folded to
FoldFn = Callable[[sqlite3.Connection, Spool], tuple[str, int]]


class Spooled:
    """A SQLite file's spool as its store uses it: a handle for the appends (under the
    lock), one for the folds a reader makes first (under the store's own lock), the
    folding thread with a handle of its own, and how far the spool is folded.

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
        handles = [self.appends]
        try:
            self.reads = Spool(self.path)
            handles.append(self.reads)
            self._behind = Spool(self.path)
        except BaseException:
            for h in handles:
                h.close()
            raise
        #: the spool id and offset folded so far, as far as this process knows
        self.folded: tuple[str, int] = ("", 0)
        self.folder: Folder | None = Folder(db_path, self._fold_behind)

    def fold(self, conn: sqlite3.Connection, handle: Spool | None = None) -> None:
        """One whole fold transaction on ``conn`` (``handle``: the reads' unless the
        caller holds the lock on the appends' and passes it)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            self.folded = self._fold(conn, handle or self.reads)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def behind(self) -> bool:
        """Records were appended past the last fold this process knows of."""
        return (self.reads.ident, self.reads.size()) != self.folded

    def poke(self) -> None:
        if self.folder is not None:
            self.folder.poke()

    def stop_folding(self) -> None:
        folder, self.folder = self.folder, None
        if folder is not None:
            folder.close()

    def close(self) -> None:
        self.stop_folding()
        for handle in (self.appends, self.reads, self._behind):
            handle.close()

    def _fold_behind(self, conn: sqlite3.Connection) -> None:
        self.fold(conn, self._behind)
        if self._behind.size() > _rotate_bytes():
            self._behind.rotate(lambda: self._synced_watermark(conn))

    def _synced_watermark(self, conn: sqlite3.Connection) -> tuple[str, int]:
        """The committed watermark, made durable: the folds committed without a sync
        (synchronous NORMAL), so the WAL and the file are synced after it is read (a
        checkpoint syncs what it moved into the file itself). Called under the spool's
        lock, before the records it covers leave the spool."""
        mark = self._watermark(conn)
        for name in (f"{self.db_path}-wal", str(self.db_path)):
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(name, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        return mark
