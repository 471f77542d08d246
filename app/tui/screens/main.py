"""The main screen: header, the five panes, the task input, the footer.

The bus bridge posts here; each handler hands its message to the pane that shows it.
What it shares with the gateway's screen (the header, the escalation log, the budget,
the approval modal) is in :class:`~app.tui.screens.workbench.WorkbenchScreen`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.notifications import SeverityLevel
from textual.widgets import Footer, Input

from app.tui.core import RunDone, RunMerged, RunStarted, RunStopping, WorkFailed
from app.tui.panes.budget import BudgetPane
from app.tui.panes.diff import DiffPane
from app.tui.panes.escalations import EscalationsPane
from app.tui.panes.plan import PlanPane
from app.tui.panes.tests import TestsPane
from app.tui.screens.workbench import WorkbenchScreen
from app.tui.widgets.header import SessionHeader

if TYPE_CHECKING:
    from app.tui import bridge  # loaded with the session (app.tui.core.CORE_MODULES)


#: audit lines written just before a model call (its route, a fallback, an escalation)
_CALL_STARTS = frozenset({"route", "runtime_fallback", "escalation"})
#: roles whose calls run beside the run, not in it (the tutor's screen asks them)
_BESIDE_THE_RUN = frozenset({"tutor"})


class MainScreen(WorkbenchScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        # the app's own, first here: the footer lists the focused pane's keys, then the
        # screen's, then the app's, and at 80 columns the last of them (quit) was cut
        Binding("ctrl+q", "app.quit", "quit", priority=True),
        Binding("e", "escalate", "escalate"),
        Binding("v", "evidence", "evidence"),
        Binding("t", "tutor", "tutor"),
        Binding("x", "stop", "stop run"),
        Binding("z", "zoom", "zoom"),
        Binding("z", "unzoom", "back"),
        # in the footer while a new task can be typed: after a run ended nothing on
        # screen said how to start the next one (a TUI audit)
        Binding("slash", "new_task", "new task"),
        Binding("escape", "leave_input", "keys", show=False),
    ]

    #: below 100 columns the budget meter is a line under the tests and the escalation
    #: log, and they share the row (themes/main.tcss): as a column it kept 34, then 31,
    #: and the log was cut to a few words a line at 80 and 60 (user-audits)
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]  # noqa: RUF012

    def __init__(self) -> None:
        super().__init__(id="main")
        #: the run shown, once it ended (a merge of it is said in the header and the plan)
        self.ended_run: str | None = None

    def compose(self) -> ComposeResult:
        yield SessionHeader(id="header")
        with Horizontal(id="top-row"):
            yield PlanPane(id="plan")
            yield DiffPane(id="diff")
        with Horizontal(id="bottom-row"):
            yield TestsPane(id="tests")
            yield EscalationsPane(id="escalations")
            yield BudgetPane(id="budget")
        yield Input(
            placeholder="task: describe the change, then enter (esc: back to the keys)", id="task"
        )
        yield Footer()

    def on_resize(self, event: events.Resize) -> None:
        # below 100 columns the footer drops its padding: at 80, with a run going and the
        # escalations pane focused, "x stop run" was cut and "z zoom" gone (a TUI audit)
        self.query_one(Footer).compact = event.size.width < 100

    def on_mount(self) -> None:
        # (the bridge, the session: WorkbenchScreen.on_mount, called after this one)
        if self.core.start_task:
            self.query_one("#task", Input).value = self.core.start_task
            self.query_one("#escalations").query_one("#audit-view").focus()
        else:
            self.query_one("#task", Input).focus()

    def on_work_failed(self, message: WorkFailed) -> None:
        # (the header: WorkbenchScreen.on_work_failed) The plan and the task line invited
        # a task that no session could run; the toast saying why was gone after 8 s.
        if message.group == "session":
            self.plan.session_failed(message.text)
            task = self.query_one("#task", Input)
            task.placeholder = "no task can run: the session did not open (ctrl+q quits)"
            task.disabled = True
            self.refresh_bindings()  # ("/ new task" goes from the footer)

    # ── panes ────────────────────────────────────────────────────────────────────────────

    @property
    def plan(self) -> PlanPane:
        return self.query_one(PlanPane)

    @property
    def diff(self) -> DiffPane:
        return self.query_one(DiffPane)

    @property
    def tests(self) -> TestsPane:
        return self.query_one(TestsPane)

    # ── core results ─────────────────────────────────────────────────────────────────────

    def on_run_started(self, message: RunStarted) -> None:
        self.ended_run = None
        for pane in (self.plan, self.diff, self.tests):
            pane.reset()
        # the last run's role and model are not this run's: it read "running ·
        # implementer" before this run's first stage had named any role
        self.role = self.header.role = ""
        self.header.model = self.header.runtime = ""
        self.header.waiting = False
        self.header.state = "running"
        self.refresh_bindings()

    def on_run_stopping(self, message: RunStopping) -> None:
        if self.header.state == "running":  # (a modal's "awaiting approval" stays)
            self.header.state = self.resting_state()

    def on_run_done(self, message: RunDone) -> None:
        outcome = getattr(message.result, "outcome", None)
        if isinstance(outcome, str) and self.header.state in ("running", "stopping"):
            self.header.state = outcome

    # ── bus messages ─────────────────────────────────────────────────────────────────────

    def on_token_text(self, message: bridge.TokenText) -> None:
        if message.role in _BESIDE_THE_RUN:
            # the tutor's, asked beside the run: not the run's activity ("implementer ·
            # tutor writing · 38 chars" in a user-audit); a critic's or a second opinion's
            # inside a stage is (their count kept the header still, as if hung: a review)
            return
        self.streamed += len(message.text)
        self.header.waiting = False  # (the reply is coming)
        self.header.activity = f"{message.role} writing · {self.streamed:,} chars"

    def on_audit_batch(self, message: bridge.AuditBatch) -> None:
        # (WorkbenchScreen's handler runs too: Textual calls each class's in turn)
        if not self.core.running or not self.role:
            return
        for line in message.lines:
            role = line.get("role")
            if line.get("kind") in _CALL_STARTS and role and role not in _BESIDE_THE_RUN:
                # a new model call: its prompt is read before a token comes, for minutes
                # on a small CPU, and the header still showed the last call's count, as
                # if it had hung (a user-audit)
                self.streamed = 0
                self.header.activity = f"{role} waiting for the model (reading the prompt)"

    def on_test_text(self, message: bridge.TestText) -> None:
        self.tests.add_text(message.loop, message.text)

    def on_loop_finished(self, message: bridge.LoopFinished) -> None:
        e = message.event
        self.tests.loop_finished(e.loop, e.passed, e.exit_code, e.runner)
        if "tests" in self.plan.stages:
            # The pipeline starts a "tests" stage per loop; the loop's end closes it. The
            # baseline (loop 0) is red by design, before any attempt: a red "✗ tests"
            # there read as a failure of the run (a user-audit)
            status = "finished" if e.passed else "baseline" if e.loop == 0 else "failed"
            self.plan.stage("tests", status)

    def on_plan_changed(self, message: bridge.PlanChanged) -> None:
        self.plan.show_plan(message.event.plan)

    def on_plan_steps_moved(self, message: bridge.PlanStepsMoved) -> None:
        self.plan.step_status(message.event.statuses)

    def on_diff_changed(self, message: bridge.DiffChanged) -> None:
        self.diff.show_diff(message.event.attempt, message.event.diff)

    def on_stage_moved(self, message: bridge.StageMoved) -> None:
        e = message.event
        if e.run and self.core.running:
            self.core.live_run = e.run
        self.plan.stage(e.stage, e.status)
        self.streamed = 0
        # A stage without a role of its own (the sandboxed tests) is worth naming.
        running = e.status == "started" and e.stage not in (e.role, self.role)
        self.header.activity = e.stage if running else ""
        if e.status == "started" and e.role and e.role != self.role:
            self.role = self.header.role = e.role
            self.header.model, self.header.runtime = e.model, e.runtime
            self.header.waiting = False
        elif e.status == "started" and e.model:
            self.header.model, self.header.runtime = e.model, e.runtime
            self.header.waiting = False

    def on_run_merged(self, message: RunMerged) -> None:
        """The run shown was merged (from the evidence screen): the header and the plan
        said merge_ready and "(switchyard merge)" after it (a user audit)."""
        if message.run_id != self.ended_run or self.core.running:
            return
        self.header.state = "merged"
        self.plan.was_merged(message.merged.said())

    def on_run_ended(self, message: bridge.RunEnded) -> None:
        e = message.event
        self.ended_run = e.run
        self.plan.finished(e.outcome, e.reason)
        self.diff.finished(attempted="implementer" in self.plan.stages)
        self.header.state = e.outcome
        self.header.activity = ""
        self.header.waiting = False
        severity: SeverityLevel = "information" if e.outcome == "merge_ready" else "warning"
        why = f": {e.reason}" if e.reason else ""
        self.notify(f"run {e.run} ended {e.outcome}{why}", severity=severity, timeout=8)

    # ── keys ─────────────────────────────────────────────────────────────────────────────

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "task":
            return
        task = event.value.strip()
        if task and self.core.start_run(task):
            self.escalations.view.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("escalate", "tutor") and self.core.session_error is not None:
            # a session that did not open runs nothing and asks no tutor: "e escalate"
            # and "t tutor" stayed in the footer (a user audit)
            return False
        if action == "new_task":
            # not while a run goes (it is refused), nor in the task box (/ types a slash),
            # nor when the box is disabled (a broken policy): "/" offered it, did nothing,
            # and the task typed then went to the screen's keys ("e": "no run in
            # progress", a user-audit)
            disabled = any(box.disabled for box in self.query("#task").results(Input))
            return not (self.core.running or isinstance(self.focused, Input) or disabled)
        return super().check_action(action, parameters)

    def action_new_task(self) -> None:
        box = self.query_one("#task", Input)
        if box.disabled:  # (the palette's New task, which check_action does not stop)
            why = self.core.session_error or "the session did not open"
            self.notify(f"no task can run: {why}", severity="warning")
            return
        if self.core.running:  # (a palette opened before the run began, picked after)
            self.notify("a run is in progress: press x to stop it first", severity="warning")
            return
        box.value = ""
        box.focus()

    def action_leave_input(self) -> None:
        """Undo a zoom, or leave the task input so single-letter keys act again."""
        if self.maximized is not None:
            self.action_unzoom()
        elif isinstance(self.focused, Input):
            self.escalations.view.focus()

    def action_escalate(self) -> None:
        self.core.escalate(self.role or None)

    def action_stop(self) -> None:
        self.core.stop_run()

    def action_evidence(self) -> None:
        from app.tui.screens.evidence import EvidenceScreen

        self.app.push_screen(EvidenceScreen())

    def action_tutor(self) -> None:
        from app.tui.screens.tutor import TutorScreen

        self.app.push_screen(TutorScreen())
