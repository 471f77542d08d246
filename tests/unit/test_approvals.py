"""The approvals broker: every decision, who made it, and the audit line it leaves."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from app.audit.types import AuditLine
from app.bus import ApprovalRequested, ApprovalResolved, Bus
from app.cli.terminal_decider import TerminalDecider, decider_for
from app.clock import ManualClock
from app.errors import ApprovalDenied
from app.router.approvals import (
    AllowDecider,
    ApprovalBroker,
    ApprovalDecision,
    ApprovalRequest,
    BusDecider,
    DecisionKind,
    DenyDecider,
)
from app.router.approvals import decider_for as core_decider_for


class RecordingSink:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail

    async def append(
        self,
        kind: str,
        *,
        session: str,
        run: str | None = None,
        role: str | None = None,
        from_: str | None = None,
        to: str | None = None,
        reason_codes: Sequence[str] = (),
        values: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
        detail: str = "",
    ) -> AuditLine:
        if self.fail:
            raise OSError("disk full")
        self.calls.append(
            {
                "kind": kind,
                "session": session,
                "run": run,
                "role": role,
                "to": to,
                "codes": list(reason_codes),
                "values": dict(values or {}),
                "approver": dict(provenance or {}).get("approver"),
                "detail": detail,
            }
        )
        return AuditLine(
            seq=len(self.calls),
            ts="2026-01-01T12:00:00.000Z",
            session=session,
            kind=kind,
            prev_hash="0" * 64,
            hash="1" * 64,
        )


class Scripted:
    """Answers from a list and counts how often it was asked."""

    name = "scripted"

    def __init__(self, *answers: DecisionKind) -> None:
        self.answers = list(answers)
        self.asked: list[ApprovalRequest] = []

    async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
        self.asked.append(req)
        return ApprovalDecision(decision=self.answers.pop(0), decided_by="alice", reason="ok")


class Never:
    name = "never"

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        raise AssertionError("unreachable")


class Broken:
    name = "broken"

    async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
        raise RuntimeError("boom")


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def make_req(**kw: Any) -> ApprovalRequest:
    fields: dict[str, Any] = {
        "session": "s1",
        "run": "r1",
        "role": "implementer",
        "model": "deepseek-reasoner",
        "provider": "deepseek",
        "reasons": [{"code": "FAILED_LOOPS", "loops": 2, "threshold": 2}],
        "values": {"failed_loops": 2},
        "est_cost_usd": 0.05,
        "budget_left_usd": 4.58,
    }
    fields.update(kw)
    return ApprovalRequest(**fields)


def broker(decider: Any, sink: RecordingSink, **kw: Any) -> ApprovalBroker:
    kw.setdefault("timeout_s", 5.0)
    return ApprovalBroker(decider, audit=sink, clock=ManualClock(), **kw)


# ── headless deciders ────────────────────────────────────────────────────────────────────


async def test_allow_decider_is_audited_as_approval() -> None:
    sink = RecordingSink()
    d = await broker(AllowDecider(), sink).request(make_req())
    assert d == ApprovalDecision(
        decision="allow_once", decided_by="headless:allow", reason="--approve allow"
    )
    assert d.allowed
    assert sink.calls == [
        {
            "kind": "approval",
            "session": "s1",
            "run": "r1",
            "role": "implementer",
            "to": "deepseek-reasoner",
            "codes": ["APPROVED_ONCE"],
            "values": {
                "model": "deepseek-reasoner",
                "provider": "deepseek",
                "est_cost_usd": 0.05,
                "budget_left_usd": 4.58,
                "reasons": [{"code": "FAILED_LOOPS", "loops": 2, "threshold": 2}],
                "trigger_values": {"failed_loops": 2},
                "decision": "allow_once",
                "waited_s": 0.0,
            },
            "approver": "headless:allow",
            "detail": "--approve allow",
        }
    ]


async def test_deny_decider_is_audited_as_denial() -> None:
    sink = RecordingSink()
    d = await broker(DenyDecider(), sink).request(make_req())
    assert (d.decision, d.decided_by, d.allowed) == ("deny", "headless:deny", False)
    [line] = sink.calls
    assert (line["kind"], line["codes"], line["approver"]) == (
        "denial",
        ["DENIED"],
        "headless:deny",
    )


async def test_require_raises_on_denial() -> None:
    sink = RecordingSink()
    with pytest.raises(ApprovalDenied, match="headless:deny"):
        await broker(DenyDecider(), sink).require(make_req())
    assert (await broker(AllowDecider(), sink).require(make_req())).allowed


def test_decider_for() -> None:
    assert isinstance(decider_for("allow"), AllowDecider)
    assert isinstance(decider_for("deny"), DenyDecider)
    assert isinstance(decider_for("ask"), TerminalDecider)
    bus = Bus()
    ask = decider_for("ask", bus=bus)
    assert isinstance(ask, BusDecider) and ask.bus is bus


async def test_the_cores_ask_without_a_bus_or_a_prompt_fails_closed() -> None:
    assert isinstance(core_decider_for("ask", ask=TerminalDecider), TerminalDecider)
    d = await core_decider_for("ask").decide(make_req())
    assert (d.decision, d.decided_by, d.reason) == ("deny", "unattended", "nobody to ask")


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ApprovalBroker(AllowDecider(), audit=RecordingSink(), timeout_s=0)


# ── timeout, errors ──────────────────────────────────────────────────────────────────────


async def test_timeout_denies_and_stops_the_decider() -> None:
    sink = RecordingSink()
    never = Never()
    b = broker(never, sink, timeout_s=0.05)
    d = await b.request(make_req(request_id="q1"))
    assert (d.decision, d.decided_by) == ("deny", "timeout")
    assert b.pending() == []
    await asyncio.wait_for(never.cancelled.wait(), 1)
    assert not b.resolve("q1", ApprovalDecision(decision="allow_once", decided_by="late"))
    [line] = sink.calls
    assert (line["kind"], line["codes"], line["approver"]) == (
        "denial",
        ["APPROVAL_TIMEOUT"],
        "timeout",
    )


async def test_a_request_cancelled_while_asking_ends_in_a_denial_line() -> None:
    """The user stopped the run while the editor or the modal was asking: the
    escalation had no decision line at all (GR-005), and the modal stayed open."""
    sink = RecordingSink()
    never = Never()
    bus = Bus()
    with bus.subscribe(kinds=(ApprovalResolved,)) as sub:
        b = broker(never, sink, bus=bus)
        asking = asyncio.ensure_future(b.request(make_req(request_id="q1")))
        await asyncio.sleep(0.01)  # the decider is asking
        asking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asking
        resolved = await asyncio.wait_for(sub.get(), 1)
    await asyncio.wait_for(never.cancelled.wait(), 1)  # whoever asked stops asking
    [line] = sink.calls
    assert (line["kind"], line["codes"], line["approver"]) == (
        "denial",
        ["APPROVAL_CANCELLED"],
        "cancelled",
    )
    assert isinstance(resolved, ApprovalResolved) and resolved.decision == "deny"
    assert b.pending() == []


async def test_a_failing_decider_denies() -> None:
    sink = RecordingSink()
    d = await broker(Broken(), sink).request(make_req())
    assert (d.decision, d.decided_by) == ("deny", "broken:error")
    assert "boom" in d.reason
    assert sink.calls[0]["codes"] == ["APPROVER_ERROR"]


async def test_audit_failure_blocks_the_escalation_and_caches_nothing() -> None:
    b = broker(Scripted("allow_session", "deny"), RecordingSink(fail=True))
    with pytest.raises(OSError):
        await b.request(make_req())
    assert not b.is_session_allowed("s1", "deepseek", "deepseek-reasoner")


# ── session approvals ────────────────────────────────────────────────────────────────────


async def test_allow_session_is_remembered_per_session_provider_and_model() -> None:
    sink = RecordingSink()
    decider = Scripted("allow_session", "allow_once", "deny", "deny")
    b = broker(decider, sink)

    first = await b.request(make_req())
    assert (first.decision, first.decided_by) == ("allow_session", "alice")
    assert b.is_session_allowed("s1", "deepseek", "deepseek-reasoner")

    again = await b.request(make_req())
    assert (again.decision, again.decided_by) == ("allow_session", "session-approval")
    assert len(decider.asked) == 1  # not asked again

    # another model, another provider, another session: each asks
    assert (await b.request(make_req(model="kimi-k2"))).decision == "allow_once"
    assert (await b.request(make_req(provider="openrouter"))).decision == "deny"
    assert (await b.request(make_req(session="s2"))).decision == "deny"
    assert len(decider.asked) == 4

    assert [(c["kind"], c["codes"][0], c["approver"]) for c in sink.calls] == [
        ("approval", "APPROVED_SESSION", "alice"),
        ("approval", "APPROVED_SESSION_REUSED", "session-approval"),
        ("approval", "APPROVED_ONCE", "alice"),
        ("denial", "DENIED", "alice"),
        ("denial", "DENIED", "alice"),
    ]


async def test_deny_all_keeps_the_whole_session_local_without_asking_again() -> None:
    sink = RecordingSink()
    decider = Scripted("allow_session", "deny_all", "allow_once")
    b = broker(decider, sink)
    assert (await b.request(make_req())).decision == "allow_session"
    assert (await b.request(make_req(model="kimi-k2"))).decision == "deny_all"
    assert b.is_session_denied("s1") and not b.is_session_denied("s2")

    # every later escalation of the session, even to the model approved for the session
    for req in (make_req(), make_req(model="kimi-k2"), make_req(provider="openrouter")):
        later = await b.request(req)
        assert (later.decision, later.decided_by, later.allowed) == (
            "deny_all",
            "session-denial",
            False,
        )
    assert len(decider.asked) == 2
    # another session still asks
    assert (await b.request(make_req(session="s2"))).decision == "allow_once"
    assert [(c["kind"], c["codes"][0], c["approver"]) for c in sink.calls] == [
        ("approval", "APPROVED_SESSION", "alice"),
        ("denial", "DENIED_ALL", "alice"),
        *[("denial", "DENIED_ALL_REUSED", "session-denial")] * 3,
        ("approval", "APPROVED_ONCE", "alice"),
    ]


async def test_allow_once_is_not_remembered() -> None:
    decider = Scripted("allow_once", "deny")
    b = broker(decider, RecordingSink())
    assert (await b.request(make_req())).allowed
    assert not (await b.request(make_req())).allowed
    assert len(decider.asked) == 2


async def test_decider_sees_the_timeout() -> None:
    decider = Scripted("allow_once")
    await broker(decider, RecordingSink(), timeout_s=42).request(make_req())
    assert decider.asked[0].timeout_s == 42


# ── the UI flow over the bus ─────────────────────────────────────────────────────────────


async def _answer_on_bus(
    bus: Bus, answer: Any, seen: list[Any], kinds: tuple[type[Any], ...]
) -> None:
    """Plays the TUI: waits for ApprovalRequested, 'presses a key', collects events."""
    sub = bus.subscribe(kinds=kinds)
    try:
        async for event in sub:
            seen.append(event)
            if isinstance(event, ApprovalRequested):
                answer(event)
            if isinstance(event, ApprovalResolved):
                return
    finally:
        sub.close()


@pytest.mark.parametrize("via", ["broker", "decider"])
async def test_bus_decider_resolve_flow(via: str) -> None:
    bus = Bus()
    sink = RecordingSink()
    decider = BusDecider(bus)
    b = ApprovalBroker(decider, audit=sink, timeout_s=5)  # the broker borrows the bus
    seen: list[Any] = []
    results: list[bool] = []

    def press_a(event: ApprovalRequested) -> None:
        target = b if via == "broker" else decider
        results.append(
            target.resolve(
                event.request_id,
                ApprovalDecision(decision="allow_session", decided_by="tui:user", reason="key a"),
            )
        )

    ui = asyncio.create_task(
        _answer_on_bus(bus, press_a, seen, (ApprovalRequested, ApprovalResolved))
    )
    await asyncio.sleep(0)  # let the UI subscribe
    d = await b.request(make_req(request_id="q7"))
    await asyncio.wait_for(ui, 1)

    assert (d.decision, d.decided_by) == ("allow_session", "tui:user")
    assert results == [True]
    requested, resolved = seen
    assert isinstance(requested, ApprovalRequested)
    assert (requested.request_id, requested.role, requested.model, requested.timeout_s) == (
        "q7",
        "implementer",
        "deepseek-reasoner",
        5,
    )
    assert requested.reasons == [{"code": "FAILED_LOOPS", "loops": 2, "threshold": 2}]
    assert resolved == ApprovalResolved(
        session="s1",
        request_id="q7",
        decision="allow_session",
        decided_by="tui:user",
        reason="key a",
    )
    assert sink.calls[0]["approver"] == "tui:user"
    assert sink.calls[0]["codes"] == ["APPROVED_SESSION"]
    assert b.pending() == []
    # a late second keypress is harmless
    assert not b.resolve("q7", ApprovalDecision(decision="deny", decided_by="tui:user"))
    assert not decider.resolve("q7", ApprovalDecision(decision="deny", decided_by="tui:user"))


async def test_bus_timeout_publishes_resolved_so_the_modal_closes() -> None:
    bus = Bus()
    sink = RecordingSink()
    seen: list[Any] = []
    ui = asyncio.create_task(
        _answer_on_bus(bus, lambda e: None, seen, (ApprovalRequested, ApprovalResolved))
    )
    await asyncio.sleep(0)
    d = await ApprovalBroker(BusDecider(bus), audit=sink, timeout_s=0.05).request(make_req())
    await asyncio.wait_for(ui, 1)
    assert (d.decision, d.decided_by) == ("deny", "timeout")
    assert [type(e).__name__ for e in seen] == ["ApprovalRequested", "ApprovalResolved"]
    assert seen[1].decided_by == "timeout"
    assert sink.calls[0]["codes"] == ["APPROVAL_TIMEOUT"]


async def test_bus_decider_without_listeners_denies_at_once() -> None:
    sink = RecordingSink()
    d = await ApprovalBroker(BusDecider(Bus()), audit=sink, timeout_s=60).request(make_req())
    assert (d.decision, d.decided_by, d.reason) == ("deny", "bus", "no UI listening")


async def test_headless_decisions_are_published_when_there_is_a_bus() -> None:
    bus = Bus()
    sub = bus.subscribe()
    b = ApprovalBroker(AllowDecider(), audit=RecordingSink(), bus=bus, timeout_s=5)
    await b.request(make_req(request_id="q9"))
    events = sub.drain()
    assert [(type(e).__name__, getattr(e, "decided_by", "")) for e in events] == [
        ("ApprovalResolved", "headless:allow")
    ]


async def test_resolve_unknown_request_is_false() -> None:
    b = broker(AllowDecider(), RecordingSink())
    assert not b.resolve("nope", ApprovalDecision(decision="allow_once", decided_by="x"))


# ── the terminal ─────────────────────────────────────────────────────────────────────────


async def test_terminal_decider_denies_without_a_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    sink = RecordingSink()
    d = await broker(TerminalDecider(), sink).request(make_req())
    assert (d.decision, d.decided_by, d.reason) == ("deny", "terminal", "no terminal")
    assert (sink.calls[0]["kind"], sink.calls[0]["approver"]) == ("denial", "terminal")


@pytest.mark.parametrize(
    ("typed", "decision", "reason"),
    [
        ("y\n", "allow_once", "terminal"),
        ("YES\n", "allow_once", "terminal"),
        ("a\n", "allow_session", "terminal"),
        ("n\n", "deny", "terminal"),
        ("d\n", "deny_all", "terminal"),
        ("\n", "deny", "terminal"),
        ("maybe\ny\n", "allow_once", "terminal"),
        ("x\nx\nx\ny\n", "deny", "no valid answer"),
        ("", "deny", "no answer (end of input)"),
    ],
)
async def test_terminal_decider_answers(typed: str, decision: str, reason: str) -> None:
    out = io.StringIO()
    decider = TerminalDecider(stdin=FakeTTY(typed), out=out)
    d = await decider.decide(make_req(timeout_s=60))
    assert (d.decision, d.decided_by, d.reason) == (decision, "terminal", reason)
    shown = out.getvalue()
    for text in (
        "'implementer'",
        "deepseek-reasoner (deepseek)",
        "~$0.05",
        "budget left $4.58",
        "FAILED_LOOPS (loops=2, threshold=2)",
        "failed_loops=2",
        "60s",
    ):
        assert text in shown


async def test_the_terminal_prompt_shows_control_characters_instead_of_obeying_them() -> None:
    # what the human approves must read as it is: a reason's text cannot restyle it
    out = io.StringIO()
    req = make_req(timeout_s=60).model_copy(
        update={"reasons": [{"code": "X", "note": "ok\x1b[8m hidden\nfake line"}]}
    )
    await TerminalDecider(stdin=FakeTTY("n\n"), out=out).decide(req)
    shown = out.getvalue()
    assert "X (note=ok␛[8m hidden⏎fake line)" in shown
    assert "\x1b" not in shown


async def test_the_terminal_prompt_names_the_gateway_client_that_waits() -> None:
    """Two agents may be asking at once through `serve`: the prompt named the request
    id alone (an audit with the real clients); the workbench's modal named the client."""
    out = io.StringIO()
    req = make_req(run="gw-0123", origin="codex_exec/0.171.0\x1b[2J")
    await TerminalDecider(stdin=FakeTTY("n\n"), out=out).decide(req)
    shown = out.getvalue()
    assert "(request gw-0123 from codex_exec/0.171.0␛[2J)" in shown and "\x1b" not in shown


class _PipeTTY(io.TextIOWrapper):
    def isatty(self) -> bool:
        return True


async def test_an_answer_typed_after_a_prompt_was_withdrawn_goes_to_the_next_one() -> None:
    """Two gateway requests asked at once: the first one's client gave up, and the "y"
    typed at the second prompt was read by the first one's orphaned thread, so the
    second request timed out denied. Prompts are asked one at a time, each naming its
    request, and a line goes to the prompt asking now."""
    import os

    read_fd, write_fd = os.pipe()
    stdin = _PipeTTY(os.fdopen(read_fd, "rb"), encoding="utf-8")
    out = io.StringIO()
    decider = TerminalDecider(stdin=stdin, out=out)
    try:
        first = asyncio.ensure_future(decider.decide(make_req(run="gw-first")))
        await asyncio.sleep(0.05)  # the first prompt is up, its line being read
        second = asyncio.ensure_future(decider.decide(make_req(run="gw-second")))
        await asyncio.sleep(0.05)
        assert "gw-second" not in out.getvalue()  # one prompt at a time
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await asyncio.sleep(0.05)
        os.write(write_fd, b"y\n")
        decided = await asyncio.wait_for(second, 10)  # a guard against a hang, not a timing
    finally:
        os.close(write_fd)
    assert (decided.decision, decided.reason) == ("allow_once", "terminal")
    shown = out.getvalue()
    assert "(request gw-first)" in shown and "(request gw-second)" in shown
    assert "withdrawn: request gw-first no longer waits for an answer" in shown
    assert shown.index("withdrawn") < shown.index("gw-second")


async def test_a_prompt_the_timeout_ends_says_timed_out_not_withdrawn() -> None:
    """The terminal said "(withdrawn: … no longer waits for an answer)" while the audit
    said APPROVAL_TIMEOUT: the broker's timeout cancels the prompt as a request that
    went away does."""
    import os

    read_fd, write_fd = os.pipe()
    stdin = _PipeTTY(os.fdopen(read_fd, "rb"), encoding="utf-8")
    out = io.StringIO()
    decider = TerminalDecider(stdin=stdin, out=out)
    try:
        with pytest.raises(TimeoutError):  # as the broker waits for an answer
            await asyncio.wait_for(decider.decide(make_req(run="gw-slow", timeout_s=0.2)), 0.2)
    finally:
        os.close(write_fd)
    shown = out.getvalue()
    assert "(timed out after 0.2s: request gw-slow is denied)" in shown
    assert "withdrawn" not in shown


async def _shown(out: io.StringIO, text: str) -> None:
    for _ in range(1500):  # (a guard against a hang, not a timing)
        if text in out.getvalue():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{text!r} never shown: {out.getvalue()}")


async def test_a_prompt_queued_for_the_terminal_is_timed_from_when_it_is_shown() -> None:
    """Two escalations came together; the second waited for the terminal while its
    timeout ran, so after a slow first answer its prompt said "denied automatically
    after 3s" and was denied a moment later (a user audit). Its timeout starts when it
    is shown: answered within it, it is allowed."""
    import os

    timeout = 3.0
    read_fd, write_fd = os.pipe()
    stdin = _PipeTTY(os.fdopen(read_fd, "rb"), encoding="utf-8")
    out = io.StringIO()
    sink = RecordingSink()
    b = broker(TerminalDecider(stdin=stdin, out=out), sink, timeout_s=timeout)
    try:
        first = asyncio.ensure_future(b.request(make_req(run="gw-first")))
        second = asyncio.ensure_future(b.request(make_req(run="gw-second")))
        await _shown(out, "(request gw-first)")
        await asyncio.sleep(timeout * 0.6)  # a human reading it: most of its time
        os.write(write_fd, b"n\n")
        assert (await asyncio.wait_for(first, 30)).decision == "deny"
        await _shown(out, "(request gw-second)")
        # past the second's timeout counted from when it came, inside the one counted
        # from when it is shown
        await asyncio.sleep(timeout * 0.6)
        os.write(write_fd, b"y\n")
        decided = await asyncio.wait_for(second, 30)
    finally:
        os.close(write_fd)
    assert (decided.decision, decided.decided_by) == ("allow_once", "terminal")
    assert "timed out" not in out.getvalue()
    assert [c["codes"] for c in sink.calls] == [["DENIED"], ["APPROVED_ONCE"]]


class Queued:
    """A decider whose prompt waits for its turn, which never comes."""

    name = "queued"

    async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
        from app.router import approvals

        approvals.waiting_turn(0.2)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_prompt_that_waits_for_its_turn_too_long_is_denied_unshown() -> None:
    """The wait for the terminal does not count against the prompt's timeout, and is
    bounded all the same: every ask ends."""
    sink = RecordingSink()
    d = await asyncio.wait_for(broker(Queued(), sink, timeout_s=60).request(make_req()), 30)
    assert (d.decision, d.decided_by) == ("deny", "timeout")
    assert d.reason.startswith("not asked within 0.2s")
    assert [(c["kind"], c["codes"]) for c in sink.calls] == [("denial", ["APPROVAL_TIMEOUT"])]


async def test_deny_all_answers_the_sessions_other_questions_on_screen() -> None:
    """Two escalations held at once (a gateway's two requests, a run and the tutor): "d"
    on one left the other's modal open, and a "y" on it sent its request to the cloud
    after the user said stay local (a TUI audit). The others are answered with it."""
    bus = Bus()
    sink = RecordingSink()
    decider = BusDecider(bus)
    b = ApprovalBroker(decider, audit=sink, timeout_s=5)
    sub = bus.subscribe(kinds=(ApprovalRequested,))
    first = asyncio.create_task(b.request(make_req(request_id="q1")))
    second = asyncio.create_task(b.request(make_req(request_id="q2", model="kimi-k2")))
    other = asyncio.create_task(b.request(make_req(request_id="q3", session="s2")))
    asked = {(await sub.get()).request_id for _ in range(3)}
    assert asked == {"q1", "q2", "q3"}
    assert b.resolve("q1", ApprovalDecision(decision="deny_all", decided_by="tui:keypress"))
    assert (await first).decision == "deny_all"
    later = await asyncio.wait_for(second, 1)  # answered with it, no key needed ...
    assert (later.decision, later.decided_by) == ("deny_all", "session-denial")
    # ... and a "y" pressed on its modal a moment later changes nothing
    assert not b.resolve("q2", ApprovalDecision(decision="allow_once", decided_by="tui:keypress"))
    assert not other.done()  # another session's question still waits for its human
    assert b.resolve("q3", ApprovalDecision(decision="allow_once", decided_by="tui:keypress"))
    assert (await other).allowed
    assert [(c["kind"], c["codes"][0]) for c in sink.calls] == [
        ("denial", "DENIED_ALL"),
        ("denial", "DENIED_ALL_REUSED"),
        ("approval", "APPROVED_ONCE"),
    ]
    sub.close()
