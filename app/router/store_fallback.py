"""``database_fallback`` mid-run: a session's audit log and ledger on the team store that
move to this machine's SQLite files when the database stops answering, once, for the
rest of the process (docs/team.md). :func:`app.router.stores.open_stores` wires them only
when the setting is on; with it off the team stores are used as they are, and a database
away fails every request closed.

The switch: the first operation that finds the team database away (``StoreUnavailable``:
an append, a reservation, a budget read) opens the SQLite files and writes there, first,
the ``degradation`` line (``GR005_STORE_FALLBACK``) that says so and names the database;
then what this process had spent or still held on the team ledger, row by row, so that
a session's cap is not started afresh (a ``budget`` line, ``TEAM_SPEND_CARRIED``, each,
and ``GR011_CAP_CROSSED`` after the row whose count here carried the spend past a cap);
then the operation itself. Everything after goes there.

What stays with the team store: the settlement or release of a reservation made there
(its ledger keeps one it could not write and writes it when the database answers:
``SETTLED_LATE``), and the release of a reservation the database may have taken as it
went away, with its answer lost: let go there the same way, so a call reserved again
here is never held on both (a process that ends first leaves it to the team's expiry,
which counts more, never less).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar, Unpack

from app.audit.base import AuditBase
from app.audit.canonical import VerifyReport
from app.audit.types import Appended, AuditLine, LineFields
from app.clock import Clock
from app.commit_point import finish_then_cancel
from app.dollars import dollars
from app.errors import SwitchyardError
from app.opener import ClosedOnExit
from app.router.ledger.api import ExpiredHook, ExpiryCheck, LateHook, Ledger
from app.router.ledger.money import NANO, usd
from app.router.ledger.records import (
    BudgetSnapshot,
    CapTotals,
    Reservation,
    crossed_by,
    crossed_line,
)
from app.store.errors import StoreUnavailable

__all__ = ["FallbackAudit", "FallbackLedger", "StoreFallback", "carried", "mid_run_detail"]

T = TypeVar("T")
log = logging.getLogger(__name__)

#: a row of the team ledger as carried: (session, run, provider, role, model)
Key = tuple[str, str, str, str, str]
#: opens this machine's audit log and ledger (the caller of the switch closes them)
OpenLocal = Callable[[], Awaitable[tuple[AuditBase, Ledger]]]


def mid_run_detail(database: str, why: str) -> str:
    """The switch's ``degradation`` line, said (``database`` shown without its password)."""
    return (
        f"the team database {database} stopped answering mid-session ({why}); using this "
        "machine's SQLite files for the rest of this process, as database_fallback asks "
        "(no team caps, no team audit; a settlement owed to the team database is written "
        "there when it answers)"
    )


def carried(held: Mapping[Key, int]) -> list[tuple[Key, int]]:
    """What the SQLite ledger is given of the team's at the switch: each row this process
    spent or still holds there, in nano-dollars (a reservation open at its estimate)."""
    return sorted((key, amount) for key, amount in held.items() if amount > 0)


class StoreFallback:
    """The team's pair, this machine's once switched, and what the switch carries over."""

    def __init__(
        self,
        audit: AuditBase,
        ledger: Ledger,
        *,
        session: str,
        database: str,
        clock: Clock,
        open_local: OpenLocal,
    ) -> None:
        self.team_audit, self.team_ledger = audit, ledger
        self.session, self.database, self.clock = session, database, clock
        self._open_local = open_local
        #: this machine's audit log and ledger, once switched
        self.local: tuple[AuditBase, Ledger] | None = None
        #: what this process spent or holds on the team ledger, per row (nano-dollars)
        self.held: dict[Key, int] = {}
        #: what of it this machine's ledger was given already, per row: a switch that
        #: failed half-way and is tried again gives only the rest (a review: it gave all
        #: of it again), and a team write that returns after the switch gives its own
        self.carried: dict[Key, int] = {}
        #: a switch has begun: what a team write adds to ``held`` from now on is carried
        #: by that write (the switch may have read ``held`` already)
        self.begun = False
        #: the GR005 line stands in this machine's log
        self._said = False
        #: set as the session closes: nothing is opened any more (fail closed)
        self.closing = False
        self._lock = asyncio.Lock()

    async def switch(self, exc: StoreUnavailable) -> tuple[AuditBase, Ledger]:
        """This machine's pair, opened at the first call: once begun, to its end (a
        cancel meanwhile would leave the files opened and no one to close them)."""
        if self.local is not None:
            return self.local
        return await finish_then_cancel(self._switch(exc))

    async def _switch(self, exc: StoreUnavailable) -> tuple[AuditBase, Ledger]:
        async with self._lock:  # (requests that met the outage together switch once)
            if self.local is None:
                if self.closing:
                    raise exc
                self.local = await self._opened(exc)
                log.warning("%s; using this machine's SQLite files (database_fallback)", exc)
            return self.local

    async def _opened(self, exc: StoreUnavailable) -> tuple[AuditBase, Ledger]:
        self.begun = True
        try:
            audit, ledger = await self._open_local()
        except (SwitchyardError, OSError) as err:
            raise StoreUnavailable(
                f"{exc}; and database_fallback could not open this machine's SQLite files: {err}"
            ) from None
        try:
            if not self._said:
                await audit.append(
                    "degradation",
                    session=self.session,
                    reason_codes=["GR005_STORE_FALLBACK"],
                    values={"store": "sqlite", "database": self.database, "mid_session": True},
                    detail=mid_run_detail(self.database, str(exc)),
                )
                self._said = True
            for key, _ in carried(self.held):
                await self._carry_rest(audit, ledger, key)
        except BaseException as err:
            try:
                await ledger.close()
            finally:
                await audit.close()
            if isinstance(err, SwitchyardError | OSError):  # said as the switch's failure
                raise StoreUnavailable(
                    f"{exc}; and database_fallback could not write to this machine's SQLite"
                    f" files: {err}"
                ) from None
            raise
        return audit, ledger

    async def carry_after(self, key: Key) -> None:
        """A team write that returned once a switch had begun: what it added to ``key``'s
        row is given to this machine's ledger now (the switch may have read the row
        before it: a reservation in flight at the switch was counted nowhere, a review)."""
        if not self.begun:
            return  # (a switch to come reads it)
        async with self._lock:  # (after the switch under way: it sets ``local``)
            if self.local is not None:
                await finish_then_cancel(self._carry_rest(*self.local, key))

    async def _carry_rest(self, audit: AuditBase, ledger: Ledger, key: Key) -> None:
        """What of ``key``'s row this machine's ledger was not given yet (never less)."""
        rest = self.held.get(key, 0) - self.carried.get(key, 0)
        if rest > 0:
            totals = await self._carry(ledger, key, usd(rest))
            # counted as soon as it is written: a line that fails below must not have the
            # next switch count the row again (a review)
            self.carried[key] = self.carried.get(key, 0) + rest
            await self._say_carried(audit, key, usd(rest), totals)

    async def _carry(self, ledger: Ledger, key: Key, cost: float) -> CapTotals:
        """One row of the team's, counted in this machine's ledger (its caps read it)."""
        session, run, provider, role, model = key
        return await ledger.record_call(
            session=session,
            run=run or None,
            role=role,
            model=model,
            provider=provider,
            tokens_in=0,
            tokens_out=0,
            latency_ms=0.0,
            cost_usd=cost,
        )

    async def _say_carried(
        self, audit: AuditBase, key: Key, cost: float, totals: CapTotals
    ) -> None:
        """A row carried, said, so that this file's audit adds up to its ledger; and after
        it the GR011 line when that write carried the spend past a cap here (decided from
        its own totals, as a settlement's is: of the rows carried, the one that crossed
        it): the next reservation here is refused for it, and the line says why."""
        session, run, provider, role, model = key
        await audit.append(
            "budget",
            session=session,
            run=run or None,
            role=role,
            to=model,
            reason_codes=["TEAM_SPEND_CARRIED"],
            values={"provider": provider, "cost_usd": cost, "database": self.database},
            detail=f"{model}: {dollars(cost)} spent or reserved on the team database before "
            "it stopped answering, counted here under this machine's caps",
        )
        if crossed := crossed_by(totals):
            why = "was carried from the team database, spent or reserved there"
            await audit.append(
                "budget",
                session=session,
                run=run or None,
                role=role,
                **crossed_line(model, crossed, cost, why),
            )

    async def on_audit(self, op: Callable[[AuditBase], Awaitable[T]]) -> T:
        """``op`` on the audit log in use: the team's until it is away, then this machine's."""
        if self.local is None:
            try:
                return await op(self.team_audit)
            except StoreUnavailable as exc:
                return await op((await self.switch(exc))[0])
        return await op(self.local[0])

    async def on_ledger(self, op: Callable[[Ledger], Awaitable[T]]) -> T:
        """``op`` on the ledger in use: the team's until it is away, then this machine's."""
        if self.local is None:
            try:
                return await op(self.team_ledger)
            except StoreUnavailable as exc:
                return await op((await self.switch(exc))[1])
        return await op(self.local[1])


class FallbackAudit(AuditBase):
    """The session's audit log: the team's, then this machine's once switched."""

    def __init__(self, fallback: StoreFallback) -> None:
        # (no bus here: each store it holds publishes its own lines and detachments)
        team = fallback.team_audit
        super().__init__(clock=fallback.clock, bus=None, policy_version=team.policy_version)
        self._fb = fallback
        self.shared = team.shared

    def _now(self) -> AuditBase:
        return self._fb.team_audit if self._fb.local is None else self._fb.local[0]

    @property
    def in_use(self) -> AuditBase:
        """The log written to now: the team's, or this machine's once switched (a replay
        of the session's lines reads that one, on a store of its own)."""
        return self._now()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = self._fb.closing = True
        try:
            await self._fb.team_audit.close()
        finally:
            if self._fb.local is not None:
                await self._fb.local[0].close()

    async def append(self, kind: str, **fields: Unpack[LineFields]) -> AuditLine:
        return (await self.add(kind, **fields)).line

    async def add(self, kind: str, **fields: Any) -> Appended:
        if self._closed:
            raise RuntimeError("the audit log is closed")
        return await self._fb.on_audit(lambda a: a.add(kind, **fields))

    async def append_many(self, lines: Sequence[Mapping[str, Any]]) -> list[AuditLine]:
        return await self._fb.on_audit(lambda a: a.append_many(lines))

    async def flush(self) -> None:
        await self._now().flush()

    async def last_seq(self) -> int:
        return await self._fb.on_audit(lambda a: a.last_seq())

    async def tail(
        self, n: int = 20, *, session: str | None = None, run: str | None = None
    ) -> list[AuditLine]:
        return await self._fb.on_audit(lambda a: a.tail(n, session=session, run=run))

    async def verify(self, *, from_seq: int = 1) -> VerifyReport:
        return await self._fb.on_audit(lambda a: a.verify(from_seq=from_seq))

    async def first_of(
        self, *, since: str | None = None, session: str | None = None, run: str | None = None
    ) -> tuple[int, str] | None:
        return await self._fb.on_audit(lambda a: a.first_of(since=since, session=session, run=run))

    async def first_of_sessions_from(self, seq: int) -> int | None:
        return await self._fb.on_audit(lambda a: a.first_of_sessions_from(seq))

    async def first_unlike_before(self, seq: int) -> int | None:
        return await self._fb.on_audit(lambda a: a.first_unlike_before(seq))

    async def lines(
        self,
        session: str | None = None,
        run: str | None = None,
        since_seq: int = 0,
        *,
        limit: int | None = None,
    ) -> list[AuditLine]:
        return await self._fb.on_audit(lambda a: a.lines(session, run, since_seq, limit=limit))

    async def run_lines(self, run: str) -> list[AuditLine]:
        return await self._fb.on_audit(lambda a: a.run_lines(run))

    def follow(
        self,
        session: str | None = None,
        run: str | None = None,
        since_seq: int = 0,
        *,
        interval: float = 0.5,
    ) -> AsyncIterator[AuditLine]:
        return self._now().follow(session, run, since_seq, interval=interval)

    async def export_jsonl(
        self,
        out: TextIO | Path,
        session: str | None = None,
        run: str | None = None,
        *,
        from_seq: int = 1,
    ) -> int:
        return await self._fb.on_audit(
            lambda a: a.export_jsonl(out, session, run, from_seq=from_seq)
        )


class FallbackLedger(ClosedOnExit):
    """The session's ledger (:class:`Ledger`): the team's, then this machine's once
    switched. A reservation is closed where it was made."""

    def __init__(self, fallback: StoreFallback) -> None:
        self._fb = fallback
        self.budget = fallback.team_ledger.budget
        # (the Protocol's; each store it holds has its own, set where it is opened)
        self.on_expired: ExpiredHook | None = None
        self.on_late: LateHook | None = None
        self.expiry_check: ExpiryCheck | None = None
        #: the team's reservations not closed yet: their row and what each holds
        self._open: dict[str, tuple[Key, int]] = {}
        #: the reservations made in this machine's ledger (closed there)
        self._local: set[str] = set()

    def _where(self, reservation_id: str) -> Ledger:
        local = self._fb.local
        if reservation_id in self._local and local is not None:
            return local[1]
        return self._fb.team_ledger

    def _held(self, key: Key, nano: int) -> None:
        self._fb.held[key] = self._fb.held.get(key, 0) + nano

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
        fb = self._fb
        if fb.local is None:
            try:
                r = await fb.team_ledger.reserve(
                    session=session,
                    provider=provider,
                    role=role,
                    model=model,
                    amount_usd=amount_usd,
                    run=run,
                )
            except StoreUnavailable as exc:
                # (one it may have taken with its answer lost is let go there: app.router.
                # ledger.pg_ledger owes its release; here it is made anew)
                local = (await fb.switch(exc))[1]
            else:
                key = (r.session, r.run, r.provider, r.role, r.model)
                self._open[r.id] = (key, round(r.amount_usd * NANO))
                self._held(key, self._open[r.id][1])
                await fb.carry_after(key)
                return r
        else:
            local = fb.local[1]
        made = await local.reserve(
            session=session,
            provider=provider,
            role=role,
            model=model,
            amount_usd=amount_usd,
            run=run,
        )
        self._local.add(made.id)
        return made

    def _closed(self, reservation_id: str, actual_usd: float) -> None:
        """A team reservation closed at ``actual_usd``: what its row holds becomes that."""
        opened = self._open.pop(reservation_id, None)
        if opened is not None:
            self._held(opened[0], round(actual_usd * NANO) - opened[1])

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
        # a team reservation is settled there, or kept by it for when it answers
        totals = await self._where(reservation_id).settle(
            reservation_id,
            actual_usd=actual_usd,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            latency_ms=latency_ms,
            outcome=outcome,
            tokens_cached=tokens_cached,
        )
        self._closed(reservation_id, actual_usd)
        return totals  # (the caps it crossed: the call's line says them)

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
        totals = await self._where(reservation_id).release(
            reservation_id,
            outcome,
            actual_usd=actual_usd,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            latency_ms=latency_ms,
            tokens_cached=tokens_cached,
        )
        self._closed(reservation_id, actual_usd)
        return totals

    async def renew(self, reservation_id: str) -> bool:
        return await self._where(reservation_id).renew(reservation_id)

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
        async def record(ledger: Ledger) -> tuple[Ledger, CapTotals]:
            totals = await ledger.record_call(
                session=session,
                run=run,
                role=role,
                model=model,
                provider=provider,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                latency_ms=latency_ms,
                cost_usd=cost_usd,
                outcome=outcome,
                tokens_cached=tokens_cached,
            )
            return ledger, totals

        wrote, totals = await self._fb.on_ledger(record)
        if wrote is self._fb.team_ledger:
            key = (session, run or "", provider, role, model)
            self._held(key, round(cost_usd * NANO))
            await self._fb.carry_after(key)
        return totals

    async def flush(self) -> None:
        local = self._fb.local
        await (self._fb.team_ledger if local is None else local[1]).flush()

    async def expire_stale(self) -> int:
        return await self._fb.on_ledger(lambda led: led.expire_stale())

    async def snapshot(self, session: str) -> BudgetSnapshot:
        return await self._fb.on_ledger(lambda led: led.snapshot(session))

    async def left_usd(self, session: str, provider: str) -> float:
        return await self._fb.on_ledger(lambda led: led.left_usd(session, provider))

    async def left_usd_many(self, session: str, providers: Iterable[str]) -> dict[str, float]:
        wanted = tuple(providers)  # (read twice when the first store is away)
        return await self._fb.on_ledger(lambda led: led.left_usd_many(session, wanted))

    async def report(self, session: str | None = None, days: int = 7) -> dict[str, Any]:
        return await self._fb.on_ledger(lambda led: led.report(session, days))

    async def close(self) -> None:
        # the team's first: its last try at what it owes tells the audit logs, still open
        self._fb.closing = True
        try:
            await self._fb.team_ledger.close()
        finally:
            if self._fb.local is not None:
                await self._fb.local[1].close()
