"""The provenance's input_hash: sha256 of the messages as json.dumps(sort_keys=True,
separators=(",", ":")) writes their model_dump(), the text hashed since v1."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from app.backends.base import ChatRequest, Message, ToolCall
from app.router.routed import input_hash

texts = st.text(max_size=40)
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


def _v1(request: ChatRequest) -> str:
    blob = json.dumps(
        [m.model_dump() for m in request.messages], sort_keys=True, separators=(",", ":")
    )
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


@settings(max_examples=300, deadline=None)
@given(st.lists(messages, min_size=1, max_size=4))
def test_the_hash_is_the_v1_text_hashed(given_: list[Message]) -> None:
    request = ChatRequest(messages=given_)
    assert input_hash(request) == _v1(request)


def test_a_known_request_keeps_its_hash() -> None:
    request = ChatRequest(messages=[Message(role="user", content="plan the fix → ok")])
    assert input_hash(request) == _v1(request)
    assert input_hash(request) == (
        "sha256:"
        + hashlib.sha256(
            b'[{"content":"plan the fix \\u2192 ok","is_error":false,"reasoning":"",'
            b'"role":"user","tool_call_id":null,"tool_calls":[]}]'
        ).hexdigest()
    )
