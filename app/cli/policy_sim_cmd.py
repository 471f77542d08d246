"""``switchyard policy diff A B`` and ``switchyard policy simulate --policy NEW``.

``diff``: the semantic difference of two policy files (thresholds, chains, caps, prices,
guardrail switches). ``simulate``: replay the decisions in the audit log under NEW and
under the current policy, and say what would have changed. An invalid policy file exits
2 with FILE:LINE (as ``policy check``), a broken audit chain exits 1 with its first bad
line, an empty range says so and exits 0.
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from app.cli.common import add_json_arg, an_id, console, print_json
from app.clock import iso
from app.config import load_settings
from app.errors import UsageError
from app.policy import load_policy


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


def _simulate(args: argparse.Namespace) -> int:
    from app.router.simulate.stored import simulate_stored
    from app.router.simulate.summary import summary_lines

    since, until = when(args.since, "--since"), when(args.until, "--until")
    # a bare --until date runs to that day's end ("T99" sorts after every time in it)
    if since and until and since > (until + "T99" if len(until) == 10 else until):
        raise UsageError(f"--until {args.until} is before --since {args.since}")
    settings = load_settings()
    new = load_policy(args.policy)
    against = load_policy(args.against if args.against is not None else settings.policy)
    report = simulate_stored(
        new, against, settings, since=since, until=until, session=args.session, chain=args.chain
    )
    if args.json:
        print_json(report.model_dump(mode="json"))
        return 0
    out = console()
    for line in summary_lines(report):
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    return 0
