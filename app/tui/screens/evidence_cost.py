"""The evidence review's Cost tab: the run's ``cost.json`` (the session's ledger snapshot
when the run ended) read as a person reads a bill, not as the JSON it is stored as.

A file this version cannot read as a snapshot (an older run's, or one edited by hand) is
shown as its JSON, said so: the tab shows what is there, never a guess.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from rich.text import Text

from app.dollars import dollars
from app.router.ledger.records import BudgetSnapshot, CapUsage
from app.tui.safe import clean
from app.tui.widgets.pane import style_of


def cost_lines(cost: dict[str, Any] | None, variables: dict[str, str]) -> list[Text]:
    dim = style_of(variables.get("dim-text", ""))
    if cost is None:
        return [Text("no cost.json", style=dim)]
    try:
        snap = BudgetSnapshot.model_validate(cost)
    except ValidationError:
        raw = json.dumps(cost, indent=2, sort_keys=True)
        note = Text("cost.json is not a ledger snapshot this version reads; as written:", dim)
        return [note, *(Text(_one(line), end="") for line in raw.splitlines())]
    head = Text(no_wrap=True, end="")
    head.append(f"session {_one(snap.session)}", style_of(variables.get("primary", ""), bold=True))
    failed = f", {snap.failed} did not complete" if snap.failed else ""
    head.append(f" · {snap.day} · {snap.calls} call{'s' * (snap.calls != 1)}{failed}")
    if snap.team:
        head.append(f" · team {_one(snap.team)}, user {_one(snap.user or '?')}", dim)
    out = [
        head,
        Text(""),
        Text(f"{'':<22}{'spent':>12}{'reserved':>12}{'cap':>12}{'left':>12}", dim),
    ]
    rows: list[tuple[str, CapUsage]] = [("session", snap.per_session), ("day", snap.per_day)]
    if snap.per_user is not None:
        rows.append(("your day", snap.per_user))
    rows += [
        (f"{_one(p)} (day)", u)
        for p, u in sorted(snap.per_provider.items())
        if u.cap_usd is not None or u.spent_usd or u.reserved_usd  # (no cap, nothing: noise)
    ]
    for label, usage in rows:
        out.append(_row(label, usage, variables))
    if snap.reserved_usd:
        out.append(Text(f"in flight when the run ended: {dollars(snap.reserved_usd)}", dim))
    if not (snap.by_role or snap.by_model or snap.by_provider):
        out += [Text(""), Text("nothing paid: every call was local, or none was made", dim)]
        return out
    for title, spent in (
        ("by role", snap.by_role),
        ("by model", snap.by_model),
        ("by provider", snap.by_provider),
    ):
        out.append(Text(""))
        out.append(Text(f"cost {title}", style_of(variables.get("secondary", ""), bold=True)))
        for name, usd in sorted(spent.items(), key=lambda kv: (-kv[1], kv[0])):
            out.append(Text(f"  {_one(name)[:30]:<30}{dollars(usd):>14}", end=""))
    return out


def _row(label: str, usage: CapUsage, variables: dict[str, str]) -> Text:
    cap = "—" if usage.cap_usd is None else dollars(usage.cap_usd)
    left = "—" if usage.left_usd is None else dollars(usage.left_usd)
    row = Text(no_wrap=True, end="")
    row.append(f"{label[:22]:<22}")
    row.append(f"{dollars(usage.spent_usd):>12}{dollars(usage.reserved_usd):>12}{cap:>12}")
    low = usage.left_usd is not None and usage.cap_usd and usage.left_usd < 0.1 * usage.cap_usd
    row.append(f"{left:>12}", style_of(variables.get("budget-over" if low else "", "")))
    return row


def _one(text: str) -> str:
    """A name from the file (a session id, a model, a team) with its control characters
    shown, on one line."""
    return clean(text, one_line=True)
