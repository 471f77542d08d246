"""The event bus: order per publisher, no loss of never-drop events, and a publisher that
never waits on a subscriber (R8: a dead one is detached, and says so)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from app.bus import (
    AuditAppended,
    BudgetUpdated,
    Bus,
    Notice,
    StageChanged,
    TestOutput,
    TokenDelta,
)


def audit(i: int) -> AuditAppended:
    return AuditAppended.of(session="s", line={"seq": i})


def test_an_audit_event_reads_its_line_once_when_asked() -> None:
    """The line travels as its text and is read on the first ask; every later ask (another
    subscriber's) gets the same dict. Reading it changes neither equality nor the hash,
    and a copy with another text reads its own."""
    event = AuditAppended(session="s", text='{"seq": 7, "kind": "route"}')
    twin = AuditAppended(session="s", text='{"seq": 7, "kind": "route"}')
    before = hash(event)
    assert event.line == {"seq": 7, "kind": "route"}
    assert event.line is event.line
    assert event == twin and hash(event) == before == hash(twin)
    assert event.model_dump() == {"session": "s", "text": '{"seq": 7, "kind": "route"}'}
    other = event.model_copy(update={"text": '{"seq": 8}'})
    assert other.line == {"seq": 8} and event.line["seq"] == 7
    assert AuditAppended.of({"seq": 1, "t": "→"}, session="x").line == {"seq": 1, "t": "→"}


async def test_events_are_immutable_and_strict() -> None:
    event = Notice(text="hi")
    with pytest.raises(ValidationError):
        event.text = "changed"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Notice(text="hi", bogus=1)  # type: ignore[call-arg]


async def test_order_per_publisher_is_preserved_for_every_subscriber() -> None:
    bus = Bus()
    subs = [bus.subscribe(maxsize=8) for _ in range(3)]

    async def publisher(name: str) -> None:
        for i in range(50):
            await bus.publish(StageChanged(stage=f"{name}-{i}", status="started"))

    async def consume(sub):  # type: ignore[no-untyped-def]
        got = []
        while len(got) < 100:
            got.append((await sub.get()).stage)
        return got

    results = await asyncio.gather(publisher("a"), publisher("b"), *(consume(s) for s in subs))
    for got in results[2:]:
        for name in ("a", "b"):
            mine = [s for s in got if s.startswith(name + "-")]
            assert mine == [f"{name}-{i}" for i in range(50)]
    # every subscriber saw the same interleaving
    assert results[2] == results[3] == results[4]


async def test_never_drop_events_survive_a_slow_subscriber() -> None:
    bus = Bus()
    slow = bus.subscribe(maxsize=4)
    n = 300

    async def publish_all() -> None:
        for i in range(n):
            await bus.publish(audit(i))
            await bus.publish(TokenDelta(role="r", model="m", text="x"))

    async def read_slowly() -> list[int]:
        seqs = []
        while len(seqs) < n:
            event = await slow.get()
            if isinstance(event, AuditAppended):
                seqs.append(event.line["seq"])
            await asyncio.sleep(0)  # slower than the publisher
        return seqs

    _, seqs = await asyncio.gather(publish_all(), read_slowly())
    assert seqs == list(range(n))


async def test_a_full_queue_never_makes_the_publisher_wait() -> None:
    """R8: a never-drop event is queued past the soft size, at once, in order."""
    bus = Bus()
    sub = bus.subscribe(maxsize=2)
    for i in range(3):
        await asyncio.wait_for(bus.publish(audit(i)), 0.1)
    assert [e.line["seq"] for e in sub.drain()] == [0, 1, 2]


async def test_a_subscriber_that_stops_reading_is_detached_not_waited_on() -> None:
    bus = Bus()
    told: list[tuple[str, str, int]] = []
    bus.on_detached(lambda name, why, event: told.append((name, why, event.line["seq"])))
    dead = bus.subscribe(maxsize=2, limit=100, name="tui")
    alive = bus.subscribe(maxsize=2, limit=100_000)
    for i in range(10_000):
        await asyncio.wait_for(bus.publish(audit(i)), 0.1)
    assert dead.closed and dead.detached is not None and "fell behind by 100" in dead.detached
    assert told == [("tui", dead.detached, 100)]
    assert bus.detached == [("tui", dead.detached)]
    # what it had queued is still there to read; nothing after the detachment
    assert [e.line["seq"] for e in dead.drain()] == list(range(100))
    assert [e.line["seq"] for e in alive.drain()] == list(range(10_000))


async def test_a_consumer_that_raises_closes_its_subscription() -> None:
    bus = Bus()

    async def consumer() -> None:
        with bus.subscribe(kinds=(AuditAppended,), name="printer") as sub:
            async for _event in sub:
                raise BrokenPipeError("stdout closed")

    task = asyncio.create_task(consumer())
    await asyncio.sleep(0)
    await bus.publish(audit(1))
    with pytest.raises(BrokenPipeError):
        await task
    assert bus.subscriber_count == 0
    for i in range(5000):  # nobody left to wait on, nothing queued for a dead consumer
        await asyncio.wait_for(bus.publish(audit(i)), 0.1)


async def test_token_deltas_coalesce_without_losing_text() -> None:
    bus = Bus()
    sub = bus.subscribe(maxsize=3)
    words = [f"w{i} " for i in range(100)]
    for w in words:
        await bus.publish(TokenDelta(role="implementer", model="m", text=w))
    events = sub.drain()
    assert len(events) == 1
    assert events[0].text == "".join(words)
    assert sub.coalesced == 99


async def test_coalescing_keeps_other_events_in_order() -> None:
    bus = Bus()
    sub = bus.subscribe(maxsize=100)
    await bus.publish(TestOutput(loop=1, text="a\n"))
    await bus.publish(TestOutput(loop=1, text="b\n"))
    await bus.publish(audit(7))
    await bus.publish(TestOutput(loop=1, text="c\n"))
    events = sub.drain()
    assert [type(e).__name__ for e in events] == ["TestOutput", "AuditAppended", "TestOutput"]
    assert events[0].text == "a\nb\n" and events[2].text == "c\n"


async def test_full_queue_merges_into_the_newest_event_with_the_same_key() -> None:
    bus = Bus()
    sub = bus.subscribe(maxsize=2)
    await bus.publish(TestOutput(loop=1, text="a"))
    await bus.publish(audit(1))
    # queue full: the next output line merges into the queued one
    await asyncio.wait_for(bus.publish(TestOutput(loop=1, text="b")), 1)
    events = sub.drain()
    assert events[0].text == "ab"


async def test_budget_updates_keep_only_the_latest_when_full() -> None:
    bus = Bus()
    sub = bus.subscribe(maxsize=1)
    for i in range(5):
        await asyncio.wait_for(bus.publish(BudgetUpdated(snapshot={"spent": i})), 1)
    (event,) = sub.drain()
    assert event.snapshot == {"spent": 4}


async def test_kind_filter_and_close() -> None:
    bus = Bus()
    only_audit = bus.subscribe(kinds=(AuditAppended,))
    await bus.publish(Notice(text="ignored"))
    await bus.publish(audit(1))
    assert [type(e) for e in only_audit.drain()] == [AuditAppended]
    only_audit.close()
    assert bus.subscriber_count == 0
    await bus.publish(audit(2))  # no subscriber: nothing blocks

    sub = bus.subscribe()
    await bus.publish(audit(3))
    sub.close()
    got = [e async for e in sub]
    assert [e.line["seq"] for e in got] == [3]  # what was queued is still delivered
