"""Tool calls through OpenAICompatBackend against the loopback fakes, every flavor.

The fakes stream calls as the servers do (a chunk naming the call, then its arguments in
pieces) and refuse tool requests the servers refuse (tool_choice without tools, a tool
message answering no call, a call left unanswered, a forced choice where Kimi takes
none), so a wrong translation fails here as it would upstream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from app.backends.base import (
    BackendError,
    ChatRequest,
    ChatResult,
    Delta,
    Message,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    collect,
)
from app.backends.openai_compat import OpenAICompatBackend
from app.backends.openai_stream import ChunkState
from app.tokens import count_messages, count_text
from tests.fakes.openai_server import FLAVORS, FakeOpenAIServer
from tests.fakes.script import Scripted, ScriptedCall

pytest_plugins = ["tests.fakes.fixtures"]

KEY = "sk-test-0123456789abcdef"
CLOUD = {"openai", "deepseek", "moonshot"}
RUNTIME = {"vllm": "vllm", "llamacpp": "llamacpp_server", "ollama": "ollama"}

READ = ToolSpec(
    name="read_file",
    description="Read a file of the repository",
    parameters={
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
    },
)
WRITE = ToolSpec(
    name="write_file",
    parameters={
        "type": "object",
        "properties": {"path": {"type": "string"}, "text": {"type": "string"}},
    },
)
TOOLS = [READ, WRITE]
SENT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "parameters": READ.parameters,
            "description": "Read a file of the repository",
        },
    },
    {"type": "function", "function": {"name": "write_file", "parameters": WRITE.parameters}},
]

Make = Callable[..., OpenAICompatBackend]
Factory = Callable[..., FakeOpenAIServer]


def ask(text: str = "look at a.py", **kwargs: Any) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], **kwargs)


def calls_reply(*calls: ScriptedCall, text: str = "") -> Scripted:
    return Scripted(text, tool_calls=calls)


@pytest.fixture
def make(loopback_client: httpx.AsyncClient) -> Make:
    def build(server: FakeOpenAIServer, **overrides: Any) -> OpenAICompatBackend:
        flavor = overrides.pop("flavor", server.flavor)
        kwargs: dict[str, Any] = {
            "model_id": f"test-{flavor}",
            "served_name": server.models[0],
            "runtime": RUNTIME.get(flavor, "cloud"),
            "flavor": flavor,
            "base_url": server.base_url,
            "api_key": KEY if flavor in CLOUD else None,
            "client": loopback_client,
        }
        kwargs.update(overrides)
        return OpenAICompatBackend(**kwargs)

    return build


async def drain(stream: AsyncIterator[Delta | ChatResult]) -> tuple[list[Delta], ChatResult]:
    deltas: list[Delta] = []
    result: ChatResult | None = None
    async for item in stream:
        assert result is None, "nothing may follow the result"
        if isinstance(item, ChatResult):
            result = item
        else:
            deltas.append(item)
    assert result is not None
    return deltas, result


def fragments(deltas: list[Delta]) -> list[ToolCallDelta]:
    return [f for d in deltas for f in d.tool_calls]


# ── what is sent ────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("flavor", FLAVORS)
async def test_tools_are_sent_as_function_tools(
    fake_openai_factory: Factory, make: Make, flavor: str
) -> None:
    server = fake_openai_factory(flavor)
    await collect(make(server).stream(ask(tools=TOOLS)))
    body = server.chat_requests[-1]
    assert body["tools"] == SENT_TOOLS
    assert "tool_choice" not in body and "parallel_tool_calls" not in body


async def test_no_tools_means_no_tool_choice(fake_openai: FakeOpenAIServer, make: Make) -> None:
    # OpenAI refuses tool_choice and parallel_tool_calls without tools (the fake does too)
    await collect(make(fake_openai).stream(ask(tool_choice="auto", parallel_tool_calls=False)))
    body = fake_openai.chat_requests[-1]
    assert "tools" not in body and "tool_choice" not in body and "parallel_tool_calls" not in body


NAMED = {"type": "function", "function": {"name": "write_file"}}
FORCE_ONE = "Reply by calling one or more of the tools; do not answer in text."
FORCE_WRITE = "Reply by calling the tool write_file; do not answer in text."


@pytest.mark.parametrize(
    ("flavor", "choice", "sent_choice", "tools", "note"),
    [
        *[
            (f, c, sent, ["read_file", "write_file"], None)
            for f in ("openai", "vllm", "deepseek")
            for c, sent in [
                ("auto", "auto"),
                ("none", "none"),
                ("required", "required"),
                ("write_file", NAMED),
            ]
        ],
        ("llamacpp", "required", "required", ["read_file", "write_file"], None),
        # llama.cpp cannot be told which tool: it is offered that one alone, required
        ("llamacpp", "write_file", "required", ["write_file"], None),
        ("llamacpp", "none", "none", ["read_file", "write_file"], None),
        # Kimi refuses a forced choice: auto, and a system message asks for the call
        ("moonshot", "none", "none", ["read_file", "write_file"], None),
        ("moonshot", "required", "auto", ["read_file", "write_file"], FORCE_ONE),
        ("moonshot", "write_file", "auto", ["write_file"], FORCE_WRITE),
        # Ollama ignores tool_choice: none sends no tools, the rest is a system message
        ("ollama", "auto", None, ["read_file", "write_file"], None),
        ("ollama", "none", None, [], None),
        ("ollama", "required", None, ["read_file", "write_file"], FORCE_ONE),
        ("ollama", "write_file", None, ["write_file"], FORCE_WRITE),
    ],
)
async def test_tool_choice_as_each_flavor_takes_it(
    fake_openai_factory: Factory,
    make: Make,
    flavor: str,
    choice: str,
    sent_choice: Any,
    tools: list[str],
    note: str | None,
) -> None:
    # Ollama is spoken to through the vLLM fake (it has no fake of its own)
    server = fake_openai_factory("vllm" if flavor == "ollama" else flavor)
    system = Message(role="system", content="You are the implementer.")
    request = ChatRequest(
        messages=[system, Message(role="user", content="fix it")], tools=TOOLS, tool_choice=choice
    )
    await collect(make(server, flavor=flavor).stream(request))
    body = server.chat_requests[-1]
    assert body.get("tool_choice") == sent_choice
    assert [t["function"]["name"] for t in body.get("tools", [])] == tools
    contents = [m["content"] for m in body["messages"]]
    expected = ["You are the implementer.", *([note] if note else []), "fix it"]
    assert contents == expected  # the note after the caller's own system messages


@pytest.mark.parametrize("flavor", [*FLAVORS, "ollama"])
async def test_parallel_tool_calls_only_where_the_server_takes_it(
    fake_openai_factory: Factory, make: Make, flavor: str
) -> None:
    server = fake_openai_factory("vllm" if flavor == "ollama" else flavor)
    await collect(make(server, flavor=flavor).stream(ask(tools=TOOLS, parallel_tool_calls=False)))
    body = server.chat_requests[-1]
    if flavor in ("openai", "vllm", "llamacpp"):
        assert body["parallel_tool_calls"] is False
    else:
        assert "parallel_tool_calls" not in body


# ── what comes back ─────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("flavor", FLAVORS)
async def test_a_streamed_call_is_reassembled_exactly(
    fake_openai_factory: Factory, make: Make, flavor: str
) -> None:
    server = fake_openai_factory(flavor, argument_chunk=3)
    server.script.queue(calls_reply(ScriptedCall("read_file", {"path": "src/parser.py"})))
    deltas, result = await drain(make(server).stream(ask(tools=TOOLS)))
    parts = fragments(deltas)
    (call,) = result.tool_calls
    assert call.name == "read_file" and call.arguments == '{"path": "src/parser.py"}'
    # the first fragment names the call; the rest are argument pieces, as they came
    assert (parts[0].index, parts[0].id, parts[0].name) == (0, call.id, "read_file")
    assert all(p.id is None and p.name is None and p.index == 0 for p in parts[1:])
    assert len(parts) == 1 + -(-len(call.arguments) // 3)
    assert "".join(p.arguments for p in parts) == call.arguments
    assert result.finish_reason == "tool_calls" and result.text == ""
    # each server's own id, passed on
    expected_id = {"moonshot": "functions.read_file:0"}.get(flavor)
    assert expected_id is None or call.id == expected_id


async def test_text_then_parallel_calls(fake_vllm: FakeOpenAIServer, make: Make) -> None:
    fake_vllm.script.queue(
        calls_reply(
            ScriptedCall("read_file", {"path": "a.py"}),
            ScriptedCall("read_file", {"path": "b.py"}, id="call_given"),
            text="Reading both files.",
        )
    )
    deltas, result = await drain(make(fake_vllm).stream(ask(tools=TOOLS)))
    kinds = ["t" if d.text else "c" for d in deltas]
    assert kinds == sorted(kinds, reverse=True)  # all the text first, then the calls
    assert "".join(d.text for d in deltas) == result.text == "Reading both files."
    assert [c.arguments for c in result.tool_calls] == ['{"path": "a.py"}', '{"path": "b.py"}']
    assert result.tool_calls[1].id == "call_given"
    assert [p.index for p in fragments(deltas) if p.name] == [0, 1]
    assert result.finish_reason == "tool_calls"


async def test_arguments_cut_mid_escape_and_mid_character_reassemble(
    fake_openai: FakeOpenAIServer, make: Make
) -> None:
    text = json.dumps({"path": 'dir\\"x".py', "text": "ü → 新\n\ttab"}, ensure_ascii=False)
    fake_openai.argument_chunk = 1
    fake_openai.script.queue(calls_reply(ScriptedCall("write_file", text)))
    deltas, result = await drain(make(fake_openai).stream(ask(tools=TOOLS)))
    assert result.tool_calls[0].arguments == text
    assert "".join(p.arguments for p in fragments(deltas)) == text
    assert len(fragments(deltas)) == 1 + len(text)


async def test_results_round_trip_into_the_next_request(
    fake_openai: FakeOpenAIServer, make: Make
) -> None:
    backend = make(fake_openai)
    fake_openai.script.queue(
        calls_reply(
            ScriptedCall("read_file", {"path": "a.py"}),
            ScriptedCall("read_file", {"path": "gone.py"}),
            text="Looking.",
        ),
        "a.py sets x.",
    )
    first = await collect(backend.stream(ask(tools=TOOLS)))
    one, two = first.tool_calls
    history = [
        Message(role="user", content="look at a.py"),
        Message(role="assistant", content=first.text, tool_calls=first.tool_calls),
        Message(role="tool", tool_call_id=one.id, content="x = 1"),
        Message(role="tool", tool_call_id=two.id, content="no such file", is_error=True),
    ]
    second = await collect(backend.stream(ChatRequest(messages=history, tools=TOOLS)))
    assert second.text == "a.py sets x." and second.finish_reason == "stop"
    assert not second.tool_calls
    sent = fake_openai.chat_requests[-1]["messages"]
    assert sent[1:] == [
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": "read_file", "arguments": c.arguments},
                }
                for c in (one, two)
            ],
        },
        {"role": "tool", "tool_call_id": one.id, "content": "x = 1"},
        {"role": "tool", "tool_call_id": two.id, "content": "Error: no such file"},
    ]


async def test_an_assistant_turn_of_calls_only_has_null_content(
    fake_deepseek: FakeOpenAIServer, make: Make
) -> None:
    call = ToolCall(id="call_1", name="read_file", arguments='{"path": "a.py"}')
    history = [
        Message(role="user", content="look"),
        Message(role="assistant", tool_calls=[call]),
        Message(role="tool", tool_call_id="call_1", content="x = 1"),
    ]
    await collect(make(fake_deepseek).stream(ChatRequest(messages=history, tools=TOOLS)))
    assert fake_deepseek.chat_requests[-1]["messages"][1]["content"] is None


async def test_the_fake_refuses_an_unanswered_call_as_openai_does(
    fake_openai: FakeOpenAIServer, make: Make
) -> None:
    # the check that makes the round trip above mean something
    call = ToolCall(id="call_1", name="read_file", arguments="{}")
    history = [Message(role="assistant", tool_calls=[call]), Message(role="user", content="?")]
    with pytest.raises(BackendError) as info:
        await collect(make(fake_openai).stream(ChatRequest(messages=history, tools=TOOLS)))
    assert info.value.status == 400


async def test_local_usage_counts_the_calls_and_the_tools(
    fake_llamacpp: FakeOpenAIServer, make: Make
) -> None:
    # the llama.cpp server sends no usage in a stream: everything is counted here
    arguments = '{"path": "src/a_rather_long_module_name.py"}'
    fake_llamacpp.script.queue(calls_reply(ScriptedCall("read_file", arguments), text="Ok."))
    result = await collect(make(fake_llamacpp).stream(ask(tools=TOOLS)))
    assert result.usage.counted_locally
    assert result.usage.tokens_out == count_text("Ok.") + count_text(f"read_file {arguments}")
    tools = json.dumps(fake_llamacpp.chat_requests[-1]["tools"], separators=(",", ":"))
    assert result.usage.tokens_in == count_messages(["look at a.py", tools])


async def test_server_usage_wins_when_sent(fake_openai: FakeOpenAIServer, make: Make) -> None:
    fake_openai.script.queue(calls_reply(ScriptedCall("read_file", {"path": "a.py"})))
    result = await collect(make(fake_openai).stream(ask(tools=TOOLS)))
    assert not result.usage.counted_locally
    assert result.usage.tokens_out == 3  # the fake's words: name, '{"path":', '"a.py"}'


async def test_a_call_that_never_gets_a_name_is_bad_output(
    fake_vllm: FakeOpenAIServer, make: Make
) -> None:
    fake_vllm.script.queue(calls_reply(ScriptedCall("", {"x": 1})))
    with pytest.raises(BackendError) as info:
        await collect(make(fake_vllm).stream(ask(tools=TOOLS)))
    assert info.value.kind == "bad_output" and "never got a name" in str(info.value)


def test_a_server_that_ends_calls_with_stop_finishes_tool_calls() -> None:
    # Ollama and older llama.cpp servers say "stop" after tool calls
    state = ChunkState(model="m")
    head = {"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}
    delta = state.feed({"choices": [{"delta": {"tool_calls": [head]}, "finish_reason": None}]})
    assert delta is not None and delta.tool_calls[0].name == "f"
    state.feed({"choices": [{"delta": {}, "finish_reason": "stop"}]})
    assert state.finish() == "tool_calls"
    plain = ChunkState(model="m")
    plain.feed({"choices": [{"delta": {"content": "hi"}, "finish_reason": "stop"}]})
    assert plain.finish() == "stop"


async def test_deepseek_reasoner_gets_its_reasoning_back_with_its_calls(
    fake_deepseek: FakeOpenAIServer, make: Make
) -> None:
    # thinking mode refuses a turn of calls sent back without its reasoning_content
    backend = make(fake_deepseek, served_name="deepseek-reasoner")
    fake_deepseek.script.queue(
        Scripted(
            "",
            reasoning="the test fails in a.py",
            tool_calls=(ScriptedCall("read_file", {"path": "a.py"}),),
        ),
        "Fixed.",
    )
    first = await collect(backend.stream(ask(tools=TOOLS)))
    assert first.reasoning == "the test fails in a.py" and first.finish_reason == "tool_calls"
    turn = Message(role="assistant", reasoning=first.reasoning, tool_calls=first.tool_calls)
    result = Message(role="tool", tool_call_id=first.tool_calls[0].id, content="x = 1")
    history = [Message(role="user", content="look at a.py"), turn, result]
    second = await collect(backend.stream(ChatRequest(messages=history, tools=TOOLS)))
    assert second.text == "Fixed."
    sent = fake_deepseek.chat_requests[-1]["messages"][1]
    assert sent["reasoning_content"] == "the test fails in a.py"
    # a turn whose reasoning is unknown (another model's) still carries the field
    bare = Message(role="assistant", tool_calls=first.tool_calls)
    await collect(backend.stream(ChatRequest(messages=[history[0], bare, result], tools=TOOLS)))
    assert fake_deepseek.chat_requests[-1]["messages"][1]["reasoning_content"] == ""


async def test_reasoning_goes_back_only_where_it_is_asked_for(
    fake_openai_factory: Factory, make: Make
) -> None:
    call = ToolCall(id="call_1", name="read_file", arguments="{}")
    history = [
        Message(role="user", content="look"),
        Message(role="assistant", reasoning="thinking", tool_calls=[call]),
        Message(role="tool", tool_call_id="call_1", content="x"),
    ]
    for flavor, sent in (("moonshot", "thinking"), ("openai", None), ("vllm", None)):
        server = fake_openai_factory(flavor)
        await collect(make(server).stream(ChatRequest(messages=history, tools=TOOLS)))
        assert server.chat_requests[-1]["messages"][1].get("reasoning_content") == sent
