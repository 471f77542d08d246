"""One way to run SQLite transactions from asyncio (a leaf: the audit log, the budget
ledger and the memory store all use it; it imports nothing of Switchyard).

A transaction is one function, ``fn(conn, inline)``, that runs BEGIN … COMMIT itself.
:class:`SQLiteRunner` runs it on the event loop when the file's lock is free at once, and
on the connection's thread when it must wait, so the loop never blocks on another
process's lock, and checkpoints (fsyncs) never run on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar, cast

import aiosqlite

BUSY_TIMEOUT_MS = 30_000
#: a passive checkpoint (on the connection's thread) after this many write transactions:
#: a few pages each, so about SQLite's default of 1000 pages
CHECKPOINT_EVERY = 200
T = TypeVar("T")


class Busy(Exception):
    """Internal: the file is locked by another connection; wait for it off the loop."""


def is_busy(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


#: ``fn(conn, inline)``: one whole transaction (BEGIN … COMMIT, ROLLBACK on failure).
#: With ``inline`` set it must not wait: it raises :class:`Busy` (after rolling back) when
#: SQLite reports the file locked, and is then run again on the connection's thread.
TxnFn = Callable[[sqlite3.Connection, bool], T]


class SQLiteRunner:
    """Runs transaction functions on an aiosqlite connection opened with
    ``check_same_thread=False`` (the audit log's, the budget ledger's).

    A transaction is tens of microseconds of SQLite work with no fsync (WAL + NORMAL),
    less than a hop to the connection's thread and back costs (a queue, a wake-up, a
    context switch: hundreds of microseconds on a loaded machine). So ``run`` tries it on
    the event loop with ``busy_timeout = 0`` and only when another connection holds the
    lock runs it on the thread, where the busy timeout waits. Automatic checkpoints (two
    fsyncs, inside a commit) are off on this connection: every ``checkpoint_every`` write
    transactions, one goes to the thread behind a passive checkpoint, so the WAL starts
    over as SQLite's own would, and the one request that pays waits off the loop.

    The caller serialises: one ``run`` (or ``waiting`` block) at a time per connection.
    """

    def __init__(
        self,
        db: aiosqlite.Connection,
        path: Path,
        *,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        checkpoint_every: int = CHECKPOINT_EVERY,
        synchronous: str = "NORMAL",
    ) -> None:
        self.db = db
        self.path = path
        # A commit that fsyncs (synchronous FULL or EXTRA) never runs on the loop.
        self.inline_writes = synchronous.upper() in ("NORMAL", "OFF")
        self.busy_timeout_ms = busy_timeout_ms
        self.checkpoint_every = checkpoint_every
        self._writes = 0

    async def setup(self) -> None:
        """After the file's own set-up (which waits with the busy timeout)."""
        await self.db.execute("PRAGMA wal_autocheckpoint = 0")
        await self.db.execute("PRAGMA busy_timeout = 0")

    async def run(self, fn: TxnFn[T], *, inline: bool = True, write: bool = True) -> T:
        """``fn`` on the loop if it can go at once (``inline``), else on the thread."""
        result: T
        if write and self._writes >= self.checkpoint_every:
            # This one goes to the thread, behind a checkpoint: the event loop goes on.
            self._writes = 0
            result = await self._on_thread(fn, checkpoint=True)
        elif inline and (self.inline_writes or not write):
            try:
                result = fn(self.db._conn, True)
            except Busy:
                result = await self._on_thread(fn)
        else:
            result = await self._on_thread(fn)
        if write:
            self._writes += 1
        return result

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
