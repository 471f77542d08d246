"""What every home screen of the workbench shares: the header, the bus bridge, the
escalation log, the budget meter, and the approval modal.

The run's screen (:mod:`app.tui.screens.main`) and the gateway's
(:mod:`app.tui.screens.gateway`) add their own panes. Textual calls a message handler of
every class on the way up, so a subclass handles only what this one does not, or adds to
it; it never calls ``super()`` from a handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, cast

from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widget import Widget

from app.tui.core import CoreApp, SessionReady, WorkFailed
from app.tui.panes.budget import BudgetPane, money
from app.tui.panes.escalations import EscalationsPane
from app.tui.widgets.header import SessionHeader
from app.tui.widgets.pane import Pane

if TYPE_CHECKING:
    # Loaded with the session, after the first frame (app.tui.core.CORE_MODULES): the
    # bridge brings the bus's event models, which the layout does not need.
    from app.bus import ApprovalRequested
    from app.router.approvals import DecisionKind
    from app.tui import bridge
    from app.tui.screens.approval import ApprovalScreen

#: audit kinds whose ``to`` is the model now serving the line's role: an ``approval``
#: line is the human's yes to a cloud escalation, written before the call goes out (the
#: bus's ApprovalResolved names no model, and a session-wide yes reused shows no modal)
_SERVING = frozenset({"route", "runtime_fallback", "call", "approval"})

_SEVERITY: dict[str, SeverityLevel] = {
    "info": "information",
    "warning": "warning",
    "error": "error",
}


class WorkbenchScreen(Screen[None]):
    """The base: compose a :class:`SessionHeader`, an :class:`EscalationsPane` and a
    :class:`BudgetPane` (and whatever else) in a subclass."""

    #: how often the bus's events are taken and drawn (None: the bridge's 30 a second,
    #: for streamed model text)
    FRAME_S: ClassVar[float | None] = None

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id)
        self.bridge: bridge.BusBridge | None = None
        #: the role at work and the model serving it, from StageChanged
        self.role = ""
        self.pending_approvals: dict[str, ApprovalScreen] = {}
        #: characters of model output streamed since the stage began (liveness)
        self.streamed = 0

    @property
    def core(self) -> CoreApp:
        return cast(CoreApp, self.app)

    def on_mount(self) -> None:
        self.core.home = self
        # The layout is drawn first (the header says "opening session…"); the session,
        # and the bridge it needs, follow in a worker.
        self.call_after_refresh(self.core.open_session, self.start_bridge)
        if self.core.start_notice:
            self.notify(self.core.start_notice, severity="warning", timeout=10)

    def start_bridge(self) -> None:
        """Subscribe to the bus (before the session opens: no event of it is missed)."""
        from app.tui import bridge

        self.bridge = bridge.BusBridge(self.core.bus, self, frame_s=self.FRAME_S)
        self.bridge.start()

    def on_unmount(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()

    def resting_state(self) -> str:
        """The header's state when nothing waits on the human."""
        if not self.core.running:
            return "idle"
        control = self.core.control
        # after x the run goes on to the end of the model call in progress: "running"
        # for that minute read as if the key had done nothing
        return "stopping" if control is not None and control.stopping else "running"

    # ── panes ────────────────────────────────────────────────────────────────────────────

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
        self.header.state = self.resting_state()
        budget = session.policy.budget
        self.header.spend = f"{money(0.0)} / {money(budget.session_usd)}"
        # Drawn with the session: start-up is over (app/heap.py).
        self.call_after_refresh(self.core.end_startup)

    def on_work_failed(self, message: WorkFailed) -> None:
        if message.group in ("run", "session"):
            self.header.state = "error"
        if message.group == "session":
            self.call_after_refresh(self.core.end_startup)

    # ── bus messages ─────────────────────────────────────────────────────────────────────

    def on_audit_batch(self, message: bridge.AuditBatch) -> None:
        self.escalations.add_lines(message.lines)
        # StageChanged names the role; the audit line names the model that serves it.
        for line in reversed(message.lines):
            kind = line.get("kind")
            serving = kind in _SERVING and line.get("role") == self.role
            if serving and line.get("to"):
                model, _, runtime = str(line["to"]).partition("@")
                self.header.model, self.header.runtime = model, runtime or "cloud"
                # approved: the call is out, and the header says what it waits for (the
                # local model stayed named, "running" then "stopping", for the whole
                # cloud call, until its call line landed: a user audit)
                self.header.waiting = kind == "approval"
                break

    def on_budget_changed(self, message: bridge.BudgetChanged) -> None:
        self.budget.show(message.snapshot)
        session: dict[str, Any] = message.snapshot.get("per_session") or {}
        spent = float(session.get("spent_usd") or 0.0)
        cap = session.get("cap_usd")
        self.header.spend = f"{money(spent)} / {money(cap)}" if cap else money(spent)

    def on_core_notice(self, message: bridge.CoreNotice) -> None:
        e = message.event
        self.notify(e.text, severity=_SEVERITY[e.level])

    def on_approval_asked(self, message: bridge.ApprovalAsked) -> None:
        from app.tui.screens.approval import ApprovalScreen

        request = message.event
        modal = ApprovalScreen(request, self.core.clock, origin=self.approval_origin(request))
        self.pending_approvals[request.request_id] = modal
        self.header.state = "awaiting approval"
        # what was at work before is over while the human decides ("awaiting approval ·
        # architect writing · 173 chars" read as both at once: a user-audit)
        self.header.activity = ""
        self.approvals_changed()

        def answered(result: tuple[DecisionKind, str] | None) -> None:
            self._approval_closed(request)
            if result is not None:
                self.core.resolve_approval(request.request_id, result[0], result[1])

        self.app.push_screen(modal, callback=answered)

    def approval_origin(self, request: ApprovalRequested) -> str:
        """Who waits on this approval, for the modal (nothing to add for a run)."""
        return ""

    def approvals_changed(self) -> None:
        """An approval was asked or closed (a run's header names its own role at work)."""

    def _approval_closed(self, request: ApprovalRequested) -> None:
        self.pending_approvals.pop(request.request_id, None)
        if not self.pending_approvals and self.header.state == "awaiting approval":
            self.header.state = self.resting_state()
        self.approvals_changed()

    def on_approval_settled(self, message: bridge.ApprovalSettled) -> None:
        if message.event.decision == "deny_all":
            self.header.stays_local = True
        modal = self.pending_approvals.get(message.event.request_id)
        if modal is not None:
            modal.settled(message.event.decision)
            if message.event.decided_by == "timeout":
                self.notify("approval timed out: denied", severity="warning")
            elif message.event.decided_by == "cancelled":  # nobody decided: it went away
                self.notify(
                    f"approval of {modal.request.model} withdrawn: the request ended first",
                    severity="warning",
                )

    # ── keys ─────────────────────────────────────────────────────────────────────────────

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # "z zoom pane" and "z back" share the key; the footer names the one that acts
        # now (zoomed, it still said "zoom pane" and hid that esc or z comes back)
        if action == "zoom":
            # and only with a pane to zoom: with nothing focused (a session that did not
            # open) it offered "z zoom" and said "nothing to zoom here" (a user audit)
            return self.maximized is None and self._focused_pane() is not None
        if action == "unzoom":
            return self.maximized is not None
        if action == "stop":
            # only while a run goes (it sat in the footer idle, and at 80 columns pushed
            # "z zoom pane" out: a TUI audit)
            return self.core.running
        return True

    def watch_maximized(self) -> None:
        # the footer's z says what it does now, however the zoom ended (Textual's own
        # escape minimizes without an action of ours)
        self.refresh_bindings()

    def action_unzoom(self) -> None:
        if self.maximized is not None:
            self.minimize()

    def action_zoom(self) -> None:
        """The focused pane full screen (``z`` or escape brings it back: ``unzoom``)."""
        if self.maximized is not None:
            self.action_unzoom()
            return
        node = self._focused_pane()
        if node is None or not self.maximize(node, container=False):
            self.notify("nothing to zoom here: Tab to a pane first", severity="warning")

    def _focused_pane(self) -> Pane | None:
        """The pane around the focus: on Plan and Budget the focus is a scrolling view,
        which Textual never maximizes, and "z" did nothing there."""
        node = self.focused
        while node is not None and not isinstance(node, Pane):
            node = node.parent if isinstance(node.parent, Widget) else None
        return node if isinstance(node, Pane) else None

    def zoom_pane(self, pane: Widget) -> None:
        """``pane`` full screen with the focus in it (the palette's Budget): zoomed with
        the focus left in the task box, hidden behind it, the keys typed went into that
        box unseen (an Enter would have started a run from them), and z was typed there
        instead of bringing the panes back (a TUI audit)."""
        inside = next((w for w in pane.query("*") if w.focusable), None)
        if inside is not None:
            inside.focus()
        elif pane.focusable:
            pane.focus()
        self.maximize(pane, container=False)

    def action_new_task(self) -> None:
        """Type a task (the palette's "New task"); a screen without a task box says why."""

    def action_escalate(self) -> None:
        """Ask to escalate the role at work (the palette's "Escalate")."""
