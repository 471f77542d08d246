"""The Tutor's core (app.pipeline.tutor.TutorSession) over the real router, audit chain,
ledger and approvals broker; the backends are the scripted doubles of the router tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from app.audit.log import AuditLog
from app.errors import SwitchyardError, UsageError
from app.pipeline.tutor import (
    FIRST_TURN,
    LAST_TURN,
    LATER_TURN,
    TutorReplyInvalid,
    TutorSession,
    TutorTurnCapReached,
)
from app.policy.schema import Policy
from app.router.approvals import DenyDecider
from app.router.ledger import BudgetLedger
from app.router.service import Router
from tests.fakes.demo_repo import make_repo
from tests.integration.test_router_service import (
    ALL_UP,
    Resolver,
    make_router,
)

LOCAL = ("qwen2.5-coder-7b", "vllm")
HAIKU = ("claude-haiku-4.5", "cloud")


def turn_json(n: int, *, answer: str | None = None, questions: int = 2) -> str:
    return json.dumps(
        {
            "questions": [f"question {n}.{q}?" for q in range(1, questions + 1)],
            "hint": f"hint {n}",
            "answer": answer if answer is not None else f"answer {n}",
        }
    )


def with_max_turns(policy: Policy, max_turns: int | None) -> Policy:
    tutor = policy.roles["tutor"].model_copy(update={"max_turns": max_turns})
    return policy.model_copy(update={"roles": {**policy.roles, "tutor": tutor}})


async def tutor_lines(audit: AuditLog) -> list[Any]:
    return [line for line in await audit.lines(session="s1") if line.kind == "tutor"]


Opener = Callable[..., Awaitable[tuple[Router, AuditLog]]]


@pytest.fixture
async def routed(tmp_path: Path, resolver: Resolver) -> AsyncIterator[Opener]:
    """``await routed(policy, decider=...)`` → (router, audit); closed even when a test fails
    (an open SQLite connection's thread would keep the test process alive)."""
    opened: list[tuple[AuditLog, BudgetLedger]] = []

    async def open_router(policy: Policy, **kw: Any) -> tuple[Router, AuditLog]:
        where = tmp_path / f"router{len(opened)}"
        where.mkdir()
        router, audit, ledger = await make_router(where, policy, resolver, **kw)
        opened.append((audit, ledger))
        return router, audit

    yield open_router
    for audit, ledger in opened:
        await audit.close()
        await ledger.close()


@pytest.fixture
def resolver() -> Resolver:
    r = Resolver(up=ALL_UP)
    r.scripts[LOCAL] = [turn_json(n) for n in range(1, 12)]
    return r


async def test_six_turns_then_the_seventh_is_refused_and_audited(
    routed: Opener, policy: Policy, resolver: Resolver
) -> None:
    assert policy.roles["tutor"].max_turns == 6  # the shipped policy
    router, audit = await routed(policy)
    tutor = TutorSession(router)
    assert (tutor.max_turns, tutor.turns_left, tutor.capped) == (6, 6, False)
    for n in range(1, 7):
        reply = await tutor.ask(f"learner line {n}")
        assert (reply.n, reply.label, reply.turns_left) == (n, f"turn {n}/6", 6 - n)
        assert tutor.turns_left == 6 - n
    assert tutor.capped
    with pytest.raises(TutorTurnCapReached) as refused:
        await tutor.ask("one more?")
    assert isinstance(refused.value, SwitchyardError) and refused.value.exit_code == 1
    assert "all 6 turns" in str(refused.value) and "roles.tutor.max_turns" in str(refused.value)
    assert len(resolver.sent(LOCAL)) == 6  # the 7th never reached a model
    lines = await tutor_lines(audit)
    assert [line.reason_codes for line in lines] == [["TUTOR_TURN"]] * 6 + [["TUTOR_TURN_CAP"]]
    assert [line.detail.split(":")[0] for line in lines[:6]] == [
        f"turn {n} of 6" for n in range(1, 7)
    ]
    cap = lines[-1]
    assert cap.role == "tutor" and cap.values == {"turns": 6, "max_turns": 6}
    assert "question refused" in cap.detail
    # the question's text is never in the tutor's own lines
    assert not any("learner line" in json.dumps(line.model_dump()) for line in lines)
    assert (await audit.verify()).ok


async def test_the_cap_is_the_policys_and_none_means_no_cap(
    routed: Opener, policy: Policy, resolver: Resolver
) -> None:
    router, audit = await routed(with_max_turns(policy, 2))
    tutor = TutorSession(router)
    await tutor.ask("a")
    await tutor.ask("b")
    with pytest.raises(TutorTurnCapReached, match="all 2 turns"):
        await tutor.ask("c")
    with pytest.raises(TutorTurnCapReached):  # every refused question is refused again
        await tutor.ask("d")
    assert [line.reason_codes[0] for line in await tutor_lines(audit)] == [
        "TUTOR_TURN",
        "TUTOR_TURN",
        "TUTOR_TURN_CAP",
        "TUTOR_TURN_CAP",
    ]

    router, audit = await routed(with_max_turns(policy, None))
    free = TutorSession(router)
    for n in range(1, 9):
        reply = await free.ask(f"q{n}")
    assert (reply.label, reply.turns_left, free.turns_left, free.capped) == (
        "turn 8",
        None,
        None,
        False,
    )


async def test_the_conversation_is_sent_back_each_turn(
    routed: Opener, policy: Policy, resolver: Resolver
) -> None:
    router, _ = await routed(with_max_turns(policy, 3))
    tutor = TutorSession(router)
    await tutor.ask("why does parse drop the last token?")
    await tutor.ask("range(3) stops at 2")
    await tutor.ask("so range(len(tokens))?")
    first, second, third = resolver.sent(LOCAL)
    assert [m.role for m in first.messages] == ["system", "user"]
    assert [m.role for m in third.messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert [m.content for m in third.messages if m.role == "user"] == [
        "why does parse drop the last token?",
        "range(3) stops at 2",
        "so range(len(tokens))?",
    ]
    # the tutor's own earlier turns, whole (the held answer included: it knows what it said)
    assert json.loads(third.messages[2].content) == json.loads(turn_json(1))
    assert json.loads(third.messages[4].content) == json.loads(turn_json(2))
    # the turn it is on, and what each turn is for
    assert "turn 1 of at most 3" in first.messages[0].content
    assert FIRST_TURN in first.messages[0].content
    assert LATER_TURN in second.messages[0].content and LAST_TURN not in second.messages[0].content
    assert LAST_TURN in third.messages[0].content
    assert first.json_schema is not None  # GR-012: the schema goes with the request


async def test_a_first_turn_with_no_answer_holds_nothing_back(
    routed: Opener, policy: Policy, resolver: Resolver
) -> None:
    """`--json` read answer null ("held back") with answer_withheld false: null is for an
    answer held back, "" for none given (docs/json.md)."""
    resolver.scripts[LOCAL] = [turn_json(1, answer="")]
    router, _ = await routed(policy)
    first = await TutorSession(router).ask("what is a closure?")
    assert first.answer == "" and not first.answer_withheld
    assert first.to_json()["answer"] == "" and first.to_json()["answer_withheld"] is False


async def test_questions_first_the_first_answer_is_held_until_a_reply_or_reveal(
    routed: Opener, policy: Policy, resolver: Resolver
) -> None:
    router, audit = await routed(policy)
    tutor = TutorSession(router)
    assert tutor.reveal() is None  # nothing yet
    first = await tutor.ask("what is a closure?")
    assert first.questions == ["question 1.1?", "question 1.2?"] and first.hint == "hint 1"
    assert first.answer is None and first.answer_withheld
    assert first.turn.answer == "answer 1"  # kept, not shown
    assert first.to_json()["answer"] is None and first.to_json()["answer_withheld"] is True
    held = (await tutor_lines(audit))[-1]
    assert held.values["answer_withheld"] is True and "answer held back" in held.detail

    second = await tutor.ask("a function that keeps its variables")
    assert second.answer == "answer 2" and not second.answer_withheld
    assert tutor.replies[0].answer is None  # replying shows the new turn's answer only

    assert tutor.reveal() == "answer 2"
    other = TutorSession(router)
    await other.ask("and a generator?")
    assert other.last is not None and other.last.answer is None
    assert other.reveal() == "answer 3"
    assert other.last.answer == "answer 3" and not other.last.answer_withheld


async def test_with_a_single_turn_nothing_is_held(
    routed: Opener, policy: Policy, resolver: Resolver
) -> None:
    router, _ = await routed(with_max_turns(policy, 1))
    tutor = TutorSession(router)
    only = await tutor.ask("what is a closure?")
    assert only.answer == "answer 1" and only.turns_left == 0
    assert LAST_TURN in resolver.sent(LOCAL)[0].messages[0].content


async def test_without_escalate_it_stays_local(
    routed: Opener, policy: Policy, resolver: Resolver
) -> None:
    router, audit = await routed(policy)
    reply = await TutorSession(router).ask("what is a closure?")
    assert (reply.model, reply.runtime, reply.escalated) == ("qwen2.5-coder-7b", "vllm", False)
    kinds = [line.kind for line in await audit.lines(session="s1")]
    assert kinds == ["route", "call", "tutor"]
    assert HAIKU not in resolver.made


async def test_escalate_is_the_users_request_approved_then_served_in_the_cloud(
    routed: Opener, policy: Policy, resolver: Resolver
) -> None:
    resolver.scripts[HAIKU] = [turn_json(1, answer="from haiku")]
    router, audit = await routed(policy)
    tutor = TutorSession(router)
    reply = await tutor.ask("explain closures properly", escalate=True)
    assert (reply.model, reply.escalated, reply.escalate_requested) == (
        "claude-haiku-4.5",
        True,
        True,
    )
    lines = await audit.lines(session="s1")
    assert [line.kind for line in lines] == ["escalation", "approval", "call", "tutor"]
    assert "USER_REQUEST" in " ".join(lines[0].reason_codes)
    assert lines[0].values["user_request"] is True
    assert lines[-1].values["escalate_requested"] is True and lines[-1].values["escalated"]
    # the next turn is local again unless asked
    again = await tutor.ask("thanks, and nonlocal?")
    assert (again.model, again.escalated) == ("qwen2.5-coder-7b", False)


async def test_escalate_denied_stays_local_and_says_so(
    routed: Opener, policy: Policy, resolver: Resolver
) -> None:
    router, audit = await routed(policy, decider=DenyDecider())
    reply = await TutorSession(router).ask("explain closures", escalate=True)
    assert (reply.model, reply.escalated, reply.escalate_requested) == (
        "qwen2.5-coder-7b",
        False,
        True,
    )
    kinds = [line.kind for line in await audit.lines(session="s1")]
    assert kinds.count("denial") == len(policy.chain("tutor")) and kinds[-1] == "tutor"


async def test_a_malformed_reply_raises_and_does_not_count(
    routed: Opener, policy: Policy, resolver: Resolver
) -> None:
    # not JSON, then (the repair attempt) no questions at all: both rejected
    resolver.scripts[LOCAL] = [
        "Sure! A closure is a function...",
        json.dumps({"questions": [], "hint": "", "answer": "just the answer"}),
        turn_json(1),
    ]
    router, audit = await routed(with_max_turns(policy, 1))
    tutor = TutorSession(router)
    with pytest.raises(TutorReplyInvalid) as bad:
        await tutor.ask("what is a closure?")
    assert "did not use a turn" in str(bad.value) and "questions" in bad.value.problem
    assert (tutor.turns_used, tutor.turns_left, tutor.last) == (0, 1, None)
    invalid = (await tutor_lines(audit))[-1]
    assert invalid.reason_codes == ["TUTOR_REPLY_INVALID"]
    reply = await tutor.ask("what is a closure?")  # the one turn is still there
    assert reply.n == 1 and reply.questions == ["question 1.1?", "question 1.2?"]
    # the failed attempt is not part of the conversation
    assert [m.role for m in resolver.sent(LOCAL)[-1].messages] == ["system", "user"]


async def test_an_empty_question_is_a_usage_error(
    routed: Opener, policy: Policy, resolver: Resolver
) -> None:
    router, audit = await routed(policy)
    tutor = TutorSession(router)
    with pytest.raises(UsageError):
        await tutor.ask("   ")
    assert tutor.turns_used == 0 and await tutor_lines(audit) == []


async def test_grounded_in_a_repository_and_a_plain_folder_is_only_a_note(
    tmp_path: Path, routed: Opener, policy: Policy, resolver: Resolver
) -> None:
    repo = make_repo(tmp_path)
    router, _ = await routed(policy)
    tutor = TutorSession(router, repo=repo)
    await tutor.ask("why does parse drop the last token?")
    await tutor.ask("the loop bound?")
    assert tutor.grounding is not None and tutor.grounding_note is None
    assert any(s.startswith("parser.py:") for s in tutor.grounding.sources)
    first, second = resolver.sent(LOCAL)
    assert "def parse" in first.messages[0].content
    assert (
        second.messages[0].content.split("\n\n", 1)[1]
        == (first.messages[0].content.split("\n\n", 1)[1])
    )  # grounded once, on the first question, and kept

    plain = tmp_path / "plain"
    plain.mkdir()
    loose = TutorSession(router, repo=plain)
    reply = await loose.ask("what is a closure?")
    assert reply.n == 1 and loose.grounding is None
    assert loose.grounding_note is not None and "not a git repository" in loose.grounding_note


def test_repeated_questions_are_shown_once_in_order() -> None:
    from app.pipeline.schemas import TutorTurn
    from app.pipeline.tutor import distinct_questions

    turn = TutorTurn(
        questions=["What does range(3) yield?", "what does  range(3) yield?", "Why -1?"],
        hint="",
        answer="",
    )
    assert distinct_questions(turn).questions == ["What does range(3) yield?", "Why -1?"]


def test_the_grounding_holds_at_most_grounding_chunks_in_all(
    tmp_path: Path, policy: Policy
) -> None:
    """GROUNDING_CHUNKS bounded the chunks lane only: the code lane added up to
    code_top_k code units on top (6 pieces on a real repository)."""
    from app.pipeline.tutor import GROUNDING_CHUNKS, repo_grounding
    from tests.integration.test_stage0_corpus import make_repo as make_stage0_repo

    repo = make_stage0_repo(tmp_path)
    question = "how are budget ledger reservations settled, parsed tokens and retries sent?"
    grounding = repo_grounding(repo, policy, question, budget_tokens=8000)
    assert len(grounding.sources) == GROUNDING_CHUNKS
