"""Policy simulation: replay this data dir's audit log under another policy file and show
what would have changed against the policy in force (``switchyard policy simulate``).

Type the file's path and press enter. The work runs in a worker on the app (its failure,
a bad policy file with FILE:LINE or a broken chain, comes back as WorkFailed); the
summary is the CLI's text.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from app.errors import SwitchyardError
from app.tui.core import CoreApp, WorkFailed
from app.tui.safe import plain

if TYPE_CHECKING:
    from app.router.simulate.report import SimulationReport

GROUP = "simulate"
PLACEHOLDER = "a policy file to simulate (e.g. policy/proposed.toml), then enter"


class Simulated(Message):
    def __init__(self, report: SimulationReport) -> None:
        super().__init__()
        self.report = report


async def simulate_file(core: CoreApp, path: Path) -> SimulationReport:
    """The simulation of ``path`` against the session's policy, over its audit log."""
    from app.policy import load_policy
    from app.resources import default_policy_path
    from app.router.simulate.report import PolicyRef
    from app.router.simulate.simulation import simulate
    from app.router.simulate.source import read_log

    session = core.session
    if session is None:
        raise SwitchyardError(core.session_error or "the session is still opening")
    new = await asyncio.to_thread(load_policy, path)
    collected = await _read_beside(session.audit, read_log)
    current = session.settings.policy or default_policy_path()
    return await asyncio.to_thread(
        simulate,
        collected,
        new.policy,
        session.policy,
        new_ref=PolicyRef(path=str(new.path), version=new.policy.version),
        against_ref=PolicyRef(path=str(current), version=session.policy.version),
    )


async def _read_beside(audit: Any, read: Any) -> Any:
    """``read(log)`` on a log of its own over the session's file: a verify and an export of
    the whole log hold the log's lock to their end, and on the session's own every line
    it wrote meanwhile (a route, an escalation: the run's requests) waited for them, 34 s
    on a log of 955k lines (a long-life audit). The team store's reads take no such lock."""
    from app.audit.log import AuditLog

    if not isinstance(audit, AuditLog):
        return await read(audit)
    async with AuditLog.open(audit.path) as own:
        return await read(own)


class SimulateScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "back")]

    def __init__(self) -> None:
        super().__init__(id="simulate")
        self.report: SimulationReport | None = None

    @property
    def core(self) -> CoreApp:
        return cast(CoreApp, self.app)

    def compose(self) -> ComposeResult:
        yield Static(
            Text(" Simulate ─ replay the audit log under another policy"), id="simulate-title"
        )
        yield Input(placeholder=PLACEHOLDER, id="simulate-input")
        with VerticalScroll(id="simulate-body"):
            yield Static(id="simulate-summary")
        yield Footer()

    def on_mount(self) -> None:
        self._say("the policy in force is compared with the file you name")
        self.query_one("#simulate-input", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = self.core.repo / path
        self._say(f"simulating {path} …")
        core, screen = self.core, self

        async def work() -> None:
            screen.post_message(Simulated(await simulate_file(core, path)))

        # on the app, like every worker: its one handler reports a failure (WorkFailed)
        core.run_worker(work(), group=GROUP, exclusive=True, exit_on_error=False)

    def on_simulated(self, message: Simulated) -> None:
        from app.router.simulate.summary import summary_lines

        self.report = message.report
        self._say("\n".join(summary_lines(message.report)))

    def on_work_failed(self, message: WorkFailed) -> None:
        if message.group == GROUP:
            self._say(f"not simulated: {message.text}")

    def _say(self, text: str) -> None:
        # a replayed log's names and an error's text: drawn as they are (app/shown.py)
        self.query_one("#simulate-summary", Static).update(plain(text))
