"""Budget meter: spend against the caps per session, day and provider, reservations in
flight, and cost per role. The model is the ledger's latest snapshot
(``BudgetLedger.snapshot(...).model_dump()``), as it arrives on the bus. On a shared
(team) store the day and provider meters are the team's, and the user's day is shown."""

from __future__ import annotations

import math
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from app.counted import counted
from app.tui.safe import clean_block
from app.tui.widgets.pane import Pane, style_of

WARN_AT = 0.6
OVER_AT = 0.9


def money(usd: float | None) -> str:
    """Dollars: cents from a dollar up, a tenth of a cent below; under a cent, two
    significant digits (a DeepSeek step's estimate read "~$0.000": a user-audit)."""
    if usd is None:
        return "—"
    if usd >= 0.995 or usd == 0:
        return f"${usd:.2f}"
    if 0 < usd < 0.00995:
        if usd < 0.000001:
            return "<$0.000001"
        # 2 significant digits, the decimals that takes (0.00012 → 5)
        return f"${usd:.{1 - math.floor(math.log10(usd))}f}"
    return f"${usd:.3f}"


def percent(share: float) -> str:
    if share <= 0:
        return "0%"
    return "<1%" if share < 0.01 else f"{100 * share:.0f}%"


def level(used: float, cap: float | None) -> str:
    if not cap:
        return "budget-ok" if not used else "budget-warn"
    share = used / cap
    return "budget-ok" if share < WARN_AT else "budget-warn" if share < OVER_AT else "budget-over"


def amounts(usage: dict[str, Any]) -> str:
    cap = usage.get("cap_usd")
    return f" {money(float(usage.get('spent_usd') or 0.0))}/{money(cap)[1:]}" if cap else ""


def meter(label: str, usage: dict[str, Any], variables: dict[str, str], *, width: int = 8) -> Text:
    """``label ███▒░░░ 8% $0.42/5.00``: spent in the level colour, reserved beside it."""
    cap = usage.get("cap_usd")
    spent = float(usage.get("spent_usd") or 0.0)
    reserved = float(usage.get("reserved_usd") or 0.0)
    text = Text(no_wrap=True, end="")
    text.append(f"{label[:8]:<9}")
    if cap:
        filled = min(width, round(width * spent / cap))
        held = min(width - filled, round(width * reserved / cap))
        if spent > 0 and filled == 0 and width:
            filled = 1  # any spend is visible
        colour = variables.get(level(spent + reserved, cap), "")
        text.append("█" * filled, style_of(colour))
        text.append("▒" * held, style_of(variables.get("budget-reserved", "")))
        text.append("░" * (width - filled - held), style_of(variables.get("budget-track", "")))
        text.append(f" {percent((spent + reserved) / cap):>4}", style_of(colour, bold=True))
        text.append(amounts(usage), style_of(variables.get("dim-text", "")))
    else:
        text.append(f"{money(spent)} (no cap)", style_of(variables.get("dim-text", "")))
    return text


def _meters(snapshot: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, usage) of each meter: the session, the day, the user's day on a team
    store, and each provider with spend or reservations."""
    providers: dict[str, Any] = snapshot.get("per_provider") or {}
    active = [p for p, u in providers.items() if u.get("spent_usd") or u.get("reserved_usd")]
    team = snapshot.get("team")
    user_day = [("you", snapshot["per_user"])] if team and snapshot.get("per_user") else []
    return [
        ("session", snapshot.get("per_session") or {}),
        ("team day" if team else "day", snapshot.get("per_day") or {}),
        *user_day,
        *((p, providers[p]) for p in active),
    ]


def render_budget(
    snapshot: dict[str, Any] | None, variables: dict[str, str], room: int = 40
) -> Text:
    dim = style_of(variables.get("dim-text", ""))
    if not snapshot:
        return Text("no spend yet · local models cost $0", style=dim)
    providers: dict[str, Any] = snapshot.get("per_provider") or {}
    # Providers with spend or reservations get a meter; idle capped ones a mention.
    # A shared (team) store: the day and the providers are the team's; the user's day too.
    team = snapshot.get("team")
    meters = _meters(snapshot)
    # One bar width for all, so the bars and figures line up: what the words leave.
    # Too narrow for a bar of 3 (an 80-column terminal): none, the figures whole.
    words = 9 + 5 + max(len(amounts(u)) for _, u in meters)
    width = min(16, room - words) if room - words >= 3 else 0
    lines = [meter(label, usage, variables, width=width) for label, usage in meters]
    reserved = float(snapshot.get("reserved_usd") or 0.0)
    held = Text(no_wrap=True, end="")
    held.append(f"{'reserved':<9}")
    held.append(
        f"{money(reserved)} in flight",
        style_of(variables.get("budget-reserved" if reserved else "dim-text", "")),
    )
    lines.append(held)
    by_role: dict[str, float] = snapshot.get("by_role") or {}
    if by_role:
        lines.append(Text("cost by role", style=style_of(variables.get("dim-text", ""), bold=True)))
        for role, usd in sorted(by_role.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(Text(f" {role:<12} {money(usd):>8}", no_wrap=True, end=""))
    idle = [
        p
        for p, u in providers.items()
        if u.get("cap_usd") and not (u.get("spent_usd") or u.get("reserved_usd"))
    ]
    if idle:
        lines.append(Text("idle caps: " + ", ".join(idle), style=dim, end=""))
    calls = snapshot.get("calls")
    if calls is not None:
        # a cloud host that never answered is a call too, at $0: say so (budget's rows do)
        failed = snapshot.get("failed") or 0
        said = f"{counted(calls, 'call')} ({failed} failed)" if failed else counted(calls, "call")
        lines.append(Text(f"{said} this session", style=dim, end=""))
    if team:
        lines.append(Text(f"team {team} · {snapshot.get('user')}", style=dim, end=""))
    return Text("\n").join(lines)


def budget_line(snapshot: dict[str, Any] | None, variables: dict[str, str], room: int) -> Text:
    """The meter in one line, for a pane one line high (MainScreen below 100 columns:
    a column of 31 left the escalation log too narrow to read, a user-audit): each
    meter's share in its level's colour, the money held, and the amounts as far as
    ``room`` lets them (the session's first). The whole meter is the zoomed pane's."""
    dim = style_of(variables.get("dim-text", ""))
    if not snapshot:
        return Text("no spend yet · local models cost $0", style=dim, no_wrap=True, end="")
    meters = _meters(snapshot)
    providers = len(meters) - (3 if snapshot.get("team") and snapshot.get("per_user") else 2)
    reserved = float(snapshot.get("reserved_usd") or 0.0)

    def part(label: str, usage: dict[str, Any], with_amounts: bool) -> Text:
        cap = usage.get("cap_usd")
        spent = float(usage.get("spent_usd") or 0.0)
        out = Text(f"{label} ", style=dim)
        if not cap:
            return out.append(f"{money(spent)} (no cap)")
        used = spent + float(usage.get("reserved_usd") or 0.0)
        out.append(percent(used / cap), style_of(variables.get(level(used, cap), ""), bold=True))
        return out.append(amounts(usage), dim) if with_amounts else out

    held = Text.assemble(
        ("held ", dim), (money(reserved), style_of(variables.get("budget-reserved", "")))
    )
    line = Text()
    # all the amounts, then the session's alone, then none: the first that fits
    for upto in (len(meters), 1, 0):
        parts = [part(label, u, n < upto) for n, (label, u) in enumerate(meters)]
        if reserved:  # after the session's and the days' meters, before the providers'
            parts.insert(len(meters) - providers, held)
        line = Text(" · ", style=dim).join(parts)
        if line.cell_len <= room:
            break
    line.no_wrap, line.end = True, ""
    line.truncate(room, overflow="ellipsis")
    return line


class BudgetPane(Pane):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.snapshot: dict[str, Any] | None = None
        #: the body drawn last, and its shape (line breaks, width to fill)
        self._body: Text | None = None
        self._shape: tuple[int, int] | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(id="budget-body")

    def show(self, snapshot: dict[str, Any]) -> None:
        held = self.snapshot
        # an older one of the same session is stale (the first snapshot, read as the
        # session opened, can come after a run's own: a review)
        if (
            held
            and held.get("session") == snapshot.get("session")
            and str(snapshot.get("ts") or "") < str(held.get("ts") or "")
        ):
            return
        self.snapshot = snapshot
        self.redraw()

    def redraw(self) -> None:
        snap = self.snapshot or {}
        session = snap.get("per_session") or {}
        cap = session.get("cap_usd")
        spent = float(session.get("spent_usd") or 0.0)
        self.set_titles("Budget", f"{money(spent)} / {money(cap)}" if cap else money(spent))
        variables = self.app.theme_variables
        # a team's and a member's names come from the shared ledger: drawn as they are
        if self.content_region.height == 1:  # a line of its own (MainScreen, narrow)
            room = self.content_region.width
            body = clean_block(budget_line(self.snapshot, variables, room))
        else:
            room = max(self.content_region.width - 1, 0) or 40  # less the scrollbar; 40 unlaid
            body = clean_block(render_budget(self.snapshot, variables, room))
        # Text's == compares the characters and spans, not the base style (the only
        # colour of "no spend yet"): a new theme must still redraw it.
        if body == self._body and self._body is not None and body.style == self._body.style:
            return
        # A layout pass only when the body's shape may change (a role or provider appears,
        # the pane is resized): a new figure in the same rows redraws this box alone, ten
        # times a second under a gateway's load.
        shape = (body.plain.count("\n"), room)
        self.query_one("#budget-body", Static).update(body, layout=shape != self._shape)
        self._body, self._shape = body, shape

    def on_resize(self) -> None:
        self.redraw()
