"""``switchyard budget``: spend by role, model, provider and day, the caps and what is left."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from app.cli.common import (
    add_json_arg,
    add_policy_arg,
    an_id,
    console,
    money,
    policy_from,
    print_json,
    settings_from,
    whole_number,
)
from app.counted import counted
from app.dollars import cap_row as shown_row
from app.dollars import spent

#: ten years of days: far past any ledger, short of the calendar's end (a --days of
#: 800000 reached before year 1 and was an OverflowError traceback)
MAX_DAYS = 3650


def register(sub: Any) -> None:
    p = sub.add_parser("budget", help="show spend, caps and what is left today")
    p.add_argument("--session", metavar="S", type=an_id, help="only this session (and its own cap)")
    p.add_argument(
        "--days",
        metavar="N",
        type=whole_number(1, MAX_DAYS, why=" (ten years)"),
        default=7,
        help="UTC days, today included",
    )
    add_policy_arg(p)
    add_json_arg(p)
    p.set_defaults(handler=_budget)


async def _collect(args: argparse.Namespace) -> dict[str, Any]:
    # Lazy: `switchyard --help` should not pay for aiosqlite (or asyncpg).
    from app.backends.local_only import effective_local_only
    from app.router.stores import open_ledger, read_fallback
    from app.store.errors import StoreUnavailable

    settings = settings_from(args)
    loaded = policy_from(args, settings)
    policy = loaded.policy
    local_only, named = effective_local_only(policy, settings), policy.named_local_hosts()
    try:
        opened = await open_ledger(settings, policy.budget, local_only=local_only, named=named)
    except StoreUnavailable as exc:
        settings = read_fallback(settings, exc)
        opened = await open_ledger(settings, policy.budget, local_only=local_only, named=named)
    async with opened as ledger:
        report = await ledger.report(session=args.session, days=args.days)
    report["policy_version"] = policy.version
    report.setdefault("ledger_db", str(settings.ledger_db))
    return report


def _budget(args: argparse.Namespace) -> int:
    report = asyncio.run(_collect(args))
    if args.json:
        print_json(report)
    else:
        _render(report)
    return 0


def _spend(usd: float) -> str:
    """Spend as the caps rows show it (rounded up): the day's row and today's by-day
    row give one figure."""
    return money(spent(usd))


def _tokens_in(row: dict[str, Any]) -> str:
    """A row's prompt tokens, and how many of them the providers' caches read (charged at
    the cache's price): a cost that looked low for its tokens now says why."""
    cached = row.get("tokens_cached") or 0
    return f"{row['tokens_in']:,}" + (f" ({cached:,} cached)" if cached else "")


def _render(r: dict[str, Any]) -> None:
    from rich.table import Table

    out = console()
    scope = f"session {r['session']}" if r["session"] else "all sessions"
    if r.get("team"):
        scope += f" · team {r['team']} ({r['ledger_db']})"
    total = r["total"]
    # One line whatever the width: a terminal wraps it, a pipe or a log keeps it whole
    # (Rich would break it at 80 columns, between "policy" and its version).
    out.print(
        f"[bold]Spend {r['since']} … {r['until']} UTC[/] · {scope} · "
        f"{_spend(total['cost_usd'])} in {counted(total['calls'], 'call')}{_failed(total)} · "
        f"policy {r['policy_version']}",
        soft_wrap=True,
    )
    groups = [("role", "Role"), ("model", "Model"), ("provider", "Provider")]
    if r.get("by_user"):
        groups.append(("user", "User"))
    for key, label in groups:
        rows = r[f"by_{key}"]
        if not rows:
            continue
        table = Table(title=f"By {key}", title_justify="left")
        for col in (label, "Cost", "Calls", "Tokens in", "Tokens out"):
            table.add_column(col, justify="left" if col == label else "right")
        for row in rows:
            table.add_row(
                str(row[key]),
                _spend(row["cost_usd"]),
                _calls(row),
                _tokens_in(row),
                f"{row['tokens_out']:,}",
            )
        out.print(table)
    if r["by_day"]:
        days = Table(title="By day (UTC)", title_justify="left")
        for col in ("Day", "Cost", "Calls"):
            days.add_column(col, justify="left" if col == "Day" else "right")
        for row in r["by_day"]:
            days.add_row(row["day"], _spend(row["cost_usd"]), _calls(row))
        out.print(days)

    caps = Table(title=f"Caps and what is left today ({r['today']['day']})", title_justify="left")
    for col in ("Cap", "Limit", "Spent", "Reserved", "Left"):
        caps.add_column(col, justify="left" if col == "Cap" else "right")

    def cap_row(name: str, u: dict[str, Any]) -> None:
        # rounded so that the row adds up and left is never shown above what is left
        # (--json keeps the ledger's nano-dollars)
        figures = shown_row(u["cap_usd"], u["spent_usd"], u["reserved_usd"])
        caps.add_row(name, *(money(f) for f in figures))

    # nothing spent or held by the session, ever (the session cap's sums are all time):
    # its "$5.00 left" read as a session that exists (a user audit). A new session has no
    # spend, so it is no error: said beside the caps.
    unspent = r["session_budget"] is not None and not (
        r["session_budget"]["spent_usd"] or r["session_budget"]["reserved_usd"]
    )
    if r["session_budget"] is not None:
        cap_row(
            f"session {r['session']}" + (" (no spend recorded)" if unspent else ""),
            r["session_budget"],
        )
    else:
        # a session's spend is its own: with none named, say how to see one
        caps.add_row(
            "each session (see --session S)", money(r["caps"]["session_usd"]), "—", "—", "—"
        )
    cap_row("team day" if r.get("team") else "day", r["today"])
    if r.get("team") and r["today"].get("user"):
        cap_row(f"user {r['user']}", r["today"]["user"])
    for name, u in r["today"]["providers"].items():
        cap_row(f"provider {name}", u)
    out.print(caps)
    if unspent:
        out.print(
            f"no spend recorded for session {r['session']}: the caps above are what it "
            "starts with (a new session has none; a session id is matched whole, and "
            "`switchyard audit tail --json` names each line's)",
            soft_wrap=True,
            markup=False,
        )
    flight = r["in_flight"]
    if flight["reservations"]:
        out.print(
            f"{counted(flight['reservations'], 'reservation')} in flight: "
            f"{_spend(flight['reserved_usd'])}"
        )
    if r["session"] and not unspent and not total["calls"] and not flight["reservations"]:
        # an id is matched whole: a cut one (8 of its 12 characters) reads as a $0 session
        out.print(
            f"[dim]No call or reservation of session {r['session']} in these "
            f"{counted(r['days'], 'day')}; a session id is matched whole "
            "(`switchyard audit tail --json` names each line's).[/]",
            soft_wrap=True,
        )


def _calls(row: dict[str, Any]) -> str:
    return f"{row['calls']}{_failed(row)}"


def _failed(row: dict[str, Any]) -> str:
    """How many of a row's calls did not come through (failed, or cancelled mid-way)."""
    return f" ({row['failed']} failed)" if row.get("failed") else ""
