"""GR-012's one owner (app.router.structured): one validation, one repair, audited once,
and a worst case of MAX_STRUCTURED_GENERATIONS generations for one structured call,
whatever the backend answers. Real SQLite audit and ledger; scripted backends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from app.audit.log import AuditLog
from app.backends.base import ChatRequest, Message, Usage
from app.policy.schema import Policy
from app.router.approvals import AllowDecider, DenyDecider
from app.router.ledger import BudgetLedger
from app.router.service import Router
from app.router.structured import (
    MAX_STRUCTURED_GENERATIONS,
    ReplyRejected,
    complete_structured,
    pydantic_parser,
    schema_parser,
)
from app.router.types import Signals
from tests.integration.test_router_service import ALL_UP, Resolver
from tests.integration.test_router_service import make_router as _make_router
from tests.unit.test_remembered import digests_counted

VLLM = ("qwen3-14b", "vllm")
CLOUD = ("gpt-5.1-high", "cloud")


class Plan(BaseModel):
    goal: str = Field(min_length=1)
    confidence: float = Field(ge=0, le=1)


_OPEN: list[Any] = []


async def make_router(*args: Any, **kw: Any) -> tuple[Router, AuditLog, BudgetLedger]:
    made = await _make_router(*args, **kw)
    _OPEN.append(made)
    return made


@pytest.fixture(autouse=True)
async def _close_stores() -> AsyncIterator[None]:
    yield
    while _OPEN:
        _, audit, ledger = _OPEN.pop()
        await audit.close()
        await ledger.close()


GOOD = json.dumps({"goal": "fix parse()", "confidence": 0.9})
REQ = ChatRequest(messages=[Message(role="user", content="plan the fix")], max_tokens=64)


async def test_a_backend_that_always_answers_invalid_json_costs_the_documented_worst_case(
    tmp_path: Path, policy: Policy
) -> None:
    resolver = Resolver(up=ALL_UP)
    resolver.scripts[VLLM] = ["not json at all"] * 10
    router, audit, _ = await make_router(tmp_path, policy, resolver)
    answer = await complete_structured(router, "architect", REQ, pydantic_parser(Plan))
    assert MAX_STRUCTURED_GENERATIONS == 2
    assert answer.value is None and answer.rejected and not answer.route_failed
    assert answer.calls == MAX_STRUCTURED_GENERATIONS
    assert len(resolver.sent(VLLM)) == MAX_STRUCTURED_GENERATIONS
    repairs = [line for line in await audit.lines() if line.kind == "repair"]
    assert len(repairs) == 1 and repairs[0].reason_codes == ["GR012_REPAIR"]
    assert "does not fit the schema after one repair (GR-012)" in (answer.error or "")


async def test_the_repair_shows_the_rejected_reply_and_the_exact_problem(
    tmp_path: Path, policy: Policy
) -> None:
    resolver = Resolver(up=ALL_UP)
    resolver.scripts[VLLM] = [json.dumps({"goal": "", "confidence": 2}), GOOD]
    router, audit, _ = await make_router(tmp_path, policy, resolver)
    answer = await complete_structured(router, "architect", REQ, pydantic_parser(Plan))
    assert answer.value == Plan(goal="fix parse()", confidence=0.9)
    assert answer.calls == 2 and answer.problems and answer.problems[0].startswith("goal:")
    first, repair = resolver.sent(VLLM)
    assert repair.messages[: len(first.messages)] == first.messages
    assert (
        repair.messages[-2].role == "assistant" and '"confidence": 2' in repair.messages[-2].content
    )
    assert answer.problems[0] in repair.messages[-1].content
    assert repair.seed == (first.seed or 0) + 1
    kinds = [line.kind for line in await audit.lines()]
    assert kinds.count("repair") == 1


async def test_a_reply_cut_off_is_repaired_with_more_room(tmp_path: Path, policy: Policy) -> None:
    resolver = Resolver(up=ALL_UP)
    resolver.scripts[VLLM] = ['{"goal": "fix', GOOD]
    router, _, _ = await make_router(tmp_path, policy, resolver)
    backend = resolver.backend(*VLLM)
    original = backend.stream

    async def cut_first(request: ChatRequest):  # type: ignore[no-untyped-def]
        async for item in original(request):
            if backend.calls == 1 and hasattr(item, "finish_reason"):
                item = item.model_copy(update={"finish_reason": "length"})
            yield item

    backend.stream = cut_first  # type: ignore[method-assign]
    answer = await complete_structured(router, "architect", REQ, pydantic_parser(Plan))
    assert answer.ok and answer.problems[0].startswith("cut off at")
    first, repair = resolver.sent(VLLM)
    assert repair.max_tokens == 2 * first.max_tokens
    assert "shorter" in repair.messages[-1].content


async def test_a_callers_cap_bounds_the_repair_and_the_answer_bills_both_calls(
    tmp_path: Path, policy: Policy
) -> None:
    """``hard_cap`` (a gateway client's max_tokens): the repair is held to the cap, and
    made even when the first reply's tokens (a reasoning model's thinking among them,
    sized apart from the cap) passed it: refused, it was a 502 the SDKs retried, each a
    paid reasoning call (a review). The answer bills both calls."""
    resolver = Resolver(up=ALL_UP)
    resolver.scripts[VLLM] = [json.dumps({"goal": "", "confidence": 2}), GOOD]
    router, _, _ = await make_router(tmp_path, policy, resolver)
    resolver.backend(*VLLM).usage = Usage(tokens_in=30, tokens_out=90)  # past the cap of 64
    answer = await complete_structured(
        router, "architect", REQ, pydantic_parser(Plan), hard_cap=True
    )
    assert answer.ok and answer.earlier is not None and answer.result is not None
    first, repair = resolver.sent(VLLM)
    assert (first.max_tokens, repair.max_tokens) == (64, 64)
    billed = answer.billed()
    assert billed is not None and billed.text == answer.result.text
    assert (billed.tokens_in, billed.tokens_out) == (60, 180)


async def test_a_reply_cut_off_at_a_callers_cap_is_not_repaired(
    tmp_path: Path, policy: Policy
) -> None:
    resolver = Resolver(up=ALL_UP)
    resolver.scripts[VLLM] = ['{"goal": "fix', GOOD]
    router, audit, _ = await make_router(tmp_path, policy, resolver)
    backend = resolver.backend(*VLLM)
    backend.usage = Usage(tokens_in=30, tokens_out=64)
    original = backend.stream

    async def cut(request: ChatRequest):  # type: ignore[no-untyped-def]
        async for item in original(request):
            if hasattr(item, "finish_reason"):
                item = item.model_copy(update={"finish_reason": "length"})
            yield item

    backend.stream = cut  # type: ignore[method-assign]
    answer = await complete_structured(
        router, "architect", REQ, pydantic_parser(Plan), hard_cap=True
    )
    assert answer.cut and answer.rejected and answer.calls == 1
    assert answer.text == '{"goal": "fix' and len(resolver.sent(VLLM)) == 1
    assert [line for line in await audit.lines() if line.kind == "repair"] == []


async def test_a_local_reply_is_repaired_locally_without_a_second_escalation(
    tmp_path: Path, policy: Policy
) -> None:
    """The first call escalated and was denied, so a local model answered: its repair
    stays local and asks nobody again."""
    resolver = Resolver(up=ALL_UP)
    resolver.scripts[VLLM] = ["{}", GOOD]
    router, audit, _ = await make_router(tmp_path, policy, resolver, decider=DenyDecider())
    answer = await complete_structured(
        router, "architect", REQ, pydantic_parser(Plan), Signals(confidence=0.5)
    )
    assert answer.ok and answer.result is not None and not answer.result.escalated
    assert resolver.sent(CLOUD) == []
    denials = [line.to for line in await audit.lines() if line.kind == "denial"]
    assert denials == policy.chain("architect")  # asked once per cloud step, not again


async def test_a_cloud_reply_is_repaired_by_the_same_model_asked_again(
    tmp_path: Path, policy: Policy
) -> None:
    resolver = Resolver(up=ALL_UP)
    resolver.scripts[CLOUD] = ["{}", GOOD]
    router, audit, ledger = await make_router(tmp_path, policy, resolver, decider=AllowDecider())
    answer = await complete_structured(
        router, "architect", REQ, pydantic_parser(Plan), Signals(confidence=0.5)
    )
    assert answer.ok and answer.result is not None and answer.result.model == "gpt-5.1-high"
    assert len(resolver.sent(CLOUD)) == 2 and resolver.sent(VLLM) == []
    lines = await audit.lines()
    assert [line.to for line in lines if line.kind == "approval"] == ["gpt-5.1-high"] * 2
    snap = await ledger.snapshot("s1")
    assert snap.reserved_usd == 0  # both calls settled


async def test_a_repair_digests_the_messages_it_sends_again_no_more(
    tmp_path: Path, policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request and its repair share one set of digests: the brief's long text is
    digested once, for both calls' counts, hashes and maskings, cloud or local."""
    brief = "## Code context\n" + "def parse(tokens):\n    return tokens[:-1]  # the bug\n" * 6
    asked = ChatRequest(messages=[Message(role="user", content=brief)], max_tokens=64)
    for signals, served in ((Signals(confidence=0.5), CLOUD), (Signals(), VLLM)):
        resolver = Resolver(up=ALL_UP)
        resolver.scripts[served] = ["{}", GOOD]
        router, _, _ = await make_router(
            tmp_path / served[1], policy, resolver, decider=AllowDecider()
        )
        made = digests_counted(monkeypatch)
        answer = await complete_structured(
            router, "architect", asked, pydantic_parser(Plan), signals
        )
        assert answer.ok and len(resolver.sent(served)) == 2
        assert made.count(brief.encode()) == 1  # (the repair's own note is new text)


async def test_no_repair_when_the_policy_allows_none(tmp_path: Path, policy: Policy) -> None:
    rules = dict(policy.retries)
    rules["bad_output"] = rules["bad_output"].model_copy(update={"max_retries": 0})
    strict = policy.model_copy(update={"retries": rules})
    resolver = Resolver(up=ALL_UP)
    resolver.scripts[VLLM] = ["nope", GOOD]
    router, audit, _ = await make_router(tmp_path, strict, resolver)
    answer = await complete_structured(router, "architect", REQ, pydantic_parser(Plan))
    assert answer.rejected and answer.calls == 1 and len(resolver.sent(VLLM)) == 1
    assert [line for line in await audit.lines() if line.kind == "repair"] == []


def test_schema_parser_names_the_path_and_reads_fenced_json() -> None:
    parse = schema_parser({"type": "object", "properties": {"n": {"type": "integer"}}})
    assert parse('```json\n{"n": 3}\n```') == {"n": 3}
    try:
        parse('{"n": "x"}')
    except ReplyRejected as exc:
        assert exc.problem.startswith("$.n")
    else:  # pragma: no cover
        raise AssertionError("a string for an integer was accepted")
