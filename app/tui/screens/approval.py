"""The approval modal: what wants to leave the machine, and the human's keypress.

It shows the role, each trigger with its values, the target model, the estimated cost,
the budget left and a countdown (and, for the gateway, which client's request is held).
``y``/``a``/``n`` dismiss it with the decision; the caller hands that to the broker.
The broker owns the timeout: when it denies (or anyone else decides first) an
ApprovalResolved arrives and :meth:`settled` closes the modal.
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from app.bus import ApprovalRequested
from app.clock import Clock
from app.router.approvals import DecisionKind
from app.tui.panes.budget import money
from app.tui.safe import clean, literal, plain
from app.tui.widgets.pane import style_of

OPS = {"lt": "<", "le": "≤", "gt": ">", "ge": "≥", "eq": "=", "ne": "≠", "true": "is", "is": "is"}


def _num(value: Any) -> str:
    if isinstance(value, bool):  # it read "user_request = True" beside "== true"
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


#: the modal's keys and what each does, as its key line says them
KEYS = (
    ("y", "approve once"),
    ("a", "for the session"),
    ("n", "deny"),
    ("d", "deny all, stay local"),
)
#: what the key line says first when keys were taken for typing (:meth:`action_answer`)
TYPED_ON = "keys taken after a pause (you were typing): press"


def key_line(width: int, *, lead: str = "") -> Text:
    """``lead``, then each key and what it does, wrapped to ``width`` between keys only:
    at 60 columns one line was cut at "n deny   d", and "d" was never explained."""
    parts = [Text.assemble((lead, "bold"))] if lead else []
    parts += [Text.assemble((key, "bold"), f" {does}") for key, does in KEYS]
    out = Text()
    used = 0
    for part in parts:
        if used and used + 3 + len(part) > width:
            out.append("\n")
            used = 0
        elif used:
            out.append("   ")
            used += 3
        out.append_text(part)
        used += len(part)
    return out


class KeyLine(Static):
    """The modal's keys, wrapped to the line's width (:func:`key_line`)."""

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id)
        self.lead = ""

    def say(self, lead: str) -> None:
        self.lead = lead
        self._draw()

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        self.update(key_line(self.content_region.width or 70, lead=self.lead))


def trigger_line(reason: dict[str, Any]) -> str:
    """``IMPLEMENTER_FAILED_LOOPS: failed_loops = 2 (≥ 2)``"""
    code = reason.get("code") or reason.get("trigger") or "?"
    signal = reason.get("signal")
    if signal is None:
        return str(code)
    measured = f"{signal} = {_num(reason.get('value'))}"
    threshold = reason.get("threshold")
    if threshold is not None:
        op = str(reason.get("op", ""))
        measured += f" ({OPS.get(op, op)} {_num(threshold)})"
    return f"{code}: {measured}"


class ApprovalScreen(ModalScreen[tuple[DecisionKind, str] | None]):
    """Dismissed with (decision, reason) on a key, or None when settled elsewhere."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer('allow_once')", "approve once"),
        Binding("a", "answer('allow_session')", "approve for the session"),
        Binding("n", "answer('deny')", "deny"),
        Binding("d", "answer('deny_all')", "deny all: stay local"),
        Binding("escape", "answer('deny')", "deny", show=False),
    ]

    #: an answer key is taken only after this long with no key pressed, and the modal
    #: this long on screen: a "y" or an "a" in a sentence being typed in the task or
    #: tutor box when the modal came up approved an escalation (a TUI audit)
    TYPING_PAUSE_S: ClassVar[float] = 0.6

    def __init__(self, request: ApprovalRequested, clock: Clock, *, origin: str = "") -> None:
        super().__init__(classes="approval")
        self.request = request
        self.clock = clock
        #: who is waiting on the answer (a gateway client and its request), when known
        self.origin = origin
        self.opened_at = clock.monotonic()
        #: the last key's time, and the pause before the key being handled (real time,
        #: not the countdown's clock: a typist's pace)
        self._last_key = time.monotonic()
        self._pause = 0.0
        #: set when the broker settled the request while another screen was on top
        self.settled_event: str | None = None

    @property
    def remaining_s(self) -> float:
        return max(0.0, self.request.timeout_s - (self.clock.monotonic() - self.opened_at))

    def compose(self) -> ComposeResult:
        with Vertical(id="approval-box"):
            yield Static(id="approval-body")
            yield Static(id="approval-countdown")
            yield KeyLine(id="approval-keys")
        yield Footer()  # the modal's own keys, where the user looks for them

    def on_mount(self) -> None:
        if not self.query("#approval-body"):
            # the app quit as the modal came up (a rare race a test hit): its widgets
            # are gone before its mount ran, and there is nothing left to fill
            return
        box = self.query_one("#approval-box")
        box.border_title = "Escalation wants to leave the machine"
        box.border_subtitle = literal(f"request {self.request.request_id[:8]}")
        self.query_one("#approval-body", Static).update(self._body())
        self._tick()
        self.set_interval(0.25, self._tick, name="approval-countdown")

    def _body(self) -> Text:
        r = self.request
        v = self.app.theme_variables
        dim = style_of(v.get("dim-text", ""))
        strong = style_of(v.get("accent", ""), bold=True)
        text = Text()
        rows: list[tuple[str, Text | str]] = [
            ("role", plain(r.role, strong, one_line=True)),
            ("target", plain(f"{r.model} ({r.provider})", style_of("", bold=True), one_line=True)),
        ]
        # What the human approves must read as it is: a client's name or a trigger's
        # text cannot move the cursor or restyle the modal (app/shown.py).
        if self.origin:
            rows.append(("client", clean(self.origin, one_line=True)))
        for reason in r.reasons or [{}]:
            why_line = trigger_line(reason) if reason else "requested by the user"
            rows.append(("trigger", clean(why_line, one_line=True)))
            why = reason.get("text")
            # a yes/no trigger's text ("user_request == true") is its trigger line again
            # (the modal said it twice, "True" beside "true"); a threshold's reads in words,
            # on a line of its own under its trigger: drawn last, unlabelled, it read as
            # part of "budget left" (a user audit)
            if why and reason.get("op") != "is_true":
                rows.append(("detail", clean(str(why), one_line=True)))
        rows += [
            ("est. cost", f"~{money(r.est_cost_usd)}"),
            ("budget left", money(r.budget_left_usd)),
        ]
        for n, (label, value) in enumerate(rows):
            if n:
                text.append("\n")
            text.append(f"{label:<12}", dim)
            text.append_text(value if isinstance(value, Text) else Text(value))
        return text

    def _tick(self) -> None:
        left = self.remaining_s
        total = self.request.timeout_s or 1.0
        width = 30
        filled = math.ceil(width * left / total) if left > 0 else 0
        v = self.app.theme_variables
        colour = v.get("budget-ok" if left > total / 3 else "budget-over", "")
        bar = Text()
        bar.append("█" * filled, style_of(colour))
        bar.append("░" * (width - filled), style_of(v.get("budget-track", "")))
        label = f" {math.ceil(left)}s, then denied" if left > 0 else " timing out: denied"
        bar.append(label, style_of(colour, bold=True))
        self.query_one("#approval-countdown", Static).update(bar)

    def on_key(self, event: events.Key) -> None:
        # (every key reaches this before its binding's action)
        now = time.monotonic()
        self._pause, self._last_key = now - self._last_key, now

    def action_answer(self, decision: DecisionKind) -> None:
        if self._pause < self.TYPING_PAUSE_S:
            # typed on, not answered: said where the keys are, and asked again
            self.query_one(KeyLine).say(TYPED_ON)
            return
        key = {"allow_once": "y", "allow_session": "a", "deny": "n", "deny_all": "d"}[decision]
        self.dismiss((decision, f"{key} pressed"))

    def settled(self, decision: str) -> None:
        """The broker decided (timeout, or another decider): close without answering."""
        if self.app.screen is self:
            self.dismiss(None)
        else:
            self.settled_event = decision

    def on_screen_resume(self) -> None:
        # back on top (another modal above it answered): a pause starts again, or the key
        # that answered that one, pressed twice or held, answered this one unseen (a review)
        self._last_key = time.monotonic()
        if self.settled_event is not None:
            self.dismiss(None)
