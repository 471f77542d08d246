"""Tool use through AnthropicBackend against the loopback fake.

The fake streams tool_use blocks as the API does (content_block_start with id and name,
input_json_delta pieces, content_block_stop, stop_reason tool_use) and refuses what the
API refuses (tool blocks without tools, a tool_result answering no tool_use of the
previous turn, a tool_use left unanswered, results after text, a non-object input), so
a wrong translation fails here as it would upstream.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import pytest

from app.backends.anthropic_backend import AnthropicBackend
from app.backends.anthropic_request import anthropic_request
from app.backends.base import (
    BackendError,
    ChatRequest,
    ChatResult,
    Delta,
    Message,
    ToolCall,
    ToolSpec,
    collect,
)
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.script import Scripted, ScriptedCall

pytest_plugins = ["tests.fakes.fixtures"]

KEY = "sk-ant-test-0123456789abcdef"
MODEL = "claude-sonnet-4-6"
READ = ToolSpec(
    name="read_file",
    description="Read a file of the repository",
    parameters={"type": "object", "properties": {"path": {"type": "string"}}},
)
BASH = ToolSpec(name="bash", parameters={"properties": {"command": {"type": "string"}}})
TOOLS = [READ, BASH]

Make = Callable[..., AnthropicBackend]


@pytest.fixture
def make(loopback_client2: httpx2.AsyncClient) -> Make:
    def build(server: FakeAnthropicServer) -> AnthropicBackend:
        return AnthropicBackend(
            model_id="claude-sonnet",
            served_name=MODEL,
            base_url=server.base_url,
            api_key=KEY,
            key_env="ANTHROPIC_API_KEY",
            client=loopback_client2,
        )

    return build


def ask(*messages: Message, **kwargs: Any) -> ChatRequest:
    history = list(messages) or [Message(role="user", content="look at a.py")]
    return ChatRequest(messages=history, **kwargs)


async def drain(backend: AnthropicBackend, request: ChatRequest) -> tuple[list[Delta], ChatResult]:
    items = [item async for item in backend.stream(request)]
    result = items[-1]
    assert isinstance(result, ChatResult)
    assert all(isinstance(i, Delta) for i in items[:-1])
    return [i for i in items[:-1] if isinstance(i, Delta)], result


# ── what is sent ────────────────────────────────────────────────────────────────────────


async def test_tools_are_sent_with_their_input_schema(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    await collect(make(fake_anthropic).stream(ask(tools=TOOLS)))
    body = fake_anthropic.message_requests[-1]
    assert body["tools"] == [
        {
            "name": "read_file",
            "input_schema": READ.parameters,
            "description": "Read a file of the repository",
        },
        # a schema without a type is made the object schema the API requires
        {"name": "bash", "input_schema": {"type": "object", **BASH.parameters}},
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("choice", "parallel", "sent"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("bash", None, {"type": "tool", "name": "bash"}),
        ("none", None, {"type": "none"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("bash", False, {"type": "tool", "name": "bash", "disable_parallel_tool_use": True}),
        (None, True, None),
    ],
)
async def test_tool_choice_mapping(
    fake_anthropic: FakeAnthropicServer,
    make: Make,
    choice: str | None,
    parallel: bool | None,
    sent: dict[str, Any] | None,
) -> None:
    request = ask(tools=TOOLS, tool_choice=choice, parallel_tool_calls=parallel)
    await collect(make(fake_anthropic).stream(request))
    assert fake_anthropic.message_requests[-1].get("tool_choice") == sent


async def test_calls_and_results_become_tool_use_and_tool_result_blocks(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    one = ToolCall(id="toolu_1", name="read_file", arguments='{"path": "a.py"}')
    two = ToolCall(id="toolu_2", name="bash", arguments='{"command": "ls"}')
    request = ask(
        Message(role="system", content="You are the implementer."),
        Message(role="user", content="look at a.py"),
        Message(role="assistant", content="Looking.", tool_calls=[one, two]),
        Message(role="tool", tool_call_id="toolu_1", content="x = 1"),
        Message(role="tool", tool_call_id="toolu_2", content="ls: denied", is_error=True),
        Message(role="user", content="and now?"),
        tools=TOOLS,
    )
    await collect(make(fake_anthropic).stream(request))
    body = fake_anthropic.message_requests[-1]
    assert body["system"] == "You are the implementer."
    assert body["messages"] == [
        {"role": "user", "content": "look at a.py"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Looking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "read_file",
                    "input": {"path": "a.py"},
                },
                {"type": "tool_use", "id": "toolu_2", "name": "bash", "input": {"command": "ls"}},
            ],
        },
        {
            "role": "user",  # both results in one turn, then the user's words
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "x = 1"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": "ls: denied",
                    "is_error": True,
                },
                {"type": "text", "text": "and now?"},
            ],
        },
    ]


async def test_malformed_arguments_are_sent_as_an_empty_input_with_a_note(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    # a broken call in the history (a model's, echoed by the client) must not block the
    # rest of the conversation: {} goes as the input, the text the model wrote as a note
    broken = ToolCall(id="toolu_b", name="bash", arguments='{"command": "ls')
    listed = ToolCall(id="toolu_l", name="bash", arguments="[1, 2]")
    request = ask(
        Message(role="user", content="list"),
        Message(role="assistant", tool_calls=[broken, listed]),
        Message(role="tool", tool_call_id="toolu_b", content="bad arguments", is_error=True),
        Message(role="tool", tool_call_id="toolu_l", content="bad arguments", is_error=True),
        tools=TOOLS,
    )
    result = await collect(make(fake_anthropic).stream(request))
    assert result.text
    blocks = fake_anthropic.message_requests[-1]["messages"][1]["content"]
    assert [b["type"] for b in blocks] == ["text", "tool_use", "text", "tool_use"]
    assert blocks[1]["input"] == {} and blocks[3]["input"] == {}
    assert blocks[0]["text"] == (
        "(The arguments of call toolu_b to bash were not a JSON object and were sent as {}: "
        '{"command": "ls)'
    )
    assert blocks[2]["text"].endswith("[1, 2])")


async def test_a_history_with_calls_but_no_tools_offers_them_with_choice_none(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    call = ToolCall(id="toolu_1", name="read_file", arguments='{"path": "a.py"}')
    request = ask(
        Message(role="user", content="look"),
        Message(role="assistant", tool_calls=[call]),
        Message(role="tool", tool_call_id="toolu_1", content="x = 1"),
        Message(role="user", content="summarise"),
    )
    await collect(make(fake_anthropic).stream(request))
    body = fake_anthropic.message_requests[-1]
    assert body["tools"] == [{"name": "read_file", "input_schema": {"type": "object"}}]
    assert body["tool_choice"] == {"type": "none"}


async def test_the_fake_refuses_what_the_api_refuses(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    # a result answering a call that is not in the previous turn: the API's 400
    request = ask(
        Message(role="user", content="look"),
        Message(role="tool", tool_call_id="toolu_x", content="x"),
        tools=TOOLS,
    )
    with pytest.raises(BackendError) as info:
        await collect(make(fake_anthropic).stream(request))
    assert info.value.status == 400 and "unexpected `tool_use_id`" in str(info.value)


async def test_passthrough_headers_go_upstream_and_no_others(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    headers = {
        "anthropic-beta": "interleaved-thinking-2025-05-14,fine-grained-tool-streaming",
        "Anthropic-Version": "2023-06-01-test",
        "x-claude-code-session-id": "s-1",
    }
    await collect(make(fake_anthropic).stream(ask(passthrough_headers=headers)))
    sent = fake_anthropic.last.headers
    assert sent["anthropic-beta"] == headers["anthropic-beta"]
    assert sent["anthropic-version"] == "2023-06-01-test"  # the client's, not the SDK's
    assert "x-claude-code-session-id" not in sent
    await collect(make(fake_anthropic).stream(ask()))
    plain = fake_anthropic.last.headers
    sdk_default = anthropic.AsyncAnthropic(api_key="k").default_headers["anthropic-version"]
    assert "anthropic-beta" not in plain and plain["anthropic-version"] == sdk_default


# ── what comes back ─────────────────────────────────────────────────────────────────────


async def test_a_streamed_tool_use_is_reassembled_exactly(
    fake_anthropic_factory: Callable[..., FakeAnthropicServer], make: Make
) -> None:
    server = fake_anthropic_factory(argument_chunk=2)
    arguments = json.dumps({"path": 'src/"odd" ü.py'}, ensure_ascii=False)
    server.script.queue(Scripted("", tool_calls=(ScriptedCall("read_file", arguments),)))
    deltas, result = await drain(make(server), ask(tools=TOOLS))
    (call,) = result.tool_calls
    assert call.name == "read_file" and call.arguments == arguments
    assert call.id.startswith("toolu_01")
    parts = [p for d in deltas for p in d.tool_calls]
    assert (parts[0].id, parts[0].name, parts[0].arguments) == (call.id, "read_file", "")
    assert all(p.id is None and p.name is None for p in parts[1:])
    assert len(parts) == 1 + -(-len(arguments) // 2)
    assert "".join(p.arguments for p in parts) == arguments
    assert result.finish_reason == "tool_calls" and result.text == ""


async def test_text_then_parallel_tool_use(fake_anthropic: FakeAnthropicServer, make: Make) -> None:
    fake_anthropic.script.queue(
        Scripted(
            "I will read both.",
            tool_calls=(
                ScriptedCall("read_file", {"path": "a.py"}),
                ScriptedCall("bash", {"command": "cat b.py"}),
            ),
        )
    )
    deltas, result = await drain(make(fake_anthropic), ask(tools=TOOLS))
    assert "".join(d.text for d in deltas) == result.text == "I will read both."
    kinds = ["t" if d.text else "c" for d in deltas]
    assert kinds == sorted(kinds, reverse=True)
    assert [(c.name, json.loads(c.arguments)) for c in result.tool_calls] == [
        ("read_file", {"path": "a.py"}),
        ("bash", {"command": "cat b.py"}),
    ]
    assert [p.index for d in deltas for p in d.tool_calls if p.name] == [0, 1]
    assert result.finish_reason == "tool_calls"
    assert not result.usage.counted_locally
    # the fake's words: the text's, then each call's name and argument words
    assert result.usage.tokens_out == 4 + 3 + 4


async def test_a_call_with_no_input_streamed_has_empty_object_arguments(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    fake_anthropic.script.queue(Scripted("", tool_calls=(ScriptedCall("bash", ""),)))
    deltas, result = await drain(make(fake_anthropic), ask(tools=TOOLS))
    assert result.tool_calls[0].arguments == "{}"
    assert "".join(p.arguments for d in deltas for p in d.tool_calls) == "{}"


async def test_round_trip_with_the_ids_the_api_gave(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    backend = make(fake_anthropic)
    fake_anthropic.script.queue(
        Scripted("", tool_calls=(ScriptedCall("read_file", {"path": "a.py"}),)), "Done."
    )
    first = await collect(backend.stream(ask(tools=TOOLS)))
    history = [
        Message(role="user", content="look at a.py"),
        Message(role="assistant", tool_calls=first.tool_calls),
        Message(role="tool", tool_call_id=first.tool_calls[0].id, content="x = 1"),
    ]
    second = await collect(backend.stream(ChatRequest(messages=history, tools=TOOLS)))
    assert (second.text, second.finish_reason) == ("Done.", "end_turn")
    turn = fake_anthropic.message_requests[-1]["messages"][2]
    assert turn["content"][0]["tool_use_id"] == first.tool_calls[0].id


def test_the_prompt_counted_for_local_usage_holds_calls_results_and_tools() -> None:
    # what StreamState.result counts when a stream carries no usage at all
    call = ToolCall(id="toolu_1", name="bash", arguments='{"command": "ls"}')
    sent = anthropic_request(
        ask(
            Message(role="system", content="Be brief."),
            Message(role="user", content="look"),
            Message(role="assistant", tool_calls=[call]),
            Message(role="tool", tool_call_id="toolu_1", content="a.py"),
            tools=TOOLS,
        )
    )
    tools = json.dumps([t.model_dump() for t in TOOLS], separators=(",", ":"))
    assert sent.prompt == ["Be brief.", "look", "", "a.py", 'bash {"command": "ls"}', tools]


def test_a_server_tools_input_is_not_a_call_but_a_stray_piece_is_malformed() -> None:
    from types import SimpleNamespace as E

    from app.backends.anthropic_backend import _Events
    from app.backends.provider_common import BadStreamItem

    state = _Events(model=MODEL)
    server_tool = E(type="server_tool_use", id="srvtoolu_1", name="web_search", input={})
    assert state.feed(E(type="content_block_start", index=0, content_block=server_tool)) is None
    piece = E(type="input_json_delta", partial_json='{"query": "x"}')
    assert state.feed(E(type="content_block_delta", index=0, delta=piece)) is None
    assert not state.calls.started
    with pytest.raises(BadStreamItem):
        state.feed(E(type="content_block_delta", index=5, delta=piece))


def test_a_message_delta_saying_fewer_input_tokens_than_the_start_leaves_the_starts() -> None:
    """A compatible endpoint's ``message_delta`` with ``input_tokens: 0`` had the prompt
    charged at $0; the API's own repeats the start's figures, which still read (a review)."""
    from types import SimpleNamespace as E

    from app.backends.anthropic_backend import _Events

    start = E(input_tokens=10, cache_creation_input_tokens=0, cache_read_input_tokens=900)
    state = _Events(model=MODEL)
    state.feed(E(type="message_start", message=E(usage=start, model=MODEL)))
    assert (state.tokens_in, state.tokens_cached) == (910, 900)
    state.feed(E(type="message_delta", delta=E(stop_reason=None), usage=E(input_tokens=0)))
    assert (state.tokens_in, state.tokens_cached) == (910, 900)
    state.feed(E(type="message_delta", delta=E(stop_reason=None), usage=start))
    assert (state.tokens_in, state.tokens_cached) == (910, 900)
