"""Typed, immutable events and an asyncio publish/subscribe bus.

Each subscriber has its own bounded queue. What happens when it is full depends on the
event's delivery class:

* ``never_drop`` (audit lines, approvals, stage changes, results): the publisher waits for
  room — back-pressure — and the event is delivered, in order.
* ``coalesce`` (token deltas, test output): merged into the newest queued event with the
  same key, so a slow subscriber gets the same text in fewer, larger events.
* ``latest`` (budget snapshots): replaces the queued event with the same key.

Adjacent coalescable events are merged even when there is room, which batches a token
stream for a UI that renders once per frame. Order per publisher is preserved for
everything that is not merged.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Hashable
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

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
    """A line was appended to the audit chain (the escalation pane shows these)."""

    line: dict[str, Any]


class ApprovalRequested(Event):
    """The router asks a human; the broker resolves ``request_id``."""

    request_id: str
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


class DiffUpdated(Event):
    run: str = ""
    attempt: int
    diff: str


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


# ── Bus ──────────────────────────────────────────────────────────────────────────────────


class Subscription:
    """One subscriber's bounded queue. Iterate it, or ``await get()``."""

    def __init__(self, bus: Bus, maxsize: int, kinds: tuple[type[Event], ...] | None) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self._bus = bus
        self.maxsize = maxsize
        self.kinds = kinds
        self._items: deque[Event] = deque()
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()
        self.closed = False
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

    async def put(self, event: Event) -> None:
        while not self.closed:
            if self._merge_into_queue(event):
                return
            if len(self._items) < self.maxsize:
                self._items.append(event)
                self._not_empty.set()
                if len(self._items) >= self.maxsize:
                    self._not_full.clear()
                return
            self._not_full.clear()
            await self._not_full.wait()

    async def get(self) -> Event:
        while not self._items:
            if self.closed:
                raise StopAsyncIteration
            self._not_empty.clear()
            await self._not_empty.wait()
        event = self._items.popleft()
        if not self._items:
            self._not_empty.clear()
        self._not_full.set()
        return event

    def get_nowait(self) -> Event | None:
        if not self._items:
            return None
        event = self._items.popleft()
        self._not_full.set()
        return event

    def drain(self) -> list[Event]:
        """Everything queued now, in order (a UI takes one batch per frame)."""
        items = list(self._items)
        self._items.clear()
        self._not_empty.clear()
        self._not_full.set()
        return items

    def close(self) -> None:
        self.closed = True
        self._bus._subscribers.discard(self)
        self._not_empty.set()
        self._not_full.set()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Event]:
        while True:
            try:
                yield await self.get()
            except StopAsyncIteration:
                return


class Bus:
    """Asyncio pub/sub. ``publish`` awaits back-pressure from full never-drop queues."""

    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()
        self._lock = asyncio.Lock()

    def subscribe(
        self, maxsize: int = 1024, kinds: tuple[type[Event], ...] | None = None
    ) -> Subscription:
        sub = Subscription(self, maxsize, kinds)
        self._subscribers.add(sub)
        return sub

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    async def publish(self, event: Event) -> None:
        # One publish at a time keeps every subscriber's order identical to publish order.
        async with self._lock:
            for sub in list(self._subscribers):
                if sub.wants(event):
                    await sub.put(event)
