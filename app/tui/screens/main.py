"""The main screen: header, the five panes, the task input, the footer.

The bus bridge posts here; each handler hands its message to the pane that shows it.
An approval request pushes the modal; its answer goes back to the broker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, cast

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import Footer, Input

from app.router.approvals import DecisionKind
from app.tui import bridge
from app.tui.core import CoreApp, RunDone, RunStarted, SessionReady, WorkFailed
from app.tui.panes.budget import BudgetPane, money
from app.tui.panes.diff import DiffPane
from app.tui.panes.escalations import EscalationsPane
from app.tui.panes.plan import PlanPane
from app.tui.panes.tests import TestsPane
from app.tui.screens.approval import ApprovalScreen
from app.tui.widgets.header import SessionHeader

if TYPE_CHECKING:
    from app.bus import ApprovalRequested

#: audit kinds whose ``to`` is the model now serving the line's role
_SERVING = frozenset({"route", "runtime_fallback", "call"})

_SEVERITY: dict[str, SeverityLevel] = {
    "info": "information",
    "warning": "warning",
    "error": "error",
}


class MainScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "escalate", "escalate"),
        Binding("v", "evidence", "evidence"),
        Binding("t", "tutor", "tutor"),
        Binding("x", "stop", "stop run"),
        Binding("z", "zoom", "zoom pane"),
        Binding("slash", "new_task", "task", show=False),
        Binding("escape", "leave_input", "keys", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="main")
        self.bridge: bridge.BusBridge | None = None
        #: the role at work and the model serving it, from StageChanged
        self.role = ""
        self.pending_approvals: dict[str, ApprovalScreen] = {}
        #: characters of model output streamed since the stage began (liveness)
        self.streamed = 0

    @property
    def core(self) -> CoreApp:
        return cast(CoreApp, self.app)

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

    def on_mount(self) -> None:
        # Subscribe before the session opens, so no event of the session is missed.
        self.bridge = bridge.BusBridge(self.core.bus, self)
        self.bridge.start()
        self.core.home = self
        self.core.open_session()
        if self.core.start_notice:
            self.notify(self.core.start_notice, severity="warning", timeout=10)
        if self.core.start_task:
            self.query_one("#task", Input).value = self.core.start_task
            self.query_one("#escalations").query_one("#audit-view").focus()
        else:
            self.query_one("#task", Input).focus()

    def on_unmount(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()

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

    @property
    def escalations(self) -> EscalationsPane:
        return self.query_one(EscalationsPane)

    @property
    def budget(self) -> BudgetPane:
        return self.query_one(BudgetPane)

    @property
    def header(self) -> SessionHeader:
        return self.query_one(SessionHeader)

    # ── core results ─────────────────────────────────────────────────────────────────────

    def on_session_ready(self, message: SessionReady) -> None:
        session = message.session
        self.header.session = session.id
        self.header.local_only = session.local_only
        self.header.state = "idle"
        budget = session.policy.budget
        self.header.spend = f"{money(0.0)} / {money(budget.session_usd)}"

    def on_run_started(self, message: RunStarted) -> None:
        for pane in (self.plan, self.diff, self.tests):
            pane.reset()
        self.header.state = "running"

    def on_run_done(self, message: RunDone) -> None:
        outcome = getattr(message.result, "outcome", None)
        if isinstance(outcome, str) and self.header.state == "running":
            self.header.state = outcome

    def on_work_failed(self, message: WorkFailed) -> None:
        if message.group in ("run", "session"):
            self.header.state = "error"

    # ── bus messages ─────────────────────────────────────────────────────────────────────

    def on_audit_batch(self, message: bridge.AuditBatch) -> None:
        self.escalations.add_lines(message.lines)
        # StageChanged names the role; the audit line names the model that serves it.
        for line in reversed(message.lines):
            serving = line.get("kind") in _SERVING and line.get("role") == self.role
            if serving and line.get("to"):
                model, _, runtime = str(line["to"]).partition("@")
                self.header.model, self.header.runtime = model, runtime or "cloud"
                break

    def on_token_text(self, message: bridge.TokenText) -> None:
        self.streamed += len(message.text)
        self.header.activity = f"{message.role} writing · {self.streamed:,} chars"

    def on_test_text(self, message: bridge.TestText) -> None:
        self.tests.add_text(message.loop, message.text)

    def on_loop_finished(self, message: bridge.LoopFinished) -> None:
        e = message.event
        self.tests.loop_finished(e.loop, e.passed, e.exit_code, e.runner)
        if "tests" in self.plan.stages:
            # The pipeline starts a "tests" stage per loop; the loop's end closes it.
            self.plan.stage("tests", "finished" if e.passed else "failed")

    def on_budget_changed(self, message: bridge.BudgetChanged) -> None:
        self.budget.show(message.snapshot)
        session: dict[str, Any] = message.snapshot.get("per_session") or {}
        spent = float(session.get("spent_usd") or 0.0)
        cap = session.get("cap_usd")
        self.header.spend = f"{money(spent)} / {money(cap)}" if cap else money(spent)

    def on_plan_changed(self, message: bridge.PlanChanged) -> None:
        self.plan.show_plan(message.event.plan)

    def on_diff_changed(self, message: bridge.DiffChanged) -> None:
        self.diff.show_diff(message.event.attempt, message.event.diff)

    def on_stage_moved(self, message: bridge.StageMoved) -> None:
        e = message.event
        self.plan.stage(e.stage, e.status)
        self.streamed = 0
        # A stage without a role of its own (the sandboxed tests) is worth naming.
        running = e.status == "started" and e.stage not in (e.role, self.role)
        self.header.activity = e.stage if running else ""
        if e.status == "started" and e.role and e.role != self.role:
            self.role = self.header.role = e.role
            self.header.model, self.header.runtime = e.model, e.runtime
        elif e.status == "started" and e.model:
            self.header.model, self.header.runtime = e.model, e.runtime

    def on_run_ended(self, message: bridge.RunEnded) -> None:
        e = message.event
        self.plan.finished(e.outcome)
        self.header.state = e.outcome
        self.header.activity = ""
        severity: SeverityLevel = "information" if e.outcome == "merge_ready" else "warning"
        why = f": {e.reason}" if e.reason else ""
        self.notify(f"run {e.run} ended {e.outcome}{why}", severity=severity, timeout=8)

    def on_core_notice(self, message: bridge.CoreNotice) -> None:
        e = message.event
        self.notify(e.text, severity=_SEVERITY[e.level])

    def on_approval_asked(self, message: bridge.ApprovalAsked) -> None:
        request = message.event
        modal = ApprovalScreen(request, self.core.clock)
        self.pending_approvals[request.request_id] = modal
        self.header.state = "awaiting approval"

        def answered(result: tuple[DecisionKind, str] | None) -> None:
            self._approval_closed(request)
            if result is not None:
                self.core.resolve_approval(request.request_id, result[0], result[1])

        self.app.push_screen(modal, callback=answered)

    def _approval_closed(self, request: ApprovalRequested) -> None:
        self.pending_approvals.pop(request.request_id, None)
        if not self.pending_approvals and self.header.state == "awaiting approval":
            self.header.state = "running" if self.core.running else "idle"

    def on_approval_settled(self, message: bridge.ApprovalSettled) -> None:
        modal = self.pending_approvals.get(message.event.request_id)
        if modal is not None:
            modal.settled(message.event.decision)
            if message.event.decided_by == "timeout":
                self.notify("approval timed out: denied", severity="warning")

    # ── keys ─────────────────────────────────────────────────────────────────────────────

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "task":
            return
        task = event.value.strip()
        if task and self.core.start_run(task):
            self.escalations.view.focus()

    def action_new_task(self) -> None:
        box = self.query_one("#task", Input)
        box.value = ""
        box.focus()

    def action_leave_input(self) -> None:
        """Undo a zoom, or leave the task input so single-letter keys act again."""
        if self.maximized is not None:
            self.minimize()
        elif isinstance(self.focused, Input):
            self.escalations.view.focus()

    def action_zoom(self) -> None:
        """The focused pane full screen, or back (escape also restores)."""
        if self.maximized is not None:
            self.minimize()
        elif self.focused is not None:
            self.maximize(self.focused)

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
