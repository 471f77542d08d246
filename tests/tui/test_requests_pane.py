"""The requests view's model: rows opened by audit lines, finished by RequestServed, in
either order within a frame; and the bridge's batching of RequestServed."""

from __future__ import annotations

from typing import Any

from textual.app import App, ComposeResult
from textual.widget import Widget

from app.bus import AuditAppended, BudgetUpdated, RequestServed
from app.tui import bridge
from app.tui.panes.requests import RequestRow, cells, escalation, latency, short_client

RID = "gw-0123456789abcdef"


def opened(rid: str = RID) -> dict[str, Any]:
    return {
        "kind": "request",
        "run": rid,
        "role": "architect",
        "ts": "2026-01-01T12:00:00.000Z",
        "reason_codes": ["GATEWAY_REQUEST"],
        "values": {"protocol": "messages", "model": "claude-opus-4-1", "client": "cc (session ab)"},
    }


def line(kind: str, to: str, codes: list[str] | None = None) -> dict[str, Any]:
    return {"kind": kind, "run": RID, "role": "architect", "to": to, "reason_codes": codes or []}


def closed(status: int, outcome: str, **values: Any) -> dict[str, Any]:
    return {
        "kind": "request",
        "run": RID,
        "role": "architect",
        "reason_codes": ["GATEWAY_DONE" if status == 200 else "GATEWAY_FAILED"],
        "values": {"status": status, "outcome": outcome, **values},
    }


def served(**fields: Any) -> RequestServed:
    base: dict[str, Any] = {
        "request": RID,
        "protocol": "messages",
        "client": "cc (session ab)",
        "model_asked": "claude-opus-4-1",
        "role": "architect",
        "model": "qwen3-14b",
        "runtime": "vllm",
        "tokens_in": 120,
        "tokens_out": 40,
        "latency_ms": 2500.0,
    }
    return RequestServed(**{**base, **fields})


def test_a_request_refused_before_routing_shows_when_it_came() -> None:
    """Its one audit line (GATEWAY_REJECTED) gives the row its time; the time column was
    blank for it, the only row without one."""
    row = RequestRow(RID)
    row.finish(served(status=400, outcome="n: one choice per request", model=None, runtime=None))
    row.hear(
        {
            "kind": "request",
            "run": RID,
            "ts": "2026-01-01T12:00:05.000Z",
            "reason_codes": ["GATEWAY_REJECTED"],
            "values": {"status": 400, "client": "curl/8"},
        }
    )
    assert row.ts == "2026-01-01T12:00:05.000Z" and row.status == 400
    assert cells(row, {})["time"].plain != ""


def test_a_row_follows_its_escalation_until_served() -> None:
    row = RequestRow(RID)
    row.hear(opened())
    assert (row.protocol, row.asked, row.role, row.client) == (
        "messages",
        "claude-opus-4-1",
        "architect",
        "cc (session ab)",
    )
    assert not row.done and not row.held
    row.hear(line("escalation", "gpt-5.1-high"))
    assert row.held and row.target == "gpt-5.1-high"
    row.hear(line("denial", "gpt-5.1-high", ["DENIED"]))
    row.hear(line("escalation", "deepseek-reasoner"))
    row.hear(line("denial", "deepseek-reasoner", ["APPROVAL_TIMEOUT"]))
    assert not row.held
    row.hear(line("route", "qwen3-14b@vllm"))
    assert row.target == "qwen3-14b@vllm"
    row.finish(served())
    assert row.done and row.status == 200 and row.model == "qwen3-14b"
    assert row.steps == [["gpt-5.1-high", "denied"], ["deepseek-reasoner", "timed out"]]
    assert escalation(row) == ("✗✗ deepseek-reasoner +1", "audit-denial")


def test_the_escalation_cell_names_the_step_that_served_not_the_first_skipped() -> None:
    """A first step skipped (no key) and a second approved: the cell named the skipped
    model, in the approval's colour."""
    row = RequestRow(RID)
    row.hear(opened())
    row.hear(line("escalation", "gpt-5.1-high"))
    row.hear(line("skip", "gpt-5.1-high", ["NO_API_KEY"]))
    row.hear(line("escalation", "claude-opus-4-1"))
    assert escalation(row) == ("–? claude-opus-4-1 +1", "audit-escalation")
    row.hear(line("approval", "claude-opus-4-1"))
    row.hear(line("escalation", "deepseek-reasoner"))  # a later step the chain went on to
    row.hear(line("skip", "deepseek-reasoner", ["OVER_CONTEXT"]))
    row.finish(served(model="claude-opus-4-1", runtime="cloud", escalated=True))
    assert escalation(row) == ("–✓– claude-opus-4-1 +2", "audit-approval")


def test_an_approved_step_whose_call_failed_reads_failed_not_skipped() -> None:
    """A `y`, then a host that never answered: the cell read "––", as a step with no key
    (a user-audit)."""
    row = RequestRow(RID)
    row.hear(opened())
    row.hear(line("escalation", "deepseek-reasoner"))
    row.hear(line("approval", "deepseek-reasoner"))
    row.hear(line("skip", "deepseek-reasoner", ["SKIP_FAILED", "ERR_CONNECT"]))
    row.hear(line("escalation", "gpt-5.1-low"))
    row.hear(line("skip", "gpt-5.1-low", ["SKIP_UNAVAILABLE"]))
    assert escalation(row) == ("!– gpt-5.1-low +1", "audit-skip")
    assert row.steps[0] == ["deepseek-reasoner", "failed"]


def test_served_first_then_its_lines_never_reopen_or_overwrite_the_row() -> None:
    row = RequestRow(RID)
    row.finish(served(latency_ms=812.0))
    row.hear(opened())  # the frame's audit batch came after
    row.hear(closed(200, "ok", model="other", latency_ms=1.0))
    assert row.done and (row.model, row.latency_ms) == ("qwen3-14b", 812.0)
    assert row.ts == "2026-01-01T12:00:00.000Z" and row.asked == "claude-opus-4-1"


def test_a_step_approved_for_the_session_earlier_is_called_without_asking() -> None:
    row = RequestRow(RID)
    row.hear(opened())
    row.hear(line("escalation", "gpt-5.1-high"))
    assert row.held
    row.hear(line("call", "gpt-5.1-high"))  # no approval line: the session approval holds
    assert not row.held and row.steps == [["gpt-5.1-high", "approved"]]
    row = RequestRow(RID)  # the same, learnt from RequestServed alone
    row.hear(line("escalation", "gpt-5.1-high"))
    row.finish(served(model="gpt-5.1-high", runtime="cloud", escalated=True))
    assert row.steps == [["gpt-5.1-high", "approved"]]


def test_a_client_that_went_away_is_closed_by_the_audit_line() -> None:
    row = RequestRow(RID)
    row.hear(opened())
    row.hear(line("escalation", "gpt-5.1-high"))
    row.hear(closed(499, "client went away"))
    assert row.done and not row.held
    assert (row.status, row.outcome, row.model) == (499, "client went away", None)
    assert row.steps == [["gpt-5.1-high", "withdrawn"]]  # nobody answered it
    assert escalation(row) == ("– gpt-5.1-high", "audit-skip")


def test_cells_say_what_the_table_shows() -> None:
    row = RequestRow(RID)
    row.hear(opened())
    row.hear(line("escalation", "gpt-5.1-high"))
    shown = {k: str(v) for k, v in cells(row, {}).items()}
    assert shown["status"] == "held" and shown["served"] == "→ gpt-5.1-high"
    assert shown["approval"] == "? gpt-5.1-high" and shown["tokens"] == ""
    assert shown["asked"] == "claude-opus-… → architect"
    row.hear(line("approval", "gpt-5.1-high", ["APPROVED_ONCE"]))
    row.finish(served(model="gpt-5.1-high", runtime="cloud", escalated=True, cost_usd=0.0213))
    shown = {k: str(v) for k, v in cells(row, {}).items()}
    assert shown["status"] == "200" and shown["served"] == "↑ gpt-5.1-high · cloud"
    assert shown["tokens"] == "120 → 40" and shown["latency"] == "2.50 s"
    assert shown["cost"] == "$0.021" and shown["approval"] == "✓ gpt-5.1-high"
    assert shown["client"] == "cc · ab"


def test_short_client() -> None:
    assert short_client("codex_cli_rs/0.46.0 (Ubuntu 24.04; x86_64) xterm") == "codex_cli_rs/0.46.0"
    assert short_client("claude-cli/2.0.14 (external, cli) (session 5b1c9e0a-77d2)") == (
        "claude-cli/2.0.14 · 5b1c9e"
    )
    assert short_client("OpenAI/Python 3.57.0") == "OpenAI/Python 3.57.0"
    assert short_client("unknown client") == "unknown client"


def test_the_bridge_batches_a_frames_finished_requests_in_order() -> None:
    events = [
        RequestServed(request="gw-1", protocol="chat", client="a", model_asked="m", role="tutor"),
        AuditAppended.of(opened("gw-2")),
        BudgetUpdated(snapshot={"n": 1}),
        RequestServed(request="gw-2", protocol="chat", client="b", model_asked="m", role="tutor"),
    ]
    out = bridge.translate(events)
    assert [type(m) for m in out] == [
        bridge.RequestsServed,
        bridge.AuditBatch,
        bridge.BudgetChanged,
    ]
    batch = out[0]
    assert isinstance(batch, bridge.RequestsServed)
    assert [e.request for e in batch.events] == ["gw-1", "gw-2"]


class OnePane(App[None]):
    """An app of one pane (the pane's own behaviour, without a screen around it)."""

    def __init__(self, pane: Widget) -> None:
        super().__init__()
        self.pane = pane

    def compose(self) -> ComposeResult:
        yield self.pane


async def until_drawn(pilot: Any, pane: Any) -> None:
    """Until the requests view has drawn every change (a few frames)."""
    for _ in range(100):
        if not pane.pending:
            return
        await pilot.pause(0.05)
    raise AssertionError("the requests view was never drawn")


def test_latency_fits_its_column() -> None:
    shown = [latency(ms) for ms in (5, 999, 1000, 9996, 27_420, 120_520, 9_999_400, 3.6e7)]
    assert shown == ["5 ms", "999 ms", "1.00 s", "10.0 s", "27.4 s", "121 s", "9999 s", "600 min"]
    assert all(len(s) <= 7 for s in shown)


async def test_the_table_keeps_the_newest_rows_and_the_counts_keep_every_request() -> None:
    from app.tui.panes.requests import DROP_BATCH, MAX_ROWS, RequestsPane

    app = OnePane(RequestsPane(id="requests"))
    async with app.run_test(size=(160, 40)) as pilot:
        pane = app.query_one(RequestsPane)
        pane.add_audit([opened("gw-in-flight")])  # the oldest, and never finished
        n = MAX_ROWS + DROP_BATCH + 1  # one past the batch: down to MAX_ROWS at once
        for i in range(n):  # one frame's batch each, as the bridge sends them
            pane.served(
                [served(request=f"gw-{i:05d}", status=500 if i < 10 else 200, escalated=i < 20)]
            )
        await until_drawn(pilot, pane)
        assert not pane.pending
        # the in-flight request stays however old; the 30 oldest finished ones are gone
        assert len(pane.rows) == MAX_ROWS + 1 and "gw-in-flight" in pane.rows
        first_kept = f"gw-{n - MAX_ROWS:05d}"
        assert f"gw-{n - MAX_ROWS - 1:05d}" not in pane.rows and first_kept in pane.rows
        assert pane.shown(first_kept) is not None and pane.shown("gw-00000") is None
        assert pane.view.line_count == MAX_ROWS + 1
        assert pane.counts() == {
            "requests": n + 1,
            "in_flight": 1,
            "held": 0,
            "escalated": 20,
            "failed": 10,
        }
        assert pane.border_subtitle == (
            f"{n + 1} requests · 1 in flight · 20 to the cloud · 10 failed"
        )


async def test_the_audit_log_pane_keeps_the_newest_lines() -> None:
    from app.tui.panes.escalations import DROP_BATCH, MAX_LINES, EscalationsPane

    app = OnePane(EscalationsPane(id="escalations"))
    async with app.run_test(size=(120, 30)):
        pane = app.query_one(EscalationsPane)
        n = MAX_LINES + DROP_BATCH + 1
        for i in range(0, n, 100):  # in frame-sized batches, as the bridge sends them
            pane.add_lines([{**line("call", "m"), "seq": s} for s in range(i, min(i + 100, n))])
        assert len(pane.lines) == MAX_LINES and pane.dropped == n - MAX_LINES
        assert pane.lines[0]["seq"] == n - MAX_LINES and pane.lines[-1]["seq"] == n - 1
        assert pane.view.line_count == MAX_LINES
        assert pane.border_subtitle == f"{MAX_LINES} newest of {n} lines"


async def test_dropping_old_rows_formats_no_kept_row_again(monkeypatch: Any) -> None:
    from app.tui.panes import requests
    from app.tui.panes.requests import DROP_BATCH, MAX_ROWS, RequestsPane

    formatted: list[str] = []
    row_line = requests.row_line

    def counting(row: RequestRow, variables: dict[str, str]) -> Any:
        formatted.append(row.id)
        return row_line(row, variables)

    monkeypatch.setattr(requests, "row_line", counting)
    app = OnePane(RequestsPane(id="requests"))
    async with app.run_test(size=(160, 40)) as pilot:
        pane = app.query_one(RequestsPane)
        pane.add_audit([opened("gw-held")])  # in flight the whole time, between dropped rows
        for i in range(MAX_ROWS + DROP_BATCH):
            pane.served([served(request=f"gw-{i:05d}")])
        await until_drawn(pilot, pane)
        formatted.clear()
        pane.served([served(request="gw-last")])  # one past the batch: 101 rows go
        await until_drawn(pilot, pane)
        assert formatted == ["gw-last"]
        view = pane.view.plain_lines()
        assert len(view) == MAX_ROWS + 1 and view == [
            pane.shown(rid) for rid in pane.rows
        ]  # every row's line where the index says
        assert pane.shown("gw-held") == view[0] and pane.shown("gw-last") == view[-1]
        assert pane.shown("gw-00100") is None and pane.shown("gw-00101") is not None


async def test_dropping_old_audit_lines_formats_no_kept_line_again(monkeypatch: Any) -> None:
    from app.tui.panes import escalations
    from app.tui.panes.escalations import DROP_BATCH, MAX_LINES, EscalationsPane

    formatted: list[int] = []
    format_line = escalations.format_line

    def counting(ln: dict[str, Any], variables: dict[str, str], compact: bool = False) -> Any:
        formatted.append(ln["seq"])
        return format_line(ln, variables, compact)

    monkeypatch.setattr(escalations, "format_line", counting)
    app = OnePane(EscalationsPane(id="escalations"))
    async with app.run_test(size=(120, 30)):
        pane = app.query_one(EscalationsPane)
        pane.set_filter("-call")  # the view shows the escalations only: every 4th line
        kinds = ["escalation", "call", "call", "call"]

        def batch(start: int, n: int) -> list[dict[str, Any]]:
            return [{**line(kinds[s % 4], "m"), "seq": s} for s in range(start, start + n)]

        pane.add_lines(batch(0, MAX_LINES + DROP_BATCH))
        formatted.clear()
        pane.add_lines(batch(MAX_LINES + DROP_BATCH, 4))  # past the batch: 1,004 lines go
        assert formatted == [MAX_LINES + DROP_BATCH]  # the new escalation only
        shown = pane.shown_lines()
        assert len(shown) == MAX_LINES // 4 and pane.view.line_count == len(shown)
        got = MAX_LINES + DROP_BATCH + 4
        hidden = MAX_LINES - len(shown)
        assert pane.border_subtitle == (
            f"{hidden} hidden · {len(shown)}/{MAX_LINES} newest of {got} lines"
        )
        # a batch larger than the pane keeps: only its newest lines are formatted
        formatted.clear()
        start = MAX_LINES + DROP_BATCH + 4
        pane.add_lines(batch(start, 2 * MAX_LINES))
        assert len(formatted) == MAX_LINES // 4 and formatted[0] >= start + MAX_LINES
        assert pane.view.line_count == MAX_LINES // 4 == len(pane.shown_lines())


async def test_under_160_columns_the_labels_stay_on_one_line_and_scroll_with_the_rows() -> None:
    """At 120 columns the header wrapped its last labels onto a second line, and scrolling
    sideways moved the rows under a header that stood still."""
    from textual.widgets import Static

    from app.tui.panes.requests import RequestsPane

    app = OnePane(RequestsPane(id="requests"))
    async with app.run_test(size=(120, 20)) as pilot:
        pane = app.query_one(RequestsPane)
        pane.served([served()])
        await until_drawn(pilot, pane)
        head = pane.query_one("#requests-head", Static)
        assert head.region.height == 1
        row = pane.shown(RID)
        assert row is not None
        column = row.index("qwen3-14b")  # where "served by" starts in the row
        label = str(head.render())
        assert label.index("served by") == column
        pane.view.scroll_to(x=20, animate=False)  # as far as it goes
        await pilot.pause(0.1)
        moved = int(pane.view.scroll_x)
        assert moved > 0
        scrolled = str(head.render())
        assert scrolled.index("served by") == column - moved
        assert scrolled.rstrip().endswith("client")  # the last label, in view now
