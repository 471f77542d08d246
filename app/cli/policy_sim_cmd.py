"""``switchyard policy diff A B`` and ``switchyard policy simulate --policy NEW``.

``diff``: the semantic difference of two policy files (thresholds, chains, caps, prices,
guardrail switches). ``simulate``: replay the decisions in the audit log under NEW and
under the current policy, and say what would have changed. An invalid policy file exits
2 with FILE:LINE (as ``policy check``), a broken audit chain exits 1 with its first bad
line, an empty range says so and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.cli.common import add_json_arg, an_id, console, print_json
from app.clock import iso
from app.config import Settings, load_settings
from app.errors import UsageError
from app.policy import LoadedPolicy, load_policy

if TYPE_CHECKING:
    from app.router.simulate.report import SimulationReport
    from app.router.simulate.requests import Collected
    from app.router.simulate.team import TeamCharges
    from app.store.url import DatabaseUrl


def register(psub: Any) -> None:
    diff = psub.add_parser(
        "diff",
        help="what differs between two policies: thresholds, chains, caps, prices, guardrails",
    )
    diff.add_argument("a", type=Path, metavar="A.toml")
    diff.add_argument("b", type=Path, metavar="B.toml")
    diff.add_argument(
        "--exit-code",
        action="store_true",
        help="exit 1 when the policies differ in meaning, 0 when not (as git diff --exit-code)",
    )
    add_json_arg(diff)
    diff.set_defaults(handler=_diff)

    sim = psub.add_parser(
        "simulate",
        help="replay the audit log's decisions under a new policy, before you adopt it",
        description="Replay every recorded decision through decide() under NEW and under the "
        "current policy, each with its own simulated budget ledger, and report what changes: "
        "per role, cloud spend per provider and day, requests a cap blocks, approvals asked, "
        "the ten biggest changes (with their audit seq) and what could not be simulated.",
    )
    sim.add_argument("--policy", type=Path, required=True, metavar="NEW.toml")
    sim.add_argument(
        "--against",
        type=Path,
        metavar="CURRENT.toml",
        help="the policy to compare with (default: $SWITCHYARD_POLICY, else the shipped one)",
    )
    sim.add_argument("--since", metavar="DATE", help="from this UTC date or ISO time")
    sim.add_argument("--until", metavar="DATE", help="up to this UTC date (inclusive) or time")
    sim.add_argument("--session", metavar="ID", type=an_id, help="only this session's decisions")
    sim.add_argument(
        "--chain",
        metavar="C",
        help="the team store's chain to replay (one per instance: `switchyard audit chains`)",
    )
    add_json_arg(sim)
    sim.set_defaults(handler=_simulate)


# ── diff ─────────────────────────────────────────────────────────────────────────────────


def _diff(args: argparse.Namespace) -> int:
    from app.policy.diff import diff_policies

    a, b = load_policy(args.a), load_policy(args.b)
    result = diff_policies(a.policy, b.policy)
    # a report by default (its exit says it ran); --exit-code lets CI hold a change to
    # "the policy means what it meant"
    differs = 1 if args.exit_code and result.entries else 0
    if args.json:
        print_json(
            {
                "a": {"path": str(a.path), "version": result.a_version},
                "b": {"path": str(b.path), "version": result.b_version},
                "same": not result.entries,
                "entries": [e.model_dump(mode="json") for e in result.entries],
            }
        )
        return differs
    out = console()
    out.print(
        f"{a.path} ({result.a_version}) → {b.path} ({result.b_version})",
        markup=False,
        soft_wrap=True,
    )
    if not result.entries:
        out.print("no semantic difference")
        return 0
    for category, entries in result.by_category().items():
        out.print(f"\n{category} ({len(entries)})", style="bold")
        for e in entries:
            out.print(f"  {e.text}", markup=False, soft_wrap=True)
    return differs


# ── simulate ─────────────────────────────────────────────────────────────────────────────


def when(value: str | None, flag: str) -> str | None:
    """``--since``/``--until`` as the audit's own spelling: a UTC date, or an ISO time."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{flag} {value!r}: expected a date (2026-12-01) or an ISO time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return iso(moment)


def run_simulation(
    new: LoadedPolicy,
    against: LoadedPolicy,
    settings: Settings,
    *,
    since: str | None = None,
    until: str | None = None,
    session: str | None = None,
    chain: str | None = None,
) -> SimulationReport:
    """Read the verified chain of the audit log the settings name (this machine's file, or
    ``chain`` in the team store) and simulate: the CLI's whole job.

    The team store holds a chain per instance, and opening it without ``chain`` starts
    this process's own, empty: "no decisions in this range" was said of a team's 42. So
    there ``chain`` is required (a usage error names where to find one). There the caps
    are shared: the rest of the team's spend is read from the team ledger besides (a
    replay of one chain charged that chain's costs alone, and a request a teammate's
    spend had kept local replayed as a cloud call)."""
    from app.backends.local_only import effective_local_only
    from app.router.simulate.report import PolicyRef
    from app.router.simulate.simulation import Filters, simulate
    from app.router.simulate.source import read_log
    from app.router.stores import database_url, open_audit

    url = database_url(settings)
    if url is None:
        if chain is not None:
            raise UsageError("--chain names a chain of the team store; none is set")
    elif chain is None:
        raise UsageError(
            "the team store holds a chain per instance: name the one to replay with "
            "--chain (see `switchyard audit chains`)"
        )
    privacy: dict[str, Any] = {
        "local_only": effective_local_only(against.policy, settings),
        "named": against.policy.named_local_hosts(),
    }

    async def read() -> Any:
        if url is None:
            log = await open_audit(settings, **privacy)
            try:
                return await read_log(log, since=since, session=session), None
            finally:
                await log.close()
        return await _read_team(settings, url, privacy, chain, since, session)

    collected, team = asyncio.run(read())
    return simulate(
        collected,
        new.policy,
        against.policy,
        new_ref=PolicyRef(path=str(new.path), version=new.policy.version),
        against_ref=PolicyRef(path=str(against.path), version=against.policy.version),
        filters=Filters(since=since, until=until, session=session),
        team=team,
    )


async def _read_team(
    settings: Settings,
    url: DatabaseUrl,
    privacy: dict[str, Any],
    chain: str | None,
    since: str | None,
    session: str | None,
) -> tuple[Collected, TeamCharges]:
    """``chain`` of the team store, and the rest of the team's spend, on one pool."""
    from app.audit.pg_log import PgAuditLog
    from app.router.simulate.source import read_log
    from app.router.simulate.team import read_team_charges
    from app.router.stores import open_audit
    from app.store.postgres import connect_pool

    pool = await connect_pool(url, **privacy)
    try:
        log = await open_audit(settings, pool=pool, chain=chain, **privacy)
        try:
            assert isinstance(log, PgAuditLog)
            collected = await read_log(log, since=since, session=session)
            return collected, await read_team_charges(log, pool, collected)
        finally:
            await log.close()
    finally:
        await pool.close()


def _simulate(args: argparse.Namespace) -> int:
    from app.router.simulate.summary import summary_lines

    since, until = when(args.since, "--since"), when(args.until, "--until")
    # a bare --until date runs to that day's end ("T99" sorts after every time in it)
    if since and until and since > (until + "T99" if len(until) == 10 else until):
        raise UsageError(f"--until {args.until} is before --since {args.since}")
    settings = load_settings()
    new = load_policy(args.policy)
    against = load_policy(args.against if args.against is not None else settings.policy)
    report = run_simulation(
        new, against, settings, since=since, until=until, session=args.session, chain=args.chain
    )
    if args.json:
        print_json(report.model_dump(mode="json"))
        return 0
    out = console()
    for line in summary_lines(report):
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    return 0
