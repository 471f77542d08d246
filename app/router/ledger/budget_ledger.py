"""The budget ledger's API (GR-011): open the file, reserve before a cloud call, settle or
release after it, read what is left. The package docstring says what it guarantees."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from app.bus import Bus
from app.clock import Clock, SystemClock, iso
from app.opener import ClosedOnExit
from app.policy.schema import Budget
from app.router.ledger import reports, transactions
from app.router.ledger.api import ExpiredHook, tell_expired
from app.router.ledger.caps import Caps, sums
from app.router.ledger.errors import LedgerError, LedgerUnreadable
from app.router.ledger.money import check_tokens, nusd, usd, utc_day
from app.router.ledger.publisher import SnapshotPublisher
from app.router.ledger.records import BudgetSnapshot, Reservation
from app.router.ledger.schema import migrate
from app.router.ledger.transactions import ReservationStatus, connect, on_thread
from app.sqlite import SQLiteRunner, read_transaction, use_wal

#: WAL + NORMAL: durable against a crash of the process, not against a power cut (see the
#: package docstring).
SYNCHRONOUS = "NORMAL"
LOCAL_PROVIDER = "local"
T = TypeVar("T")


class BudgetLedger(ClosedOnExit):
    """Reservations and settled calls in one SQLite file; see the package docstring.

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
        # the live meter's snapshots are read and published off the request path
        self._publisher = SnapshotPublisher(bus, self._meter_snapshot)
        #: the meter's reads run on a connection of their own (opened on the first one):
        #: a WAL reader never waits for the writer, nor the request path for it
        self._reader: aiosqlite.Connection | None = None
        self._caps = Caps.of(budget)
        #: told of the reservations charged by expiry (the session audits them)
        self.on_expired: ExpiredHook | None = None
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
        db = await connect(path)
        try:
            db.row_factory = sqlite3.Row
            # busy_timeout first: switching to WAL and the migration may wait for others.
            await use_wal(db, SYNCHRONOUS, busy_timeout_ms=int(busy_timeout_s * 1000))
            await on_thread(db, migrate, path)
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
            await self._publisher.close()  # the meter's last update reads the file
            reader, self._reader = self._reader, None
            if reader is not None:
                await reader.close()
            db, self._db = self._db, None
            async with self._lock:
                self._runner.close()  # commits what was deferred
                await db.close()

    # ── transactions ─────────────────────────────────────────────────────────────────────

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise LedgerError("the budget ledger is closed")
        return self._db

    async def _run(
        self,
        write: bool,
        body: Callable[[sqlite3.Connection], T],
        *,
        inline: bool = True,
        defer: bool = False,
    ) -> T:
        """``body(conn)`` inside one transaction: a write transaction (IMMEDIATE: takes the
        file's write lock up front, so the check and the insert see the same state), or a
        consistent read snapshot. ``inline=False`` for reads whose cost grows with the
        file (reports): those never run on the event loop. ``defer``: group commit (see
        :meth:`app.sqlite.SQLiteRunner.write`), for a write that records what happened."""
        async with self._lock:
            self._conn()
            try:
                if write:
                    return await self._runner.write(body, defer=defer)
                return await self._runner.read(body, inline=inline)
            except sqlite3.Error as exc:
                raise transactions.ledger_error(self.path, exc) from exc

    async def flush(self) -> None:
        """Commit the settlements and calls recorded with ``defer=True`` now."""
        async with self._lock:
            if self._db is not None:
                try:
                    await self._runner.flush()
                except sqlite3.Error as exc:
                    raise transactions.ledger_error(self.path, exc) from exc

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
        amount = nusd(amount_usd, "amount_usd")
        if provider == LOCAL_PROVIDER and amount > 0:
            raise LedgerError(f"local model {model} cannot cost ${amount_usd}: local is free")
        now = self._clock.now()
        day = utc_day(now)
        expires = now + timedelta(seconds=self.budget.reservation_ttl_s)
        res = Reservation(
            id=uuid.uuid4().hex,
            session=session,
            run=run or "",
            provider=provider,
            role=role,
            model=model,
            amount_usd=usd(amount),
            created=iso(now),
            expires=iso(expires),
        )
        caps, expires_at = self._caps, expires.timestamp()
        refused, expired = await self._run(
            True, lambda db: transactions.reserve(db, res, amount, day, expires_at, now, caps)
        )
        # Committed either way: expiries found on the way are kept even when refused.
        if expired:  # (no coroutine made on the request path's common case)
            await tell_expired(self.on_expired, expired, self.path)
        if refused is not None:
            raise refused
        self._publisher.changed(session)
        return res

    async def settle(
        self,
        reservation_id: str,
        *,
        actual_usd: float,
        tokens_in: int,
        tokens_out: int,
        latency_ms: float,
        outcome: str = "ok",
        defer: bool = False,
    ) -> None:
        """Record the call's actual cost (even above the reservation) and close it.

        ``defer``: commit it with the next write (group commit, :meth:`flush`); a crash
        before then leaves the reservation live, as one just before the settlement would
        (it is charged its full amount once its TTL has passed).
        """
        await self._close(
            reservation_id,
            "settled",
            actual_usd,
            tokens_in,
            tokens_out,
            latency_ms,
            outcome,
            defer=defer,
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
        *,
        defer: bool = False,
    ) -> None:
        cost = nusd(actual_usd, "actual_usd")
        check_tokens(tokens_in, tokens_out)
        now = self._clock.now()

        session = await self._run(
            True,
            lambda db: transactions.close_live(
                db, reservation_id, status, now, cost, outcome, tokens_in, tokens_out, latency_ms
            ),
            defer=defer,
        )
        self._publisher.changed(session)

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
        defer: bool = False,
    ) -> None:
        """Telemetry for a call made without a reservation (its cost still counts).
        ``defer``: group commit, as for :meth:`settle`."""
        cost = nusd(cost_usd, "cost_usd")
        check_tokens(tokens_in, tokens_out)
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
        await self._run(True, lambda db: transactions.insert_call(db, values), defer=defer)
        self._publisher.changed(session)

    # ── reading ──────────────────────────────────────────────────────────────────────────

    async def expire_stale(self) -> int:
        """Settle every reservation past its TTL at its full amount; how many there were."""
        now = self._clock.now()
        # The common case takes no write lock.
        if not await self._run(False, lambda db: transactions.any_stale(db, now)):
            return 0
        expired = await self._run(True, lambda db: transactions.expire_stale(db, now))
        await tell_expired(self.on_expired, expired, self.path)
        return len(expired)

    async def snapshot(self, session: str) -> BudgetSnapshot:
        await self.expire_stale()
        now, caps = self._clock.now(), self._caps
        return await self._run(
            False, lambda db: reports.snapshot(db, session, now, caps), inline=False
        )

    async def _meter_snapshot(self, session: str) -> BudgetSnapshot:
        """:meth:`snapshot` for the live meter, read on the reader connection's thread:
        its cost grows with the session's calls, and it must not hold the request path's
        lock while it reads."""
        await self.expire_stale()
        await self.flush()  # what was deferred is part of what the meter shows
        if self._reader is None:
            self._reader = await connect(self.path)
            try:
                await self._reader.execute(f"PRAGMA busy_timeout = {self._runner.busy_timeout_ms}")
            except sqlite3.Error as exc:
                raise transactions.ledger_error(self.path, exc) from exc
        now, caps = self._clock.now(), self._caps
        try:
            return await on_thread(
                self._reader, read_transaction, lambda db: reports.snapshot(db, session, now, caps)
            )
        except sqlite3.Error as exc:
            raise transactions.ledger_error(self.path, exc) from exc

    async def left_usd(self, session: str, provider: str) -> float:
        """What the next reservation for ``provider`` in ``session`` could still take:
        the smallest remaining of the session, day and provider-day caps."""
        return (await self.left_usd_many(session, (provider,)))[provider]

    async def left_usd_many(self, session: str, providers: Iterable[str]) -> dict[str, float]:
        """:meth:`left_usd` for several providers, read in one snapshot."""
        wanted = tuple(providers)
        day = utc_day(self._clock.now())
        u = await self._run(False, lambda db: sums(db, session, day))
        return self._caps.left_usd(u, wanted)

    async def report(self, session: str | None = None, days: int = 7) -> dict[str, Any]:
        """Spend, calls and tokens by role, model, provider and day over the last ``days``
        UTC days (today included), plus the caps and what is left today."""
        if days < 1:
            raise LedgerError(f"days must be >= 1, got {days}")
        await self.expire_stale()
        now = self._clock.now()
        today = utc_day(now)
        since = utc_day(now - timedelta(days=days - 1))
        rows = await self._run(
            False, lambda db: reports.report_rows(db, session, since, today), inline=False
        )
        snap = await self.snapshot(session or "")
        return reports.report(
            rows, snap, self.budget, session=session, days=days, since=since, until=today
        )
