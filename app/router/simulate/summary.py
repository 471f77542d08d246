"""A simulation report as plain text lines: what the CLI prints and the TUI shows."""

from __future__ import annotations

from app.counted import counted
from app.router.simulate.report import BlockedRow, SimulationReport

#: blocked requests listed per policy (``--json`` has them all)
BLOCKED_LISTED = 10


def money(usd: float) -> str:
    """Cents above a dollar; below it, the fractions a single call costs."""
    if usd == 0:
        return "$0"
    return (
        f"${usd:,.2f}" if abs(usd) >= 1 else f"${usd:.4f}" if abs(usd) >= 0.0001 else f"${usd:.6f}"
    )


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """Aligned columns: the first ``left`` to the left, the figures to the right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        cells = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  " + "  ".join(cells).rstrip()

    return [fmt(header), *(fmt(r) for r in rows)]


def range_text(r: SimulationReport) -> str:
    parts = []
    if r.range.since:
        parts.append(f"since {r.range.since}")
    if r.range.until:
        parts.append(f"until {r.range.until}")
    if r.range.session:
        parts.append(f"session {r.range.session}")
    return ", ".join(parts) or "the whole audit log"


def summary_lines(r: SimulationReport) -> list[str]:
    head = (
        f"policy {r.new.version} ({r.new.path}) against {r.against.version} ({r.against.path}), "
        f"{range_text(r)}"
    )
    if r.read_from_seq > 1 and not r.empty:
        head += f" (the log read and verified from line {r.read_from_seq:,} to its head)"
    if r.empty:
        return [head, "no decisions in this range: nothing to simulate"]
    added = sum(x.escalations_added for x in r.roles)
    removed = sum(x.escalations_removed for x in r.roles)
    other = sum(x.different_target for x in r.roles)
    out = [
        head,
        f"{counted(r.decisions, 'decision')} replayed, {r.changed} changed: "
        f"{counted(added, 'escalation')} added, {removed} removed, {other} to a different target",
        f"cloud spend {money(r.cloud_usd_against)} now → {money(r.cloud_usd_new)} under the new "
        "policy",
        *_team(r),
        "",
        "By role (approvals asked: now → new)",
    ]
    out += _table(
        ["role", "decisions", "changed", "+esc", "-esc", "other", "approvals", "cloud $"],
        [
            [
                x.role,
                str(x.decisions),
                str(x.changed),
                str(x.escalations_added),
                str(x.escalations_removed),
                str(x.different_target),
                f"{x.approvals_against} → {x.approvals_new}",
                f"{money(x.cloud_usd_against)} → {money(x.cloud_usd_new)}",
            ]
            for x in r.roles
        ],
    )
    if r.spend:
        out += ["", "Cloud spend per provider and day (~: includes an estimate)"]
        out += _table(
            ["day", "provider", "now", "new"],
            [
                [
                    s.day,
                    s.provider,
                    ("~" if s.against_estimated_usd else "") + money(s.against_usd),
                    ("~" if s.new_estimated_usd else "") + money(s.new_usd),
                ]
                for s in r.spend
            ],
            left=2,
        )
    out += _caps(r)
    if r.biggest_changes:
        out += ["", f"The {len(r.biggest_changes)} biggest changes (audit tail around the seq)"]
        for c in r.biggest_changes:
            est = " (estimated)" if c.estimated else ""
            sign = "+" if c.delta_usd >= 0 else "-"
            # the triggers that make the escalation (or made the one removed)
            why = f"  [{', '.join(c.reasons)}]" if c.reasons else ""
            out.append(
                f"  #{c.seq} {c.ts[:19].replace('T', ' ')} {c.role}: {c.against} → {c.new}  "
                f"{money(c.against_usd)} → {money(c.new_usd)} ({sign}{money(abs(c.delta_usd))})"
                f"{est}{why}"
            )
    out += _unsimulated(r)
    return out


def _team(r: SimulationReport) -> list[str]:
    """What the shared caps were charged besides this chain (the team store only)."""
    t = r.team_spend
    if t is None:
        return []
    flight = f", and {counted(t.in_flight, 'reservation')} in flight" if t.in_flight else ""
    return [
        f"the rest of the team's spend counted against the shared caps, where it happened: "
        f"{counted(t.calls, 'call')}, {money(t.usd)}{flight} (the team ledger)"
    ]


def _caps(r: SimulationReport) -> list[str]:
    out: list[str] = []
    for policy, name in (("new", "the new policy"), ("against", "the current policy")):
        requests: dict[int, list[BlockedRow]] = {}
        for b in r.blocked:
            if b.policy == policy:
                requests.setdefault(b.seq, []).append(b)
        if not requests:
            continue
        out += ["", f"Requests a cap blocks under {name}: {len(requests)}"]
        for rows in list(requests.values())[:BLOCKED_LISTED]:
            b = rows[0]
            caps = sorted({x.cap for x in rows})
            out.append(
                f"  #{b.seq} {b.ts[:19].replace('T', ' ')} {b.role}: "
                f"{', '.join(x.model for x in rows)} blocked by the {', '.join(caps)} cap → "
                f"{b.then}"
            )
        if len(requests) > BLOCKED_LISTED:
            out.append(f"  … and {len(requests) - BLOCKED_LISTED} more (--json lists them all)")
    reached = r.caps_reached
    if reached:
        out += ["", "When each cap is reached (its first blocked request)"]
        for c in reached:
            who = "new" if c.policy == "new" else "now"
            scope = f" of session {c.session}" if c.session else ""
            out.append(
                f"  {who}: {c.cap}{scope} {money(c.limit_usd)} on {c.day}: first at #{c.seq} "
                f"{c.ts[11:19]}, {c.blocked} blocked"
            )
    return out


def _unsimulated(r: SimulationReport) -> list[str]:
    out: list[str] = []
    u = r.unsimulated
    if u.count:
        out += ["", f"Unsimulated: {u.count} (recorded cloud spend {money(u.recorded_usd)})"]
        out += [f"  {n}: {why}" for why, n in u.reasons.items()]
    if r.against_differs_from_recorded:
        seqs = ", ".join(f"#{s}" for s in r.differs_seqs)
        race = " or a teammate's request in a race for a cap" if r.team_spend is not None else ""
        out += [
            "",
            f"note: {r.against_differs_from_recorded} decisions replay differently under the "
            f"current policy than recorded ({seqs}): was another policy in force{race}?",
        ]
    return out
