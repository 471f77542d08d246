"""The live budget meter's feed is published off the request path (issue 20): a change
never waits for a snapshot, bursts are coalesced, and the last change is always shown."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.bus import BudgetUpdated, Bus
from app.clock import ManualClock
from app.policy.schema import Budget
from app.router.ledger import BudgetLedger, LedgerError
from app.router.ledger.publisher import SnapshotPublisher
from app.router.ledger.records import BudgetSnapshot, CapUsage

BUDGET = Budget(session_usd=10.0, day_usd=20.0, reservation_ttl_s=60, provider_day_usd={})


def _snap(session: str, n: int) -> BudgetSnapshot:
    usage = CapUsage(cap_usd=None, spent_usd=float(n), reserved_usd=0.0, left_usd=None)
    return BudgetSnapshot(
        session=session,
        day="2026-01-01",
        ts="2026-01-01T00:00:00.000Z",
        per_session=usage,
        per_day=usage,
        per_provider={},
        reserved_usd=0.0,
        calls=n,
        by_role={},
        by_model={},
        by_provider={},
    )


async def test_a_change_does_not_wait_for_the_snapshot() -> None:
    bus = Bus()
    sub = bus.subscribe(kinds=(BudgetUpdated,))
    release = asyncio.Event()
    reads: list[str] = []

    async def slow_snapshot(session: str) -> BudgetSnapshot:
        reads.append(session)
        await release.wait()
        return _snap(session, len(reads))

    pub = SnapshotPublisher(bus, slow_snapshot, interval_s=0)
    pub.changed("s1")  # returns at once although the read cannot finish yet
    await asyncio.sleep(0)
    assert reads == ["s1"]
    assert sub.get_nowait() is None
    # changes while the read is under way are gathered into one more read
    for _ in range(5):
        pub.changed("s1")
    release.set()
    await pub.settled()
    assert reads == ["s1", "s1"]
    last = sub.drain()[-1]
    assert isinstance(last, BudgetUpdated)
    assert last.snapshot["calls"] == 2


async def test_a_burst_is_published_once_per_interval_and_ends_on_the_last() -> None:
    bus = Bus()
    sub = bus.subscribe(kinds=(BudgetUpdated,), maxsize=1000)
    state = {"n": 0}
    reads: list[int] = []
    waits: list[float] = []
    interval_over = asyncio.Event()

    async def snapshot(session: str) -> BudgetSnapshot:
        reads.append(state["n"])
        return _snap(session, state["n"])

    async def sleep(seconds: float) -> None:  # the interval ends when the test says so
        waits.append(seconds)
        await interval_over.wait()

    pub = SnapshotPublisher(bus, snapshot, interval_s=0.1, sleep=sleep)
    for n in range(1, 201):
        state["n"] = n
        pub.changed("s1")
        await asyncio.sleep(0)  # a request's awaits: the publisher gets turns
    # the first change was read at once; the rest wait out one interval together
    assert reads == [1] and waits == [0.1]
    interval_over.set()
    await pub.settled()
    assert reads == [1, 200] and waits == [0.1, 0.1]
    events = sub.drain()
    assert [e.snapshot["calls"] for e in events if isinstance(e, BudgetUpdated)][-1] == 200


async def test_a_failed_read_only_misses_that_update() -> None:
    bus = Bus()
    sub = bus.subscribe(kinds=(BudgetUpdated,))

    async def broken(session: str) -> BudgetSnapshot:
        raise LedgerError("budget ledger unavailable: locked")

    pub = SnapshotPublisher(bus, broken)
    pub.changed("s1")
    await pub.close()
    assert sub.drain() == []


async def test_without_a_bus_nothing_is_read() -> None:
    async def never(session: str) -> BudgetSnapshot:
        raise AssertionError("read without a bus")

    pub = SnapshotPublisher(None, never)
    pub.changed("s1")
    await pub.close()


async def test_closing_the_ledger_publishes_the_last_change(tmp_path: Path) -> None:
    bus = Bus()
    sub = bus.subscribe(kinds=(BudgetUpdated,), maxsize=100)
    led = await BudgetLedger.open(tmp_path / "l.db", BUDGET, clock=ManualClock(), bus=bus)
    res = await led.reserve(session="s1", provider="openai", role="judge", model="m", amount_usd=2)
    await led.settle(res.id, actual_usd=1.5, tokens_in=10, tokens_out=2, latency_ms=1.0)
    await led.close()  # no turn of the loop in between: close publishes it
    last = sub.drain()[-1]
    assert isinstance(last, BudgetUpdated)
    assert last.snapshot["per_session"]["spent_usd"] == 1.5
    assert last.snapshot["reserved_usd"] == 0.0
    assert last.snapshot["per_provider"]["openai"]["spent_usd"] == 1.5


async def test_close_cuts_the_pause_short_and_publishes_what_is_marked() -> None:
    bus = Bus()
    sub = bus.subscribe(kinds=(BudgetUpdated,), maxsize=100)
    state = {"n": 1}

    async def snapshot(session: str) -> BudgetSnapshot:
        return _snap(session, state["n"])

    async def endless(seconds: float) -> None:
        await asyncio.Event().wait()  # a pause that would never end by itself

    pub = SnapshotPublisher(bus, snapshot, sleep=endless)
    pub.changed("s1")
    await asyncio.sleep(0)  # read, published, now pausing
    state["n"] = 2
    pub.changed("s1")
    await pub.close()
    calls = [e.snapshot["calls"] for e in sub.drain() if isinstance(e, BudgetUpdated)]
    assert calls[-1] == 2
