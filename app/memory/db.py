"""The memory DB's one connection: opening (WAL, migrations) and running transactions.

Every read and write is one function, ``body(conn)``, run inside one transaction by the
project's SQLite runner (:mod:`app.sqlite`), as the audit log and the budget ledger do:
on the event loop when the file's lock is free at once and the work is small (a few
rows, tens of microseconds), else on the connection's thread, which waits for other
processes' locks; checkpoints (fsyncs) run on that thread too, never on the loop. Work
whose cost grows with the file or the input (search, a batch of adds, re-embedding)
always goes to the thread, so the loop never stalls on a big store.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import aiosqlite

from app.clock import Clock
from app.errors import StoreError, SwitchyardError
from app.memory.migrations import migrate
from app.sqlite import (
    Busy,
    SQLiteRunner,
    connect_async,
    failure_text,
    is_busy,
    rollback_quietly,
    use_wal,
)

#: WAL + NORMAL: the store holds derived knowledge, not a record; a power cut may lose the
#: last transactions, never leave the file inconsistent
SYNCHRONOUS = "NORMAL"
#: a transaction touching at most this many rows may run on the event loop
INLINE_ROWS = 32

T = TypeVar("T")


def small(rows: int) -> bool:
    """Whether work over ``rows`` rows is cheap enough to run on the event loop."""
    return rows <= INLINE_ROWS


def tfidf_index_path(db_path: Path) -> Path:
    """Where the memory's TF-IDF index is kept beside its database (what ``audit export
    -o`` must never write over, too)."""
    return db_path.with_suffix(".tfidf.npz")


class MemoryDB:
    """The connection, its runner, and the turn-taking between coroutines that share it."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self._runner = SQLiteRunner(db, path, synchronous=SYNCHRONOUS)
        self.path = path
        # One connection holds one transaction at a time: coroutines sharing it take turns.
        self._lock = asyncio.Lock()
        self.closed = False

    @classmethod
    async def open(cls, path: Path, *, clock: Clock) -> MemoryDB:
        """Open (creating and migrating if needed) the file at ``path``."""
        try:
            db = await connect_async(path)
        except (OSError, sqlite3.Error) as exc:
            raise SwitchyardError(f"cannot open the memory DB {path}: {exc}") from None
        opened = cls(db, path)
        try:
            await _setup(db)
            await migrate(db, clock=clock)  # waits for other processes with the busy timeout
            await opened._runner.setup()
        except sqlite3.Error as exc:
            await db.close()
            raise SwitchyardError(f"cannot open the memory DB {path}: {exc}") from None
        except BaseException:
            await db.close()
            raise
        return opened

    async def close(self) -> None:
        async with self._lock:  # never in the middle of a transaction
            if not self.closed:
                self.closed = True
                await self._db.close()

    def check_open(self) -> None:
        if self.closed:
            raise RuntimeError("the memory store is closed")

    async def write(self, body: Callable[[sqlite3.Connection], T], *, inline: bool = True) -> T:
        """``body(conn)`` in one ``BEGIN IMMEDIATE`` transaction (the write lock up front)."""
        return await self._run(body, write=True, inline=inline)

    async def read(self, body: Callable[[sqlite3.Connection], T], *, inline: bool = True) -> T:
        """``body(conn)`` in one read transaction: a consistent snapshot of the file."""
        return await self._run(body, write=False, inline=inline)

    async def _run(
        self, body: Callable[[sqlite3.Connection], T], *, write: bool, inline: bool
    ) -> T:
        async with self._lock:
            self.check_open()
            try:
                return await self._runner.run(
                    lambda conn, at_once: _transaction(conn, at_once, write, body),
                    inline=inline,
                    write=write,
                )
            except sqlite3.Error as exc:  # a full disk, a read-only file: one line, the file
                text = failure_text("the memory DB", self.path, exc, writing=write)
                raise StoreError(text) from exc


async def _setup(db: aiosqlite.Connection) -> None:
    await use_wal(db, SYNCHRONOUS)
    await db.execute("PRAGMA foreign_keys = ON")


def _transaction(
    conn: sqlite3.Connection, inline: bool, write: bool, body: Callable[[sqlite3.Connection], T]
) -> T:
    """One transaction; ``inline``: raise :class:`Busy` rather than wait for a lock.

    ``body`` may run twice (inline, then again on the thread): it touches nothing but
    ``conn``, and its first try was rolled back.
    """
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
