"""Typed, immutable events and an asyncio publish/subscribe bus.

Publishing never waits on a subscriber: the audit log publishes each line under its
own lock, and a UI that stopped reading (a closed pipe, a crashed screen) must not stall
the router, the ledger or the audit chain (R8). Each subscriber has its own queue with a
soft size and a hard limit. What happens when the queue is at its soft size depends on
the event's delivery class:

* ``never_drop`` (audit lines, approvals, stage changes, results): queued all the same,
  in order, up to the hard limit. A subscriber that falls that far behind is detached:
  its subscription closes (what was queued can still be read) and every ``on_detached``
  listener is told why; the audit log turns that into a ``degradation`` line. Never a
  silent drop, never a stalled producer.
* ``coalesce`` (token deltas, test output): merged into the newest queued event with the
  same key, so a slow subscriber gets the same text in fewer, larger events.
* ``latest`` (budget snapshots): replaces the queued event with the same key.

Adjacent coalescable events are merged even when there is room, which batches a token
stream for a UI that renders once per frame. Order per publisher is preserved for
everything that is not merged. A consumer closes its subscription when it ends: use it
as a context manager (``with bus.subscribe(...) as sub:``).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from types import TracebackType
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict
from pydantic_core import from_json

from app.counted import counted

Delivery = Literal["never_drop", "coalesce", "latest"]


class Event(BaseModel):
    """Base of every bus event: frozen, typed, JSON-serialisable."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    delivery: ClassVar[Delivery] = "never_drop"

    session: str = ""

    def key(self) -> Hashable:
        """Events with equal keys may be coalesced or replaced (not used for never_drop)."""
        return (type(self).__name__, self.session)

    def merge(self, newer: Event) -> Event:
        """Combine self (queued) with ``newer`` (coalesce only). Default: the newer wins."""
        return newer


# ── Events ───────────────────────────────────────────────────────────────────────────────


class AuditAppended(Event):
    """A line was appended to the audit chain (the escalation pane shows these).

    It carries the line's ``text``, as the chain holds it; :attr:`line` is that text read
    as a dict, the first time a subscriber asks, and kept on the event for the others.
    The producer never reads it: reading both lines of a routed request on the request
    path cost ~16 µs of its latency with a live view attached (issue 20); a subscriber
    reads it when it takes the event, between requests.
    """

    text: str

    @classmethod
    def of(cls, line: Mapping[str, Any], session: str | None = None) -> AuditAppended:
        """The event for a line held as a dict (a replay, a test); its session is the
        line's unless given."""
        if session is None:
            session = str(line.get("session") or "")
        return cls(session=session, text=json.dumps(line, ensure_ascii=False))

    @property
    def line(self) -> dict[str, Any]:
        # Kept in the instance's dict beside the fields (a frozen model's fields cannot
        # be set), with the text it was read from: a copy made with another text
        # (``model_copy(update=...)`` copies that dict) reads its own.
        kept: tuple[str, dict[str, Any]] | None = self.__dict__.get("_read")
        if kept is None or kept[0] is not self.text:
            kept = self.__dict__["_read"] = (self.text, from_json(self.text))
        return kept[1]


class ApprovalRequested(Event):
    """The router asks a human; the broker resolves ``request_id``."""

    request_id: str
    #: the run (or gateway request, ``gw-…``) that asks; empty when there is none
    run: str = ""
    role: str
    model: str
    provider: str
    reasons: list[dict[str, Any]]
    est_cost_usd: float
    budget_left_usd: float
    timeout_s: float


class ApprovalResolved(Event):
    request_id: str
    decision: Literal["allow_once", "allow_session", "deny", "deny_all"]
    decided_by: str
    reason: str = ""


class BudgetUpdated(Event):
    delivery: ClassVar[Delivery] = "latest"
    snapshot: dict[str, Any]


class StageChanged(Event):
    run: str = ""
    stage: str
    status: Literal["started", "finished", "failed", "skipped"]
    role: str = ""
    model: str = ""
    runtime: str = ""
    detail: str = ""


class TokenDelta(Event):
    delivery: ClassVar[Delivery] = "coalesce"
    role: str
    model: str
    text: str

    def key(self) -> Hashable:
        return ("TokenDelta", self.session, self.role, self.model)

    def merge(self, newer: Event) -> Event:
        assert isinstance(newer, TokenDelta)
        return self.model_copy(update={"text": self.text + newer.text})


class TestOutput(Event):
    __test__ = False  # not a pytest class
    delivery: ClassVar[Delivery] = "coalesce"
    run: str = ""
    loop: int
    text: str

    def key(self) -> Hashable:
        return ("TestOutput", self.session, self.run, self.loop)

    def merge(self, newer: Event) -> Event:
        assert isinstance(newer, TestOutput)
        return self.model_copy(update={"text": self.text + newer.text})


class PlanUpdated(Event):
    run: str = ""
    plan: dict[str, Any]


class PlanStepsChanged(Event):
    """Each plan step's status as the pipeline knows it (the plan pane shows these, never
    a guess): pending once planned, active while the Implementer works on the change,
    done when the tests pass (skipped: the final change touched none of its files),
    failed when the Implementer stopped without a passing change."""

    run: str = ""
    statuses: list[Literal["pending", "active", "done", "failed", "skipped"]]
    detail: str = ""


class DiffUpdated(Event):
    run: str = ""
    attempt: int
    diff: str
    #: the commit holding the attempt (an editor's new text is read from it; None: unknown)
    commit: str | None = None


class TestLoopFinished(Event):
    __test__ = False
    run: str = ""
    loop: int
    passed: bool
    exit_code: int
    runner: str = ""


class RunFinished(Event):
    run: str
    outcome: Literal["merge_ready", "stopped", "failed"]
    reason: str = ""


class Notice(Event):
    level: Literal["info", "warning", "error"] = "info"
    text: str


class RequestServed(Event):
    """One gateway request as it ended (the workbench's requests view)."""

    request: str
    protocol: str
    client: str
    model_asked: str
    role: str
    model: str | None = None
    runtime: str | None = None
    escalated: bool = False
    status: int = 200
    outcome: str = "ok"
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0


# ── Bus ──────────────────────────────────────────────────────────────────────────────────


#: a never-drop queue may hold this many times its soft size before it is detached
HARD_LIMIT_FACTOR = 64
#: ... and never fewer than this many events (a small soft size is for coalescing)
MIN_HARD_LIMIT = 4096


class Subscription:
    """One subscriber's queue. Iterate it, or ``await get()``; close it when done (or use
    it as a context manager)."""

    def __init__(
        self,
        bus: Bus,
        maxsize: int,
        kinds: tuple[type[Event], ...] | None,
        *,
        name: str = "subscriber",
        limit: int | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self._bus = bus
        self.maxsize = maxsize
        #: never-drop events beyond this detach the subscriber
        self.limit = max(limit or max(MIN_HARD_LIMIT, HARD_LIMIT_FACTOR * maxsize), maxsize)
        self.kinds = kinds
        self.name = name
        self._items: deque[Event] = deque()
        self._not_empty = asyncio.Event()
        self.closed = False
        #: why the bus detached this subscriber (None: attached, or closed by its consumer)
        self.detached: str | None = None
        self.coalesced = 0  # events merged or replaced, for the meter and the benchmark

    def wants(self, event: Event) -> bool:
        return self.kinds is None or isinstance(event, self.kinds)

    def qsize(self) -> int:
        return len(self._items)

    def _merge_into_queue(self, event: Event) -> bool:
        """Coalesce or replace in place; True when ``event`` was absorbed."""
        if event.delivery == "never_drop" or not self._items:
            return False
        key = event.key()
        if event.delivery == "coalesce":
            tail = self._items[-1]
            if type(tail) is type(event) and tail.key() == key:
                self._items[-1] = tail.merge(event)
                self.coalesced += 1
                return True
            if len(self._items) < self.maxsize:
                return False
        for i in range(len(self._items) - 1, -1, -1):
            queued = self._items[i]
            if type(queued) is type(event) and queued.key() == key:
                self._items[i] = queued.merge(event) if event.delivery == "coalesce" else event
                self.coalesced += 1
                return True
        return False

    def offer(self, event: Event) -> str | None:
        """Queue ``event`` without waiting. Returns why the subscriber must be detached
        (it fell behind by the hard limit), or None."""
        if self.closed or self._merge_into_queue(event):
            return None
        if len(self._items) >= self.limit:
            return (
                f"{self.name} fell behind by {counted(len(self._items), 'event')} "
                f"(limit {self.limit}); detached so that no producer waits on it"
            )
        self._items.append(event)
        self._not_empty.set()
        return None

    async def put(self, event: Event) -> None:
        """Queue ``event`` (never waits; kept for callers that await it)."""
        why = self.offer(event)
        if why is not None:
            self._bus.detach(self, why, event)

    async def get(self) -> Event:
        while not self._items:
            if self.closed:
                raise StopAsyncIteration
            self._not_empty.clear()
            await self._not_empty.wait()
        event = self._items.popleft()
        if not self._items:
            self._not_empty.clear()
        return event

    def get_nowait(self) -> Event | None:
        if not self._items:
            return None
        return self._items.popleft()

    def drain(self) -> list[Event]:
        """Everything queued now, in order (a UI takes one batch per frame)."""
        items = list(self._items)
        self._items.clear()
        self._not_empty.clear()
        return items

    def close(self) -> None:
        self.closed = True
        self._bus._subscribers.discard(self)
        self._not_empty.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Event]:
        while True:
            try:
                yield await self.get()
            except StopAsyncIteration:
                return


#: told when the bus detaches a subscriber: (its name, why, the event that did not fit)
DetachListener = Callable[[str, str, Event], None]


class Bus:
    """Asyncio pub/sub. ``publish`` never waits on a subscriber (see the module doc)."""

    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()
        self._detach_listeners: list[DetachListener] = []
        #: (name, why) of every subscriber detached so far
        self.detached: list[tuple[str, str]] = []

    def subscribe(
        self,
        maxsize: int = 1024,
        kinds: tuple[type[Event], ...] | None = None,
        *,
        name: str = "subscriber",
        limit: int | None = None,
    ) -> Subscription:
        sub = Subscription(self, maxsize, kinds, name=name, limit=limit)
        self._subscribers.add(sub)
        return sub

    def on_detached(self, listener: DetachListener) -> None:
        self._detach_listeners.append(listener)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def detach(self, sub: Subscription, why: str, event: Event) -> None:
        sub.detached = why
        sub.close()
        self.detached.append((sub.name, why))
        for listener in list(self._detach_listeners):
            listener(sub.name, why, event)

    def publish_nowait(self, event: Event) -> None:
        """Deliver ``event`` to every subscriber that wants it, in publish order."""
        for sub in list(self._subscribers):
            if sub.wants(event):
                why = sub.offer(event)
                if why is not None:
                    self.detach(sub, why, event)

    async def publish(self, event: Event) -> None:
        """Same as :meth:`publish_nowait`: it never waits (an ``async`` API for callers)."""
        self.publish_nowait(event)
