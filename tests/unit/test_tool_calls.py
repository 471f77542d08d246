"""The tool-call assembler every streamed adapter shares (app/backends/tool_calls.py)."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.backends.base import ChatRequest, Message, ToolCall, ToolCallDelta, ToolSpec
from app.backends.tool_calls import (
    IncompleteToolCall,
    ToolCallAssembler,
    arguments_object,
    call_id,
    request_seed,
    request_texts,
)


def test_openai_shape_fragments_become_calls_in_order() -> None:
    calls = ToolCallAssembler(seed="s")
    out: list[ToolCallDelta] = []
    out += calls.feed(0, "call_a", "read_file", "")
    out += calls.feed(0, None, None, '{"pa')
    out += calls.feed(0, None, None, 'th": "a.py"}')
    out += calls.feed(1, "call_b", "list_dir", '{"path": "."}')
    assert out == [
        ToolCallDelta(index=0, id="call_a", name="read_file", arguments=""),
        ToolCallDelta(index=0, arguments='{"pa'),
        ToolCallDelta(index=0, arguments='th": "a.py"}'),
        ToolCallDelta(index=1, id="call_b", name="list_dir", arguments='{"path": "."}'),
    ]
    assert calls.calls() == [
        ToolCall(id="call_a", name="read_file", arguments='{"path": "a.py"}'),
        ToolCall(id="call_b", name="list_dir", arguments='{"path": "."}'),
    ]


def test_repeated_ids_and_names_are_announced_once() -> None:
    # some servers repeat the id and the name in every chunk of a call
    calls = ToolCallAssembler()
    out = calls.feed(0, "c1", "f", '{"x":') + calls.feed(0, "c1", "f", " 1}")
    assert [(d.id, d.name, d.arguments) for d in out] == [("c1", "f", '{"x":'), (None, None, " 1}")]
    assert calls.calls() == [ToolCall(id="c1", name="f", arguments='{"x": 1}')]


def test_arguments_before_the_name_are_held_until_it_comes() -> None:
    calls = ToolCallAssembler(seed="seed")
    assert calls.feed(0, None, None, '{"a"') == []
    (first,) = calls.feed(0, None, "f", ": 2}")
    # no id from the server: a deterministic one
    assert (first.id, first.name, first.arguments) == (call_id("seed", 0), "f", '{"a": 2}')
    assert calls.calls()[0].arguments == '{"a": 2}'


def test_server_indexes_are_renumbered_and_missing_ones_follow_the_ids() -> None:
    calls = ToolCallAssembler()
    calls.feed(3, "x", "f", "{}")
    calls.feed(7, "y", "g", "{}")
    assert [d.index for d in calls.feed(7, None, None, " ")] == [1]
    no_index = ToolCallAssembler()
    no_index.feed(None, "a", "f", "{")
    no_index.feed(None, None, None, "}")  # no id: the latest call
    no_index.feed(None, "b", "g", "{}")  # a new id: a new call
    no_index.feed(None, "a", None, "")  # a known id: that call
    assert [(c.id, c.arguments) for c in no_index.calls()] == [("a", "{}"), ("b", "{}")]


def test_a_call_with_no_argument_text_has_empty_object_arguments() -> None:
    calls = ToolCallAssembler()
    calls.feed(0, "c", "now", "")
    assert calls.calls() == [ToolCall(id="c", name="now", arguments="{}")]
    assert not calls.has_arguments(0)


def test_a_call_that_never_got_a_name_is_incomplete() -> None:
    calls = ToolCallAssembler()
    calls.feed(0, "c", None, "{}")
    assert calls.started
    with pytest.raises(IncompleteToolCall):
        calls.calls()


@given(
    args=st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12),
)
def test_any_fragmenting_reassembles_exactly(args: dict[str, str], cuts: list[int]) -> None:
    text = json.dumps(args, ensure_ascii=False)
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    pieces = [text[a:b] for a, b in itertools.pairwise(points)]
    calls = ToolCallAssembler()
    deltas = calls.feed(0, "id", "f", "")
    for piece in pieces:
        deltas += calls.feed(0, None, None, piece)
    assert "".join(d.arguments for d in deltas) == text
    assert json.loads(calls.calls()[0].arguments) == args


def test_arguments_object() -> None:
    assert arguments_object('{"a": [1]}') == {"a": [1]}
    assert arguments_object("  ") == {}
    assert arguments_object('{"a": ') is None
    assert arguments_object("[1, 2]") is None


def test_ids_and_texts_depend_on_the_request() -> None:
    tool = ToolSpec(name="f", parameters={"type": "object"})
    one = ChatRequest(messages=[Message(role="user", content="hi")], tools=[tool])
    two = ChatRequest(messages=[Message(role="user", content="ho")], tools=[tool])
    assert request_seed(one) == request_seed(one.model_copy())
    assert request_seed(one) != request_seed(two)
    assert call_id("s", 0) != call_id("s", 1) and call_id("s", 0).startswith("call_")
    with_call = ChatRequest(
        messages=[
            Message(role="assistant", tool_calls=[ToolCall(id="c", name="f", arguments="{}")]),
            Message(role="tool", tool_call_id="c", content="ok"),
        ],
        tools=[tool],
    )
    texts = request_texts(with_call)
    assert texts[:2] == ["", "ok"] and "f {}" in texts and '"name":"f"' in texts[-1]


def test_a_lazy_seed_is_made_once_and_only_for_a_call_without_an_id() -> None:
    made: list[int] = []

    def seed() -> str:
        made.append(1)
        return "seed"

    with_ids = ToolCallAssembler(seed=seed)
    with_ids.feed(0, "call_a", "f", "{}")
    assert with_ids.calls()[0].id == "call_a" and made == []  # the server named it
    without = ToolCallAssembler(seed=seed)
    without.feed(0, None, "f", "{}")
    without.feed(1, None, "g", "{}")
    assert [c.id for c in without.calls()] == [call_id("seed", 0), call_id("seed", 1)]
    assert made == [1]
