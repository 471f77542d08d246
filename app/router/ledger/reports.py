"""What the ledger reads back for people: a session's snapshot (the TUI's budget pane, the
bus) and the spend report of ``switchyard budget``. Reads only; expiry is the caller's."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any, NamedTuple

from app.clock import iso
from app.policy.schema import Budget
from app.router.ledger.caps import Caps, sums
from app.router.ledger.money import usd, utc_day
from app.router.ledger.records import BudgetSnapshot, usage


def _pairs(db: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[tuple[str, int]]:
    return [(str(r[0]), int(r[1] or 0)) for r in db.execute(sql, params).fetchall()]


#: how many of an aggregate's calls did not complete (a failed call is released at $0, a
#: cancelled or broken one settled at its estimate): `budget` counted a cloud host that
#: never answered as that many calls, with no word that none of them came through
NOT_OK = "SUM(CASE WHEN outcome = 'ok' THEN 0 ELSE 1 END) AS failed"


def totals(row: Any) -> dict[str, Any]:
    """Cost, calls and tokens of one aggregate row (an sqlite3.Row or an asyncpg Record)."""
    if row is None:
        return {"cost_usd": 0.0, "calls": 0, "failed": 0, "tokens_in": 0, "tokens_out": 0}
    return {
        "cost_usd": usd(row["cost"] or 0),
        "calls": int(row["calls"] or 0),
        "failed": int(row["failed"] or 0),
        "tokens_in": int(row["tin"] or 0),
        "tokens_out": int(row["tout"] or 0),
    }


def snapshot(db: sqlite3.Connection, session: str, now: datetime, caps: Caps) -> BudgetSnapshot:
    """``session``'s budget at ``now``, in one read transaction the caller holds."""
    day = utc_day(now)
    u = sums(db, session, day)
    # The day's spend and reservations per provider are running totals (the same sums
    # the triggers keep for the provider-day caps): no scan of the day's calls.
    prov_spent = {p: spent for p, (spent, _) in u.per_provider.items()}
    prov_res = {p: res for p, (_, res) in u.per_provider.items() if res}
    by: dict[str, dict[str, float]] = {}
    for col in ("role", "model", "provider"):
        rows = _pairs(
            db,
            f"SELECT {col}, SUM(cost_nusd) FROM calls WHERE session = ?"
            f" GROUP BY {col} HAVING SUM(cost_nusd) > 0 ORDER BY {col}",
            (session,),
        )
        by[col] = {k: usd(v) for k, v in rows}
    calls_row = db.execute(
        f"SELECT COUNT(*), {NOT_OK} FROM calls WHERE session = ?", (session,)
    ).fetchone()
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
        calls=int(calls_row[0]) if calls_row is not None else 0,
        failed=int(calls_row[1] or 0) if calls_row is not None else 0,
        by_role=by["role"],
        by_model=by["model"],
        by_provider=by["provider"],
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
            f" SUM(tokens_in) AS tin, SUM(tokens_out) AS tout"
            f" FROM calls WHERE {where} GROUP BY {col} ORDER BY {order}",
            params,
        ).fetchall()
        groups[col] = [{col: r["key"], **totals(r)} for r in rows]
    total = db.execute(
        f"SELECT SUM(cost_nusd) AS cost, COUNT(*) AS calls, {NOT_OK}, SUM(tokens_in) AS tin,"
        f" SUM(tokens_out) AS tout FROM calls WHERE {where}",
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
