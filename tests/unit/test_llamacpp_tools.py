"""Prompted tool calls for the in-process model: the prompt, and reading the reply as it
streams (app/backends/llamacpp_tools.py). The model itself is in
tests/integration/test_llamacpp_tools.py."""

from __future__ import annotations

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st

from app.backends.base import ChatRequest, Delta, Message, ToolCall, ToolSpec
from app.backends.llamacpp_tools import CLOSE, OPEN, ReplyReader, ToolPlan, plan_tools
from app.backends.tool_calls import call_id

READ = ToolSpec(
    name="read_file",
    description="Read a file",
    parameters={"type": "object", "properties": {"path": {"type": "string"}}},
)
LIST = ToolSpec(name="list_dir", parameters={"type": "object"})


def ask(**kw: object) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content="look at a.py")], **kw)  # type: ignore[arg-type]


def block(name: str, arguments: object) -> str:
    return f"{OPEN}{json.dumps({'name': name, 'arguments': arguments})}{CLOSE}"


def read(plan: ToolPlan, pieces: list[str]) -> tuple[list[Delta], ReplyReader]:
    reader = ReplyReader(plan)
    deltas = [d for p in pieces for d in reader.feed(p)] + reader.close()
    return deltas, reader


def chars(text: str) -> list[str]:
    return list(text)


# ── the prompt ────────────────────────────────────────────────────────────────────────


def test_tools_go_into_the_system_prompt_with_the_fixed_instruction() -> None:
    plan = plan_tools(ask(tools=[READ, LIST]))
    system, user = plan.messages
    assert system["role"] == "system" and user == {"role": "user", "content": "look at a.py"}
    assert '<tool_call>{"name": "<tool name>", "arguments"' in system["content"]
    listed = [json.loads(line) for line in system["content"].splitlines()[-2:]]
    assert [t["name"] for t in listed] == ["read_file", "list_dir"]
    assert listed[0]["parameters"] == READ.parameters
    assert plan.names == {"read_file", "list_dir"} and plan.forced_schema is None


def test_a_callers_system_message_keeps_its_place_and_gets_the_tools() -> None:
    request = ChatRequest(
        messages=[Message(role="system", content="Be brief."), Message(role="user", content="x")],
        tools=[READ],
    )
    system = plan_tools(request).messages[0]["content"]
    assert system.startswith("Be brief.\n\nYou can call tools.")


def test_calls_and_results_in_the_history_are_text_the_model_reads() -> None:
    call = ToolCall(id="call_1", name="read_file", arguments='{"path": "a.py"}')
    request = ChatRequest(
        messages=[
            Message(role="user", content="look"),
            Message(role="assistant", content="Reading it.", tool_calls=[call]),
            Message(role="tool", tool_call_id="call_1", content="x = 1"),
            Message(role="tool", tool_call_id="call_9", content="boom", is_error=True),
        ],
        tools=[READ],
    )
    messages = plan_tools(request).messages
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "user"]
    assert messages[2]["content"] == "Reading it.\n" + block("read_file", {"path": "a.py"})
    assert messages[3]["content"] == "Tool result for read_file (call_1): x = 1"
    assert messages[4]["content"] == "Tool error for call_9: boom"


def test_tool_choice_none_shows_no_tools_and_reads_no_blocks() -> None:
    plan = plan_tools(ask(tools=[READ], tool_choice="none"))
    assert [m["role"] for m in plan.messages] == ["user"] and not plan.names
    text = block("read_file", {"path": "a.py"})
    _, reader = read(plan, [text])
    assert reader.calls == [] and "".join(reader.text) == text


def test_a_forced_choice_is_a_schema_of_calls() -> None:
    required = plan_tools(ask(tools=[READ, LIST], tool_choice="required")).forced_schema
    assert required is not None
    names = [alt["properties"]["name"]["const"] for alt in required["anyOf"]]
    assert names == ["read_file", "list_dir"]
    assert required["anyOf"][0]["properties"]["arguments"] == READ.parameters
    named = plan_tools(ask(tools=[READ, LIST], tool_choice="list_dir"))
    assert named.names == {"list_dir"}
    assert named.forced_schema is not None
    assert named.forced_schema["properties"]["name"] == {"const": "list_dir"}


def test_a_json_schema_without_a_forced_call_shows_no_tools() -> None:
    plan = plan_tools(ask(tools=[READ], json_schema={"type": "object"}))
    assert not plan.names and [m["role"] for m in plan.messages] == ["user"]


# ── reading the reply ─────────────────────────────────────────────────────────────────


def test_a_call_streamed_token_by_token_is_one_delta_when_the_block_closes() -> None:
    plan = plan_tools(ask(tools=[READ]))
    deltas, reader = read(plan, chars(block("read_file", {"path": "a.py"})))
    assert len(deltas) == 1 and deltas[0].text == ""
    (fragment,) = deltas[0].tool_calls
    assert (fragment.index, fragment.id, fragment.name) == (0, call_id(plan.seed, 0), "read_file")
    assert json.loads(fragment.arguments) == {"path": "a.py"}
    assert reader.calls == [
        ToolCall(id=fragment.id or "", name="read_file", arguments='{"path": "a.py"}')
    ]


def test_text_before_parallel_calls_streams_and_the_whitespace_between_is_dropped() -> None:
    plan = plan_tools(ask(tools=[READ, LIST]))
    reply = "Let me look.\n" + block("read_file", {"path": "a"}) + "\n" + block("list_dir", {})
    deltas, reader = read(plan, chars(reply + "\n"))
    assert "".join(d.text for d in deltas) == "Let me look.\n" == "".join(reader.text)
    assert [c.name for c in reader.calls] == ["read_file", "list_dir"]
    assert [d.tool_calls[0].index for d in deltas if d.tool_calls] == [0, 1]
    # text streams before the call: the first delta is text, not held to the end
    assert deltas[0].text and not deltas[0].tool_calls


def test_what_might_start_a_block_is_held_then_released() -> None:
    plan = plan_tools(ask(tools=[READ]))
    reader = ReplyReader(plan)
    assert reader.feed("a <tool") == [Delta(text="a ")]
    assert reader.feed("box>") == [Delta(text="<toolbox>")]


def test_a_block_that_is_not_a_call_is_given_back_as_text() -> None:
    plan = plan_tools(ask(tools=[READ]))
    for bad in (f"{OPEN}not json{CLOSE}", block("rm_rf", {}), f"{OPEN}[1]{CLOSE}"):
        deltas, reader = read(plan, [bad])
        assert reader.calls == [] and "".join(d.text for d in deltas) == bad


def test_a_block_cut_off_is_given_back_as_text() -> None:
    plan = plan_tools(ask(tools=[READ]))
    _, reader = read(plan, [OPEN, '{"name": "read_file", "argu'])
    assert reader.calls == []
    assert "".join(reader.text) == OPEN + '{"name": "read_file", "argu'


def test_quoted_arguments_and_the_parameters_spelling_are_read() -> None:
    plan = plan_tools(ask(tools=[READ]))
    quoted = f'{OPEN}{{"name": "read_file", "arguments": "{{\\"path\\": \\"b\\"}}"}}{CLOSE}'
    spelled = f'{OPEN}{{"name": "read_file", "parameters": {{"path": "c"}}}}{CLOSE}'
    _, reader = read(plan, [quoted, spelled])
    assert [json.loads(c.arguments) for c in reader.calls] == [{"path": "b"}, {"path": "c"}]


def test_a_forced_reply_is_read_whole_at_the_end() -> None:
    plan = plan_tools(ask(tools=[READ], tool_choice="required"))
    reader = ReplyReader(plan)
    assert reader.feed('{"name": "read_file", ') == []
    assert reader.feed('"arguments": {"path": "z"}}') == []
    (delta,) = reader.close()
    assert delta.tool_calls[0].name == "read_file" and reader.text == []
    cut = ReplyReader(plan)
    cut.feed('{"name": "read_')
    assert cut.close() == [Delta(text='{"name": "read_')] and cut.calls == []


def test_without_tools_the_reply_streams_untouched() -> None:
    plan = plan_tools(ask())
    reader = ReplyReader(plan)
    assert reader.feed("<tool") == [Delta(text="<tool")]


@given(
    before=st.text(alphabet="ab <>/\n", max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=20),
)
def test_any_split_of_a_reply_reads_the_same(before: str, cuts: list[int]) -> None:
    plan = plan_tools(ask(tools=[READ, LIST]))
    reply = before + block("read_file", {"path": "ü <x>"}) + block("list_dir", {})
    points = sorted({c % (len(reply) + 1) for c in cuts} | {0, len(reply)})
    pieces = [reply[a:b] for a, b in itertools.pairwise(points)]
    _, whole = read(plan, [reply])
    split_deltas, split = read(plan, pieces)
    assert split.calls == whole.calls and len(whole.calls) == 2
    assert "".join(split.text) == "".join(whole.text)
    assert "".join(d.text for d in split_deltas) == "".join(whole.text)
