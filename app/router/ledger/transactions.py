"""The ledger's connection: opening it, running a function on its thread, what a failed
transaction is to the caller, and the call row (the request path's writes are records of
the spool, :mod:`.spooled`, folded into the tables there)."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import aiosqlite

from app.router.ledger.errors import (
    LedgerError,
    LedgerUnreadable,
)
from app.sqlite import connect_async, is_busy

ReservationStatus = Literal["live", "settled", "released", "expired"]
T = TypeVar("T")


# ── Running one ──────────────────────────────────────────────────────────────────────────


async def connect(path: Path) -> aiosqlite.Connection:
    """A connection to the ledger file, its worker thread a daemon; nothing set up yet."""
    # a daemon worker (dying mid-write is safe: SQLite rolls the transaction back on the
    # next open), waited for when the file cannot be opened (app.sqlite.connect_async)
    try:
        return await connect_async(path)
    except sqlite3.OperationalError as exc:  # the machine's trouble: exit 1 (budget_ledger)
        raise LedgerError(f"{path}: cannot open the budget ledger: {exc}") from None
    except sqlite3.Error as exc:
        raise LedgerUnreadable(f"{path}: cannot open the budget ledger: {exc}") from None


async def on_thread(db: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """``fn(conn, *args)`` on ``db``'s worker thread, with its sqlite3 connection: one hop
    from the event loop, however many statements ``fn`` runs.

    aiosqlite runs every call of a connection on its one thread, in order; ``_execute``
    is how it queues them (its public methods are one statement each).
    """
    execute = cast(Callable[..., Awaitable[T]], db._execute)
    return await execute(_with_conn, db, fn, args)


def _with_conn(db: aiosqlite.Connection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    return fn(db._conn, *args)


def ledger_error(path: Path, exc: sqlite3.Error) -> LedgerError:
    """What a failed statement or transaction is to the ledger's caller."""
    if is_busy(exc):  # locked by another connection for longer than the busy timeout
        return LedgerError(f"{path}: budget ledger unavailable: {exc}")
    return LedgerError(f"{path}: budget ledger error: {exc}")


# ── Rows (a fold writes them inside a transaction it holds, see .spooled) ─────────────


_INSERT_CALL = (
    "INSERT INTO calls (ts, day, session, run, role, model, provider, tokens_in, tokens_out,"
    " latency_ms, cost_nusd, outcome, reservation_id, tokens_cached) VALUES (?, ?, ?, ?, ?,"
    " ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def insert_call(db: sqlite3.Connection, values: tuple[Any, ...], tokens_cached: int = 0) -> None:
    """One telemetry row; ``values`` in the column order of ``_INSERT_CALL`` up to the
    reservation's id, then ``tokens_cached``."""
    db.execute(_INSERT_CALL, (*values, tokens_cached))
