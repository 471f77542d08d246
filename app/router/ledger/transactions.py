"""The ledger's transactions: the connection, what a failed one is to the caller, and
the writes the request path makes in one (reserve, close a reservation, expire stale
ones, record a call).

The write functions run inside a write transaction the caller holds (the project's
runner, :meth:`app.sqlite.SQLiteRunner.write`), so a cap check and the reservation it
guards see the same state. They raise a domain error (an unknown or closed reservation)
before they write anything: a write joining a group-committed transaction that is
refused leaves the writes before it in place.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import aiosqlite

from app.clock import iso
from app.router.ledger.caps import Caps, sums
from app.router.ledger.errors import (
    CapExceeded,
    LedgerError,
    LedgerUnreadable,
    ReservationClosed,
    UnknownReservation,
)
from app.router.ledger.money import usd
from app.router.ledger.records import Reservation
from app.sqlite import is_busy

ReservationStatus = Literal["live", "settled", "released", "expired"]
T = TypeVar("T")


# ── Running one ──────────────────────────────────────────────────────────────────────────


async def connect(path: Path) -> aiosqlite.Connection:
    """A connection to the ledger file, its worker thread a daemon; nothing set up yet."""
    # check_same_thread=False: transactions run on the loop as well as on its thread.
    pending = aiosqlite.connect(path, isolation_level=None, check_same_thread=False)
    # aiosqlite's worker thread is not a daemon, so a ledger someone forgot to close
    # (an error path, a failed test) would keep the interpreter from ever exiting.
    # Dying mid-write is safe: SQLite rolls the transaction back on the next open.
    worker = getattr(pending, "_thread", None)
    if isinstance(worker, threading.Thread):
        worker.daemon = True
    try:
        return await pending
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


# ── Writes (each inside a transaction the caller holds) ─────────────────────────────────


def reserve(
    db: sqlite3.Connection,
    res: Reservation,
    amount: int,
    day: str,
    expires_at: float,
    now: datetime,
    caps: Caps,
) -> tuple[CapExceeded | None, list[Reservation]]:
    """Insert ``res`` (``amount`` nano-dollars, counted on ``day``), or return the cap it
    would cross; and the stale reservations expired first, refused or not."""
    expired = expire_stale(db, now)
    if amount > 0:
        refused = caps.check(sums(db, res.session, day), res, amount)
        if refused is not None:
            return refused, expired
    db.execute(
        "INSERT INTO reservations (id, session, run, provider, role, model,"
        " amount_nusd, day, created, expires, expires_at, status)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'live')",
        (
            res.id,
            res.session,
            res.run,
            res.provider,
            res.role,
            res.model,
            amount,
            day,
            res.created,
            res.expires,
            expires_at,
        ),
    )
    return None, expired


def close_live(
    db: sqlite3.Connection,
    reservation_id: str,
    status: ReservationStatus,
    now: datetime,
    cost_nusd: int,
    outcome: str,
    tokens_in: int,
    tokens_out: int,
    latency_ms: float,
) -> str:
    """Close a live reservation (settle or release it) with its call row; its session.

    It changes nothing when the reservation is not live: the domain error is raised
    before anything is written.
    """
    closed = iso(now)
    if db.execute(_CLOSE_LIVE, (status, closed, reservation_id)).rowcount != 1:
        found = db.execute(
            "SELECT status FROM reservations WHERE id = ?", (reservation_id,)
        ).fetchone()
        if found is None:
            raise UnknownReservation(f"unknown reservation {reservation_id}")
        raise ReservationClosed(reservation_id, found[0])
    # Read after the update, not with RETURNING: SQLite keeps a RETURNING statement's
    # rows in an ephemeral table (a zeroed page, ~15k instructions more than this read).
    day, session, run, role, model, provider = db.execute(_CLOSED_ROW, (reservation_id,)).fetchone()
    values = (closed, day, session, run, role, model, provider)
    insert_call(
        db, (*values, tokens_in, tokens_out, latency_ms, cost_nusd, outcome, reservation_id)
    )
    return str(session)


_CLOSE_LIVE = "UPDATE reservations SET status = ?, closed = ? WHERE id = ? AND status = 'live'"
_CLOSED_ROW = "SELECT day, session, run, role, model, provider FROM reservations WHERE id = ?"


def any_stale(db: sqlite3.Connection, now: datetime) -> bool:
    row = db.execute(
        "SELECT 1 FROM reservations WHERE status = 'live' AND expires_at <= ? LIMIT 1",
        (now.timestamp(),),
    ).fetchone()
    return row is not None


def expire_stale(db: sqlite3.Connection, now: datetime) -> list[Reservation]:
    """Charge every live reservation past its TTL at its full amount: its process may have
    made the call and died before settling, so freeing it could cross a cap. The ones
    charged, for the audit."""
    rows = db.execute(
        "SELECT * FROM reservations WHERE status = 'live' AND expires_at <= ?",
        (now.timestamp(),),
    ).fetchall()
    for row in rows:
        close_reservation(db, row, "expired", now, int(row["amount_nusd"]), "expired")
    return [
        Reservation(
            id=row["id"],
            session=row["session"],
            run=row["run"],
            provider=row["provider"],
            role=row["role"],
            model=row["model"],
            amount_usd=usd(int(row["amount_nusd"])),
            created=row["created"],
            expires=row["expires"],
        )
        for row in rows
    ]


def close_reservation(
    db: sqlite3.Connection,
    row: sqlite3.Row,
    status: ReservationStatus,
    now: datetime,
    cost_nusd: int,
    outcome: str,
    tokens_in: int = 0,
    tokens_out: int = 0,
    latency_ms: float = 0.0,
) -> None:
    closed = iso(now)
    db.execute(
        "UPDATE reservations SET status = ?, closed = ? WHERE id = ?",
        (status, closed, row["id"]),
    )
    # The cost goes to the reservation's day: that is the day it was checked against.
    insert_call(
        db,
        (
            closed,
            row["day"],
            row["session"],
            row["run"],
            row["role"],
            row["model"],
            row["provider"],
            tokens_in,
            tokens_out,
            latency_ms,
            cost_nusd,
            outcome,
            row["id"],
        ),
    )


_INSERT_CALL = (
    "INSERT INTO calls (ts, day, session, run, role, model, provider, tokens_in, tokens_out,"
    " latency_ms, cost_nusd, outcome, reservation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
    " ?, ?, ?)"
)


def insert_call(db: sqlite3.Connection, values: tuple[Any, ...]) -> None:
    """One telemetry row; ``values`` in the column order of ``_INSERT_CALL``."""
    db.execute(_INSERT_CALL, values)
