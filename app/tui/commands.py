"""The command palette (ctrl+p): the common actions by name.

new task, runs, policy, simulate, budget, theme, plus escalate, stop, tutor and the escalation
pane's kind filter. Each command is a (title, help, callback) triple built per screen.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from app.audit.kinds import AUDIT_KINDS

if TYPE_CHECKING:
    from app.tui.core import CoreApp
    from app.tui.screens.workbench import WorkbenchScreen

Command = tuple[str, str, Callable[[], object]]


def _approval_waits(app: CoreApp) -> bool:
    """Whether an approval modal is open (said, when it is): a screen opened over it hid
    it, and its request timed out unseen (an audit)."""
    from app.tui.screens.approval import ApprovalScreen

    if any(isinstance(screen, ApprovalScreen) for screen in app.screen_stack):
        app.notify("an approval is waiting: answer it first (y, a, n or d)", severity="warning")
        return True
    return False


def _home(app: CoreApp, *, beneath: bool = False) -> WorkbenchScreen | None:
    """The workbench, once the screens above it are closed. While an approval waits the
    modal stays (popping it dismissed no one's answer, so its request waited out the
    timeout and the header said "awaiting approval" for good): ``beneath``, a command
    that only changes a pane (a filter, the budget zoomed) applies under it; another is
    refused with a word."""
    from app.tui.screens.approval import ApprovalScreen
    from app.tui.screens.workbench import WorkbenchScreen

    home = app.home
    if not isinstance(home, WorkbenchScreen):
        return None
    if beneath and any(isinstance(screen, ApprovalScreen) for screen in app.screen_stack):
        return home
    if _approval_waits(app):
        return None
    while app.screen is not home and len(app.screen_stack) > 1:
        app.pop_screen()
    return home


def _on_home(
    app: CoreApp, do: Callable[[WorkbenchScreen], object], *, beneath: bool = False
) -> None:
    home = _home(app, beneath=beneath)
    if home is not None:
        do(home)


def _push(app: CoreApp, screen_name: str) -> None:
    from app.tui.screens.evidence import EvidenceScreen
    from app.tui.screens.policy import PolicyScreen
    from app.tui.screens.simulate import SimulateScreen
    from app.tui.screens.tutor import TutorScreen

    screens = {
        "evidence": EvidenceScreen,
        "policy": PolicyScreen,
        "simulate": SimulateScreen,
        "tutor": TutorScreen,
    }
    if _approval_waits(app):
        return
    kind = screens[screen_name]
    # one of each: a screen already open (under another) is brought back, as it was (a
    # tutor's conversation kept); pushed again, its fixed id crashed the app with
    # DuplicateIds and the run at work was sealed as stopped (a TUI audit)
    open_one = next((s for s in app.screen_stack if isinstance(s, kind)), None)
    if open_one is None:
        app.push_screen(kind())
        return
    while app.screen is not open_one and len(app.screen_stack) > 1:
        app.pop_screen()


def _set_theme(app: CoreApp, name: str) -> None:
    app.theme = name


def _filter(app: CoreApp, text: str) -> None:
    _on_home(app, lambda s: s.escalations.set_filter(text), beneath=True)


def commands(app: CoreApp) -> list[Command]:
    # "New task" not while a run goes, as "/" is not (MainScreen.check_action): it wiped
    # the task box and left the focus there, the run's keys typed into it (a user audit)
    new_task: list[Command] = (
        []
        if app.running
        else [
            (
                "New task",
                "type a task for a new run",
                partial(_on_home, app, lambda s: s.action_new_task()),
            )
        ]
    )
    out: list[Command] = [
        *new_task,
        (
            "Runs",
            "review evidence bundles, merge when the gate holds",
            partial(_push, app, "evidence"),
        ),
        (
            "Policy",
            "the routing table, triggers and budget caps in force",
            partial(_push, app, "policy"),
        ),
        (
            "Simulate",
            "replay the audit log under another policy file: what would change",
            partial(_push, app, "simulate"),
        ),
        (
            "Budget",
            "the budget meter, full screen (escape to restore)",
            partial(_on_home, app, lambda s: s.zoom_pane(s.budget), beneath=True),
        ),
        (
            "Escalate",
            "ask to escalate the role at work (it still needs your approval)",
            partial(_on_home, app, lambda s: s.action_escalate()),
        ),
        ("Stop run", "stop the run before its next model call", app.stop_run),
        ("Tutor", "ask the tutor: questions first", partial(_push, app, "tutor")),
    ]
    for name in sorted(app.available_themes):
        if name.startswith("switchyard"):
            out.append(
                (f"Theme: {name}", "switch the colour theme", partial(_set_theme, app, name))
            )
    out.append(
        (
            "Escalations: all kinds",
            "clear the escalation pane's filter",
            partial(_filter, app, ""),
        )
    )
    for kind in AUDIT_KINDS:
        out.append(
            (
                f"Escalations: only {kind}",
                f"show only {kind} lines in the escalation pane",
                partial(_filter, app, kind),
            )
        )
    return out


class SwitchyardCommands(Provider):
    def _commands(self) -> list[Command]:
        return commands(cast("CoreApp", self.app))

    async def discover(self) -> Hits:
        for title, help_text, callback in self._commands():
            if not title.startswith("Escalations: only"):
                yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
