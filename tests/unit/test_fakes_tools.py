"""The fakes' tool calls on the wire: the chunk and event shapes each real API streams,
the non-streamed shapes, and the tool requests each API refuses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.script import Scripted, ScriptedCall

pytest_plugins = ["tests.fakes.fixtures"]

OPENAI_TOOL = {"type": "function", "function": {"name": "read_file", "parameters": {}}}
ANTHROPIC_TOOL = {"name": "read_file", "input_schema": {"type": "object"}}
ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
REPLY = Scripted(
    "Reading.",
    tool_calls=(
        ScriptedCall("read_file", {"path": "a.py"}, id="call_1"),
        ScriptedCall("read_file", '{"path": "b.py"}'),
    ),
)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    headers = {"Authorization": "Bearer sk-test"}
    with httpx.Client(timeout=2.0, trust_env=False, headers=headers) as c:
        yield c


def openai_post(client: httpx.Client, server: FakeOpenAIServer, **body: Any) -> httpx.Response:
    payload = {"model": server.models[0], "messages": [{"role": "user", "content": "x"}], **body}
    return client.post(server.base_url + "/chat/completions", json=payload)


def openai_chunks(client: httpx.Client, server: FakeOpenAIServer, **body: Any) -> list[Any]:
    reply = openai_post(client, server, stream=True, **body)
    lines = [ln[6:] for ln in reply.text.splitlines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(ln) for ln in lines[:-1]]


def anthropic_post(
    client: httpx.Client, server: FakeAnthropicServer, **body: Any
) -> httpx.Response:
    payload = {
        "model": "claude-opus-4-7",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "x"}],
        **body,
    }
    return client.post(server.url + "/v1/messages", json=payload, headers=ANTHROPIC_HEADERS)


# ── OpenAI ──────────────────────────────────────────────────────────────────────────────


def test_openai_streams_text_then_each_call_head_then_its_argument_pieces(
    fake_openai_factory: Any, client: httpx.Client
) -> None:
    server = fake_openai_factory("openai", argument_chunk=5)
    server.script.queue(REPLY)
    chunks = openai_chunks(client, server, tools=[OPENAI_TOOL])
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0] == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "read_file", "arguments": ""},
    }
    assert all(set(c) == {"index", "function"} for c in calls[1:5])
    assert "".join(c["function"]["arguments"] for c in calls if c["index"] == 0) == (
        '{"path": "a.py"}'
    )
    second = [c for c in calls if c["index"] == 1]
    assert second[0]["id"].startswith("call_") and second[0]["function"]["name"] == "read_file"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    text = "".join(d.get("content") or "" for d in deltas)
    assert text == "Reading." and deltas.index(next(d for d in deltas if "tool_calls" in d)) > 1


def test_openai_non_streamed_calls(fake_vllm: FakeOpenAIServer, client: httpx.Client) -> None:
    fake_vllm.script.queue(Scripted("", tool_calls=REPLY.tool_calls))
    choice = openai_post(client, fake_vllm, tools=[OPENAI_TOOL]).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [c["function"]["arguments"] for c in calls] == ['{"path": "a.py"}', '{"path": "b.py"}']
    assert calls[1]["id"].startswith("chatcmpl-tool-")  # vLLM's style


@pytest.mark.parametrize(
    ("flavor", "body", "words"),
    [
        ("openai", {"tool_choice": "auto"}, "only allowed when 'tools' are specified"),
        ("openai", {"parallel_tool_calls": True}, "only allowed when 'tools' are specified"),
        ("moonshot", {"tools": [OPENAI_TOOL], "tool_choice": "required"}, "not supported"),
        ("llamacpp", {"tools": [OPENAI_TOOL], "tool_choice": {"type": "function"}}, "Invalid"),
        (
            "vllm",
            {"messages": [{"role": "tool", "tool_call_id": "c", "content": "r"}]},
            "must be a response to a preceeding message with 'tool_calls'",
        ),
        (
            "openai",
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ],
                    },
                    {"role": "user", "content": "?"},
                ]
            },
            "did not have response messages: c1",
        ),
        (
            "deepseek",
            {
                "model": "deepseek-reasoner",
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": "r"},
                ],
            },
            "Missing `reasoning_content` field in the assistant message at message index 1",
        ),
    ],
)
def test_openai_refuses_what_the_servers_refuse(
    fake_openai_factory: Any, client: httpx.Client, flavor: str, body: dict[str, Any], words: str
) -> None:
    server = fake_openai_factory(flavor)
    reply = openai_post(client, server, **body)
    assert reply.status_code == 400 and words in reply.text
    assert server.script.next({}).text == server.script.default  # no reply was used up


# ── Anthropic ───────────────────────────────────────────────────────────────────────────


def test_anthropic_streams_tool_use_blocks_with_input_json_deltas(
    fake_anthropic_factory: Any, client: httpx.Client
) -> None:
    server = fake_anthropic_factory(argument_chunk=4)
    server.script.queue(REPLY)
    reply = anthropic_post(client, server, stream=True, tools=[ANTHROPIC_TOOL])
    events = [json.loads(ln[6:]) for ln in reply.text.splitlines() if ln.startswith("data: ")]
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["text", "tool_use", "tool_use"]
    assert starts[1]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "read_file",
        "input": {},
    }
    assert starts[2]["content_block"]["id"].startswith("toolu_01")
    pieces = [
        e["delta"]["partial_json"]
        for e in events
        if e["type"] == "content_block_delta" and e["index"] == 1
    ]
    assert pieces[0] == "" and "".join(pieces) == '{"path": "a.py"}' and len(pieces) == 1 + 4
    stops = [e["index"] for e in events if e["type"] == "content_block_stop"]
    assert stops == [0, 1, 2]
    (delta,) = [e for e in events if e["type"] == "message_delta"]
    assert delta["delta"]["stop_reason"] == "tool_use"


def test_anthropic_non_streamed_calls_only(
    fake_anthropic: FakeAnthropicServer, client: httpx.Client
) -> None:
    fake_anthropic.script.queue(Scripted("", tool_calls=REPLY.tool_calls))
    body = anthropic_post(client, fake_anthropic, tools=[ANTHROPIC_TOOL]).json()
    assert body["stop_reason"] == "tool_use"
    assert [b["type"] for b in body["content"]] == ["tool_use", "tool_use"]
    assert body["content"][1]["input"] == {"path": "b.py"}


USE = {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {}}
RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "r"}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"tool_choice": {"type": "auto"}}, "tool_choice may only be specified"),
        ({"tools": [{"name": "f", "input_schema": {}}]}, "Input should be 'object'"),
        (
            {"tools": [ANTHROPIC_TOOL], "tool_choice": {"type": "tool", "name": "nope"}},
            "not found",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "content": [USE]},
                    {"role": "user", "content": [RESULT]},
                ]
            },
            "must define tools",
        ),
        (
            {
                "tools": [ANTHROPIC_TOOL],
                "messages": [
                    {"role": "assistant", "content": [USE]},
                    {"role": "user", "content": "no result"},
                ],
            },
            "`tool_use` ids were found without `tool_result` blocks immediately after: toolu_1",
        ),
        (
            {
                "tools": [ANTHROPIC_TOOL],
                "messages": [
                    {"role": "assistant", "content": [USE]},
                    {"role": "user", "content": [{"type": "text", "text": "hi"}, RESULT]},
                ],
            },
            "must come first",
        ),
        (
            {
                "tools": [ANTHROPIC_TOOL],
                "messages": [
                    {"role": "assistant", "content": [{**USE, "input": "ls"}]},
                    {"role": "user", "content": [RESULT]},
                ],
            },
            "Input should be a valid dictionary",
        ),
    ],
)
def test_anthropic_refuses_what_the_api_refuses(
    fake_anthropic: FakeAnthropicServer, client: httpx.Client, body: dict[str, Any], words: str
) -> None:
    reply = anthropic_post(client, fake_anthropic, **body)
    assert reply.status_code == 400 and words in reply.json()["error"]["message"]
