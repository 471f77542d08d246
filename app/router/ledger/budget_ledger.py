"""The budget ledger's API (GR-011): open the file, reserve before a cloud call, settle or
release after it, read what is left. The package docstring says what it guarantees.

The request path's writes are records in the file's spool (:mod:`.spooled`): each under
the spool's lock, checked against totals kept in memory and caught up with every record
the other writers appended, standing when it returns. The ledger folds them into the
tables in batches and a quarter of a second after a write; a report folds what is left
before it reads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from app.bus import Bus
from app.clock import Clock, SystemClock, iso
from app.commit_point import finish_then_cancel
from app.opener import ClosedOnExit
from app.policy.schema import Budget
from app.router.ledger import reports, spooled, transactions
from app.router.ledger.api import (
    ExpiredHook,
    ExpiryCheck,
    LateHook,
    expiry_held,
    let_go,
    tell_expired,
)
from app.router.ledger.call_groups import GroupCache
from app.router.ledger.caps import Caps, Sums
from app.router.ledger.errors import (
    CapExceeded,
    LedgerError,
    LedgerUnreadable,
    ReservationClosed,
    UnknownReservation,
)
from app.router.ledger.ids import reservation_id
from app.router.ledger.money import check_tokens, nusd, usd, utc_day
from app.router.ledger.publisher import SnapshotPublisher
from app.router.ledger.records import BudgetSnapshot, CapTotals, Expired, Reservation
from app.router.ledger.schema import migrate
from app.router.ledger.transactions import ReservationStatus, connect, on_thread
from app.spool import NotASpool, ShortWrite, Spooled, to_the_end
from app.sqlite import SQLiteRunner, is_busy, read_transaction, use_wal

#: WAL + NORMAL: durable against a crash of the process, not against a power cut (see the
#: package docstring).
SYNCHRONOUS = "NORMAL"
LOCAL_PROVIDER = "local"
T = TypeVar("T")
log = logging.getLogger(__name__)


class _Wait(Exception):
    """Internal: a lock is held elsewhere; the operation runs again on a thread, waiting."""


class BudgetLedger(ClosedOnExit):
    """Reservations and settled calls in one SQLite file; see the package docstring.

    The request path's operations (reserve, settle, left_usd …) run under the spool's
    lock, on the event loop when it is free at once, else on a thread that waits for it;
    folds and reports are transactions of :class:`SQLiteRunner`, reports always on the
    connection's thread.
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
        #: each session's calls by role, model and provider as last read (both
        #: connections' snapshots add only the calls written since)
        self._groups = GroupCache()
        self._caps = Caps.of(budget)
        #: how long a reservation lives (made once: every reservation asks)
        self._ttl = timedelta(seconds=budget.reservation_ttl_s)
        #: told of the reservations charged by expiry (the session audits them)
        self.on_expired: ExpiredHook | None = None
        #: (never called: a write here stands when it returns, or raises)
        self.on_late: LateHook | None = None
        self.expiry_check: ExpiryCheck | None = None
        # One connection cannot hold two transactions: coroutines take turns on it.
        self._lock = asyncio.Lock()
        #: the spool, and the totals the request path checks (see .spooled)
        self._spooled: Spooled | None = None
        self._mirror = spooled.Mirror()
        #: the last operation wrote ``_written`` records (a fold may be due)
        self._due = False
        self._written = 0
        #: expiries a write cut short left standing, to be told once it has raised
        self._unsaid: list[Expired] = []

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
        ledger: BudgetLedger | None = None
        try:
            db.row_factory = sqlite3.Row
            # busy_timeout first: switching to WAL and the migration may wait for others.
            await use_wal(db, SYNCHRONOUS, busy_timeout_ms=int(busy_timeout_s * 1000))
            await on_thread(db, migrate, path)
            ledger = cls(db, path, budget, clock or SystemClock(), bus, int(busy_timeout_s * 1000))
            await ledger._runner.setup()
            await ledger._open_spool()
        except BaseException as exc:
            if ledger is not None:
                await ledger._close_spool()
            await db.close()
            if isinstance(exc, NotASpool):
                raise LedgerUnreadable(f"{path}: cannot open the budget ledger: {exc}") from None
            if isinstance(exc, sqlite3.OperationalError | OSError):
                # the machine's trouble (a full disk, a read-only folder, a lock held), not
                # what the ledger was given: exit 1, as the audit log says it (it was 2)
                raise LedgerError(f"{path}: cannot open the budget ledger: {exc}") from None
            if isinstance(exc, sqlite3.Error):  # not a database: the file given is wrong
                raise LedgerUnreadable(f"{path}: cannot open the budget ledger: {exc}") from None
            raise
        return ledger

    async def _open_spool(self) -> None:
        """Open the spool, fold what it holds (a killed writer's last records too) and
        read the live reservations: under the spool's lock, so no record comes between."""
        sp = self._spooled = Spooled(self.path, spooled.fold, spooled.SPOOL_TABLE)
        mirror = self._mirror

        def opening(conn: sqlite3.Connection, inline: bool) -> None:
            sp.appends.acquire(blocking=True)
            try:
                sp.fold(conn, sp.appends)
                mirror.load_live(conn)
            finally:
                sp.appends.release()

        await self._runner.run(opening, inline=False, write=False)

    async def _close_spool(self) -> None:
        sp, self._spooled = self._spooled, None
        if sp is not None:
            sp.close()

    async def close(self) -> None:
        if self._db is not None:
            await self._publisher.close()  # the meter's last update reads the file
            reader, self._reader = self._reader, None
            if reader is not None:
                await reader.close()
            if self._spooled is not None:
                # (before the lock: an idle fold under way takes it, and is waited for)
                await self._spooled.stop()
            async with self._lock:
                # what is left is folded by the next open: a failure here loses nothing
                with contextlib.suppress(sqlite3.Error, OSError, LedgerError):
                    await self._fold_here()
                await self._close_spool()
                db, self._db = self._db, None
                self._runner.close()
                await db.close()

    # ── transactions ─────────────────────────────────────────────────────────────────────

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise LedgerError("the budget ledger is closed")
        return self._db

    async def _read(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """``body(conn)`` in one read transaction (a consistent snapshot) on the
        connection's thread (a report's cost grows with the file), after a fold of what
        the spool holds: a report never misses a record."""
        async with self._lock:
            self._conn()
            await self._fold_here()
            try:
                return await self._runner.read(body, inline=False)
            except sqlite3.Error as exc:
                raise transactions.ledger_error(self.path, exc) from exc

    async def flush(self) -> None:
        """Fold the spool into the tables now (what every report does before it reads)."""
        async with self._lock:
            if self._db is not None:
                await self._fold_here()

    async def _fold_here(self, *, inline: bool = False) -> None:
        """Fold on this ledger's connection (the caller holds ``_lock``); no statement
        when nothing was appended since the last fold. ``inline``: on the event loop when
        the file is free at once (a batch on the request path), else on its thread."""
        sp = self._spooled
        if sp is None or not sp.behind():
            return
        try:
            await self._runner.run(sp.fold_inline, inline=inline)
        except sqlite3.Error as exc:
            raise transactions.ledger_error(self.path, exc) from exc
        except OSError as exc:
            raise LedgerError(f"{sp.path}: budget ledger error: {exc}") from exc
        # a fold writes many pages: the WAL is copied back after each, on its own thread
        self._runner.checkpointer.poke()

    # ── the spool ────────────────────────────────────────────────────────────────────────

    def _spool_op(self, op: Callable[[bool], T]) -> Awaitable[T]:
        """``op(inline)`` under the spool's lock, the mirror caught up with every record
        appended since this ledger last looked: on the event loop when the lock is free at
        once, else on a thread that waits for it (and for the file, when ``op`` reads it).

        Once called it ends: a cancel that comes meanwhile is raised after ``op`` has run
        (the thread's wait already was; another coroutine's write, waited for here, is
        too), so a caller told "cancelled" knows the write stands (a call's closing, in
        app.router.cloud_step, resumes on it). The lock free, nothing here waits."""
        if self._lock.locked():
            return finish_then_cancel(self._spool_op_now(op))
        return self._spool_op_now(op)  # (awaited by the caller: no frame of its own)

    async def _spool_op_now(self, op: Callable[[bool], T]) -> T:
        async with self._lock:
            self._conn()
            self._due = False
            try:
                try:
                    result = self._under_lock(op, True)
                except _Wait:
                    result = await to_the_end(self._under_lock, op, False)
            except sqlite3.Error as exc:
                raise transactions.ledger_error(self.path, exc) from exc
            except OSError as exc:
                where = self._spooled.path if self._spooled else self.path
                await self._after_short_write()
                raise LedgerError(f"{where}: budget ledger error: {exc}") from exc
            if self._due:
                await self._fold_due()
            return result

    async def _after_short_write(self) -> None:
        """What a write cut short left standing (:meth:`_write`) is folded in time, and
        the expiries among it are told: the mirror has them closed, so nothing would find
        them again."""
        if self._due:
            await self._fold_due()
        unsaid, self._unsaid = self._unsaid, []
        await tell_expired(self.on_expired, unsaid, self.path)

    async def _fold_due(self) -> None:
        """After a write: fold now when enough records wait, else a quarter of a second
        later (the caller holds ``_lock``). The records stand in the spool whatever a fold
        does: one that fails is logged here, and raised by the next report."""
        sp = self._spooled
        assert sp is not None
        if not sp.wrote(self._written):
            sp.when_idle(self._idle_fold)
            return
        try:
            await self._fold_here(inline=True)
        except LedgerError as exc:
            log.warning("%s: folding the ledger's spool failed: %s", self.path, exc)

    async def _idle_fold(self) -> None:
        async with self._lock:
            if self._db is not None:
                await self._fold_here(inline=True)

    def _under_lock(self, op: Callable[[bool], T], inline: bool) -> T:
        sp = self._spooled
        assert sp is not None
        news = sp.appends.acquire(blocking=not inline)
        if news is None:
            raise _Wait
        try:
            if sp.appends.missed:
                self._resync(inline)
            elif news:
                self._mirror.apply(news, sp.appends.path)
            return op(inline)
        finally:
            sp.appends.release()

    def _resync(self, inline: bool) -> None:
        """A spool came and went since this ledger last looked (its records are in the
        tables only): read the live reservations afresh, and every total when needed."""

        def reread(conn: sqlite3.Connection) -> None:
            self._mirror.reset()
            self._mirror.load_live(conn)

        self._folded_then(reread, inline)
        assert self._spooled is not None
        self._spooled.appends.missed = False

    def _folded_then(self, read: Callable[[sqlite3.Connection], T], inline: bool) -> T:
        """Under the spool's lock: fold everything (the tables then hold every record
        there is), then ``read(conn)``. On the loop (``inline``) a busy file is
        :class:`_Wait`: the operation runs again on a thread, which waits for it."""
        sp, conn = self._spooled, self._conn()._conn
        assert sp is not None
        if not inline:
            conn.execute(f"PRAGMA busy_timeout = {self._runner.busy_timeout_ms}")
        try:
            sp.fold(conn, sp.appends)
            return read(conn)
        except sqlite3.Error as exc:
            if inline and is_busy(exc):
                raise _Wait from exc
            raise
        finally:
            if not inline:
                conn.execute("PRAGMA busy_timeout = 0")

    def _write(self, records: list[list[Any]], expiring: Sequence[Expired] = ()) -> None:
        """Append ``records`` (under the lock) and apply them; ``expiring``: the expiries
        among them, which come first. A write cut short (a full disk) raises, and the
        records it completed stand: the mirror applies those (the expiries a reservation
        found on its way; the reservation is always the last)."""
        sp = self._spooled
        assert sp is not None
        short: ShortWrite | None = None
        try:
            sp.appends.write([spooled.encode(r) for r in records])
        except ShortWrite as exc:
            short, records = exc, records[: exc.standing]
            self._unsaid = list(expiring[: sum(r[0] == "x" for r in records)])
        for r in records:
            self._mirror.apply_one(r)
        if records:
            self._due, self._written = True, len(records)
        if short is not None:
            raise short

    def _need(self, session: str, day: str, inline: bool) -> None:
        """``session``'s and ``day``'s totals in the mirror: read from the tables the
        first time, after a fold of everything (under the lock: nothing comes between)."""
        if not self._mirror.has(session, day):
            self._folded_then(lambda conn: self._mirror.load(conn, session, day), inline)

    def _expiring(self, stale: list[spooled.Live], inline: bool) -> list[Expired]:
        """``stale`` as their expiry charges them (:meth:`spooled.Mirror.expiring`), each
        one's session and day read first (another process's may never have been here)."""
        for s in stale:
            self._need(s.session, s.day, inline)
        return self._mirror.expiring(self._caps, stale)

    def _status(self, reservation_id: str, inline: bool) -> str | None:
        """A reservation's status in the tables (after a fold), None when unknown."""
        sql = "SELECT status FROM reservations WHERE id = ?"
        row = self._folded_then(
            lambda conn: conn.execute(sql, (reservation_id,)).fetchone(), inline
        )
        return None if row is None else str(row[0])

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
        expires = now + self._ttl
        res = Reservation(
            id=reservation_id(),
            session=session,
            run=run or "",
            provider=provider,
            role=role,
            model=model,
            amount_usd=usd(amount),
            created=iso(now),
            expires=iso(expires),
        )
        day = res.created[:10]  # (utc_day(now): the stamp's date)
        live = spooled.Live(
            res.id,
            session,
            res.run,
            provider,
            role,
            model,
            amount,
            day,
            res.created,
            res.expires,
            expires.timestamp(),
        )
        caps, mirror, now_ts, when = self._caps, self._mirror, now.timestamp(), res.created

        def op(inline: bool) -> tuple[CapExceeded | None, list[Expired]]:
            self._need(session, day, inline)
            stale = mirror.stale(now_ts)
            expired = self._expiring(stale, inline) if stale else []
            refused = None
            if amount > 0 and stale:  # checked against the totals with the expiries charged
                refused = caps.check(mirror.sums_after(session, day, stale), res, amount)
            elif amount > 0 and mirror.crosses(caps, session, day, provider, amount):
                refused = caps.check(mirror.sums(session, day), res, amount)
            records: list[list[Any]] = [["x", s.id, when, *mirror.where(s)] for s in stale]
            if refused is None:
                records.append(["r", *live])
            if records:
                self._write(records, expired)
            return refused, expired

        try:
            refused, expired = await self._spool_op(op)
            # Committed either way: expiries found on the way are kept even when refused.
            if expired:  # (no coroutine made on the request path's common case)
                await tell_expired(self.on_expired, expired, self.path)
        except asyncio.CancelledError:
            await let_go(self, res.id)
            raise
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
        tokens_cached: int = 0,
    ) -> CapTotals:
        """Record the call's actual cost (even above the reservation) and close it: one
        record in the spool, standing when this returns. Returns the caps it left spent
        past, with their totals just before and after it (:class:`CapTotal`).
        ``tokens_cached``: of ``tokens_in``, read from the provider's prompt cache."""
        return await self._close(
            reservation_id,
            "settled",
            actual_usd,
            tokens_in,
            tokens_out,
            latency_ms,
            outcome,
            tokens_cached,
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
        tokens_cached: int = 0,
    ) -> CapTotals:
        """Free a reservation after a failed call; ``actual_usd`` if tokens were billed.
        Returns what :meth:`settle` does."""
        return await self._close(
            reservation_id,
            "released",
            actual_usd,
            tokens_in,
            tokens_out,
            latency_ms,
            outcome,
            tokens_cached,
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
        tokens_cached: int = 0,
    ) -> CapTotals:
        cost = nusd(actual_usd, "actual_usd")
        check_tokens(tokens_in, tokens_out, tokens_cached)
        when, mirror, caps = iso(self._clock.now()), self._mirror, self._caps

        def op(inline: bool) -> tuple[str, CapTotals]:
            live = mirror.live.get(reservation_id)
            if live is None:
                found = mirror.closed.get(reservation_id) or self._status(reservation_id, inline)
                if found is None:
                    raise UnknownReservation(f"unknown reservation {reservation_id}")
                raise ReservationClosed(reservation_id, found)
            if cost:  # (its totals, to say which caps it crossed; read before the write)
                self._need(live.session, live.day, inline)
            record = ["c", reservation_id, status, when, cost, outcome, tokens_in, tokens_out]
            record += [latency_ms, *mirror.where(live)]
            if tokens_cached:  # (its place: spooled.CACHED_AT)
                record.append(tokens_cached)
            self._write([record])
            if not cost:
                return live.session, ()
            return live.session, mirror.past(caps, live.session, live.day, live.provider, cost)

        session, past = await self._spool_op(op)
        self._publisher.changed(session)
        return past

    async def renew(self, reservation_id: str) -> bool:
        """One TTL more for a live reservation whose call is still in flight: a record in
        the spool, so every process's mirror (and the tables, at the fold) sees the new
        expiry. Another process expired a call that outlasted the TTL while its holder
        was alive and waiting for it, and the answer, billed, was thrown away."""
        expires = self._clock.now() + self._ttl
        record = ["n", reservation_id, iso(expires), expires.timestamp()]
        mirror = self._mirror

        def op(inline: bool) -> bool:
            if reservation_id not in mirror.live:
                return False
            self._write([record])
            return True

        return await self._spool_op(op)

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
        tokens_cached: int = 0,
    ) -> CapTotals:
        """Telemetry for a call made without a reservation (its cost still counts).
        Returns what :meth:`settle` does."""
        cost = nusd(cost_usd, "cost_usd")
        check_tokens(tokens_in, tokens_out, tokens_cached)
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
        day, mirror, caps = values[1], self._mirror, self._caps

        def op(inline: bool) -> CapTotals:
            if cost:
                self._need(session, day, inline)
            record = ["k", *values[:12]]
            if tokens_cached:  # (its place: spooled.CACHED_AT)
                record.append(tokens_cached)
            self._write([record])
            return mirror.past(caps, session, day, provider, cost) if cost else ()

        past = await self._spool_op(op)
        self._publisher.changed(session)
        return past

    # ── reading ──────────────────────────────────────────────────────────────────────────

    async def expire_stale(self) -> int:
        """Settle every reservation past its TTL at its full amount; how many there were.
        ``on_expired`` is told of each with the caps its charge crossed (as a settlement's)."""
        now = self._clock.now()
        mirror, now_ts, when = self._mirror, now.timestamp(), iso(now)
        # asked only when one is stale as this ledger last saw them (the audit log of a
        # report is opened for nothing else); one found only on the catch-up waits
        allowed = self.expiry_check is None or (
            bool(mirror.stale(now_ts)) and not await expiry_held(self)
        )

        def op(inline: bool) -> list[Expired]:
            stale = mirror.stale(now_ts) if allowed else []
            if not stale:
                return []
            expired = self._expiring(stale, inline)
            self._write([["x", s.id, when, *mirror.where(s)] for s in stale], expired)
            return expired

        expired = await self._spool_op(op)
        await tell_expired(self.on_expired, expired, self.path)
        return len(expired)

    async def snapshot(self, session: str) -> BudgetSnapshot:
        await self.expire_stale()
        now, caps, groups = self._clock.now(), self._caps, self._groups
        return await self._read(lambda db: reports.snapshot(db, session, now, caps, groups))

    async def _meter_snapshot(self, session: str) -> BudgetSnapshot:
        """:meth:`snapshot` for the live meter, read on the reader connection's thread:
        it must not hold the request path's lock while it reads."""
        await self.expire_stale()
        await self.flush()  # what the spool holds is part of what the meter shows
        if self._reader is None:
            self._reader = await connect(self.path)
            try:
                await self._reader.execute(f"PRAGMA busy_timeout = {self._runner.busy_timeout_ms}")
            except sqlite3.Error as exc:
                raise transactions.ledger_error(self.path, exc) from exc
        now, caps, groups = self._clock.now(), self._caps, self._groups
        try:
            return await on_thread(
                self._reader,
                read_transaction,
                lambda db: reports.snapshot(db, session, now, caps, groups),
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
        mirror = self._mirror
        sp = self._spooled
        if (
            sp is not None
            and self._db is not None
            and not self._lock.locked()
            and mirror.has(session, day)
            and sp.appends.current()
        ):
            # Nobody has appended since this ledger last looked: its mirror is the spool
            # as of now, and a read needs no lock (a reservation checks the caps again
            # under it). The request path's common case: one fstat, no flock.
            return mirror.left_usd(self._caps, session, day, wanted)

        def op(inline: bool) -> Sums:
            self._need(session, day, inline)
            return mirror.sums(session, day)

        return self._caps.left_usd(await self._spool_op(op), wanted)

    async def report(self, session: str | None = None, days: int = 7) -> dict[str, Any]:
        """Spend, calls and tokens by role, model, provider and day over the last ``days``
        UTC days (today included), plus the caps and what is left today."""
        if days < 1:
            raise LedgerError(f"days must be >= 1, got {days}")
        await self.expire_stale()
        now = self._clock.now()
        today = utc_day(now)
        since = utc_day(now - timedelta(days=days - 1))
        rows = await self._read(lambda db: reports.report_rows(db, session, since, today))
        snap = await self.snapshot(session or "")
        return reports.report(
            rows, snap, self.budget, session=session, days=days, since=since, until=today
        )
