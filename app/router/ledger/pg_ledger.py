"""The team ledger (GR-011 across machines): the budget ledger's API over PostgreSQL.

Every write is one call of a database function (:mod:`.pg_schema`), so one round trip and
one transaction: the reservation is a conditional ``UPDATE`` of its cap rows, all or
none, with a CHECK behind it; settlement moves the reserved amount to spent; a crashed
holder's reservation expires by the database's ``now()`` and is charged in full. Money
goes over the wire as integers (nano-dollars), never as a float. A settlement, a release
and a call recorded answer with their cap rows' totals as they left them (schema v7),
an expiry's are read in its own transaction (:func:`_expire_with_totals`): the caps that
write crossed are decided from those (:meth:`TeamCaps.past`).

Caps: ``session_usd`` per session; ``day_usd`` and ``provider_day_usd`` are the team's,
whoever spends; ``user_day_usd`` each user's. Each machine checks its own policy's caps
against the shared totals, so a team shares one policy file (docs/team.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg

from app.bus import Bus
from app.clock import Clock, iso
from app.commit_point import finish_then_cancel
from app.hosts import HostPort
from app.opener import ClosedOnExit
from app.policy.schema import Budget
from app.router.ledger import pg_reports
from app.router.ledger.api import (
    ExpiredHook,
    ExpiryCheck,
    LateHook,
    expiry_held,
    let_go,
    tell_expired,
)
from app.router.ledger.budget_ledger import LOCAL_PROVIDER
from app.router.ledger.call_groups import GroupCache
from app.router.ledger.errors import (
    CapExceeded,
    LedgerError,
    ReservationClosed,
    UnknownReservation,
)
from app.router.ledger.money import NANO, check_tokens, nusd, usd
from app.router.ledger.pg_schema import COMPONENT, MIGRATIONS
from app.router.ledger.publisher import SnapshotPublisher
from app.router.ledger.records import (
    BudgetSnapshot,
    CapTotal,
    CapTotals,
    Expired,
    LateClose,
    Reservation,
)
from app.store import postgres
from app.store.errors import StoreUnavailable
from app.store.postgres import (
    Conn,
    connect_pool,
    db_errors,
    migrate,
    refuse_newer,
    refuse_team_spelled_otherwise,
    this_host,
)
from app.store.url import DatabaseUrl, parse_database_url

T = TypeVar("T")
_DB_ERRORS = db_errors()
log = logging.getLogger(__name__)

#: the first wait before what the database could not take is written again, and the
#: longest between tries
OWED_FIRST_S = 1.0
OWED_MAX_S = 30.0
#: how long a close is kept for a database that does not take it: past it, the close is
#: let go, said (the reservation's expiry charged it in full long before)
OWED_FOR_S = 3600.0


#: how long an expiry's owed line is left to the process that charged it before another
#: tells it (the one that charged it tells it at once, or failed to)
UNTOLD_GRACE_S = 60.0
#: the owed lines past their grace, taken (their grace starts again) with what telling
#: each needs
_OWED_LINES = (
    "UPDATE ledger_untold u SET since = now() FROM ledger_reservations l"
    " WHERE u.team = $1 AND u.since < now() - make_interval(secs => $2)"
    " AND l.id = u.reservation_id"
    " RETURNING l.id AS r_id, l.session AS r_session, l.run AS r_run,"
    " l.provider AS r_provider, l.role AS r_role, l.model AS r_model,"
    " l.amount_nusd AS r_amount, l.created AS r_created, l.expires_at AS r_expires"
)


class _Away(LedgerError):
    """The database did not take a statement (gone, restarting, a connection it broke, or
    an error of its own): what could not be written is kept and written when it answers."""


class _Gone(_Away, StoreUnavailable):
    """:class:`_Away` because the database is not there (``postgres.gone_or_silent``):
    the store unavailable, which database_fallback switches on (app.router.store_fallback)."""


@dataclass
class _Owed:
    """A close the database could not take when it was made: written once it answers,
    and how far that went (the close, the row past an expired estimate, the line). Each
    step's mark is set in the task that ran the step, as it ends (:meth:`PgBudgetLedger.
    _with` runs a statement to its end): a cancel of the round that waited for it lands
    after the mark, and the round resumed goes on from the next step (a mark set after
    the await was lost to such a cancel: the close resumed found its reservation settled
    and told nothing, the row past the estimate was written twice, a line told twice)."""

    reservation_id: str
    status: str
    cost: int
    outcome: str
    tokens_in: int
    tokens_out: int
    latency_ms: float
    #: of tokens_in, read from the provider's prompt cache
    tokens_cached: int = 0
    #: when it was first owed (monotonic)
    since: float = 0.0
    #: ``sy_ledger_close``'s row and the reservation's as it stood, once written
    closed: tuple[Any, Any] | None = None
    #: the caps the row past an expired estimate left spent past, once written (the
    #: database writes that row once per reservation: ``sy_ledger_late_excess``)
    excess: CapTotals | None = None
    #: its line told (or its telling failed, said in the log)
    told: bool = False
    #: this close's own id, kept by the database with the totals it left when it wrote the
    #: close late (``sy_ledger_close_late``): taken again after its answer was lost, the
    #: close is answered as it was then, and its lines told from that once
    closer: str = field(default_factory=lambda: uuid.uuid4().hex)


#: the cap rows an expiry charged, as it left them (read in its transaction: still locked
#: by it), for each reservation it charged (a free one crosses nothing) in the order of
#: :meth:`TeamCaps.array`: each row's spend as of that reservation's charge, the charges
#: of one write taken in id order (those of a later id on the same row left out), so of
#: one write's reservations exactly one crosses each cap, as of writes one after another
_EXPIRED_TOTALS = (
    "SELECT id, array_agg(cap ORDER BY i) AS caps, array_agg(spent ORDER BY i) AS spent"
    " FROM (SELECT l.id, w.i, u.cap_nusd AS cap, u.spent_nusd + u.unreserved_nusd"
    " - coalesce(sum(l.amount_nusd) OVER (PARTITION BY w.i, w.k, w.d ORDER BY l.id DESC"
    " ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS spent"
    " FROM ledger_reservations l CROSS JOIN LATERAL unnest("
    "ARRAY['session', 'day', 'user_day', 'provider_day'],"
    " ARRAY[l.session, '', l.user_name, l.provider], ARRAY['', l.day, l.day, l.day])"
    " WITH ORDINALITY AS w(s, k, d, i)"
    " JOIN ledger_usage u"
    " ON u.team = l.team AND u.scope = w.s AND u.key = w.k AND u.day = w.d"
    " WHERE l.id = ANY($1) AND l.amount_nusd > 0) x GROUP BY id"
)


async def _expire_with_totals(conn: Conn, team: str) -> tuple[list[Any], dict[str, Any]]:
    """``sy_ledger_expire(team)``'s rows and, read in its transaction, the totals its
    charges left (:data:`_EXPIRED_TOTALS`, by reservation): the function's own answer
    holds none, and a read after its commit would hold other writes that landed
    meanwhile (each writer then found a cap crossed before its own charge, or both did)."""
    async with conn.transaction():
        rows = await conn.fetch("SELECT * FROM sy_ledger_expire($1)", team)
        if not rows:
            return rows, {}
        totals = await conn.fetch(_EXPIRED_TOTALS, [r["r_id"] for r in rows])
    return rows, {t["id"]: t for t in totals}


def _reservation(row: Any, caps: CapTotals = ()) -> Expired:
    """A row of ``sy_ledger_expire(team)``: a reservation it charged, which left ``caps``
    spent past."""
    return Expired(
        caps=caps,
        id=row["r_id"],
        session=row["r_session"],
        run=row["r_run"],
        provider=row["r_provider"],
        role=row["r_role"],
        model=row["r_model"],
        amount_usd=usd(int(row["r_amount"])),
        created=iso(row["r_created"]),
        expires=iso(row["r_expires"]),
    )


class TeamCaps:
    """The policy's caps in nano-dollars, as the team store applies them."""

    __slots__ = ("day", "provider", "session", "user_day")

    def __init__(self, budget: Budget) -> None:
        self.session = round(budget.session_usd * NANO)
        self.day = round(budget.day_usd * NANO)
        self.user_day = None if budget.user_day_usd is None else round(budget.user_day_usd * NANO)
        self.provider = {k: round(v * NANO) for k, v in budget.provider_day_usd.items()}

    def array(self, provider: str) -> list[int | None]:
        """In the order of the reservation's cap rows: session, day, user_day, provider_day."""
        return [self.session, self.day, self.user_day, self.provider.get(provider)]

    def past(
        self,
        provider: str,
        stored: Sequence[int | None] | None,
        spent: Sequence[int] | None,
        cost: int,
    ) -> CapTotals:
        """The caps a write of ``cost`` left spent past, from its cap rows as it left them
        (``sy_ledger_close``'s and ``sy_ledger_record``'s ``caps`` and ``spent``, in the
        order of :meth:`array`; None: it cost nothing): each cap the one a reservation is
        checked on (a shared row's the lower of this policy's and the row's), as the
        snapshot shows it."""
        if not spent or stored is None:
            return ()
        out: list[CapTotal] = []
        # (four each: the write made every row first; never an error after its commit)
        rows = zip(self.array(provider), stored, spent, strict=False)
        for i, (own, row_cap, after) in enumerate(rows):
            cap = own if i == 0 else pg_reports.shared_cap(own, row_cap)
            if cap is not None and after > cap:
                name = _CAP_NAMES[i].format(provider=provider)
                out.append(CapTotal(name, cap, after - cost, after))
        return tuple(out)


#: the caps' names in the audit, in the order of :meth:`TeamCaps.array`
_CAP_NAMES = ("session", "day", "user day", "{provider} day")


class PgBudgetLedger(ClosedOnExit):
    """The same API as :class:`~app.router.ledger.BudgetLedger`, shared by a team."""

    shared = True

    def __init__(
        self,
        pool: asyncpg.Pool,
        url: DatabaseUrl,
        budget: Budget,
        *,
        team: str,
        user: str,
        host: str,
        bus: Bus | None,
        owns_pool: bool,
        probe: postgres.Probe,
    ) -> None:
        self._pool: asyncpg.Pool | None = pool
        self.url = url
        #: asked, after a statement timed out, whether the database is there at all
        self._probe = probe
        self.budget = budget
        self.team = team
        self.user = user
        self.host = host
        # the live meter's snapshots are read and published off the request path
        self._publisher = SnapshotPublisher(bus, self.snapshot)
        #: each session's calls by role, model and provider as last read (a snapshot
        #: adds only the calls written since)
        self._groups = GroupCache()
        self._owns_pool = owns_pool
        self._caps = TeamCaps(budget)
        #: told of the reservations charged by expiry (the session audits them)
        self.on_expired: ExpiredHook | None = None
        self.expiry_check: ExpiryCheck | None = None
        #: told of each close written late (the session audits it)
        self.on_late: LateHook | None = None
        #: the settlements and releases the database could not take when they were made
        #: (it was away when a call ended: the usage known here would be lost, and the
        #: reservation charged at its estimate by its expiry, a billed overrun never
        #: counted), in order, written before any other write here and retried meanwhile
        self._owed: list[_Owed] = []
        self._owed_lock = asyncio.Lock()
        self._paying: asyncio.Task[None] | None = None
        #: set at close: the retries stop after the round under way (never cut mid-way)
        self._stopping = False
        self._wake = asyncio.Event()

    @property
    def where(self) -> str:
        return self.url.display()

    @classmethod
    async def open(
        cls,
        url: DatabaseUrl | str,
        budget: Budget,
        *,
        team: str,
        user: str,
        host: str | None = None,
        clock: Clock | None = None,
        bus: Bus | None = None,
        local_only: bool = False,
        named: frozenset[HostPort] = frozenset(),
        pool: asyncpg.Pool | None = None,
    ) -> PgBudgetLedger:
        """Connect (or share ``pool``), migrate, and return the ledger. ``clock`` is
        accepted for the SQLite ledger's signature: the team ledger reads the database's."""
        del clock
        parsed = parse_database_url(url) if isinstance(url, str) else url
        owns = pool is None
        if pool is None:
            pool = await connect_pool(parsed, local_only=local_only, named=named)
        try:
            async with pool.acquire(timeout=postgres.STATEMENT_TIMEOUT_S) as conn:
                # the reservations it may charge are told in the audit log: a log newer
                # than this Switchyard writes stops it here, before any charge
                from app.audit import pg_schema as audit_schema

                where = parsed.display()
                known = len(audit_schema.MIGRATIONS)
                await refuse_newer(conn, audit_schema.COMPONENT, known, f"team audit log {where}")
                await migrate(conn, COMPONENT, MIGRATIONS, f"team ledger {where}")
                await refuse_team_spelled_otherwise(conn, team, where)
        except _DB_ERRORS as exc:
            if owns:
                await pool.close()
            raise StoreUnavailable(f"team ledger {parsed.display()}: {exc}") from None
        except BaseException:
            if owns:
                await pool.close()
            raise
        return cls(
            pool,
            parsed,
            budget,
            team=team,
            user=user,
            host=host or this_host(),
            bus=bus,
            owns_pool=owns,
            probe=postgres.Probe(parsed, local_only=local_only, named=named),
        )

    async def close(self) -> None:
        if self._paying is not None:
            self._stopping = True
            self._wake.set()
            await asyncio.gather(self._paying, return_exceptions=True)
        if self._pool is not None and self._owed:
            await self._pay()  # (a last try)
            if self._owed:
                log.warning(
                    "team ledger %s: %d settlement(s) or release(s) could not be written "
                    "(the database did not answer); each reservation is charged in full by "
                    "its expiry",
                    self.where,
                    len(self._owed),
                )
        if self._pool is not None:
            await self._publisher.close()  # the meter's last update reads the database
        pool, self._pool = self._pool, None
        if pool is not None and self._owns_pool:
            await pool.close()

    # ── the connection ───────────────────────────────────────────────────────────────────

    async def _with(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """``fn`` on a pooled connection, to its end: a cancel that comes meanwhile is
        raised once it has ended (cut mid-query, the server may have committed it or not,
        and a caller could not tell; a round trip dwarfs the task this costs)."""
        return await finish_then_cancel(self._with_now(fn))

    async def _with_now(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        if self._pool is None:
            raise LedgerError("the budget ledger is closed")
        try:
            async with self._pool.acquire(timeout=postgres.STATEMENT_TIMEOUT_S) as conn:
                return await fn(conn)
        except _DB_ERRORS as exc:
            # (a timeout asks a probe: only here, never on a statement that answered)
            away = _Gone if await postgres.gone_or_silent(exc, self._probe) else _Away
            raise away(f"team ledger {self.where} unavailable: {postgres.why(exc)}") from None

    # ── what the database could not take ─────────────────────────────────────────────────

    def _owe(self, owed: _Owed) -> None:
        owed.since = time.monotonic()
        self._owed.append(owed)
        if self._paying is None or self._paying.done():
            self._paying = asyncio.get_running_loop().create_task(self._pay_later())

    async def _pay_later(self) -> None:
        """Retry what is owed, off every request's path (a request that waited for it
        waited a timeout for each owed close, one after another, while the database did
        not answer: a review)."""
        delay = OWED_FIRST_S
        while self._owed and self._pool is not None and not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            if self._stopping:
                return
            await self._pay()
            delay = min(delay * 2, OWED_MAX_S)

    async def _pay(self) -> None:
        """Write what is owed, in order, while the database answers. Each close's progress
        is kept on it (:class:`_Owed`): a round cut short (the database away again, a
        cancel) resumes where it stopped (a close written is not written again, nor its
        line told again; the row past an expired estimate is the database's to write once)."""
        async with self._owed_lock:
            while self._owed and self._pool is not None:
                owed = self._owed[0]
                try:
                    if owed.closed is None:
                        await self._with(functools.partial(_close_owed, owed=owed))
                    await self._paid(owed)
                except _Away as exc:
                    if owed.closed is None and time.monotonic() - owed.since >= OWED_FOR_S:
                        # (a database that answers and refuses it would be tried for ever)
                        log.warning("team ledger %s: %s let go: %s", self.where, owed, exc)
                        self._owed.pop(0)
                        continue
                    return
                except LedgerError as exc:  # (a close it refuses: nothing to retry)
                    log.warning("team ledger %s: %s not written: %s", self.where, owed, exc)
                self._owed.pop(0)

    async def _paid(self, owed: _Owed) -> None:
        """A close written late: what an expiry charged meanwhile made whole, and told,
        once each however often the round is cut short and resumed (:class:`_Owed`)."""
        assert owed.closed is not None
        row, r = owed.closed  # (r: the reservation's row as it stood)
        if row is None or row["was"] not in ("live", "expired"):
            # never made (a let-go), or closed already (its first try committed; a late
            # close of its own whose answer was lost is answered live: schema v10)
            return
        expired = row["was"] == "expired"
        # the caps this close left spent past, or (expired) its row past the estimate did
        caps: CapTotals = ()
        if not expired:
            caps = self._caps.past(str(row["provider"]), row["caps"], row["spent"], owed.cost)
        elif owed.cost > int(r["amount_nusd"]):
            if owed.excess is None:
                await self._with(functools.partial(self._write_excess, owed=owed))
            caps = owed.excess or ()
        self._publisher.changed(str(r["session"]))
        if owed.told:
            return
        if self.on_late is not None:
            late = LateClose(
                reservation=owed.reservation_id,
                session=r["session"],
                run=r["run"],
                role=r["role"],
                model=r["model"],
                provider=r["provider"],
                status=owed.status,
                outcome=owed.outcome,
                cost_usd=usd(owed.cost),
                expired=expired,
                caps=caps,
            )
            # (its lines to their end: a cancel meanwhile told the first line and not the
            # GR011 one, and the round resumed told the first again)
            await finish_then_cancel(self._tell_late(owed, self.on_late, late))
        owed.told = True

    async def _write_excess(self, conn: Conn, owed: _Owed) -> None:
        """The row past an expired estimate (what the close cost past the amount its
        expiry charged), written by the database once for the reservation; the caps that
        write left spent past kept on ``owed`` here, in the task that wrote it."""
        assert owed.closed is not None
        r = owed.closed[1]
        row = await conn.fetchrow(
            "SELECT * FROM sy_ledger_late_excess($1, $2, $3, $4)",
            owed.reservation_id,
            owed.cost,
            self.user,
            self.host,
        )
        # (None: nothing past the estimate to write; written already: the totals it left)
        if row is None:
            owed.excess = ()
            return
        excess = owed.cost - int(r["amount_nusd"])
        owed.excess = self._caps.past(str(r["provider"]), row["caps"], row["spent"], excess)

    async def _tell_late(self, owed: _Owed, tell: LateHook, late: LateClose) -> None:
        """``late`` told, and marked told on ``owed`` in the task that told it."""
        try:
            await tell(late)
        except Exception as exc:  # (the charge stands; the line is what is missing)
            log.warning("team ledger %s: %s was not audited: %s", self.where, late, exc)
        owed.told = True

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
        amount = nusd(amount_usd, "amount_usd")
        if provider == LOCAL_PROVIDER and amount > 0:
            raise LedgerError(f"local model {model} cannot cost ${amount_usd}: local is free")
        rid = uuid.uuid4().hex
        args = (
            rid,
            self.team,
            self.user,
            self.host,
            session,
            run or "",
            provider,
            role,
            model,
            amount,
            float(self.budget.reservation_ttl_s),
            self._caps.array(provider),
        )
        try:
            row = await self._with(
                lambda c: c.fetchrow(
                    "SELECT * FROM sy_ledger_reserve($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
                    " $11, $12)",
                    *args,
                )
            )
        except asyncio.CancelledError:
            await let_go(self, rid)
            raise
        except _Away:
            # it may have committed with its answer lost: let go once the database answers
            # (its expiry would charge it in full, for a call never made)
            self._owe(_Owed(rid, "released", 0, "cancelled", 0, 0, 0.0))
            raise
        assert row is not None
        try:
            if row["stale"] or row["refused"] is not None:
                # stale ones are charged (in full: the refusal stands) and told, refused or
                # not; the function says "stale" only with a reservation made
                await self.expire_stale()
        except asyncio.CancelledError:
            await let_go(self, rid)
            raise
        except LedgerError as exc:
            # Best effort: the next read expires them. What the database answered stands
            # (a refusal raised by an expiry's failure was taken for the database gone,
            # and database_fallback granted it on this machine's files; a reservation
            # made was then made twice: a review).
            log.warning("expiring stale reservations after a reserve failed: %s", exc)
        if row["refused"] is not None:
            raise self._refusal(row, session, provider, model, amount)
        res = Reservation(
            id=rid,
            session=session,
            run=run or "",
            provider=provider,
            role=role,
            model=model,
            amount_usd=usd(amount),
            created=iso(row["created"]),
            expires=iso(row["expires"]),
        )
        self._publisher.changed(session)
        return res

    async def renew(self, reservation_id: str) -> bool:
        """One TTL more for a live reservation whose call is still in flight (see the
        machine's ledger): another machine expired it while its holder waited."""
        ttl = float(self.budget.reservation_ttl_s)
        done = await self._with(
            lambda c: c.fetchval(
                "UPDATE ledger_reservations SET expires_at = now() + make_interval(secs => $2)"
                " WHERE id = $1 AND status = 'live' RETURNING true",
                reservation_id,
                ttl,
            )
        )
        return bool(done)

    def _refusal(
        self, row: asyncpg.Record, session: str, provider: str, model: str, amount: int
    ) -> CapExceeded:
        scope = str(row["refused"])
        name = {"user_day": f"user:{self.user}", "provider_day": f"provider:{provider}"}
        return CapExceeded(
            cap=name.get(scope, scope),
            limit_usd=usd(int(row["cap"])),
            spent_usd=usd(int(row["spent"])),
            reserved_usd=usd(int(row["reserved"])),
            requested_usd=usd(amount),
            session=session,
            provider=provider,
            model=model,
        )

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
        status: str,
        actual_usd: float,
        tokens_in: int,
        tokens_out: int,
        latency_ms: float,
        outcome: str,
        tokens_cached: int = 0,
    ) -> CapTotals:
        """Settle or release; the caps it left spent past (:meth:`TeamCaps.past`)."""
        cost = nusd(actual_usd, "actual_usd")
        check_tokens(tokens_in, tokens_out, tokens_cached)
        owed = _Owed(
            reservation_id,
            status,
            cost,
            outcome,
            tokens_in,
            tokens_out,
            float(latency_ms),
            tokens_cached=tokens_cached,
        )
        try:
            row, _ = await self._with(lambda c: _close_row(c, owed, looked=False))
        except _Away as exc:
            # the usage is known here: kept and written when the database answers (told to
            # the session then), not lost to an expiry at the estimate
            self._owe(owed)
            # (said as it is: a one-shot command that ends first leaves it to the expiry)
            raise LedgerError(
                f"{exc} (kept: written when it answers, while this process runs; past that,"
                " the reservation is charged in full at its expiry)"
            ) from None
        if row is None:
            raise UnknownReservation(f"unknown reservation {reservation_id}")
        if row["was"] != "live":
            raise ReservationClosed(reservation_id, str(row["was"]))
        self._publisher.changed(str(row["session"]))
        return self._caps.past(str(row["provider"]), row["caps"], row["spent"], cost)

    async def flush(self) -> None:
        """Nothing to do: every write here commits at once."""

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
        """A call made without a reservation; the caps it left spent past."""
        cost = nusd(cost_usd, "cost_usd")
        check_tokens(tokens_in, tokens_out, tokens_cached)
        args = (self.team, self.user, self.host, session, run or "", role, model, provider)
        row = await self._with(
            lambda c: c.fetchrow(
                "SELECT * FROM sy_ledger_record($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
                " $12, $13, $14)",
                *args,
                tokens_in,
                tokens_out,
                tokens_cached,
                float(latency_ms),
                cost,
                outcome,
            )
        )
        self._publisher.changed(session)
        return () if row is None else self._caps.past(provider, row["caps"], row["spent"], cost)

    # ── reading ──────────────────────────────────────────────────────────────────────────

    async def expire_stale(self) -> int:
        """Charge every reservation of this team past its TTL (by the database's clock) in
        full, and tell ``on_expired`` of them (another team's are its own to charge and
        audit). A role
        that may only read (an auditor's) leaves that to the next writer: its reports
        show such a reservation as still reserved, as does a report whose audit log cannot
        be opened (``expiry_check``: asked here at a report's first expiry, stale or not,
        as the database's function charges what it finds in one statement)."""
        if await expiry_held(self):
            return 0

        telling = self.on_expired is not None

        async def expire(conn: Conn) -> tuple[int, list[Expired]]:
            totals: dict[str, Any] = {}
            try:
                if telling:  # (the caps each charge crossed are for its lines)
                    rows, totals = await _expire_with_totals(conn, self.team)
                else:
                    rows = await conn.fetch("SELECT * FROM sy_ledger_expire($1)", self.team)
                # and the lines another process owes still, past their grace (it may be
                # telling them now): taken for a while, told here, let go once written
                owed = await conn.fetch(_OWED_LINES, self.team, UNTOLD_GRACE_S) if telling else []
            except asyncpg.InsufficientPrivilegeError:
                return 0, []
            charged = [_reservation(r, self._charged(r, totals.get(r["r_id"]))) for r in rows]
            # (another process's charge, told again: its totals were not kept)
            return len(rows), [*charged, *(_reservation(r) for r in owed)]

        charged, expired = await self._with(expire)
        if await tell_expired(self.on_expired, expired, self.where):
            ids = [r.id for r in expired]
            try:
                await self._with(
                    lambda c: c.execute(
                        "DELETE FROM ledger_untold WHERE reservation_id = ANY($1)", ids
                    )
                )
            except LedgerError as exc:  # (told again later: a line twice, not none)
                log.warning("team ledger %s: expiries told, not noted: %s", self.where, exc)
        return charged

    def _charged(self, row: Any, totals: Any) -> CapTotals:
        """The caps an expiry's charge of ``row``'s reservation left spent past, from its
        ``totals`` (:data:`_EXPIRED_TOTALS`; None: it cost nothing)."""
        if totals is None:
            return ()
        return self._caps.past(row["r_provider"], totals["caps"], totals["spent"], row["r_amount"])

    async def left_usd(self, session: str, provider: str) -> float:
        return (await self.left_usd_many(session, (provider,)))[provider]

    async def left_usd_many(self, session: str, providers: Iterable[str]) -> dict[str, float]:
        wanted = tuple(providers)
        rows = await self._with(
            lambda c: pg_reports.usage_rows(c, self.team, session, self.user, wanted)
        )
        return pg_reports.left_usd(rows, self._caps, wanted)

    async def snapshot(self, session: str) -> BudgetSnapshot:
        await self.expire_stale()
        return await self._with(
            lambda c: pg_reports.snapshot(
                c, self.team, self.user, session, self._caps, self._groups
            )
        )

    async def report(self, session: str | None = None, days: int = 7) -> dict[str, Any]:
        if days < 1:
            raise LedgerError(f"days must be >= 1, got {days}")
        await self.expire_stale()
        snap = await self.snapshot(session or "")
        report = await self._with(
            lambda c: pg_reports.report(c, self.team, session, days, snap, self.budget)
        )
        report.update(team=self.team, user=self.user, ledger_db=self.where)
        return report


async def _close_owed(conn: Conn, owed: _Owed) -> None:
    """:func:`_close_row` for a close written late, kept on ``owed`` as it answers (in
    the task that ran it: a cancel of the round waiting for it does not lose it)."""
    owed.closed = await _close_row(conn, owed)


#: a close made at once, and one written late: the database keeps the latter's totals
#: for its ``closer``, and answers a close taken again after its answer was lost with them
#: (``was`` live, as the first time; schema v10), so its lines are told, once
_CLOSE = "SELECT * FROM sy_ledger_close($1, $2, $3, $4, $5, $6, $7, $8)"
_CLOSE_LATE = "SELECT * FROM sy_ledger_close_late($9, $1, $2, $3, $4, $5, $6, $7, $8)"


async def _close_row(conn: Conn, owed: _Owed, *, looked: bool = True) -> tuple[Any, Any]:
    """``sy_ledger_close`` for ``owed``: its row (None: no such reservation) and, when
    ``looked`` (a close written late: ``sy_ledger_close_late``), the reservation's row as
    it stood before (its amount, session, run, role, model and provider: what a close
    written late is told with)."""
    before = None
    if looked:
        before = await conn.fetchrow(
            "SELECT amount_nusd, session, run, role, model, provider FROM ledger_reservations"
            " WHERE id = $1",
            owed.reservation_id,
        )
    late = (owed.closer,) if looked else ()
    row = await conn.fetchrow(
        _CLOSE_LATE if looked else _CLOSE,
        owed.reservation_id,
        owed.status,
        owed.cost,
        owed.outcome,
        owed.tokens_in,
        owed.tokens_out,
        owed.tokens_cached,
        owed.latency_ms,
        *late,
    )
    return row, before
