"""The budget ledger (GR-011): reserve before a cloud call, settle or release after it.

Every cap check and the reservation it guards happen in one ``BEGIN IMMEDIATE``
transaction, so concurrent callers (coroutines, ledger instances, processes sharing the
file) are serialised by SQLite itself and a race can never cross a cap. Money is stored
as integer nano-dollars so sums are exact and comparisons never wobble.

Durability: WAL with ``synchronous = NORMAL``. A committed reservation or call survives
the process being killed at any point (the crash tests SIGKILL a writer mid-churn); after
a power cut or an OS crash the last transactions before it may be lost, as if they had
not happened (the file stays consistent). FULL would fsync every commit: about 3 ms each
on this project's machines, several per routed request. See ``SYNCHRONOUS``.

The caps are checked against running totals (session, day, provider-day) that triggers
keep in the same transactions as the rows they sum, so a check costs the same with ten
calls on file or a million.

A reservation left behind by a killed process is never freed: once ``reservation_ttl_s``
has passed it is settled at its full amount (status ``expired``), lazily, by the next
reserve, snapshot or report. A cost belongs to the UTC day of its reservation, so a call
that spans midnight is counted once, on the day its reservation was checked against.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import aiosqlite
from pydantic import BaseModel, ConfigDict

from app.bus import BudgetUpdated, Bus
from app.clock import Clock, SystemClock, iso
from app.errors import BudgetExceeded, SwitchyardError
from app.opener import ClosedOnExit
from app.policy.schema import Budget
from app.sqlite import Busy, SQLiteRunner, is_busy, rollback_quietly

SCHEMA_VERSION = 2
#: WAL + NORMAL: durable against a crash of the process, not against a power cut (above).
SYNCHRONOUS = "NORMAL"
LOCAL_PROVIDER = "local"
NANO = 1_000_000_000  # nano-dollars per dollar

ReservationStatus = Literal["live", "settled", "released", "expired"]
T = TypeVar("T")


def _add_totals(row: str, column: str, amount: str) -> str:
    """An upsert adding ``amount`` to the session, day and provider-day totals of ``row``."""
    return (
        f"INSERT INTO totals (scope, key, provider, {column}) VALUES"
        f" ('session', {row}.session, '', {amount}), ('day', {row}.day, '', {amount}),"
        f" ('provider_day', {row}.day, {row}.provider, {amount})"
        f" ON CONFLICT (scope, key, provider)"
        f" DO UPDATE SET {column} = {column} + excluded.{column};"
    )


def _sub_totals(row: str, column: str, amount: str) -> str:
    return " ".join(
        f"UPDATE totals SET {column} = {column} - {amount}"
        f" WHERE scope = '{scope}' AND key = {row}.{key} AND provider = {provider};"
        for scope, key, provider in (
            ("session", "session", "''"),
            ("day", "day", "''"),
            ("provider_day", "day", f"{row}.provider"),
        )
    )


def _trigger(name: str, event: str, table: str, when: str, *statements: str) -> str:
    when_sql = f" WHEN {when}" if when else ""
    return (
        f"CREATE TRIGGER {name} AFTER {event} ON {table}{when_sql} BEGIN {' '.join(statements)} END"
    )


_TOTAL_SCOPES = (
    ("session", "session", "''", "session"),
    ("day", "day", "''", "day"),
    ("provider_day", "day", "provider", "day, provider"),
)

# Each entry migrates the schema from version i to i + 1.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE reservations (
            id TEXT PRIMARY KEY,
            session TEXT NOT NULL,
            run TEXT NOT NULL DEFAULT '',
            provider TEXT NOT NULL,
            role TEXT NOT NULL,
            model TEXT NOT NULL,
            amount_nusd INTEGER NOT NULL CHECK (amount_nusd >= 0),
            day TEXT NOT NULL,
            created TEXT NOT NULL,
            expires TEXT NOT NULL,
            expires_at REAL NOT NULL,
            status TEXT NOT NULL
                CHECK (status IN ('live', 'settled', 'released', 'expired')),
            closed TEXT
        )""",
        "CREATE INDEX reservations_live ON reservations(expires_at) WHERE status = 'live'",
        """CREATE TABLE calls (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts TEXT NOT NULL,
            day TEXT NOT NULL,
            session TEXT NOT NULL,
            run TEXT NOT NULL DEFAULT '',
            role TEXT NOT NULL,
            model TEXT NOT NULL,
            provider TEXT NOT NULL,
            tokens_in INTEGER NOT NULL,
            tokens_out INTEGER NOT NULL,
            latency_ms REAL NOT NULL,
            cost_nusd INTEGER NOT NULL CHECK (cost_nusd >= 0),
            outcome TEXT NOT NULL,
            reservation_id TEXT
        )""",
        "CREATE INDEX calls_day_provider ON calls(day, provider)",
        "CREATE INDEX calls_session ON calls(session)",
    ),
    # v2: running totals for the cap checks, kept by triggers in the writing transaction
    # (whoever writes), and filled from the rows already on file.
    (
        """CREATE TABLE totals (
            scope TEXT NOT NULL CHECK (scope IN ('session', 'day', 'provider_day')),
            key TEXT NOT NULL,
            provider TEXT NOT NULL DEFAULT '',
            spent_nusd INTEGER NOT NULL DEFAULT 0,
            reserved_nusd INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (scope, key, provider)
        ) WITHOUT ROWID""",
        _trigger(
            "calls_totals_ins",
            "INSERT",
            "calls",
            "",
            _add_totals("NEW", "spent_nusd", "NEW.cost_nusd"),
        ),
        _trigger(
            "calls_totals_del",
            "DELETE",
            "calls",
            "",
            _sub_totals("OLD", "spent_nusd", "OLD.cost_nusd"),
        ),
        _trigger(
            "calls_totals_upd",
            "UPDATE",
            "calls",
            "",
            _sub_totals("OLD", "spent_nusd", "OLD.cost_nusd"),
            _add_totals("NEW", "spent_nusd", "NEW.cost_nusd"),
        ),
        _trigger(
            "reservations_totals_ins",
            "INSERT",
            "reservations",
            "NEW.status = 'live'",
            _add_totals("NEW", "reserved_nusd", "NEW.amount_nusd"),
        ),
        _trigger(
            "reservations_totals_del",
            "DELETE",
            "reservations",
            "OLD.status = 'live'",
            _sub_totals("OLD", "reserved_nusd", "OLD.amount_nusd"),
        ),
        _trigger(
            "reservations_totals_upd_old",
            "UPDATE",
            "reservations",
            "OLD.status = 'live'",
            _sub_totals("OLD", "reserved_nusd", "OLD.amount_nusd"),
        ),
        _trigger(
            "reservations_totals_upd_new",
            "UPDATE",
            "reservations",
            "NEW.status = 'live'",
            _add_totals("NEW", "reserved_nusd", "NEW.amount_nusd"),
        ),
        *(
            f"INSERT INTO totals (scope, key, provider, spent_nusd) SELECT '{scope}', {key},"
            f" {provider}, SUM(cost_nusd) FROM calls WHERE true GROUP BY {group}"
            for scope, key, provider, group in _TOTAL_SCOPES
        ),
        *(
            f"INSERT INTO totals (scope, key, provider, reserved_nusd) SELECT '{scope}', {key},"
            f" {provider}, SUM(amount_nusd) FROM reservations WHERE status = 'live'"
            f" GROUP BY {group} ON CONFLICT (scope, key, provider)"
            " DO UPDATE SET reserved_nusd = reserved_nusd + excluded.reserved_nusd"
            for scope, key, provider, group in _TOTAL_SCOPES
        ),
    ),
)


# ── Errors ───────────────────────────────────────────────────────────────────────────────


class LedgerError(SwitchyardError):
    """The ledger cannot do what was asked: unknown or closed reservation, bad amount."""


class LedgerUnreadable(LedgerError):
    """The ledger file cannot be opened: not a database, or a newer schema."""

    exit_code = 2


class UnknownReservation(LedgerError):
    pass


class ReservationClosed(LedgerError):
    def __init__(self, reservation_id: str, status: str) -> None:
        self.reservation_id = reservation_id
        self.status = status
        extra = (
            " (its TTL passed; it was charged at its full amount)" if status == "expired" else ""
        )
        super().__init__(f"reservation {reservation_id} is already {status}{extra}")


class CapExceeded(BudgetExceeded):
    """A reservation would cross ``cap`` ("session", "day" or "provider:<name>")."""

    def __init__(
        self,
        *,
        cap: str,
        limit_usd: float,
        spent_usd: float,
        reserved_usd: float,
        requested_usd: float,
        session: str,
        provider: str,
        model: str,
    ) -> None:
        self.cap = cap
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.requested_usd = requested_usd
        super().__init__(
            f"budget exceeded: the {cap} cap of ${limit_usd:.2f} would be crossed "
            f"(spent ${spent_usd:.4f}, reserved ${reserved_usd:.4f}, "
            f"requested ${requested_usd:.4f} for {provider}/{model}, session {session})"
        )


# ── Records ──────────────────────────────────────────────────────────────────────────────


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Reservation(_Frozen):
    id: str
    session: str
    run: str = ""
    provider: str
    role: str
    model: str
    amount_usd: float
    created: str
    expires: str


class CapUsage(_Frozen):
    """One cap's state. ``cap_usd``/``left_usd`` are None when nothing caps it."""

    cap_usd: float | None
    spent_usd: float
    reserved_usd: float
    left_usd: float | None


class BudgetSnapshot(_Frozen):
    session: str
    day: str
    ts: str
    per_session: CapUsage
    per_day: CapUsage
    # Every provider with a cap, plus any uncapped one with spend or reservations today.
    per_provider: dict[str, CapUsage]
    reserved_usd: float  # the session's reservations in flight
    calls: int  # the session's recorded calls
    by_role: dict[str, float]  # the session's settled cost; free (local) calls left out
    by_model: dict[str, float]
    by_provider: dict[str, float]


def _nusd(usd: float, what: str) -> int:
    if not math.isfinite(usd) or usd < 0:
        raise LedgerError(f"{what} must be a finite amount >= 0, got {usd!r}")
    return round(usd * NANO)


def _check_tokens(tokens_in: int, tokens_out: int) -> None:
    if tokens_in < 0 or tokens_out < 0:
        raise LedgerError(f"token counts must be >= 0, got {tokens_in} in, {tokens_out} out")


def _usd(nusd: int) -> float:
    return nusd / NANO


def _day(dt: datetime) -> str:
    return iso(dt)[:10]


def _usage(cap: int | None, spent: int, reserved: int) -> CapUsage:
    return CapUsage(
        cap_usd=None if cap is None else _usd(cap),
        spent_usd=_usd(spent),
        reserved_usd=_usd(reserved),
        left_usd=None if cap is None else _usd(max(0, cap - spent - reserved)),
    )


# ── Ledger ───────────────────────────────────────────────────────────────────────────────


class BudgetLedger(ClosedOnExit):
    """Reservations and settled calls in one SQLite file; see the module docstring.

    Each operation is one transaction run by one function (:class:`SQLiteRunner`): the
    request path's (reserve, settle, left_usd …) on the event loop when the write lock is
    free at once, else on the connection's thread; the reports always on the thread.
    """

    def __init__(
        self,
        db: aiosqlite.Connection,
        path: Path,
        budget: Budget,
        clock: Clock,
        bus: Bus | None,
        busy_timeout_ms: int = 30_000,
    ) -> None:
        self._db: aiosqlite.Connection | None = db
        self._runner = SQLiteRunner(
            db, path, busy_timeout_ms=busy_timeout_ms, synchronous=SYNCHRONOUS
        )
        self.path = path
        self.budget = budget
        self._clock = clock
        self._bus = bus
        self._cap_session = round(budget.session_usd * NANO)
        self._cap_day = round(budget.day_usd * NANO)
        self._cap_provider = {k: round(v * NANO) for k, v in budget.provider_day_usd.items()}
        # One connection cannot hold two transactions: coroutines take turns on it.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        db_path: Path | str,
        budget: Budget,
        *,
        clock: Clock | None = None,
        bus: Bus | None = None,
        busy_timeout_s: float = 30.0,
    ) -> BudgetLedger:
        path = Path(db_path)
        # check_same_thread=False: transactions run on the loop as well as on its thread.
        pending = aiosqlite.connect(path, isolation_level=None, check_same_thread=False)
        # aiosqlite's worker thread is not a daemon, so a ledger someone forgot to close
        # (an error path, a failed test) would keep the interpreter from ever exiting.
        # Dying mid-write is safe: SQLite rolls the transaction back on the next open.
        worker = getattr(pending, "_thread", None)
        if isinstance(worker, threading.Thread):
            worker.daemon = True
        try:
            db = await pending
        except sqlite3.Error as exc:
            raise LedgerUnreadable(f"{path}: cannot open the budget ledger: {exc}") from None
        try:
            db.row_factory = sqlite3.Row
            # busy_timeout first: switching to WAL and the migration may wait for others.
            await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute(f"PRAGMA synchronous = {SYNCHRONOUS}")
            await _on_thread(db, _migrate, path)
            ledger = cls(db, path, budget, clock or SystemClock(), bus, int(busy_timeout_s * 1000))
            await ledger._runner.setup()
        except sqlite3.Error as exc:
            await db.close()
            raise LedgerUnreadable(f"{path}: cannot open the budget ledger: {exc}") from None
        except BaseException:
            await db.close()
            raise
        return ledger

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            async with self._lock:
                await db.close()

    # ── transactions ─────────────────────────────────────────────────────────────────────

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise LedgerError("the budget ledger is closed")
        return self._db

    async def _run(
        self, write: bool, body: Callable[[sqlite3.Connection], T], *, inline: bool = True
    ) -> T:
        """``body(conn)`` inside one transaction: a write transaction (IMMEDIATE: takes the
        file's write lock up front, so the check and the insert see the same state), or a
        consistent read snapshot. ``inline=False`` for reads whose cost grows with the
        file (reports): those never run on the event loop."""
        path = self.path
        async with self._lock:
            self._conn()
            return await self._runner.run(
                lambda db, at_once: _transaction(db, at_once, write, body, path),
                inline=inline,
                write=write,
            )

    async def _publish(self, session: str) -> None:
        if self._bus is not None:
            snap = await self.snapshot(session)
            await self._bus.publish(BudgetUpdated(session=session, snapshot=snap.model_dump()))

    # ── reserve / settle / release ───────────────────────────────────────────────────────

    async def reserve(
        self,
        *,
        session: str,
        provider: str,
        role: str,
        model: str,
        amount_usd: float,
        run: str | None = None,
    ) -> Reservation:
        """Reserve ``amount_usd`` before a call, or raise :class:`CapExceeded`.

        Zero (every local call) is always granted, even on a spent budget, and recorded.
        """
        amount = _nusd(amount_usd, "amount_usd")
        if provider == LOCAL_PROVIDER and amount > 0:
            raise LedgerError(f"local model {model} cannot cost ${amount_usd}: local is free")
        now = self._clock.now()
        day = _day(now)
        expires = now + timedelta(seconds=self.budget.reservation_ttl_s)
        res = Reservation(
            id=uuid.uuid4().hex,
            session=session,
            run=run or "",
            provider=provider,
            role=role,
            model=model,
            amount_usd=_usd(amount),
            created=iso(now),
            expires=iso(expires),
        )
        row = (
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
            expires.timestamp(),
        )

        def body(db: sqlite3.Connection) -> CapExceeded | None:
            _expire_stale(db, now)
            if amount > 0:
                refused = self._check(db, res, amount, day)
                if refused is not None:
                    return refused
            db.execute(
                "INSERT INTO reservations (id, session, run, provider, role, model,"
                " amount_nusd, day, created, expires, expires_at, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'live')",
                row,
            )
            return None

        refused = await self._run(True, body)
        # Committed either way: expiries found on the way are kept even when refused.
        if refused is not None:
            raise refused
        await self._publish(session)
        return res

    def _check(
        self, db: sqlite3.Connection, res: Reservation, amount: int, day: str
    ) -> CapExceeded | None:
        u = _sums(db, res.session, day)
        p_spent, p_res = u.provider(res.provider)
        caps: list[tuple[str, int | None, int, int]] = [
            ("session", self._cap_session, u.s_spent, u.s_res),
            ("day", self._cap_day, u.d_spent, u.d_res),
            (f"provider:{res.provider}", self._cap_provider.get(res.provider), p_spent, p_res),
        ]
        for name, cap, spent, reserved in caps:
            if cap is not None and spent + reserved + amount > cap:
                return CapExceeded(
                    cap=name,
                    limit_usd=_usd(cap),
                    spent_usd=_usd(spent),
                    reserved_usd=_usd(reserved),
                    requested_usd=_usd(amount),
                    session=res.session,
                    provider=res.provider,
                    model=res.model,
                )
        return None

    async def settle(
        self,
        reservation_id: str,
        *,
        actual_usd: float,
        tokens_in: int,
        tokens_out: int,
        latency_ms: float,
        outcome: str = "ok",
    ) -> None:
        """Record the call's actual cost (even above the reservation) and close it."""
        await self._close(
            reservation_id, "settled", actual_usd, tokens_in, tokens_out, latency_ms, outcome
        )

    async def release(
        self,
        reservation_id: str,
        outcome: str = "failed",
        *,
        actual_usd: float = 0.0,
        tokens_in: int = 0,
        tokens_out: int = 0,
        latency_ms: float = 0.0,
    ) -> None:
        """Free a reservation after a failed call; ``actual_usd`` if tokens were billed."""
        await self._close(
            reservation_id, "released", actual_usd, tokens_in, tokens_out, latency_ms, outcome
        )

    async def _close(
        self,
        reservation_id: str,
        status: ReservationStatus,
        actual_usd: float,
        tokens_in: int,
        tokens_out: int,
        latency_ms: float,
        outcome: str,
    ) -> None:
        cost = _nusd(actual_usd, "actual_usd")
        _check_tokens(tokens_in, tokens_out)
        now = self._clock.now()

        def body(db: sqlite3.Connection) -> str:
            row = db.execute(
                "SELECT * FROM reservations WHERE id = ?", (reservation_id,)
            ).fetchone()
            if row is None:
                raise UnknownReservation(f"unknown reservation {reservation_id}")
            if row["status"] != "live":
                raise ReservationClosed(reservation_id, row["status"])
            _close_reservation(
                db, row, status, now, cost, outcome, tokens_in, tokens_out, latency_ms
            )
            return str(row["session"])

        session = await self._run(True, body)
        await self._publish(session)

    async def record_call(
        self,
        *,
        session: str,
        run: str | None = None,
        role: str,
        model: str,
        provider: str,
        tokens_in: int,
        tokens_out: int,
        latency_ms: float,
        cost_usd: float,
        outcome: str = "ok",
    ) -> None:
        """Telemetry for a call made without a reservation (its cost still counts)."""
        cost = _nusd(cost_usd, "cost_usd")
        _check_tokens(tokens_in, tokens_out)
        now = self._clock.now()
        ts = iso(now)
        values = (
            ts,
            ts[:10],
            session,
            run or "",
            role,
            model,
            provider,
            tokens_in,
            tokens_out,
            latency_ms,
            cost,
            outcome,
            None,
        )
        await self._run(True, lambda db: _insert_call(db, values))
        await self._publish(session)

    # ── reading ──────────────────────────────────────────────────────────────────────────

    async def expire_stale(self) -> int:
        """Settle every reservation past its TTL at its full amount; how many there were."""
        now = self._clock.now()

        def any_stale(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT 1 FROM reservations WHERE status = 'live' AND expires_at <= ? LIMIT 1",
                (now.timestamp(),),
            ).fetchone()
            return row is not None

        if not await self._run(False, any_stale):  # the common case takes no write lock
            return 0
        return await self._run(True, lambda db: _expire_stale(db, now))

    async def snapshot(self, session: str) -> BudgetSnapshot:
        await self.expire_stale()
        now = self._clock.now()
        day = _day(now)

        def body(db: sqlite3.Connection) -> BudgetSnapshot:
            u = _sums(db, session, day)
            prov_spent = dict(
                _pairs(
                    db,
                    "SELECT provider, SUM(cost_nusd) FROM calls WHERE day = ? GROUP BY provider",
                    (day,),
                )
            )
            prov_res = dict(
                _pairs(
                    db,
                    "SELECT provider, SUM(amount_nusd) FROM reservations"
                    " WHERE status = 'live' AND day = ? GROUP BY provider",
                    (day,),
                )
            )
            by: dict[str, dict[str, float]] = {}
            for col in ("role", "model", "provider"):
                rows = _pairs(
                    db,
                    f"SELECT {col}, SUM(cost_nusd) FROM calls WHERE session = ?"
                    f" GROUP BY {col} HAVING SUM(cost_nusd) > 0 ORDER BY {col}",
                    (session,),
                )
                by[col] = {k: _usd(v) for k, v in rows}
            calls_row = db.execute(
                "SELECT COUNT(*) FROM calls WHERE session = ?", (session,)
            ).fetchone()
            providers = sorted(set(self._cap_provider) | set(prov_spent) | set(prov_res))
            return BudgetSnapshot(
                session=session,
                day=day,
                ts=iso(now),
                per_session=_usage(self._cap_session, u.s_spent, u.s_res),
                per_day=_usage(self._cap_day, u.d_spent, u.d_res),
                per_provider={
                    p: _usage(self._cap_provider.get(p), prov_spent.get(p, 0), prov_res.get(p, 0))
                    for p in providers
                },
                reserved_usd=_usd(u.s_res),
                calls=int(calls_row[0]) if calls_row is not None else 0,
                by_role=by["role"],
                by_model=by["model"],
                by_provider=by["provider"],
            )

        return await self._run(False, body, inline=False)

    async def left_usd(self, session: str, provider: str) -> float:
        """What the next reservation for ``provider`` in ``session`` could still take:
        the smallest remaining of the session, day and provider-day caps."""
        return (await self.left_usd_many(session, (provider,)))[provider]

    async def left_usd_many(self, session: str, providers: Iterable[str]) -> dict[str, float]:
        """:meth:`left_usd` for several providers, read in one snapshot."""
        wanted = tuple(providers)
        day = _day(self._clock.now())
        u = await self._run(False, lambda db: _sums(db, session, day))
        base = min(
            self._cap_session - u.s_spent - u.s_res,
            self._cap_day - u.d_spent - u.d_res,
        )
        out: dict[str, float] = {}
        for provider in wanted:
            left = base
            cap = self._cap_provider.get(provider)
            if cap is not None:
                p_spent, p_res = u.provider(provider)
                left = min(left, cap - p_spent - p_res)
            out[provider] = _usd(max(0, left))
        return out

    async def report(self, session: str | None = None, days: int = 7) -> dict[str, Any]:
        """Spend, calls and tokens by role, model, provider and day over the last ``days``
        UTC days (today included), plus the caps and what is left today."""
        if days < 1:
            raise LedgerError(f"days must be >= 1, got {days}")
        await self.expire_stale()
        now = self._clock.now()
        today = _day(now)
        since = _day(now - timedelta(days=days - 1))
        where = "day >= ? AND day <= ?" + (" AND session = ?" if session is not None else "")
        params: tuple[Any, ...] = (since, today) + ((session,) if session is not None else ())

        def body(
            db: sqlite3.Connection,
        ) -> tuple[dict[str, list[dict[str, Any]]], sqlite3.Row | None, sqlite3.Row | None]:
            groups: dict[str, list[dict[str, Any]]] = {}
            for col in ("role", "model", "provider", "day"):
                order = "day" if col == "day" else "SUM(cost_nusd) DESC, " + col
                rows = db.execute(
                    f"SELECT {col} AS key, SUM(cost_nusd) AS cost, COUNT(*) AS calls,"
                    f" SUM(tokens_in) AS tin, SUM(tokens_out) AS tout"
                    f" FROM calls WHERE {where} GROUP BY {col} ORDER BY {order}",
                    params,
                ).fetchall()
                groups[col] = [{col: r["key"], **_totals(r)} for r in rows]
            total = db.execute(
                "SELECT SUM(cost_nusd) AS cost, COUNT(*) AS calls, SUM(tokens_in) AS tin,"
                f" SUM(tokens_out) AS tout FROM calls WHERE {where}",
                params,
            ).fetchone()
            res_where = "status = 'live'" + (" AND session = ?" if session is not None else "")
            in_flight = db.execute(
                f"SELECT COUNT(*), SUM(amount_nusd) FROM reservations WHERE {res_where}",
                (session,) if session is not None else (),
            ).fetchone()
            return groups, total, in_flight

        groups, total, in_flight = await self._run(False, body, inline=False)
        snap = await self.snapshot(session or "")
        out: dict[str, Any] = {
            "session": session,
            "days": days,
            "since": since,
            "until": today,
            "total": _totals(total),
            "by_role": groups["role"],
            "by_model": groups["model"],
            "by_provider": groups["provider"],
            "by_day": groups["day"],
            "in_flight": {
                "reservations": int(in_flight[0]) if in_flight else 0,
                "reserved_usd": _usd(in_flight[1] or 0) if in_flight else 0.0,
            },
            "caps": {
                "session_usd": self.budget.session_usd,
                "day_usd": self.budget.day_usd,
                "provider_day_usd": dict(sorted(self.budget.provider_day_usd.items())),
                "reservation_ttl_s": self.budget.reservation_ttl_s,
            },
            "today": {
                "day": snap.day,
                **snap.per_day.model_dump(),
                "providers": {k: v.model_dump() for k, v in snap.per_provider.items()},
            },
            "session_budget": snap.per_session.model_dump() if session is not None else None,
        }
        return out


# ── On the connection's thread ───────────────────────────────────────────────────────────


async def _on_thread(db: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """``fn(conn, *args)`` on ``db``'s worker thread, with its sqlite3 connection: one hop
    from the event loop, however many statements ``fn`` runs.

    aiosqlite runs every call of a connection on its one thread, in order; ``_execute``
    is how it queues them (its public methods are one statement each).
    """
    execute = cast(Callable[..., Awaitable[T]], db._execute)
    return await execute(_with_conn, db, fn, args)


def _with_conn(db: aiosqlite.Connection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    return fn(db._conn, *args)


def _transaction(
    db: sqlite3.Connection,
    inline: bool,
    write: bool,
    body: Callable[[sqlite3.Connection], T],
    path: Path,
) -> T:
    """One transaction; ``inline``: raise :class:`Busy` rather than wait for a lock."""
    try:
        db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    except sqlite3.Error as exc:  # e.g. locked for longer than busy_timeout
        if inline and is_busy(exc):
            raise Busy from exc
        raise LedgerError(f"{path}: budget ledger unavailable: {exc}") from exc
    try:
        result = body(db)
        db.execute("COMMIT")
    except BaseException as exc:
        # SQLite may already have rolled back (e.g. on a full disk): then this fails.
        rollback_quietly(db)
        if inline and is_busy(exc):
            raise Busy from exc
        if isinstance(exc, sqlite3.Error):
            raise LedgerError(f"{path}: budget ledger error: {exc}") from exc
        raise
    return result


# ── SQL helpers (each runs inside a transaction the caller holds) ────────────────────────


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    # IMMEDIATE: two processes opening a fresh file must not both create the tables.
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = int(row[0] or 0) if row is not None else 0
        if current > SCHEMA_VERSION:
            raise LedgerUnreadable(
                f"{path}: ledger schema version {current} is newer than this Switchyard "
                f"understands ({SCHEMA_VERSION})"
            )
        for version in range(current, SCHEMA_VERSION):
            for stmt in _MIGRATIONS[version]:
                db.execute(stmt)
        if current < SCHEMA_VERSION:
            # One row: the version the file is at now.
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _pairs(db: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[tuple[str, int]]:
    return [(str(r[0]), int(r[1] or 0)) for r in db.execute(sql, params).fetchall()]


def _totals(row: sqlite3.Row | None) -> dict[str, Any]:
    if row is None:
        return {"cost_usd": 0.0, "calls": 0, "tokens_in": 0, "tokens_out": 0}
    return {
        "cost_usd": _usd(row["cost"] or 0),
        "calls": int(row["calls"] or 0),
        "tokens_in": int(row["tin"] or 0),
        "tokens_out": int(row["tout"] or 0),
    }


class _Sums:
    """Settled spend and live reservations for a session, a day and that day's providers."""

    __slots__ = ("d_res", "d_spent", "per_provider", "s_res", "s_spent")

    def __init__(self) -> None:
        self.s_spent = self.s_res = self.d_spent = self.d_res = 0
        self.per_provider: dict[str, tuple[int, int]] = {}

    def provider(self, name: str) -> tuple[int, int]:
        return self.per_provider.get(name, (0, 0))


def _sums(db: sqlite3.Connection, session: str, day: str) -> _Sums:
    """One read of the running totals (kept by triggers, see ``_MIGRATIONS``): the cost of
    the sums no longer grows with the number of calls and reservations on file."""
    u = _Sums()
    rows = db.execute(
        "SELECT scope, provider, spent_nusd, reserved_nusd FROM totals"
        " WHERE (scope = 'session' AND key = ?) OR (scope IN ('day', 'provider_day') AND key = ?)",
        (session, day),
    ).fetchall()
    for scope, provider, spent, reserved in rows:
        if scope == "session":
            u.s_spent, u.s_res = int(spent), int(reserved)
        elif scope == "day":
            u.d_spent, u.d_res = int(spent), int(reserved)
        else:
            u.per_provider[str(provider)] = (int(spent), int(reserved))
    return u


def _expire_stale(db: sqlite3.Connection, now: datetime) -> int:
    """Charge every live reservation past its TTL at its full amount: its process may have
    made the call and died before settling, so freeing it could cross a cap."""
    rows = db.execute(
        "SELECT * FROM reservations WHERE status = 'live' AND expires_at <= ?",
        (now.timestamp(),),
    ).fetchall()
    for row in rows:
        _close_reservation(db, row, "expired", now, int(row["amount_nusd"]), "expired")
    return len(rows)


def _close_reservation(
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
    _insert_call(
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


def _insert_call(db: sqlite3.Connection, values: tuple[Any, ...]) -> None:
    """One telemetry row; ``values`` in the column order of ``_INSERT_CALL``."""
    db.execute(_INSERT_CALL, values)
