"""What the team ledger reads back: the totals the caps are checked against, a session's
snapshot (with the team's and the user's day) and the spend report. Reads only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from app.clock import iso
from app.policy.schema import Budget
from app.router.ledger import reports
from app.router.ledger.call_groups import EMPTY, GroupCache, Groups
from app.router.ledger.money import usd
from app.router.ledger.records import BudgetSnapshot, CapUsage, usage
from app.store.postgres import Conn

if TYPE_CHECKING:
    from app.router.ledger.pg_ledger import TeamCaps

TODAY = "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
#: (scope, key) → (spent incl. unreserved, reserved, the row's cap or None), nano-dollars
Usage = dict[tuple[str, str], tuple[int, int, int | None]]
_NONE: tuple[int, int, int | None] = (0, 0, None)


def shared_cap(own: int | None, stored: int | None) -> int | None:
    """A shared cap a reservation is checked on (ledger schema v3): the lower of this
    policy's and the lowest a member's policy set today; None when neither caps it. (A
    session's cap is its own policy's alone.)"""
    if own is None or stored is None:
        return own if stored is None else stored
    return min(own, stored)


async def usage_rows(
    conn: Conn, team: str, session: str, user: str, providers: Sequence[str] | None
) -> Usage:
    """Today's rows (the database's day) for the session, the team, the user and
    ``providers`` (None: every provider)."""
    rows = await conn.fetch(
        "SELECT scope, key, spent_nusd + unreserved_nusd AS spent, reserved_nusd AS reserved,"
        " cap_nusd AS cap"
        " FROM ledger_usage WHERE team = $1 AND ("
        " (scope = 'session' AND key = $2 AND day = '')"
        f" OR (day = {TODAY} AND (scope = 'day' OR (scope = 'user_day' AND key = $3)"
        " OR (scope = 'provider_day' AND ($4::text[] IS NULL OR key = ANY ($4))))))",
        team,
        session,
        user,
        None if providers is None else list(providers),
    )
    return {
        (r["scope"], r["key"]): (
            int(r["spent"]),
            int(r["reserved"]),
            None if r["cap"] is None else int(r["cap"]),
        )
        for r in rows
    }


def left_usd(rows: Usage, caps: TeamCaps, providers: Sequence[str]) -> dict[str, float]:
    """Per provider: the smallest remaining of the caps a reservation would be checked on."""

    def left(own: int | None, key: tuple[str, str]) -> int | None:
        spent, reserved, stored = rows.get(key, _NONE)
        cap = own if key[0] == "session" else shared_cap(own, stored)
        return None if cap is None else cap - spent - reserved

    base = [
        x
        for x in (
            left(caps.session, ("session", _session_key(rows))),
            left(caps.day, ("day", "")),
            left(caps.user_day, ("user_day", _user_key(rows))),
        )
        if x is not None
    ]
    out: dict[str, float] = {}
    for provider in providers:
        p = left(caps.provider.get(provider), ("provider_day", provider))
        out[provider] = usd(max(0, min([*base, *([p] if p is not None else [])])))
    return out


def _session_key(rows: Usage) -> str:
    return next((k for s, k in rows if s == "session"), "")


def _user_key(rows: Usage) -> str:
    return next((k for s, k in rows if s == "user_day"), "")


#: the session's calls summed per group and by whether the transaction that wrote them
#: had ended when this read began (below its snapshot's xmin): all of them, or those of
#: transactions from a point on (a range of ledger_calls_session_tx). A row from before
#: schema v6 has no ``tx``: it was written before any snapshot that reads it.
_GROUPS = (
    "SELECT role, model, provider, sum(cost_nusd) AS cost, count(*) AS calls,"
    f" {reports.NOT_OK}, tx IS NULL OR tx < $2 AS ended FROM ledger_calls"
    " WHERE session = $1{since} GROUP BY role, model, provider, ended"
)
_GROUPS_ALL = _GROUPS.format(since="")
_GROUPS_SINCE = _GROUPS.format(since=" AND tx >= $3")


async def call_groups(conn: Conn, session: str, xmin: int, cache: GroupCache) -> Groups:
    """``session``'s calls by role, model and provider, in the read transaction the caller
    holds (``xmin``: its snapshot's): those ``cache`` holds, and those of transactions
    from its point on (see :mod:`.call_groups`).

    Ids would not do as the point: a sequence hands them out before commit, so a call
    with a lower id than one read can still commit after. Each row names the
    transaction that wrote it instead (``tx``): one below this snapshot's xmin has ended,
    so what it wrote is here for good (or never will be); those calls are cached, up to
    that xmin. The calls of later transactions that this read sees are counted, not
    cached: one still running may commit more behind them. A point held past ``xmin``
    came from a newer read (another pooled connection): not used here."""
    held = cache.get(session)
    if held is not None and held[0] <= xmin:
        since, base = held
        rows = await conn.fetch(_GROUPS_SINCE, session, xmin, since)
    else:
        base, rows = EMPTY, await conn.fetch(_GROUPS_ALL, session, xmin)
    ended = base.plus(r[:6] for r in rows if r["ended"])
    cache.put(session, xmin, ended)
    return ended.plus(r[:6] for r in rows if not r["ended"])


async def snapshot(
    conn: Conn, team: str, user: str, session: str, caps: TeamCaps, cache: GroupCache
) -> BudgetSnapshot:
    """``session``'s budget with the team's day and the user's, from one read snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        # (the first statement: the snapshot's xmin is that of every read that follows)
        now = await conn.fetchrow(
            f"SELECT {TODAY} AS day, now() AS ts, pg_snapshot_xmin(pg_current_snapshot()) AS xmin"
        )
        assert now is not None
        rows = await usage_rows(conn, team, session, user, None)
        groups = await call_groups(conn, session, int(now["xmin"]), cache)

    def used(own: int | None, key: tuple[str, str]) -> CapUsage:
        spent, reserved, stored = rows.get(key, _NONE)
        return usage(own if key[0] == "session" else shared_cap(own, stored), spent, reserved)

    s_res = rows.get(("session", session), _NONE)[1]
    active = {k for (scope, k), (sp, rs, _) in rows.items() if scope == "provider_day" and sp + rs}
    providers = sorted(set(caps.provider) | active)
    return BudgetSnapshot(
        session=session,
        day=str(now["day"]),
        ts=iso(now["ts"]),
        per_session=used(caps.session, ("session", session)),
        per_day=used(caps.day, ("day", "")),
        per_provider={p: used(caps.provider.get(p), ("provider_day", p)) for p in providers},
        reserved_usd=usd(s_res),
        calls=groups.calls,
        failed=groups.failed,
        by_role=groups.by(0),
        by_model=groups.by(1),
        by_provider=groups.by(2),
        team=team,
        user=user,
        per_user=used(caps.user_day, ("user_day", user)),
    )


async def report(
    conn: Conn,
    team: str,
    session: str | None,
    days: int,
    snap: BudgetSnapshot,
    budget: Budget,
) -> dict[str, Any]:
    """The report ``switchyard budget`` prints, over the team's calls (or one session's),
    with spend by user besides."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        span = await conn.fetchrow(
            f"SELECT {TODAY} AS until, to_char((now() AT TIME ZONE 'UTC')::date - $1::int,"
            " 'YYYY-MM-DD') AS since",
            days - 1,
        )
        assert span is not None
        since, until = str(span["since"]), str(span["until"])
        where = "team = $1 AND day >= $2 AND day <= $3" + (" AND session = $4" if session else "")
        params: tuple[Any, ...] = (team, since, until) + ((session,) if session else ())
        groups: dict[str, list[dict[str, Any]]] = {}
        for col in ("role", "model", "provider", "day", "user_name"):
            order = "day" if col == "day" else f"sum(cost_nusd) DESC, {col}"
            rows = await conn.fetch(
                f"SELECT {col} AS key, sum(cost_nusd) AS cost, count(*) AS calls,"
                f" {reports.NOT_OK}, {reports.TOKEN_SUMS}"
                f" FROM ledger_calls WHERE {where} GROUP BY {col} ORDER BY {order}",
                *params,
            )
            name = "user" if col == "user_name" else col
            groups[name] = [{name: r["key"], **reports.totals(r)} for r in rows]
        total = await conn.fetchrow(
            f"SELECT sum(cost_nusd) AS cost, count(*) AS calls, {reports.NOT_OK},"
            f" {reports.TOKEN_SUMS} FROM ledger_calls WHERE {where}",
            *params,
        )
        res_where = "team = $1 AND status = 'live'" + (" AND session = $2" if session else "")
        in_flight = await conn.fetchrow(
            f"SELECT count(*), sum(amount_nusd) FROM ledger_reservations WHERE {res_where}",
            *((team, session) if session else (team,)),
        )
    rows_ = reports.ReportRows(groups, total, in_flight)
    out = reports.report(rows_, snap, budget, session=session, days=days, since=since, until=until)
    out["by_user"] = groups["user"]
    out["today"]["user"] = snap.per_user.model_dump() if snap.per_user else None
    return out
