"""The bus bridge: per-frame batching that keeps order, and a 10k-event flood rendered
without losing one audit line (also when the bus must apply back-pressure)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from app.bus import (
    ApprovalRequested,
    AuditAppended,
    BudgetUpdated,
    StageChanged,
    TestOutput,
    TokenDelta,
)
from app.tui import bridge
from app.tui.panes.escalations import DROP_BATCH, MAX_LINES
from tests.tui.helpers import Messages, settle, until


def _line(seq: int, kind: str = "route") -> dict[str, Any]:
    return {
        "seq": seq,
        "ts": "2026-01-01T12:00:00.000Z",
        "session": "s",
        "kind": kind,
        "role": "implementer",
        "detail": f"line {seq}",
    }


def test_translate_merges_high_rate_kinds_per_frame() -> None:
    events = [
        AuditAppended.of(_line(1)),
        AuditAppended.of(_line(2)),
        TestOutput(loop=1, text="ab"),
        TestOutput(loop=1, text="c\n"),
        TestOutput(loop=2, text="x"),
        BudgetUpdated(snapshot={"n": 1}),
        StageChanged(stage="implementer", status="started"),
        AuditAppended.of(_line(3)),
        TokenDelta(role="r", model="m", text="to"),
        TokenDelta(role="r", model="m", text="ken"),
        BudgetUpdated(snapshot={"n": 2}),
        ApprovalRequested(
            request_id="q",
            role="r",
            model="m",
            provider="p",
            reasons=[],
            est_cost_usd=0.0,
            budget_left_usd=1.0,
            timeout_s=1.0,
        ),
    ]
    out = bridge.translate(events)
    kinds = [type(m).__name__ for m in out]
    # One message per high-rate stream, where its first event was; the rest in order.
    assert kinds == [
        "AuditBatch",
        "TestText",
        "TestText",
        "BudgetChanged",
        "StageMoved",
        "TokenText",
        "ApprovalAsked",
    ]
    first = out[0]
    assert isinstance(first, bridge.AuditBatch)
    assert [ln["seq"] for ln in first.lines] == [1, 2, 3]
    text = out[1]
    assert isinstance(text, bridge.TestText)
    assert (text.loop, text.text) == (1, "abc\n")
    budget = out[3]
    assert isinstance(budget, bridge.BudgetChanged)
    assert budget.snapshot == {"n": 2}  # only the newest snapshot of the frame
    tokens = out[5]
    assert isinstance(tokens, bridge.TokenText)
    assert tokens.text == "token"


def test_translate_never_loses_an_audit_line() -> None:
    events: list[Any] = []
    for n in range(1, 1001):
        events.append(AuditAppended.of(_line(n)))
        if n % 7 == 0:
            events.append(TestOutput(loop=1, text=f"{n}\n"))
        if n % 13 == 0:
            events.append(BudgetUpdated(snapshot={"n": n}))
    out = bridge.translate(events)
    seqs = [ln["seq"] for m in out if isinstance(m, bridge.AuditBatch) for ln in m.lines]
    assert seqs == list(range(1, 1001))


@pytest.mark.parametrize("queue_size", [None, 256], ids=["default-queue", "back-pressure"])
async def test_a_10k_flood_renders_without_dropping_an_audit_line(
    make_app: Any, monkeypatch: pytest.MonkeyPatch, queue_size: int | None, capsys: Any
) -> None:
    if queue_size is not None:
        # A small soft size: the publisher never waits, and no never-drop line is lost
        # (the hard limit, 64 times the soft size, is what detaches a dead view).
        monkeypatch.setattr(bridge, "QUEUE_SIZE", queue_size)
    total = 10_000
    seen = Messages()
    app = make_app(task=None)
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        pane = app.screen.escalations
        before = len(pane.lines)
        started = time.perf_counter()
        for n in range(1, total + 1):
            await app.bus.publish(AuditAppended.of(session="flood", line=_line(n, "retry")))
            if n % 10 == 0:
                await app.bus.publish(TestOutput(session="flood", loop=1, text=f"line {n}\n"))
            if n % 100 == 0:
                await app.bus.publish(BudgetUpdated(session="flood", snapshot={}))
        received = lambda: len(pane.lines) + pane.dropped - before  # noqa: E731
        await until(pilot, lambda: received() >= total, what="every line")
        elapsed = time.perf_counter() - started
        await settle(pilot)

        # every line reached the pane, in order; it keeps the newest MAX_LINES of them
        batches = [m for m in seen.of(bridge.AuditBatch) if m.lines[0].get("session") == "s"]
        assert [ln["seq"] for b in batches for ln in b.lines] == list(range(1, total + 1))
        flood = [ln["seq"] for ln in pane.lines if ln.get("session") == "s"]
        assert len(pane.lines) <= MAX_LINES + DROP_BATCH and flood[-1] == total
        assert flood == list(range(total - len(flood) + 1, total + 1))
        assert pane.view.line_count == len(pane.lines)  # no filter: the view shows every one
        assert len(batches) < total / 10, "high-rate events must be batched per frame"
        assert app.screen.tests.loops[1].lines[-1] == f"line {total}"
        stats = app.screen.bridge.stats
    with capsys.disabled():
        print(
            f"\n  flood ({queue_size or 'default'} queue): {total} audit lines in {elapsed:.2f}s,"
            f" {len(batches)} batches, {stats.frames} frames, largest {stats.largest_batch}"
        )


async def test_the_pane_filter_keeps_the_model_whole(make_app: Any) -> None:
    app = make_app(task=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        pane = app.screen.escalations
        before = len(pane.lines)
        for n, kind in enumerate(["route", "escalation", "denial", "call"] * 5, 1):
            await app.bus.publish(AuditAppended.of(_line(n, kind)))
        await until(pilot, lambda: len(pane.lines) - before == 20, what="20 lines")
        pane.view.focus()
        await pilot.press("f")
        await pilot.press(*"esc den", "enter")
        await settle(pilot)
        assert pane.filter_text == "esc den"
        assert {ln["kind"] for ln in pane.shown_lines()} == {"escalation", "denial"}
        assert pane.view.line_count == 10
        assert len(pane.lines) - before == 20
        pane.set_filter("-call")
        assert "call" not in {ln["kind"] for ln in pane.shown_lines()}
        # a word that names no kind: nothing shown, and now said why (a user-audit)
        said: list[str] = []
        app.notify = lambda message, **kw: said.append(message)  # type: ignore[method-assign]
        pane.set_filter("esc foo")
        assert pane.shown_lines() and {ln["kind"] for ln in pane.shown_lines()} == {"escalation"}
        assert said and said[-1].startswith("foo: no kind of line is named so"), said
