"""One way to run SQLite transactions from asyncio (a leaf: the audit log, the budget
ledger and the memory store all use it; it imports nothing of Switchyard).

A transaction is one function, ``fn(conn, inline)``, that runs BEGIN … COMMIT itself.
:class:`SQLiteRunner` runs it on the event loop when the file's lock is free at once, and
on the connection's thread when it must wait, so the loop never blocks on another
process's lock. Checkpoints (fsyncs) never run on the loop, nor in a request's way: a
daemon thread with a connection of its own makes them (:class:`Checkpointer`).

(The request path's writes, the audit lines and the ledger's records, go to a spool,
:mod:`app.spool`, and reach their tables in folds run here.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar, cast

import aiosqlite

BUSY_TIMEOUT_MS = 30_000
#: the checkpointer is woken after this many write transactions (a few pages each, so
#: about SQLite's own 1000-page automatic checkpoint)
CHECKPOINT_EVERY = 200
#: a WAL this large (the checkpointer never caught up: writes without a pause) is
#: checkpointed on the connection's own thread before the next write, as SQLite would
WAL_LIMIT_BYTES = 64 * 2**20
#: what a WAL file is cut back to once it starts over (``PRAGMA journal_size_limit``)
JOURNAL_SIZE_LIMIT = 8 * 2**20
T = TypeVar("T")
log = logging.getLogger(__name__)


async def connect_async(path: Path) -> aiosqlite.Connection:
    """An aiosqlite connection (we BEGIN ourselves; transactions run on the loop as well as
    on its thread), its worker a daemon thread: a store someone forgot to close (an error
    path) never keeps the interpreter from exiting. When the file cannot be opened,
    aiosqlite stops its thread without waiting for it, and the thread then reported to an
    event loop that had closed meanwhile ("Event loop is closed", a traceback after the
    one-line error): this waits for it before the error goes on."""
    pending = aiosqlite.connect(path, isolation_level=None, check_same_thread=False)
    worker = getattr(pending, "_thread", None)
    if isinstance(worker, threading.Thread):
        worker.daemon = True
    try:
        return await pending
    except BaseException:
        if isinstance(worker, threading.Thread) and worker.is_alive():
            await asyncio.to_thread(worker.join, 5.0)
        raise


class Busy(Exception):
    """Internal: the file is locked by another connection; wait for it off the loop."""


def is_busy(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def failure_text(what: str, path: Path, exc: sqlite3.Error, *, writing: bool = True) -> str:
    """One line for a store's failed statement, naming the store and its file: what a
    caller raises (as its own error) for a full disk, a read-only file or a long lock."""
    if is_busy(exc):  # locked by another connection for longer than the busy timeout
        return f"{what} {path} is busy (locked by another process): {exc}"
    return f"cannot {'write' if writing else 'read'} {what} {path}: {exc}"


#: ``fn(conn, inline)``: one whole transaction (BEGIN … COMMIT, ROLLBACK on failure).
#: With ``inline`` set it must not wait: it raises :class:`Busy` (after rolling back) when
#: SQLite reports the file locked, and is then run again on the connection's thread.
TxnFn = Callable[[sqlite3.Connection, bool], T]


class Checkpointer:
    """Copies a WAL file back into its database from a daemon thread, with a connection
    of its own, so that no request waits for the two fsyncs a checkpoint makes.

    A passive checkpoint waits for nobody: writers go on meanwhile. Once one has copied
    the whole WAL, the next write starts the WAL over from its beginning (so it stays
    small and its pages are overwritten, not appended). The thread starts on the first
    :meth:`poke` and ends after ``idle_s`` without one; it never keeps a process alive.
    """

    def __init__(self, path: Path, synchronous: str, *, idle_s: float = 5.0) -> None:
        self.path = path
        self.synchronous = synchronous
        self.idle_s = idle_s
        self._wake = threading.Event()
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: pokes so far, and the poke the last checkpoint made answered (tests, benches)
        self.asked = 0
        self.answered = 0

    def poke(self) -> None:
        """Ask for a checkpoint soon (never waits)."""
        with self._guard:
            if self._closed:
                return
            self.asked += 1
            self._wake.set()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._main, name=f"checkpoint {self.path.name}", daemon=True
                )
                self._thread.start()

    def caught_up(self) -> bool:
        """Every poke so far has been answered by a checkpoint."""
        return self.answered == self.asked

    def close(self, timeout: float = 5.0) -> None:
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
                    self._wake.clear()
                    asked = self.asked
                if conn is None:
                    conn = sqlite3.connect(self.path, isolation_level=None, timeout=0)
                    conn.execute(f"PRAGMA synchronous = {self.synchronous}")
                # One that cannot run now (a writer is checkpointing itself) runs next poke.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.answered = asked
        except sqlite3.Error as exc:  # (its connection could not be made: the next poke tries)
            log.warning("%s: the checkpointer stopped: %s", self.path, exc)
        finally:
            with self._guard:
                # a thread that ended otherwise than at rest (an error) was still taken
                # for alive, and no poke ever started another (a long-life audit)
                if self._thread is threading.current_thread():
                    self._thread = None
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()


class SQLiteRunner:
    """Runs transaction functions on an aiosqlite connection opened with
    ``check_same_thread=False`` (the audit log's, the budget ledger's).

    A transaction is tens of microseconds of SQLite work with no fsync (WAL + NORMAL),
    less than a hop to the connection's thread and back costs (a queue, a wake-up, a
    context switch: hundreds of microseconds on a loaded machine). So ``run`` tries it on
    the event loop with ``busy_timeout = 0`` and only when another connection holds the
    lock runs it on the thread, where the busy timeout waits. Automatic checkpoints (two
    fsyncs, inside a commit) are off on this connection: every ``checkpoint_every`` write
    transactions the :class:`Checkpointer` is poked and makes one on its own thread. Only
    when the WAL has grown past ``wal_limit`` (writes that never paused long enough for
    a checkpoint to catch up) does one write go to the connection's thread behind a
    checkpoint, as SQLite's own would.

    Transactions come as a whole function (:meth:`run`, BEGIN … COMMIT inside it), or as
    a read body the runner wraps (:meth:`read`). The caller serialises: one call (or
    ``waiting`` block) at a time per connection.
    """

    def __init__(
        self,
        db: aiosqlite.Connection,
        path: Path,
        *,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        checkpoint_every: int = CHECKPOINT_EVERY,
        wal_limit: int = WAL_LIMIT_BYTES,
        synchronous: str = "NORMAL",
    ) -> None:
        self.db = db
        self.path = path
        # A commit that fsyncs (synchronous FULL or EXTRA) never runs on the loop.
        self.inline_writes = synchronous.upper() in ("NORMAL", "OFF")
        self.busy_timeout_ms = busy_timeout_ms
        self.checkpoint_every = checkpoint_every
        self.wal_limit = wal_limit
        self.checkpointer = Checkpointer(path, synchronous)
        self._writes = 0
        self._checkpoint_here = False

    async def setup(self) -> None:
        """After the file's own set-up (which waits with the busy timeout)."""
        await self.db.execute("PRAGMA wal_autocheckpoint = 0")
        await self.db.execute("PRAGMA busy_timeout = 0")

    def close(self) -> None:
        """Stop the checkpointer (the connection is the owner's to close)."""
        self.checkpointer.close()

    async def read(self, body: Body[T], *, inline: bool = True) -> T:
        """``body(conn)`` in a read transaction (a consistent snapshot). ``inline=False``
        for reads whose cost grows with the file: never on the event loop."""
        return await self.run(_whole(body, write=False), inline=inline, write=False)

    # ── whole transactions ───────────────────────────────────────────────────────────────

    async def run(self, fn: TxnFn[T], *, inline: bool = True, write: bool = True) -> T:
        """``fn`` on the loop if it can go at once (``inline``), else on the thread."""
        result: T
        if write and self._checkpoint_here:
            # This one goes to the thread, behind a checkpoint: the event loop goes on.
            self._checkpoint_here = False
            result = await self._on_thread(fn, checkpoint=True)
        elif inline and (self.inline_writes or not write):
            try:
                result = fn(self.db._conn, True)
            except Busy:
                result = await self._on_thread(fn)
        else:
            result = await self._on_thread(fn)
        if write:
            self._written()
        return result

    def _written(self) -> None:
        self._writes += 1
        if self._writes % self.checkpoint_every == 0:
            self.checkpointer.poke()
            try:
                self._checkpoint_here = os.stat(f"{self.path}-wal").st_size > self.wal_limit
            except OSError:
                self._checkpoint_here = False

    async def _on_thread(self, fn: TxnFn[T], *, checkpoint: bool = False) -> T:
        execute = cast(Callable[..., Awaitable[T]], self.db._execute)
        return await execute(_waiting_call, self.db, self.busy_timeout_ms, fn, checkpoint)

    @contextlib.asynccontextmanager
    async def waiting(self) -> AsyncIterator[aiosqlite.Connection]:
        """For statements sent through aiosqlite's own API: they wait for locks."""
        await self.db.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
        try:
            yield self.db
        finally:
            with contextlib.suppress(sqlite3.Error, ValueError):
                await self.db.execute("PRAGMA busy_timeout = 0")


def _waiting_call(
    adb: aiosqlite.Connection, busy_timeout_ms: int, fn: TxnFn[T], checkpoint: bool
) -> T:
    """On the connection's thread: ``fn`` may wait ``busy_timeout_ms`` for the lock.

    ``checkpoint``: first copy the WAL into the database (passive: it waits for no one
    and skips what a reader still needs), so that the transaction after it can start
    the WAL from the beginning again rather than let it grow.
    """
    conn = adb._conn
    if checkpoint:
        with contextlib.suppress(sqlite3.Error):  # one that cannot run now runs next time
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    try:
        return fn(conn, False)
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA busy_timeout = 0")


#: ``body(conn)``: the statements of one transaction, without BEGIN or COMMIT
Body = Callable[[sqlite3.Connection], T]


def _begin_body(conn: sqlite3.Connection, inline: bool, write: bool, body: Body[T]) -> T:
    """BEGIN, ``body``, COMMIT; ROLLBACK when anything fails.
    ``inline``: raise :class:`Busy` rather than wait for another connection's lock."""
    try:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    except sqlite3.Error as exc:
        if inline and is_busy(exc):
            raise Busy from exc
        raise
    try:
        result = body(conn)
        conn.execute("COMMIT")
    except BaseException as exc:
        rollback_quietly(conn)
        if inline and is_busy(exc):
            raise Busy from exc
        raise
    return result


def read_transaction(conn: sqlite3.Connection, body: Body[T]) -> T:
    """``body(conn)`` in one read transaction (a consistent snapshot), waiting for locks
    as the connection's busy timeout says: for a connection of the caller's own."""
    return _begin_body(conn, False, False, body)


def _whole(body: Body[T], *, write: bool) -> TxnFn[T]:
    """``body`` as a whole-transaction function for :meth:`SQLiteRunner.run`."""
    return lambda conn, inline: _begin_body(conn, inline, write, body)


def rollback_quietly(conn: sqlite3.Connection) -> None:
    # Nothing open is fine: the COMMIT went through, or BEGIN never did.
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")


async def use_wal(
    db: aiosqlite.Connection, synchronous: str, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS
) -> None:
    """The stores' journal set-up: a busy timeout first, then WAL and ``synchronous``.

    Switching to WAL needs a moment alone with the file: several processes opening a new
    file at once can see "locked" here despite the busy timeout, so it is retried briefly.
    """
    await db.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    for attempt in range(50):
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.05)
    await db.execute(f"PRAGMA synchronous = {synchronous}")
    # the WAL cut back to this once a checkpoint let it start over: it kept the size a
    # long read had let it reach (125 MB beside a busy serve during an audit verify) for
    # as long as a connection stayed open (a long-life audit)
    await db.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
