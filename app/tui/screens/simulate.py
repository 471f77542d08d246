"""Policy simulation: replay the session's audit log under another policy file and show
what would have changed against the policy in force (``switchyard policy simulate``).

Type the file's path and press enter. The work runs in a worker on the app (its failure,
a bad policy file with FILE:LINE, a broken chain or a team database that cannot be read,
comes back as WorkFailed); the summary is the CLI's text. The replay is the CLI's own
function: on the team store, the session's chain with the rest of the team's spend, as
``policy simulate --chain`` replays it, so both give one verdict on the same data.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

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
    from app.config import Settings
    from app.router.session import Session
    from app.router.simulate.report import SimulationReport

GROUP = "simulate"
PLACEHOLDER = "a policy file to simulate (e.g. policy/proposed.toml), then enter"


class Simulated(Message):
    def __init__(self, report: SimulationReport, note: str | None = None) -> None:
        super().__init__()
        self.report = report
        #: said above the summary (the team's spend not counted, and why)
        self.note = note


async def simulate_file(core: CoreApp, path: Path) -> tuple[SimulationReport, str | None]:
    """The simulation of ``path`` against the session's policy, over the session's lines
    (:func:`replayed`), and what the screen says besides it."""
    from app.policy import LoadedPolicy, load_policy
    from app.resources import default_policy_path
    from app.router.simulate.stored import simulate_stored

    session = core.session
    if session is None:
        raise SwitchyardError(core.session_error or "the session is still opening")
    new = await asyncio.to_thread(load_policy, path)
    current = LoadedPolicy(session.policy, session.settings.policy or default_policy_path())
    settings, chain, note = replayed(session)
    # the CLI's own function, in a thread: its reads and the replay are off the UI's loop
    report = await asyncio.to_thread(
        simulate_stored, new, current, settings, chain=chain, local_only=session.local_only
    )
    return report, note


def replayed(session: Session) -> tuple[Settings, str | None, str | None]:
    """Where the session's lines are, as settings and a chain for the replay: its chain of
    the team store, or this machine's file. A team database set while the session writes
    to the file (database_fallback) is said: the team's spend is not counted there."""
    from app.router.store_fallback import FallbackAudit
    from app.router.stores import database_url

    audit = session.audit
    if isinstance(audit, FallbackAudit):
        audit = audit.in_use
    if audit.shared:
        from app.audit.pg_log import PgAuditLog

        assert isinstance(audit, PgAuditLog)
        return session.settings, audit.chain, None
    url = database_url(session.settings)
    local = session.settings.model_copy(update={"database_url": None})
    if url is None:
        return local, None, None
    return (
        local,
        None,
        f"this session writes to this machine's files, not the team database {url.display()}"
        " (it did not answer: database_fallback), so the rest of the team's spend is not"
        " counted: a shared cap may be crossed where this says it holds",
    )


class SimulateScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "back")]

    def __init__(self) -> None:
        super().__init__(id="simulate")
        self.report: SimulationReport | None = None

    @property
    def busy(self) -> Path | None:
        """The file being replayed: a replay runs in a thread to its end (a cancel does
        not stop it), so another is not started beside it. Kept on the app: a screen
        popped and opened again started a second one (a review)."""
        return self.core.simulating

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
        if self.busy is not None:
            self.notify(f"still simulating {self.busy}: {path} is not started beside it")
            return
        core, screen = self.core, self
        core.simulating = path
        self._say(f"simulating {path} …")

        async def work() -> None:
            try:
                screen.post_message(Simulated(*await simulate_file(core, path)))
            finally:  # (however it ends, and whichever screen is on top then)
                core.simulating = None

        # on the app, like every worker: its one handler reports a failure (WorkFailed)
        core.run_worker(work(), group=GROUP, exclusive=True, exit_on_error=False)

    def on_simulated(self, message: Simulated) -> None:
        from app.router.simulate.summary import summary_lines

        self.report = message.report
        note = [message.note] if message.note else []
        self._say("\n".join([*note, *summary_lines(message.report)]))

    def on_work_failed(self, message: WorkFailed) -> None:
        if message.group == GROUP:
            self._say(f"not simulated: {message.text}")

    def _say(self, text: str) -> None:
        # a replayed log's names and an error's text: drawn as they are (app/shown.py)
        self.query_one("#simulate-summary", Static).update(plain(text))
