"""The approval modal: shown on request, y/a/n answered through the real broker and
audited, the broker's timeout denies and closes it, and 'e' asks to escalate."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from rich.console import Console
from textual.notifications import Notify
from textual.widgets import Static

from app.clock import ManualClock
from app.tui import bridge
from app.tui.core import DECIDED_BY, RunDone
from app.tui.screens.approval import ApprovalScreen
from tests.tui.helpers import Messages, palette, settle, until
from tests.tui.scripted import ScriptedRun


def _modal_text(screen: ApprovalScreen) -> str:
    parts = [
        str(screen.query_one(f"#{name}", Static).render())
        for name in ("approval-body", "approval-countdown", "approval-keys")
    ]
    return "\n".join(parts)


@contextlib.asynccontextmanager
async def _at_the_escalation(
    make_app: Any, clock: ManualClock, seen: Messages | None = None
) -> AsyncIterator[tuple[Any, Any, ScriptedRun]]:
    """The workbench with its scripted run paused before its escalation, the implementer
    at work: (the app, the pilot, the run)."""
    run = ScriptedRun(clock, stop_before="escalation")
    app = make_app(run=run)
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await until(pilot, run.reached.is_set, what="the implementer at work")
        await settle(pilot)
        yield app, pilot, run


async def _deny_to_the_end(app: Any, pilot: Any, run: ScriptedRun) -> None:
    """Let the run go on to its escalation, deny it, and wait for the run to end."""
    run.go_on.set()
    await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
    await pilot.press("n")
    await until(pilot, lambda: not app.running, what="the run to end")


async def test_escalation_request_shows_the_modal(make_app: Any) -> None:
    seen = Messages()
    app = make_app()
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
        await settle(pilot)
        asked = seen.of(bridge.ApprovalAsked)
        assert len(asked) == 1
        request = asked[0].event
        assert (request.role, request.model, request.provider) == (
            "implementer",
            "deepseek-reasoner",
            "deepseek",
        )
        screen = app.screen
        assert isinstance(screen, ApprovalScreen)
        assert screen.request.request_id == request.request_id
        text = _modal_text(screen)
        for expected in (
            "implementer",
            "deepseek-reasoner (deepseek)",
            "IMPLEMENTER_FAILED_LOOPS: failed_loops = 2 (≥ 2)",
            "~$0.012",
            "$5.00",
            "60s, then denied",
            "approve once",
        ):
            assert expected in text, (expected, text)
        assert app.session is not None
        assert app.session.approvals.pending() == [request.request_id]


@pytest.mark.parametrize(
    ("key", "decision", "kind", "code"),
    [
        ("y", "allow_once", "approval", "APPROVED_ONCE"),
        ("a", "allow_session", "approval", "APPROVED_SESSION"),
        ("n", "deny", "denial", "DENIED"),
        ("d", "deny_all", "denial", "DENIED_ALL"),
    ],
)
async def test_each_key_decides_through_the_broker_and_is_audited(
    make_app: Any, clock: ManualClock, key: str, decision: str, kind: str, code: str
) -> None:
    seen = Messages()
    run = ScriptedRun(clock)
    app = make_app(run=run)
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
        request_id = seen.of(bridge.ApprovalAsked)[0].event.request_id
        await pilot.press(key)
        await until(pilot, lambda: seen.of(RunDone), what="the run to end")
        await settle(pilot)
        assert not isinstance(app.screen, ApprovalScreen)

        # The broker's answer, as the UI saw it on the bus.
        settled = [m.event for m in seen.of(bridge.ApprovalSettled)]
        assert [(e.request_id, e.decision, e.decided_by) for e in settled] == [
            (request_id, decision, DECIDED_BY)
        ]
        assert run.decision == decision

        # The audit line, in the real chain and in the pane that shows it live.
        assert app.session is not None
        lines = await app.session.audit.lines(session=app.session.id)
        decided = [ln for ln in lines if ln.kind in ("approval", "denial")]
        assert len(decided) == 1
        line = decided[0]
        assert (line.kind, line.reason_codes, line.provenance["approver"]) == (
            kind,
            [code],
            DECIDED_BY,
        )
        assert line.values["decision"] == decision
        assert line.detail == f"{key} pressed"
        batched = [ln for m in seen.of(bridge.AuditBatch) for ln in m.lines]
        assert any(ln["seq"] == line.seq and ln["kind"] == kind for ln in batched)
        pane_kinds = [ln["kind"] for ln in app.screen.escalations.lines]
        assert kind in pane_kinds
        outcome = seen.of(RunDone)[0].result.outcome
        assert outcome == ("stopped" if decision.startswith("deny") else "merge_ready")
        # after "d" the header says the session stays local (nothing did once the modal
        # closed, and later escalations were denied unasked: a TUI audit)
        assert app.home.header.stays_local == (decision == "deny_all")
        console = Console(width=160, file=io.StringIO(), record=True)
        console.print(app.home.header.render())
        assert ("STAYING LOCAL" in console.export_text()) == (decision == "deny_all")


class _Typist:
    """The modal's clock for a typist's pace, moved by the test (a real one made the
    test hang on how long a busy machine took to draw: 1 failed in a parallel suite)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def _with_the_pause(
    make_app: Any, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Any, Any, Messages, _Typist]]:
    """The modal up, keys taken after the product's pause (0 s elsewhere in the tests),
    on a clock the test moves: (the app, the pilot, the messages, the clock); on leaving,
    a pause then "n" denies it."""
    from app.tui.screens import approval

    typist = _Typist()
    monkeypatch.setattr(approval, "time", typist)
    monkeypatch.setattr(ApprovalScreen, "TYPING_PAUSE_S", 0.6)
    seen = Messages()
    run = ScriptedRun(clock)
    app = make_app(run=run)
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
        yield app, pilot, seen, typist
        typist.now += 0.7  # the typist stops; then a key is an answer
        await pilot.press("n")
        await until(pilot, lambda: seen.of(RunDone), what="the run to end")
        assert [m.event.decision for m in seen.of(bridge.ApprovalSettled)] == ["deny"]


async def test_keys_typed_on_as_the_modal_opens_do_not_answer_it(
    make_app: Any, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user typing in the task or tutor box when the modal came up approved it with the
    "a" of "approval" (a TUI audit). A key is an answer only after a pause; one typed on
    says so on the modal, and the question stays."""
    async with _with_the_pause(make_app, clock, monkeypatch) as (app, pilot, seen, typist):
        screen = app.screen
        assert isinstance(screen, ApprovalScreen)
        for key in " approval":  # the sentence goes on: its "a" is no answer
            typist.now += 0.15
            await pilot.press(key)
        await pilot.pause(0.05)
        assert app.screen is screen and not seen.of(bridge.ApprovalSettled)
        assert "keys taken after a pause" in _modal_text(screen)


async def test_a_modal_back_on_top_waits_for_a_pause_again(
    make_app: Any, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two questions held: the key that answered the one on top, pressed twice or held,
    answered the one beneath the moment it came back, unseen (a review)."""
    from textual.screen import ModalScreen

    async with _with_the_pause(make_app, clock, monkeypatch) as (app, pilot, seen, typist):
        beneath = app.screen
        typist.now += 5.0  # long open: a key now would be an answer ...
        await app.push_screen(ModalScreen())  # ... but another question comes on top
        await settle(pilot)
        app.pop_screen()  # answered; this one is back
        await settle(pilot)
        typist.now += 0.1
        await pilot.press("y")  # the same key again, a moment later
        await pilot.pause(0.05)
        assert app.screen is beneath and not seen.of(bridge.ApprovalSettled)


async def test_the_timeout_denies_and_closes_the_modal(make_app: Any) -> None:
    seen = Messages()
    app = make_app(approval_timeout_s=0.4)
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await until(pilot, lambda: seen.of(bridge.ApprovalAsked), what="the request")
        await until(pilot, lambda: seen.of(RunDone), what="the run to end")
        await settle(pilot)
        assert not isinstance(app.screen, ApprovalScreen)
        settled = seen.of(bridge.ApprovalSettled)[0].event
        assert (settled.decision, settled.decided_by) == ("deny", "timeout")
        assert app.session is not None
        lines = await app.session.audit.lines(session=app.session.id)
        denial = [ln for ln in lines if ln.kind == "denial"]
        assert [d.reason_codes for d in denial] == [["APPROVAL_TIMEOUT"]]
        assert seen.of(RunDone)[0].result.outcome == "stopped"
        assert app.screen.header.state == "stopped"


async def test_a_late_keypress_after_the_timeout_changes_nothing(make_app: Any) -> None:
    seen = Messages()
    app = make_app(approval_timeout_s=0.3)
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await until(pilot, lambda: seen.of(RunDone), what="the run to end")
        await pilot.press("y")  # the modal is gone: y is not bound on the main screen
        await settle(pilot)
        assert app.session is not None
        lines = await app.session.audit.lines(session=app.session.id)
        assert [ln.kind for ln in lines if ln.kind in ("approval", "denial")] == ["denial"]


def _deny_all(session: Any) -> None:
    session.approvals._session_denied.add(session.id)  # as `d` in an earlier modal


def _local_only(session: Any) -> None:
    session.local_only = True


@pytest.mark.parametrize(
    ("staying", "said"),
    [(_deny_all, "denied every escalation"), (_local_only, "local_only is on")],
    ids=["after-deny-all", "under-local-only"],
)
async def test_e_says_the_session_stays_local(
    make_app: Any, clock: ManualClock, staying: Callable[[Any], None], said: str
) -> None:
    """After `d` the toast said "it asks before leaving the machine", and the request was
    denied by the session's denial without asking; under --local-only it promised the
    same, and the router then skipped the step (a user-audit found it)."""
    seen = Messages()
    async with _at_the_escalation(make_app, clock, seen) as (app, pilot, run):
        assert app.session is not None
        staying(app.session)
        await pilot.press("e")
        await settle(pilot)
        toasts = [m.notification.message for m in seen.of(Notify)]
        assert any(said in s and "stays local" in s for s in toasts), toasts
        assert not any("it asks before leaving" in s for s in toasts)
        run.go_on.set()


KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "MOONSHOT_API_KEY")


@pytest.mark.parametrize(
    ("keys", "said"),
    [
        ((), "no cloud model of its chain has a key set"),
        (("OPENAI_API_KEY",), "it asks before leaving the machine"),
    ],
    ids=["no-key", "a-key"],
)
async def test_e_says_whether_a_cloud_step_can_be_asked_for(
    make_app: Any,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    keys: tuple[str, ...],
    said: str,
) -> None:
    """With no key it said "it asks before leaving the machine", and every cloud step
    was then skipped for want of a key, no modal ever shown (a user-audit found it)."""
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    for name in keys:
        monkeypatch.setenv(name, "sk-test-0123456789abcdefghij")
    seen = Messages()
    async with _at_the_escalation(make_app, clock, seen) as (app, pilot, run):
        await pilot.press("e")
        await settle(pilot)
        toasts = [m.notification.message for m in seen.of(Notify)]
        assert any(s.startswith("escalation requested for implementer") for s in toasts)
        assert any(said in s for s in toasts), toasts
        # a stage that calls no model takes no request: it said "requested for stage0"
        assert app.escalate("stage0") == ""
        await settle(pilot)
        toasts = [m.notification.message for m in seen.of(Notify)]
        assert any(s.startswith("stage0 calls no model: press e while") for s in toasts)
        assert app.control is not None and "stage0" not in app.control.escalate
        run.go_on.set()


async def test_e_requests_escalation_of_the_role_at_work(make_app: Any, clock: ManualClock) -> None:
    async with _at_the_escalation(make_app, clock) as (app, pilot, run):
        assert app.screen.role == "implementer"
        await pilot.press("e")
        assert app.control is not None
        assert app.control.escalate == {"implementer"}
        assert app.control.user_requested("implementer")
        await _deny_to_the_end(app, pilot, run)


async def test_the_header_says_only_that_it_waits_while_the_modal_is_up(
    make_app: Any, clock: ManualClock
) -> None:
    """It read "awaiting approval · implementer writing · 173 chars", both at once."""
    async with _at_the_escalation(make_app, clock) as (app, pilot, run):
        home = app.screen
        home.header.activity = "implementer writing · 173 chars"
        run.go_on.set()
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
        await settle(pilot)
        assert home.header.state == "awaiting approval" and home.header.activity == ""


async def test_x_says_stopping_until_the_run_ends(make_app: Any, clock: ManualClock) -> None:
    """After x the header said "running" for the minute the model call in progress took,
    as if the key had done nothing (a user-audit)."""
    async with _at_the_escalation(make_app, clock) as (app, pilot, run):
        assert app.screen.header.state == "running"
        await pilot.press("x")
        await settle(pilot)
        assert app.screen.header.state == "stopping"
        # (the scripted run reads no stop: its escalation asks)
        await _deny_to_the_end(app, pilot, run)
        await settle(pilot)
        assert app.screen.header.state not in ("running", "stopping")


async def test_another_roles_tokens_are_not_the_runs_activity(
    make_app: Any, clock: ManualClock
) -> None:
    """A tutor question asked beside the run read "implementer · tutor writing · 38
    chars" in the run's header (a user-audit)."""
    async with _at_the_escalation(make_app, clock) as (app, pilot, run):
        home = app.screen
        before = home.header.activity
        home.post_message(bridge.TokenText("tutor", "smollm2-135m", "a question"))
        await settle(pilot)
        assert home.header.activity == before
        home.post_message(bridge.TokenText("implementer", "smollm2-135m", "def f"))
        await settle(pilot)
        assert home.header.activity.startswith("implementer writing · ")
        # a critic's inside the stage is the run's (its count kept the header still)
        home.post_message(bridge.TokenText("critic", "smollm2-135m", "looks fine"))
        await settle(pilot)
        assert home.header.activity.startswith("critic writing · ")
        await _deny_to_the_end(app, pilot, run)


async def test_the_red_baseline_is_marked_as_such_and_a_red_attempt_as_failed(
    make_app: Any, clock: ManualClock
) -> None:
    from app.bus import StageChanged, TestLoopFinished

    async with _at_the_escalation(make_app, clock) as (app, pilot, run):
        # the scripted loops' events are in (no "tests" stage then)
        home = app.screen
        for loop, want in ((0, "baseline"), (1, "failed"), (2, "finished")):
            started = StageChanged(session="s", run="r", stage="tests", status="started")
            home.post_message(bridge.StageMoved(started))
            ended = TestLoopFinished(
                session="s", run="r", loop=loop, passed=loop == 2, exit_code=1, runner="bwrap"
            )
            home.post_message(bridge.LoopFinished(ended))
            await settle(pilot)
            assert home.plan.stages["tests"] == want
        await _deny_to_the_end(app, pilot, run)


async def test_a_new_model_call_says_it_waits_for_the_model_then_counts_afresh(
    make_app: Any, clock: ManualClock
) -> None:
    """While the next call read its prompt (minutes on a small CPU) the header showed the
    last call's "architect writing · 774 chars", unchanged, as if hung (a user-audit)."""
    async with _at_the_escalation(make_app, clock) as (app, pilot, run):
        home = app.screen
        home.post_message(bridge.TokenText("implementer", "m", "x" * 700))
        await settle(pilot)
        assert home.header.activity == "implementer writing · 700 chars"
        route = {"kind": "route", "role": "implementer", "to": "m@vllm", "ts": "", "seq": 1}
        home.post_message(bridge.AuditBatch([route]))
        await settle(pilot)
        assert home.header.activity == "implementer waiting for the model (reading the prompt)"
        home.post_message(bridge.TokenText("implementer", "m", "def f"))
        await settle(pilot)
        assert home.header.activity == "implementer writing · 5 chars"
        await _deny_to_the_end(app, pilot, run)


@pytest.mark.parametrize("command", ["Runs", "Policy", "Simulate", "Tutor"])
async def test_a_screen_from_the_palette_does_not_hide_a_waiting_approval(
    make_app: Any, command: str
) -> None:
    """Runs opened the evidence screen over the modal: nothing said an approval waited,
    and it timed out unseen (an audit). Refused with a word, as New task is."""
    seen = Messages()
    app = make_app()
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
        await settle(pilot)
        await palette(pilot, command)
        assert isinstance(app.screen, ApprovalScreen)
        notes = [m.notification.message for m in seen.of(Notify)]
        assert any("an approval is waiting" in note for note in notes), notes


async def test_a_sub_cent_estimate_reads_in_significant_digits(clock: ManualClock) -> None:
    """A DeepSeek step's estimate read "est. cost ~$0.000" (a user-audit): under a cent
    an amount keeps two significant digits."""
    from textual.app import App

    from app.bus import ApprovalRequested
    from app.tui.panes.budget import money

    assert [money(x) for x in (0.00012, 0.0094, 0.012, 0.5, 1.5, 0.0)] == [
        "$0.00012",
        "$0.0094",
        "$0.012",
        "$0.500",
        "$1.50",
        "$0.00",
    ]
    request = ApprovalRequested(
        request_id="r1",
        role="implementer",
        model="deepseek-chat",
        provider="deepseek",
        reasons=[],
        est_cost_usd=0.00012,
        budget_left_usd=4.99,
        timeout_s=60.0,
    )

    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(ApprovalScreen(request, clock))

    app = Host()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
        await settle(pilot)
        body = str(app.screen.query_one("#approval-body", Static).render())
        assert "est. cost   ~$0.00012" in body, body


async def test_a_triggers_detail_is_a_labelled_line_under_its_trigger(make_app: Any) -> None:
    """The trigger's words were drawn last, indented under "budget left $5.00" with no
    label, and read as part of the budget line (a user audit)."""
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
        await settle(pilot)
        rows = str(app.screen.query_one("#approval-body", Static).render()).splitlines()
        labels = [row[:12].strip() for row in rows]
        assert labels == ["role", "target", "trigger", "detail", "est. cost", "budget left"]
        detail = rows[labels.index("detail")]
        assert detail == "detail      2 failed compile/test loops (≥ 2) → deepseek-reasoner"
        assert rows[-1] == "budget left $5.00", rows
