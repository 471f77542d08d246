"""The routing policy in force for this session (read-only): who serves each role, where
it falls back to, what triggers an escalation, and the budget caps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, cast

from rich.table import Table
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from app.policy.schema import Policy
from app.tui.core import CoreApp
from app.tui.panes.budget import money
from app.tui.safe import plain
from app.tui.screens.approval import OPS

#: below this many columns the triggers go under the escalation chain, not beside it
NARROW = 120


def policy_table(policy: Policy, *, width: int = NARROW) -> Table:
    """One row a role: its name, its model and where it runs, its escalation chain one
    step a line, and its triggers one a line, beside the chain or, below :data:`NARROW`
    columns, under it (``when …``). At 80 columns the names were folded in the middle
    (``deepseek-rea``/``soner``); now no name is cut."""
    narrow = width < NARROW
    table = Table(expand=True, show_lines=narrow, header_style="bold")
    table.add_column("role", no_wrap=True)
    # narrow: the two columns share the width (the chain and its triggers the more), so a
    # long "where" folds rather than squeeze the triggers into a word a line
    table.add_column("model · where", overflow="fold", ratio=2 if narrow else None)
    table.add_column(
        "escalation · when" if narrow else "escalation",
        overflow="fold",
        ratio=3 if narrow else None,
    )
    if not narrow:
        table.add_column("triggers", overflow="fold", ratio=1)
    for rid, role in policy.roles.items():
        default = policy.resolve(role.default) if role.default else "deterministic"
        where = f"{role.locality} {'/'.join(role.runtimes)}".strip()
        triggers = [
            f"{t.signal} {OPS.get(t.op, t.op)} {t.threshold:g}"
            if t.threshold is not None
            else t.signal
            for t in policy.triggers_for(rid)
            if t.role == rid
        ]
        steps = [policy.resolve(m) for m in role.fallback]
        chain = [steps[0], *(f"→ {m}" for m in steps[1:])] if steps else ["—"]
        # a str cell would be read as Rich markup: the policy file's names, drawn as
        # written, each on a line of its own
        cells = [_lines([rid]), _lines([default], dim=[where])]
        if narrow:
            when = [f"when {t}" if i == 0 else f"  or {t}" for i, t in enumerate(triggers)]
            cells.append(_lines(chain, dim=when))
        else:
            cells += [_lines(chain), _lines(triggers or ["—"])]
        table.add_row(*cells)
    return table


def _lines(parts: list[str], *, dim: Sequence[str] = ()) -> Text:
    out = Text()
    for i, (part, style) in enumerate([*((p, "") for p in parts), *((p, "dim") for p in dim)]):
        if i:
            out.append("\n")
        out.append_text(plain(part, style, one_line=True))
    return out


def budget_text(policy: Policy, *, timeout_s: float, local_only: bool) -> Text:
    """The caps, and what is in force for this session: its approval timeout (the
    settings can shorten the policy's) and local_only (a flag, the environment or a spec
    can turn it on); the screen showed the policy file's values, not the session's."""
    b = policy.budget
    caps = ", ".join(f"{p} {money(v)}" for p, v in sorted(b.provider_day_usd.items()))
    return Text(
        f"budget {money(b.session_usd)}/session · {money(b.day_usd)}/day · per provider/day: "
        f"{caps or '—'} · approvals time out after {timeout_s:g}s (deny) · "
        f"local_only {str(local_only).lower()}"
    )


class PolicyScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "back")]
    _policy: Policy | None = None
    _width = 0

    def compose(self) -> ComposeResult:
        yield Static(id="policy-title")
        with VerticalScroll(id="policy-body"):
            yield Static(id="policy-table")
            yield Static(id="policy-budget")
        yield Footer()

    def on_mount(self) -> None:
        core = cast(CoreApp, self.app)
        session = core.session
        title = self.query_one("#policy-title", Static)
        if session is None:
            # a session that failed to open never will: say why, not "still opening", in
            # the body: in the one-line title a policy file's error was cut mid-sentence
            # above an empty screen (a user-audit)
            if core.session_error is None:
                title.update(Text(" Policy ─ the session is still opening", style="bold"))
                return
            title.update(Text(" Policy ─ the session did not open, because:", style="bold"))
            self.query_one("#policy-table", Static).update(plain(core.session_error, "bold"))
            return
        policy = session.policy
        title.update(Text(f" Policy {policy.version} ─ the routing table in force", style="bold"))
        self._policy = policy
        self._draw(self.app.size.width)
        in_force = budget_text(
            policy, timeout_s=session.approvals.timeout_s, local_only=session.local_only
        )
        self.query_one("#policy-budget", Static).update(in_force)

    def _draw(self, width: int) -> None:
        if self._policy is None:
            return
        self._width = width
        self.query_one("#policy-table", Static).update(policy_table(self._policy, width=width))

    def on_resize(self, event: events.Resize) -> None:
        # (the layout changes only across NARROW: a table drawn again on every resize
        # would cost a frame for nothing)
        if (event.size.width < NARROW) != (self._width < NARROW):
            self._draw(event.size.width)
