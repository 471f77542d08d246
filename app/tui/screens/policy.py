"""The routing policy in force for this session (read-only): who serves each role, where
it falls back to, what triggers an escalation, and the budget caps."""

from __future__ import annotations

from typing import ClassVar, cast

from rich.table import Table
from rich.text import Text
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


def policy_table(policy: Policy) -> Table:
    table = Table(expand=True, show_lines=False, header_style="bold")
    for col in ("role", "default", "where", "fallback / escalation", "triggers"):
        table.add_column(col, overflow="fold")
    for rid, role in policy.roles.items():
        default = policy.resolve(role.default) if role.default else "deterministic"
        triggers = ", ".join(
            f"{t.signal} {OPS.get(t.op, t.op)} {t.threshold:g}"
            if t.threshold is not None
            else t.signal
            for t in policy.triggers_for(rid)
            if t.role == rid
        )
        cells = (
            rid,
            default,
            f"{role.locality} {'/'.join(role.runtimes)}".strip(),
            " → ".join(policy.resolve(m) for m in role.fallback) or "—",
            triggers or "—",
        )
        # a str cell would be read as Rich markup: the policy file's names, drawn as written
        table.add_row(*(plain(cell, one_line=True) for cell in cells))
    return table


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
            # a session that failed to open never will: say why, not "still opening"
            why = core.session_error or "the session is still opening"
            title.update(plain(f" Policy ─ {why}", one_line=True))
            return
        policy = session.policy
        title.update(Text(f" Policy {policy.version} ─ the routing table in force", style="bold"))
        self.query_one("#policy-table", Static).update(policy_table(policy))
        in_force = budget_text(
            policy, timeout_s=session.approvals.timeout_s, local_only=session.local_only
        )
        self.query_one("#policy-budget", Static).update(in_force)
