"""Where a session's ledger and audit log live: a machine's SQLite files (the default),
or the team's PostgreSQL when ``SWITCHYARD_DATABASE_URL`` (or ``database_url`` in the
config file) says so (docs/team.md).

Bad input never turns into a silent SQLite: a malformed URL is a usage error (exit 2),
an unreachable database a clear failure (exit 1), and a database that local_only forbids
refuses the session (exit 2). Only ``database_fallback = true`` opens the SQLite files
instead, and the session's first audit line says so; with it, a database that stops
answering mid-run moves the session there too, audited (:mod:`app.router.store_fallback`).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.audit.base import AuditBase
from app.audit.log import AuditLog
from app.bus import Bus
from app.clock import Clock, SystemClock
from app.config import Settings
from app.dollars import dollars
from app.errors import SwitchyardError
from app.hosts import HostPort
from app.paths import ensure_dir
from app.policy.schema import Budget
from app.router.ledger import BudgetLedger
from app.router.ledger.api import ExpiredHook, LateHook, Ledger
from app.router.ledger.records import Expired, LateClose, crossed_by, crossed_line
from app.router.store_fallback import FallbackAudit, FallbackLedger, StoreFallback
from app.store.errors import StoreUnavailable
from app.store.postgres import connect_pool, this_host
from app.store.url import DatabaseUrl, parse_database_url

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "Stores",
    "database_url",
    "open_audit",
    "open_ledger",
    "open_stores",
    "store_privacy",
]


def database_url(settings: Settings) -> DatabaseUrl | None:
    """The team database the settings name (checked: exit 2 when malformed), or None."""
    raw = (settings.database_url or "").strip()
    return parse_database_url(raw) if raw else None


def store_privacy(settings: Settings) -> dict[str, Any]:
    """``local_only`` and ``named`` for a command that opens a store without a session:
    the policy is read only when a team database is configured (GR-009 applies to it)."""
    if database_url(settings) is None:
        return {}
    from app.backends.local_only import effective_local_only
    from app.policy import load_policy

    policy = load_policy(settings.policy).policy
    return {
        "local_only": effective_local_only(policy, settings),
        "named": policy.named_local_hosts(),
    }


@dataclass
class Stores:
    audit: AuditBase
    ledger: Ledger
    #: the team database in use, or None (SQLite files in data_dir)
    url: DatabaseUrl | None
    #: why the SQLite files are used although a database was configured (database_fallback)
    fell_back: str | None = None


def audit_expiries(audit: AuditBase) -> ExpiredHook:
    """The ledger's ``on_expired``: one ``budget`` line per reservation charged because its
    TTL passed unsettled, in the session and run that made it (whichever process finds
    it), so that the audit's charges add up to the ledger's; and after it the GR011 line
    of a charge that carried the spend past a cap, as a settlement's says it."""

    async def audit_them(expired: Sequence[Expired]) -> None:
        for r in expired:
            # the charge and its crossing as one write (one transaction on the team's
            # store): appended one by one, a failure between them lost the GR011 line
            # (told again later from the ledger's notes, which keep no totals: a review)
            lines: list[dict[str, Any]] = [
                {
                    "kind": "budget",
                    "session": r.session,
                    "run": r.run or None,
                    "role": r.role,
                    "to": r.model,
                    "reason_codes": ["RESERVATION_EXPIRED", "SETTLED_AT_ESTIMATE"],
                    "values": {
                        "reservation": r.id,
                        "provider": r.provider,
                        "cost_usd": r.amount_usd,
                        "expired": r.expires,
                    },
                    "detail": f"{r.model}: reservation {r.id} (session {r.session}) passed "
                    f"its TTL unsettled: charged in full, {dollars(r.amount_usd)} (its process "
                    "may have made the call and died)",
                }
            ]
            if crossed := crossed_by(r.caps):
                why = "was charged its reservation in full at its expiry"
                lines.append(
                    {
                        "kind": "budget",
                        "session": r.session,
                        "run": r.run or None,
                        "role": r.role,
                        **crossed_line(r.model, crossed, r.amount_usd, why),
                    }
                )
            await audit.append_many(lines)

    return audit_them


def audit_late(audit: AuditBase) -> LateHook:
    """The ledger's ``on_late``: a ``budget`` line for a settlement or release the team's
    database could not take when its call ended, written once it answered (the call's own
    line went with the request's error; this one says what the call cost)."""

    async def audit_it(late: LateClose) -> None:
        verb = late.status  # ("settled" or "released")
        # one write, as an expiry's: a team log that failed between the two lines had the
        # whole close told again in this machine's log (_late_where_it_can; a review)
        lines: list[dict[str, Any]] = [
            {
                "kind": "budget",
                "session": late.session,
                "run": late.run or None,
                "role": late.role,
                "to": late.model,
                "reason_codes": [
                    f"{verb.upper()}_LATE",
                    *(["RESERVATION_EXPIRED"] if late.expired else []),
                ],
                "values": {
                    "reservation": late.reservation,
                    "provider": late.provider,
                    "cost_usd": late.cost_usd,
                    "outcome": late.outcome,
                    **({"reservation_expired": True} if late.expired else {}),
                },
                "detail": f"{late.model}: reservation {late.reservation} {verb} late at "
                f"{dollars(late.cost_usd)}: the team database did not answer when its call "
                "ended"
                + (" (charged by its expiry meanwhile; the rest apart)" if late.expired else ""),
            }
        ]
        if crossed := crossed_by(late.caps):
            why = f"was {verb} late" + (", past its reservation's expiry" if late.expired else "")
            lines.append(
                {
                    "kind": "budget",
                    "session": late.session,
                    "run": late.run or None,
                    "role": late.role,
                    **crossed_line(late.model, crossed, late.cost_usd, why),
                }
            )
        await audit.append_many(lines)

    return audit_it


def _audit_on_demand(
    settings: Settings, local_only: bool, named: frozenset[HostPort]
) -> ExpiredHook:
    """``on_expired`` for a ledger opened alone (``budget``, ``route explain``): the audit
    log is opened only when a reservation was charged, for its lines."""

    async def audit_them(expired: Sequence[Expired]) -> None:
        audit = await open_audit(settings, local_only=local_only, named=named)
        try:
            await audit_expiries(audit)(expired)
        finally:
            await audit.close()

    return audit_them


async def open_ledger(
    settings: Settings,
    budget: Budget,
    *,
    clock: Clock | None = None,
    bus: Bus | None = None,
    local_only: bool = False,
    named: frozenset[HostPort] = frozenset(),
    pool: asyncpg.Pool | None = None,
    alone: bool = True,
) -> Ledger:
    """The ledger the settings name (the caller closes it). ``alone``: opened without its
    session's audit log (a report): it charges an expired reservation only when the
    audit log opens, for the line (it charged them with no line, which nothing wrote
    later: an audit); asked when one is stale (on the team store, at its first expiry)."""
    url = database_url(settings)
    ledger: Ledger
    if url is None:
        ensure_dir(settings.ledger_db.parent)
        ledger = await BudgetLedger.open(settings.ledger_db, budget, clock=clock, bus=bus)
    else:
        from app.router.ledger.pg_ledger import PgBudgetLedger

        ledger = await PgBudgetLedger.open(
            url,
            budget,
            team=settings.team,
            user=settings.user,
            clock=clock,
            bus=bus,
            local_only=local_only,
            named=named,
            pool=pool,
        )
    ledger.on_expired = _audit_on_demand(settings, local_only, named)
    if alone:

        async def audit_opens() -> str | None:
            try:
                probe = await open_audit(settings, local_only=local_only, named=named)
            except (SwitchyardError, OSError) as exc:
                return f"the audit log cannot be opened ({exc})"
            await probe.close()
            return None

        ledger.expiry_check = audit_opens
    return ledger


async def open_audit(
    settings: Settings,
    *,
    clock: Clock | None = None,
    bus: Bus | None = None,
    policy_version: str | None = None,
    local_only: bool = False,
    named: frozenset[HostPort] = frozenset(),
    pool: asyncpg.Pool | None = None,
    chain: str | None = None,
) -> AuditBase:
    """The audit log the settings name (the caller closes it); ``chain``: read an existing
    chain of the team's instead of starting this instance's."""
    url = database_url(settings)
    if url is None:
        ensure_dir(settings.audit_db.parent)
        return await AuditLog.open(
            settings.audit_db, clock=clock, bus=bus, policy_version=policy_version
        )
    from app.audit.pg_log import PgAuditLog

    return await PgAuditLog.open(
        url,
        team=settings.team,
        user=settings.user,
        clock=clock,
        bus=bus,
        policy_version=policy_version,
        local_only=local_only,
        named=named,
        pool=pool,
        chain=chain,
    )


@asynccontextmanager
async def open_stores(
    settings: Settings,
    budget: Budget,
    *,
    session: str,
    policy_version: str,
    local_only: bool,
    named: frozenset[HostPort],
    clock: Clock | None = None,
    bus: Bus | None = None,
) -> AsyncIterator[Stores]:
    """The session's audit log and ledger, on one connection pool when shared."""
    clock = clock or SystemClock()
    url = database_url(settings)  # malformed: exit 2, before anything else
    pool: asyncpg.Pool | None = None
    fell_back: str | None = None
    if url is not None:
        try:
            pool = await connect_pool(url, local_only=local_only, named=named)
        except StoreUnavailable as exc:
            if not settings.database_fallback:
                raise
            fell_back, url = str(exc), None
    chosen = settings if url is not None else settings.model_copy(update={"database_url": None})
    common: dict[str, Any] = {"local_only": local_only, "named": named, "pool": pool}
    try:
        audit = await open_audit(
            chosen, clock=clock, bus=bus, policy_version=policy_version, **common
        )
        try:
            ledger = await open_ledger(chosen, budget, clock=clock, bus=bus, alone=False, **common)
        except BaseException:
            await audit.close()
            raise
        ledger.on_expired = audit_expiries(audit)
        ledger.on_late = audit_late(audit)
        if url is not None and settings.database_fallback:
            # mid-run too: this machine's files once the database stops answering
            fallback = StoreFallback(
                audit,
                ledger,
                session=session,
                database=url.display(),
                clock=clock,
                open_local=lambda: _open_local(settings, budget, clock, bus, policy_version),
            )
            ledger.on_late = _late_where_it_can(fallback)
            audit, ledger = FallbackAudit(fallback), FallbackLedger(fallback)
    except BaseException:
        if pool is not None:
            await pool.close()
        raise
    try:
        if fell_back is not None:
            await audit.append(
                "degradation",
                session=session,
                reason_codes=["GR005_STORE_FALLBACK"],
                values={"store": "sqlite", "database": settings.database_url and _shown(settings)},
                detail=f"{fell_back}; using this machine's SQLite files as database_fallback asks"
                " (no team caps, no team audit)",
            )
        elif url is not None:
            await audit.append(
                "run",
                session=session,
                reason_codes=["TEAM_STORE"],
                values={"database": url.display(), "user": settings.user, "host": this_host()},
                detail=f"team store {url.display()} (team {settings.team}, user {settings.user})",
            )
        yield Stores(audit=audit, ledger=ledger, url=url, fell_back=fell_back)
    finally:
        try:
            await ledger.close()
            await audit.close()
        finally:
            if pool is not None:
                await pool.close()


async def _open_local(
    settings: Settings,
    budget: Budget,
    clock: Clock,
    bus: Bus | None,
    policy_version: str,
) -> tuple[AuditBase, Ledger]:
    """This machine's audit log and ledger, for a session whose team database stopped
    answering (database_fallback), wired as :func:`open_stores` wires them."""
    local = settings.model_copy(update={"database_url": None})
    audit = await open_audit(local, clock=clock, bus=bus, policy_version=policy_version)
    try:
        ledger = await open_ledger(local, budget, clock=clock, bus=bus, alone=False)
    except BaseException:
        await audit.close()
        raise
    ledger.on_expired = audit_expiries(audit)
    ledger.on_late = audit_late(audit)
    return audit, ledger


def _late_where_it_can(fallback: StoreFallback) -> LateHook:
    """The team ledger's ``on_late`` under database_fallback: a close written late there
    is told in the team's audit log, beside it (the team's audit adds up to its ledger),
    even once the session has switched; in this machine's log when the team's does not
    take it."""
    team = audit_late(fallback.team_audit)

    async def tell(late: LateClose) -> None:
        try:
            await team(late)
        except StoreUnavailable:
            if fallback.local is None:
                raise
            await audit_late(fallback.local[0])(late)

    return tell


def read_fallback(settings: Settings, exc: StoreUnavailable) -> Settings:
    """For a command that only reads (``budget``, ``audit tail``…): this machine's SQLite
    files when the team database is unreachable and ``database_fallback`` is on, as the
    sessions that wrote them fell back (they could not be read at all); said on stderr.
    Otherwise the failure stands."""
    if not settings.database_fallback:
        raise exc
    print(
        f"switchyard: {exc}; reading this machine's SQLite files instead, as "
        "database_fallback asks (what sessions wrote there while the database was away)",
        file=sys.stderr,
    )
    return settings.model_copy(update={"database_url": None})


def _shown(settings: Settings) -> str:
    url = database_url(settings)
    return url.display() if url is not None else ""
