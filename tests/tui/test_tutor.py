"""The tutor screen over the core's TutorSession: the turn counter, conversation memory,
the cap (input disabled, said clearly, audited), a new session, /escalate."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from textual.widgets import Collapsible, Input, Static

from app.backends.base import Message
from app.pipeline.schemas import TutorTurn
from app.pipeline.structured import Answer
from app.pipeline.tutor import TutorSession
from app.router.types import Signals
from app.tui.core import TutorAnswered
from app.tui.screens.tutor import TutorScreen
from tests.tui.helpers import Messages, settle, until
from tests.tui.scenes import enter_text
from tests.tui.scripted import scripted_tutor


def text_of(app: Any, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def open_tutor(pilot: Any) -> None:
    app = pilot.app
    await until(pilot, lambda: app.session is not None, what="the session")
    await pilot.press("escape", "t")
    await until(pilot, lambda: isinstance(app.screen, TutorScreen), what="the tutor")


async def submit(pilot: Any, text: str) -> None:
    """Put ``text`` in the tutor's input and enter it (the answer not waited for)."""
    if not pilot.app.screen.query_one("#tutor-input", Input).has_focus:
        await pilot.press("slash")  # the screen's key for "ask again"
    await enter_text(pilot, "#tutor-input", text)


async def reopen_tutor(pilot: Any) -> None:
    """Leave the tutor for the workbench and open it again."""
    await pilot.press("escape")
    await settle(pilot)
    await pilot.press("t")
    await until(pilot, lambda: isinstance(pilot.app.screen, TutorScreen), what="the tutor")
    await settle(pilot)


async def ask(pilot: Any, seen: Messages, text: str) -> TutorAnswered:
    before = len(seen.of(TutorAnswered))
    await submit(pilot, text)
    await until(pilot, lambda: len(seen.of(TutorAnswered)) > before, what="the tutor")
    await settle(pilot)
    return seen.of(TutorAnswered)[-1]


def slow_tutor_app(make_app: Any, bookkeeping_s: float = 0.0) -> tuple[Any, Any]:
    """The workbench with no task and a :func:`slow_tutor`; and the event that lets its
    model answer."""
    import asyncio

    release = asyncio.Event()
    app = make_app(task=None)
    app._tutor = slow_tutor(release, bookkeeping_s)
    return app, release


def slow_tutor(release: Any, bookkeeping_s: float = 0.0) -> Any:
    """A tutor whose model answers once ``release`` is set; cancelled, it takes
    ``bookkeeping_s`` of its own before the cancel goes on (as the router's does)."""
    import asyncio

    def make(session: Any, repo: Path) -> TutorSession:
        async def model(messages: list[Message], signals: Signals) -> Answer[TutorTurn]:
            try:
                await release.wait()
            except asyncio.CancelledError:
                if bookkeeping_s:
                    await asyncio.shield(asyncio.sleep(bookkeeping_s))
                raise
            return Answer(TutorTurn(questions=["what does range(n) leave out?"], answer="a"), None)

        return TutorSession(session.router, model=model)

    return make


async def test_the_cap_disables_the_input_with_a_clear_message(make_app: Any) -> None:
    seen = Messages()
    app = make_app(task=None)
    app._tutor = partial(scripted_tutor, max_turns=2)
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await open_tutor(pilot)
        assert text_of(app, "#tutor-title").endswith("no turn yet · 2 allowed")
        first = await ask(pilot, seen, "why is the last token dropped?")
        assert first.reply.label == "turn 1/2" and first.reply.answer is None
        assert not app.screen.query_one("#tutor-input", Input).disabled
        assert "slash" in app.screen.active_bindings  # the footer's "ask again"
        second = await ask(pilot, seen, "range(3) gives 0 1 2, so index 3 is missing")
        assert second.reply.label == "turn 2/2"
        # the second turn shows its answer: the learner has replied to the questions
        assert not app.screen.query_one("#answer", Collapsible).collapsed
        box = app.screen.query_one("#tutor-input", Input)
        assert box.disabled
        assert "press n for a new one" in box.placeholder
        cap = text_of(app, "#tutor-cap")
        assert "All 2 turns of this session are used" in cap
        assert "roles.tutor.max_turns" in cap and "Press n" in cap
        assert text_of(app, "#tutor-title").endswith("turn 2/2")
        # nothing to ask again with: the footer does not offer it (it did, and did nothing)
        assert "slash" not in app.screen.active_bindings
        lines = [line for line in await app.session.audit.lines() if line.kind == "tutor"]
        assert [line.values["turn"] for line in lines] == [1, 2]
        assert [line.detail.split(":")[0] for line in lines] == ["turn 1 of 2", "turn 2 of 2"]

        await pilot.press("n")  # a new session: a fresh cap, the input back
        await settle(pilot)
        assert not box.disabled and text_of(app, "#tutor-cap") == ""
        assert "slash" in app.screen.active_bindings
        assert text_of(app, "#tutor-title").endswith("no turn yet · 2 allowed")
        again = await ask(pilot, seen, "and for an empty list?")
        assert again.reply.label == "turn 1/2"


async def test_the_conversation_is_carried_and_escalate_is_the_users_request(
    make_app: Any,
) -> None:
    calls: list[tuple[list[Message], Signals]] = []

    def recording(session: Any, repo: Path) -> TutorSession:
        async def model(messages: list[Message], signals: Signals) -> Answer[TutorTurn]:
            calls.append((messages, signals))
            return Answer(TutorTurn(questions=[f"question {len(calls)}?"], answer="a"), None)

        return TutorSession(session.router, model=model)

    seen = Messages()
    app = make_app(task=None)
    app._tutor = recording
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await open_tutor(pilot)
        await ask(pilot, seen, "what is a closure?")
        await reopen_tutor(pilot)  # leave and come back: the conversation is kept
        assert "question 1?" in text_of(app, "#tutor-questions")
        await ask(pilot, seen, "/escalate a function with its variables?")
        assert [signals.user_request for _, signals in calls] == [False, True]
        messages = calls[1][0]
        assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
        assert messages[1].content == "what is a closure?"
        assert messages[3].content == "a function with its variables?"
        assert "escalation requested: it stayed local" in text_of(app, "#tutor-questions")
        assert text_of(app, "#tutor-title").endswith("turn 2/6")


async def test_typing_the_next_question_while_the_tutor_answers_stays_text(
    make_app: Any,
) -> None:
    """The answer moved the focus to the body in the middle of the next question, so
    its letters became commands: "r" folded the answer and "n" wiped the session."""

    app, release = slow_tutor_app(make_app)
    seen = Messages()
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await open_tutor(pilot)
        box = app.screen.query_one("#tutor-input", Input)
        await submit(pilot, "why is a token lost?")
        await settle(pilot)
        if not box.has_focus:
            await pilot.press("slash")
        await pilot.press(*"maybe ru")  # the next question, half typed
        release.set()
        await until(pilot, lambda: bool(seen.of(TutorAnswered)), what="the answer")
        await settle(pilot)
        await pilot.press(*"n")
        await settle(pilot)
        assert box.has_focus and box.value == "maybe run"
        assert text_of(app, "#tutor-title").endswith("turn 1/6")  # no new session


async def test_leaving_the_tutor_while_it_answers_loses_nothing(make_app: Any) -> None:
    """Left while "thinking…" and opened again: the new screen was blank, the answer went
    to the screen that had asked and was gone (a TUI audit). The question shows, thinking,
    and the answer lands on the screen open when it comes."""

    app, release = slow_tutor_app(make_app)
    seen = Messages()
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await open_tutor(pilot)
        await submit(pilot, "why is a token lost?")
        await settle(pilot)
        await reopen_tutor(pilot)  # left while it thinks
        assert "why is a token lost?" in text_of(app, "#tutor-question")
        assert "thinking" in text_of(app, "#tutor-questions")
        release.set()
        await until(pilot, lambda: bool(seen.of(TutorAnswered)), what="the answer")
        await settle(pilot)
        assert "what does range(n) leave out?" in text_of(app, "#tutor-questions")


async def test_a_question_cancelled_by_the_next_leaves_the_next_ones_mark(
    make_app: Any,
) -> None:
    """The first question, cancelled by the second, ended after the second began and
    cleared its mark: left and reopened, the screen was blank again (a review)."""

    app, release = slow_tutor_app(make_app, bookkeeping_s=0.05)
    async with app.run_test(size=(160, 48)) as pilot:
        await open_tutor(pilot)
        for question in ("first question", "second question"):
            await submit(pilot, question)
            await settle(pilot)
        await pilot.pause(0.2)  # the first one's cancel has ended
        assert app.tutor_asking == "second question"
        # said, not silent (a TUI audit: the budget's "1 failed" call was all there was)
        said = [n.message for n in app._notifications]
        assert any("first question) was dropped, its call cancelled" in m for m in said), said
        await reopen_tutor(pilot)
        assert "second question" in text_of(app, "#tutor-question")
        release.set()


async def test_a_question_dropped_before_its_worker_started_is_said(make_app: Any) -> None:
    """Two questions entered in one go: the first's worker had not started when the
    second came, so it was dropped without the notice (the mark was set by the worker)."""

    app, release = slow_tutor_app(make_app)
    async with app.run_test(size=(160, 48)) as pilot:
        await open_tutor(pilot)
        screen = app.screen
        box = screen.query_one("#tutor-input", Input)
        for question in ("first question", "second question"):
            screen.on_input_submitted(Input.Submitted(box, question))
        await settle(pilot)
        said = [n.message for n in app._notifications]
        assert any("first question) was dropped, its call cancelled" in m for m in said), said
        assert app.tutor_asking == "second question"
        assert "second question" in text_of(app, "#tutor-question")
        release.set()


async def test_slash_says_ask_until_a_question_was_asked(make_app: Any) -> None:
    """The footer offered "/ ask again" before any question was asked (a user audit)."""
    seen = Messages()
    app = make_app(task=None)
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await open_tutor(pilot)
        app.screen.query_one("#tutor-body").focus()  # (the footer shows the screen's keys)
        await settle(pilot)
        assert app.screen.active_bindings["slash"].binding.description == "ask"
        await ask(pilot, seen, "why does parse drop the last token?")
        assert app.screen.active_bindings["slash"].binding.description == "ask again"
        await pilot.press("n")  # a new session: nothing asked in it yet
        await settle(pilot)
        assert app.screen.active_bindings["slash"].binding.description == "ask"
        await pilot.press("slash")
        await settle(pilot)
        assert app.screen.query_one("#tutor-input", Input).has_focus
