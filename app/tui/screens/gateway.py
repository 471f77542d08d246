"""The gateway's screen (``switchyard serve --tui``): the requests view on top, the
escalation log and the budget meter below, the address in the header.

The plan, diff and tests panes are the pipeline's: the gateway serves requests, not
stages, so they would stay empty; the requests view takes their place and the whole
width it needs for its columns. An escalation raises the same approval modal as a run
(:class:`~app.tui.screens.workbench.WorkbenchScreen`); the HTTP request is held until
the key, or the broker's timeout, decides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Footer

from app.tui.core import WorkFailed
from app.tui.gateway import GatewayListening, GatewayStopped
from app.tui.panes.budget import BudgetPane
from app.tui.panes.escalations import EscalationsPane
from app.tui.panes.requests import RequestsPane, short_client
from app.tui.screens.workbench import WorkbenchScreen
from app.tui.widgets.header import SessionHeader

if TYPE_CHECKING:
    from app.bus import ApprovalRequested
    from app.tui import bridge


class GatewayScreen(WorkbenchScreen):
    #: ten frames a second: the screen shares its event loop with the gateway, and under
    #: a stream of requests each frame is a redraw (15 ms at p50 under load) and the
    #: rendering's cyclic garbage; no model text streams here
    FRAME_S = 0.1

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("z", "zoom", "zoom pane"),
        Binding("z", "unzoom", "back"),
        Binding("escape", "unzoom", "back", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="gateway")
        #: starting gateway → listening → stopped, or error
        self.gateway_state = "starting gateway"
        #: approvals whose request ended first (their modal was closed)
        self._withdrawn: set[str] = set()
        #: the role, model and runtime of the last request served (the header's when no
        #: approval waits)
        self._served = ("", "", "")

    def compose(self) -> ComposeResult:
        yield SessionHeader(id="header")
        yield RequestsPane(id="requests")
        with Horizontal(id="bottom-row"):
            yield EscalationsPane(id="escalations")
            yield BudgetPane(id="budget")
        yield Footer()

    def on_mount(self) -> None:
        self.requests.view.focus()

    @property
    def requests(self) -> RequestsPane:
        return self.query_one(RequestsPane)

    def resting_state(self) -> str:
        return self.gateway_state

    def _set_state(self, state: str) -> None:
        self.gateway_state = state
        if self.header.state != "awaiting approval":
            self.header.state = state

    # ── the server ───────────────────────────────────────────────────────────────────────

    def on_gateway_listening(self, message: GatewayListening) -> None:
        self.header.address = message.address
        self._set_state("listening")
        self.notify(
            f"OpenAI base URL {message.address}/v1 · Anthropic base URL {message.address}",
            title=f"listening on {message.address}",
            timeout=10,
        )

    def on_gateway_stopped(self, message: GatewayStopped) -> None:
        self.header.address = ""
        self._set_state("stopped")

    def on_work_failed(self, message: WorkFailed) -> None:
        if message.group == "gateway":
            self.header.address = ""
            self._set_state("error")

    def approval_origin(self, request: ApprovalRequested) -> str:
        row = self.requests.rows.get(request.run)
        if row is None:
            return ""
        return f"{short_client(row.client)} · {row.asked}"

    # ── traffic ──────────────────────────────────────────────────────────────────────────

    def on_audit_batch(self, message: bridge.AuditBatch) -> None:
        self.requests.add_audit(message.lines)
        self._withdraw_ended()

    def on_requests_served(self, message: bridge.RequestsServed) -> None:
        self.requests.served(message.events)
        last = message.events[-1]
        self._served = (last.role, last.model or "", last.runtime or "")
        self._withdraw_ended()
        self.approvals_changed()

    def approvals_changed(self) -> None:
        """The header names what an approval waiting asks for (the latest asked, on top),
        else the last request served: it named the last served while another request's
        approval waited, as if that role were at work (a TUI audit)."""
        waiting = list(self.pending_approvals.values())
        if waiting:
            asked = waiting[-1].request
            role, model, runtime = asked.role, asked.model, "cloud"
        else:
            role, model, runtime = self._served
        self.header.role, self.header.model, self.header.runtime = role, model, runtime

    def _withdraw_ended(self) -> None:
        """A request that ended while its approval was asked (the client went away, the
        server stopped) leaves nobody to answer: close its modal and say why."""
        for request_id, modal in list(self.pending_approvals.items()):
            row = self.requests.rows.get(modal.request.run)
            if row is None or not row.done or request_id in self._withdrawn:
                continue
            self._withdrawn.add(request_id)
            modal.settled("withdrawn")
            self.notify(
                f"{short_client(row.client)}: the request ended ({row.outcome}) before the "
                f"approval of {modal.request.model}",
                severity="warning",
            )

    # ── keys ─────────────────────────────────────────────────────────────────────────────

    def action_new_task(self) -> None:
        self.notify(
            "this workbench hosts the gateway; runs are in `switchyard tui`", severity="warning"
        )

    def action_escalate(self) -> None:
        self.notify(
            "a client asks to escalate with the model id ROLE+escalate "
            "or the header x-switchyard-escalate: 1",
            severity="warning",
        )
