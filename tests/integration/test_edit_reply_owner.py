"""The edit format's retry goes through GR-012's one owner (app.router.structured): the
reply parser (parse, then land every edit) is a Parser there, a refusal is the problem
its one repair names, and the worst case stays MAX_STRUCTURED_GENERATIONS generations.
Real SQLite audit and ledger; scripted backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.backends.base import Message
from app.pipeline.edits.grammar import EDIT_GRAMMAR
from app.pipeline.edits.render import block, reply
from app.pipeline.edits.reply import EditReplyParser
from app.pipeline.structured import ask_parsed
from app.policy.schema import Policy
from app.router.structured import MAX_STRUCTURED_GENERATIONS
from app.router.types import Signals
from tests.integration.test_router_service import ALL_UP, Resolver
from tests.integration.test_router_service import make_router as _make_router

CODER = ("qwen2.5-coder-32b", "vllm")
FILES = {"calc.py": "def add(a, b):\n    return a - b\n\n\ndef sub(a, b):\n    return a - b\n"}
ASK = [Message(role="user", content="make add() add")]

_OPEN: list[Any] = []


@pytest.fixture(autouse=True)
async def _close_stores() -> AsyncIterator[None]:
    yield
    while _OPEN:
        _, audit, ledger = _OPEN.pop()
        await audit.close()
        await ledger.close()


async def ask(tmp_path: Path, policy: Policy, replies: list[str]) -> Any:
    resolver = Resolver(up=ALL_UP)
    resolver.scripts[CODER] = list(replies)
    made = await _make_router(tmp_path, policy, resolver)
    _OPEN.append(made)
    router, audit, _ = made
    parser = EditReplyParser(FILES.get)
    answer = await ask_parsed(
        router,
        "implementer",
        parser,
        ASK,
        Signals(),
        expected="the edit format",
        grammar=EDIT_GRAMMAR,
        max_tokens=128,
    )
    return answer, parser, resolver, audit


async def test_a_reply_that_never_fits_costs_the_documented_worst_case(
    tmp_path: Path, policy: Policy
) -> None:
    answer, parser, resolver, audit = await ask(tmp_path, policy, ["no edits here"] * 5)
    assert answer.value is None and answer.rejected
    assert answer.calls == MAX_STRUCTURED_GENERATIONS == 2
    assert len(resolver.sent(CODER)) == MAX_STRUCTURED_GENERATIONS
    assert [r.outcome for r in parser.records] == ["format", "format"]
    repairs = [line for line in await audit.lines() if line.kind == "repair"]
    assert len(repairs) == 1 and repairs[0].reason_codes == ["GR012_REPAIR"]
    # plain text: no JSON schema; the grammar rides along for llama.cpp
    first = resolver.sent(CODER)[0]
    assert first.json_schema is None and first.grammar == EDIT_GRAMMAR
    assert "does not fit the edit format after one repair (GR-012)" in (answer.error or "")


async def test_an_edit_that_does_not_land_is_what_the_one_repair_is_about(
    tmp_path: Path, policy: Policy
) -> None:
    ambiguous = reply([block("calc.py", "    return a - b\n", "    return a + b\n")])
    placed = reply(
        [
            block(
                "calc.py",
                "def add(a, b):\n    return a - b\n",
                "def add(a, b):\n    return a + b\n",
            )
        ]
    )
    answer, parser, resolver, audit = await ask(tmp_path, policy, [ambiguous, placed])
    assert answer.ok and answer.calls == 2
    assert answer.value.files == {"calc.py": FILES["calc.py"].replace("a - b", "a + b", 1)}
    _, repair = resolver.sent(CODER)
    told = repair.messages[-1].content
    assert "edit 1 (calc.py)" in told and "matches 2 places: line 2, line 6" in told
    assert "Reply again with the complete answer only" in told
    assert [r.outcome for r in parser.records] == ["refused", "landed"]
    (line,) = [a for a in await audit.lines() if a.kind == "repair"]
    assert "matches 2 places" in line.values["problems"][0]


async def test_a_refusal_after_the_repair_comes_back_as_a_rejected_answer(
    tmp_path: Path, policy: Policy
) -> None:
    missing = reply([block("calc.py", "    return a * b\n", "    return a + b\n")])
    answer, parser, _, _ = await ask(tmp_path, policy, [missing, missing])
    assert answer.value is None and answer.rejected and answer.calls == 2
    last = parser.last
    assert last is not None and last.outcome == "refused"
    (refusal,) = last.refusals
    assert refusal.reason == "not_found" and refusal.nearest is not None
    assert "   2|     return a - b" in refusal.message
