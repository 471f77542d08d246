"""The provenance's input_hash (v2): ``sha256v2:`` and sha256 of the messages as
json.dumps(sort_keys=True, separators=(",", ":")) writes their model_dump(), each text of
128 characters or more (content, reasoning, a call's arguments) given as {"sha256": hex}.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.backends.base import ChatRequest, Message, ToolCall
from app.remembered import Digests
from app.router.routed import DIGESTED_FROM, INPUT_HASH_PREFIX, input_hash

# short texts, and texts on either side of the threshold
# lone surrogates, control characters and spaces among them (Python builds requests too)
odd = st.characters(categories=["Cs", "Cc", "Zs", "Ll", "Lo", "Nd", "Po", "So"])
texts = (
    st.text(max_size=40)
    | st.text(odd, max_size=40)
    | st.text(odd, min_size=DIGESTED_FROM - 2, max_size=DIGESTED_FROM + 2)
)
calls = st.lists(
    st.builds(ToolCall, id=st.text(min_size=1, max_size=6), name=texts, arguments=texts),
    max_size=2,
)
messages = st.builds(
    Message,
    role=st.sampled_from(["system", "user", "assistant", "tool"]),
    content=texts,
    tool_calls=calls,
    tool_call_id=st.none() | texts,
    is_error=st.booleans(),
    reasoning=texts,
)


def _text(text: str) -> Any:
    if len(text) < 128:
        return text
    return {"sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()}


def _v2(request: ChatRequest) -> str:
    """The recipe as the docstring spells it, written out on its own."""
    dumped = [m.model_dump() for m in request.messages]
    for m in dumped:
        m["content"], m["reasoning"] = _text(m["content"]), _text(m["reasoning"])
        for call in m["tool_calls"]:
            call["arguments"] = _text(call["arguments"])
    blob = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
    return "sha256v2:" + hashlib.sha256(blob.encode()).hexdigest()


@settings(max_examples=300, deadline=None)
@given(st.lists(messages, min_size=1, max_size=4))
def test_the_hash_is_the_v2_text_hashed(given_: list[Message]) -> None:
    request = ChatRequest(messages=given_)
    assert input_hash(request) == _v2(request)
    assert input_hash(request, Digests()) == _v2(request)


def test_a_known_request_keeps_its_hash() -> None:
    long = "x" * 128
    request = ChatRequest(
        messages=[
            Message(role="user", content="plan the fix → ok"),
            Message(role="user", content=long),
        ]
    )
    assert INPUT_HASH_PREFIX == "sha256v2:"
    assert input_hash(request) == _v2(request)
    assert input_hash(request) == (
        "sha256v2:"
        + hashlib.sha256(
            b'[{"content":"plan the fix \\u2192 ok","is_error":false,"reasoning":"",'
            b'"role":"user","tool_call_id":null,"tool_calls":[]},'
            b'{"content":{"sha256":"' + hashlib.sha256(long.encode()).hexdigest().encode() + b'"},'
            b'"is_error":false,"reasoning":"","role":"user","tool_call_id":null,"tool_calls":[]}]'
        ).hexdigest()
    )


def test_every_character_of_a_long_text_counts_and_no_text_passes_for_a_digest() -> None:
    long = "def parse(tokens):\n    return tokens  # the tail\n" * 4
    base = input_hash(ChatRequest(messages=[Message(role="user", content=long)]))
    assert base != input_hash(ChatRequest(messages=[Message(role="user", content=long + " ")]))
    # the text a digest is given as, sent as the text itself, hashes otherwise
    digested = {"sha256": hashlib.sha256(long.encode()).hexdigest()}
    spelled = json.dumps(digested, separators=(",", ":"))
    assert base != input_hash(ChatRequest(messages=[Message(role="user", content=spelled)]))
    # a long call's arguments and a long reasoning are digested too
    call = ToolCall(id="c1", name="write", arguments=long)
    with_call = ChatRequest(messages=[Message(role="assistant", tool_calls=[call], reasoning=long)])
    assert input_hash(with_call) == _v2(with_call)
    other = call.model_copy(update={"arguments": long + "!"})
    assert input_hash(with_call) != input_hash(
        ChatRequest(messages=[Message(role="assistant", tool_calls=[other], reasoning=long)])
    )
