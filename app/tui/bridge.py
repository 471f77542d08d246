"""The one bridge between the core's bus and the UI.

One subscription; a timer drains it once per frame (~1/30 s) and turns the batch into
Textual messages posted to one target (the main screen). High-rate events are merged
inside the frame (see :func:`translate`): a frame's audit lines become one
:class:`AuditBatch`, its finished gateway requests one :class:`RequestsServed`, each test
loop's output one message, only the newest budget snapshot is kept. Everything else is
one message per event, in bus order. Nothing is dropped here: audit lines are
``never_drop`` on the bus (the publisher waits when the queue is full) and every drained
line goes into a batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from textual.message import Message
from textual.message_pump import MessagePump
from textual.timer import Timer

from app.bus import (
    ApprovalRequested,
    ApprovalResolved,
    AuditAppended,
    BudgetUpdated,
    Bus,
    DiffUpdated,
    Event,
    Notice,
    PlanStepsChanged,
    PlanUpdated,
    RequestServed,
    RunFinished,
    StageChanged,
    Subscription,
    TestLoopFinished,
    TestOutput,
    TokenDelta,
)

FRAME_S = 1 / 30
#: Large enough that a busy core rarely waits on the UI; the bus applies back-pressure
#: (never drops) for audit lines beyond it.
QUEUE_SIZE = 65_536


class BusMessage(Message):
    """Base of every message the bridge posts."""


class AuditBatch(BusMessage):
    def __init__(self, lines: list[dict[str, Any]]) -> None:
        super().__init__()
        self.lines = lines


class RequestsServed(BusMessage):
    """The gateway requests that ended in one frame, in order (the requests view)."""

    def __init__(self, events: list[RequestServed]) -> None:
        super().__init__()
        self.events = events


class TestText(BusMessage):
    __test__ = False  # not a pytest class

    def __init__(self, run: str, loop: int, text: str) -> None:
        super().__init__()
        self.run, self.loop, self.text = run, loop, text


class TokenText(BusMessage):
    def __init__(self, role: str, model: str, text: str) -> None:
        super().__init__()
        self.role, self.model, self.text = role, model, text


class BudgetChanged(BusMessage):
    def __init__(self, snapshot: dict[str, Any]) -> None:
        super().__init__()
        self.snapshot = snapshot


class PlanChanged(BusMessage):
    def __init__(self, event: PlanUpdated) -> None:
        super().__init__()
        self.event = event


class PlanStepsMoved(BusMessage):
    def __init__(self, event: PlanStepsChanged) -> None:
        super().__init__()
        self.event = event


class DiffChanged(BusMessage):
    def __init__(self, event: DiffUpdated) -> None:
        super().__init__()
        self.event = event


class StageMoved(BusMessage):
    def __init__(self, event: StageChanged) -> None:
        super().__init__()
        self.event = event


class LoopFinished(BusMessage):
    def __init__(self, event: TestLoopFinished) -> None:
        super().__init__()
        self.event = event


class ApprovalAsked(BusMessage):
    def __init__(self, event: ApprovalRequested) -> None:
        super().__init__()
        self.event = event


class ApprovalSettled(BusMessage):
    def __init__(self, event: ApprovalResolved) -> None:
        super().__init__()
        self.event = event


class RunEnded(BusMessage):
    def __init__(self, event: RunFinished) -> None:
        super().__init__()
        self.event = event


class CoreNotice(BusMessage):
    def __init__(self, event: Notice) -> None:
        super().__init__()
        self.event = event


_ONE_TO_ONE: dict[type[Event], Callable[[Any], BusMessage]] = {
    PlanUpdated: PlanChanged,
    PlanStepsChanged: PlanStepsMoved,
    DiffUpdated: DiffChanged,
    StageChanged: StageMoved,
    TestLoopFinished: LoopFinished,
    ApprovalRequested: ApprovalAsked,
    ApprovalResolved: ApprovalSettled,
    RunFinished: RunEnded,
    Notice: CoreNotice,
}


def translate(events: list[Event]) -> list[BusMessage]:
    """One frame of events → messages. Pure.

    High-rate kinds are merged into one message per frame and stream, placed where the
    first of them came: every audit line of the frame in one :class:`AuditBatch`, every
    finished gateway request in one :class:`RequestsServed`, each
    test loop's (or token stream's) text in one message, only the newest budget
    snapshot. Each pane therefore sees its own events in bus order; the order *between*
    kinds may tighten (a later audit line joins the frame's batch), which no pane needs.
    """
    out: list[BusMessage] = []
    audit: AuditBatch | None = None
    served: RequestsServed | None = None
    budget: BudgetChanged | None = None
    texts: dict[tuple[str, int], TestText] = {}
    tokens: dict[tuple[str, str], TokenText] = {}
    for event in events:
        if isinstance(event, AuditAppended):
            if audit is None:
                audit = AuditBatch([])
                out.append(audit)
            audit.lines.append(event.line)
        elif isinstance(event, RequestServed):
            if served is None:
                served = RequestsServed([])
                out.append(served)
            served.events.append(event)
        elif isinstance(event, TestOutput):
            text = texts.get((event.run, event.loop))
            if text is None:
                text = texts[(event.run, event.loop)] = TestText(event.run, event.loop, "")
                out.append(text)
            text.text += event.text
        elif isinstance(event, TokenDelta):
            stream = tokens.get((event.role, event.model))
            if stream is None:
                stream = tokens[(event.role, event.model)] = TokenText(event.role, event.model, "")
                out.append(stream)
            stream.text += event.text
        elif isinstance(event, BudgetUpdated):
            # A snapshot is the whole state: an older one in the same frame is stale.
            if budget is None:
                budget = BudgetChanged(event.snapshot)
                out.append(budget)
            budget.snapshot = event.snapshot
        else:
            kind = _ONE_TO_ONE.get(type(event))
            if kind is not None:
                out.append(kind(event))
    return out


@dataclass
class BridgeStats:
    frames: int = 0
    events: int = 0
    messages: int = 0
    audit_lines: int = 0
    largest_batch: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class BusBridge:
    """Subscribes once and posts a frame's messages to ``target``."""

    def __init__(
        self,
        bus: Bus,
        target: MessagePump,
        *,
        frame_s: float | None = None,
        queue_size: int | None = None,
    ) -> None:
        self.bus = bus
        self.target = target
        self.frame_s = frame_s or FRAME_S
        self.queue_size = queue_size or QUEUE_SIZE
        self.stats = BridgeStats()
        self._sub: Subscription | None = None
        self._timer: Timer | None = None

    @property
    def subscribed(self) -> bool:
        return self._sub is not None

    def start(self) -> None:
        """Subscribe now (so nothing published from here on is missed) and start pumping."""
        if self._sub is None:
            self._sub = self.bus.subscribe(maxsize=self.queue_size)
            self._timer = self.target.set_interval(self.frame_s, self.pump, name="bus-bridge")

    def pump(self) -> int:
        """Drain what is queued and post it; returns the number of events taken."""
        if self._sub is None:
            return 0
        events = self._sub.drain()
        if not events:
            return 0
        messages = translate(events)
        stats = self.stats
        stats.frames += 1
        stats.events += len(events)
        stats.messages += len(messages)
        stats.largest_batch = max(stats.largest_batch, len(events))
        for event in events:
            name = type(event).__name__
            stats.by_kind[name] = stats.by_kind.get(name, 0) + 1
        for message in messages:
            if isinstance(message, AuditBatch):
                stats.audit_lines += len(message.lines)
            self.target.post_message(message)
        return len(events)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self._sub is not None:
            self._sub.close()
            self._sub = None
