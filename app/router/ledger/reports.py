"""What the ledger reads back for people: a session's snapshot (the TUI's budget pane, the
bus) and the spend report of ``switchyard budget``. Reads only; expiry is the caller's."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any, NamedTuple

from app.clock import iso
from app.policy.schema import Budget
from app.router.ledger.call_groups import EMPTY, GroupCache, Groups
from app.router.ledger.caps import Caps, sums
from app.router.ledger.money import usd, utc_day
from app.router.ledger.records import BudgetSnapshot, usage

#: how many of an aggregate's calls did not complete (a failed call is released at $0, a
#: cancelled or broken one settled at its estimate): `budget` counted a cloud host that
#: never answered as that many calls, with no word that none of them came through
NOT_OK = "SUM(CASE WHEN outcome = 'ok' THEN 0 ELSE 1 END) AS failed"


def totals(row: Any) -> dict[str, Any]:
    """Cost, calls and tokens of one aggregate row (an sqlite3.Row or an asyncpg Record)."""
    if row is None:
        return {
            "cost_usd": 0.0,
            "calls": 0,
            "failed": 0,
            "tokens_in": 0,
            "tokens_cached": 0,
            "tokens_out": 0,
        }
    return {
        "cost_usd": usd(row["cost"] or 0),
        "calls": int(row["calls"] or 0),
        "failed": int(row["failed"] or 0),
        "tokens_in": int(row["tin"] or 0),
        "tokens_cached": int(row["tcached"] or 0),
        "tokens_out": int(row["tout"] or 0),
    }


#: an aggregate's tokens: in (the cached ones among them) and out, as :func:`totals` reads
TOKEN_SUMS = "SUM(tokens_in) AS tin, SUM(tokens_cached) AS tcached, SUM(tokens_out) AS tout"


#: the session's calls past an id, summed per group (a range of the calls_session index,
#: which holds each row's id after the session)
_GROUPS_SINCE = (
    f"SELECT role, model, provider, SUM(cost_nusd), COUNT(*), {NOT_OK} FROM calls"
    " WHERE session = ? AND id > ? GROUP BY role, model, provider"
)


def call_groups(db: sqlite3.Connection, session: str, spent: int, cache: GroupCache) -> Groups:
    """``session``'s calls by role, model and provider, in the read transaction the caller
    holds: those ``cache`` holds, and those written since (see :mod:`.call_groups`).

    A call's id is the file's write order: SQLite has one writer at a time, and
    AUTOINCREMENT hands out an id above every one committed, so a call this read cannot
    see will have an id above the highest it sees (the point cached). A point held past
    that came from a newer read (the meter's connection and the ledger's each read): not
    used here. ``spent`` is the session's running total (kept by triggers, whoever
    writes): a call changed or deleted by hand leaves the sums short of it, and they are
    then read in full."""
    top = int(db.execute("SELECT MAX(id) FROM calls").fetchone()[0] or 0)
    held = cache.get(session)
    since, base = held if held is not None and held[0] <= top else (0, EMPTY)
    groups = base.plus(db.execute(_GROUPS_SINCE, (session, since)))
    if since and groups.cost != spent:
        groups = EMPTY.plus(db.execute(_GROUPS_SINCE, (session, 0)))
    cache.put(session, top, groups)
    return groups


def snapshot(
    db: sqlite3.Connection, session: str, now: datetime, caps: Caps, cache: GroupCache
) -> BudgetSnapshot:
    """``session``'s budget at ``now``, in one read transaction the caller holds."""
    day = utc_day(now)
    u = sums(db, session, day)
    # The day's spend and reservations per provider are running totals (the same sums
    # the triggers keep for the provider-day caps): no scan of the day's calls.
    prov_spent = {p: spent for p, (spent, _) in u.per_provider.items()}
    prov_res = {p: res for p, (_, res) in u.per_provider.items() if res}
    groups = call_groups(db, session, u.s_spent, cache)
    providers = sorted(set(caps.provider) | set(prov_spent) | set(prov_res))
    return BudgetSnapshot(
        session=session,
        day=day,
        ts=iso(now),
        per_session=usage(caps.session, u.s_spent, u.s_res),
        per_day=usage(caps.day, u.d_spent, u.d_res),
        per_provider={
            p: usage(caps.provider.get(p), prov_spent.get(p, 0), prov_res.get(p, 0))
            for p in providers
        },
        reserved_usd=usd(u.s_res),
        calls=groups.calls,
        failed=groups.failed,
        by_role=groups.by(0),
        by_model=groups.by(1),
        by_provider=groups.by(2),
    )


class ReportRows(NamedTuple):
    groups: dict[str, list[dict[str, Any]]]  # by role, model, provider and day
    total: Any  # one aggregate row (sqlite3.Row, asyncpg Record) or None
    in_flight: Any  # live reservations: count, sum


def report_rows(db: sqlite3.Connection, session: str | None, since: str, until: str) -> ReportRows:
    """Calls from ``since`` to ``until`` (UTC days, inclusive), grouped, and the live
    reservations; all of them or ``session``'s. One read transaction the caller holds."""
    where = "day >= ? AND day <= ?" + (" AND session = ?" if session is not None else "")
    params: tuple[Any, ...] = (since, until) + ((session,) if session is not None else ())
    groups: dict[str, list[dict[str, Any]]] = {}
    for col in ("role", "model", "provider", "day"):
        order = "day" if col == "day" else "SUM(cost_nusd) DESC, " + col
        rows = db.execute(
            f"SELECT {col} AS key, SUM(cost_nusd) AS cost, COUNT(*) AS calls, {NOT_OK},"
            f" {TOKEN_SUMS} FROM calls WHERE {where} GROUP BY {col} ORDER BY {order}",
            params,
        ).fetchall()
        groups[col] = [{col: r["key"], **totals(r)} for r in rows]
    total = db.execute(
        f"SELECT SUM(cost_nusd) AS cost, COUNT(*) AS calls, {NOT_OK}, {TOKEN_SUMS}"
        f" FROM calls WHERE {where}",
        params,
    ).fetchone()
    res_where = "status = 'live'" + (" AND session = ?" if session is not None else "")
    in_flight = db.execute(
        f"SELECT COUNT(*), SUM(amount_nusd) FROM reservations WHERE {res_where}",
        (session,) if session is not None else (),
    ).fetchone()
    return ReportRows(groups, total, in_flight)


def report(
    rows: ReportRows,
    snap: BudgetSnapshot,
    budget: Budget,
    *,
    session: str | None,
    days: int,
    since: str,
    until: str,
) -> dict[str, Any]:
    """The report ``switchyard budget`` prints (its ``--json`` keys are stable)."""
    groups, total, in_flight = rows
    return {
        "session": session,
        "days": days,
        "since": since,
        "until": until,
        "total": totals(total),
        "by_role": groups["role"],
        "by_model": groups["model"],
        "by_provider": groups["provider"],
        "by_day": groups["day"],
        "in_flight": {
            "reservations": int(in_flight[0]) if in_flight else 0,
            "reserved_usd": usd(in_flight[1] or 0) if in_flight else 0.0,
        },
        "caps": {
            "session_usd": budget.session_usd,
            "day_usd": budget.day_usd,
            "provider_day_usd": dict(sorted(budget.provider_day_usd.items())),
            "reservation_ttl_s": budget.reservation_ttl_s,
            "user_day_usd": budget.user_day_usd,
        },
        "today": {
            "day": snap.day,
            **snap.per_day.model_dump(),
            "providers": {k: v.model_dump() for k, v in snap.per_provider.items()},
        },
        "session_budget": snap.per_session.model_dump() if session is not None else None,
    }
