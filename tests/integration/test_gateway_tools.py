"""Tool calls through the gateway, in every direction: a client's tools reach the backend
in the backend's protocol, the model's calls (streamed arguments included, text mixed
with calls, parallel calls) come back in the client's protocol, and tool results
round-trip. This is where translating proxies lose tool calls; each direction is tested
with the real SDKs against a real `switchyard serve`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.script import Scripted, ScriptedCall
from tests.integration.test_gateway import Gateway, _gateway, lines_of
from tests.reliability.kit import LOCAL_MODELS

READ = {
    "name": "read_file",
    "description": "Read a file of the repository",
    "parameters": {
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
    },
}
CALL_A = ScriptedCall("read_file", {"path": "parser.py"}, id="call_a")
CALL_B = ScriptedCall("read_file", {"path": "tests/test_parser.py"}, id="call_b")
TWO_CALLS = Scripted("Let me read both files.", tool_calls=(CALL_A, CALL_B))


@pytest.fixture
def gw(
    tmp_path: Path,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> Iterator[Gateway]:
    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS, default_reply="done")
    cloud = fake_openai_factory("openai", default_reply="cloud done")
    claude = fake_anthropic_factory(default_reply="claude done")
    yield from _gateway(tmp_path, (vllm, cloud, claude), "--approve", "allow")


# ── OpenAI Chat Completions client ───────────────────────────────────────────────────────


def test_chat_client_gets_parallel_calls_streamed_and_whole(gw: Gateway) -> None:
    gw.vllm.script.queue(TWO_CALLS, TWO_CALLS)
    client = gw.openai
    messages = [{"role": "user", "content": "why does parse drop a token?"}]
    reply = client.chat.completions.create(
        model="implementer", messages=messages, tools=[{"type": "function", "function": READ}]
    )
    choice = reply.choices[0]
    assert (
        choice.finish_reason == "tool_calls" and choice.message.content == "Let me read both files."
    )
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("call_a", "read_file", {"path": "parser.py"}),
        ("call_b", "read_file", {"path": "tests/test_parser.py"}),
    ]
    sent = gw.vllm.chat_requests[0]
    assert sent["tools"][0]["function"]["name"] == "read_file"
    # streamed: fragments per call index, reassembled exactly
    args: dict[int, str] = {}
    names: dict[int, str] = {}
    text, finish = "", None
    for chunk in client.chat.completions.create(
        model="implementer",
        messages=messages,
        tools=[{"type": "function", "function": READ}],
        stream=True,
    ):
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for c in delta.tool_calls or []:
            if c.function and c.function.name:
                names[c.index] = c.function.name
            args[c.index] = args.get(c.index, "") + ((c.function and c.function.arguments) or "")
        finish = chunk.choices[0].finish_reason or finish
    assert text == "Let me read both files." and finish == "tool_calls"
    assert names == {0: "read_file", 1: "read_file"}
    assert [json.loads(args[i]) for i in (0, 1)] == [
        {"path": "parser.py"},
        {"path": "tests/test_parser.py"},
    ]


def test_chat_tool_results_round_trip_to_the_backend(gw: Gateway) -> None:
    gw.openai.chat.completions.create(
        model="implementer",
        tools=[{"type": "function", "function": READ}],
        messages=[
            {"role": "user", "content": "fix it"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "read_file", "arguments": '{"path": "parser.py"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_a", "content": "def parse(tokens): ..."},
        ],
    )
    sent = gw.vllm.chat_requests[-1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_a"
    assert sent[2] == {
        "role": "tool",
        "tool_call_id": "call_a",
        "content": "def parse(tokens): ...",
    }
    request_line = lines_of("request")[0]
    assert request_line["values"]["tool_actions"] == 1  # one call, with its result


# ── Anthropic client, served by an OpenAI-protocol backend (vLLM) ────────────────────────


def test_anthropic_client_gets_tool_use_blocks_from_an_openai_backend(gw: Gateway) -> None:
    gw.vllm.script.queue(TWO_CALLS, TWO_CALLS)
    tools = [
        {"name": "read_file", "description": "Read a file", "input_schema": READ["parameters"]}
    ]
    msg = gw.anthropic.messages.create(
        model="claude-sonnet-4-5", max_tokens=500, tools=tools,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "why?"}],
    )  # fmt: skip
    assert msg.stop_reason == "tool_use"
    blocks = [(b.type, getattr(b, "id", None), getattr(b, "input", None)) for b in msg.content]
    assert blocks == [
        ("text", None, None),
        ("tool_use", "call_a", {"path": "parser.py"}),
        ("tool_use", "call_b", {"path": "tests/test_parser.py"}),
    ]
    with gw.anthropic.messages.stream(
        model="claude-sonnet-4-5", max_tokens=500, tools=tools,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "why?"}],
    ) as stream:  # fmt: skip
        partial = [e for e in stream if e.type == "input_json"]
        final = stream.get_final_message()
    assert partial, "the arguments were not streamed as input_json_delta"
    assert [b.input for b in final.content if b.type == "tool_use"] == [  # type: ignore[union-attr]
        {"path": "parser.py"},
        {"path": "tests/test_parser.py"},
    ]
    sent = gw.vllm.chat_requests[0]
    assert sent["tools"][0]["function"]["parameters"] == READ["parameters"]


def test_anthropic_tool_results_reach_an_openai_backend_as_tool_messages(gw: Gateway) -> None:
    gw.anthropic.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=100,
        tools=[{"name": "read_file", "input_schema": READ["parameters"]}],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "fix it"},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "read_file",
                        "input": {"path": "a.py"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "x = 1"},
                    {"type": "text", "text": "now fix it"},
                ],
            },
        ],
    )
    sent = gw.vllm.chat_requests[-1]["messages"]
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == json.dumps(
        {"path": "a.py"}, separators=(",", ":")
    )
    assert sent[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "x = 1"}
    assert sent[3] == {"role": "user", "content": "now fix it"}


# ── OpenAI Responses client ──────────────────────────────────────────────────────────────


def test_responses_client_gets_function_call_items_and_their_events(gw: Gateway) -> None:
    gw.vllm.script.queue(TWO_CALLS, TWO_CALLS)
    tool = {"type": "function", **READ}
    done = gw.openai.responses.create(model="implementer", input="why?", tools=[tool])  # type: ignore[list-item]
    items = [(o.type, getattr(o, "call_id", None)) for o in done.output]
    assert items == [("message", None), ("function_call", "call_a"), ("function_call", "call_b")]
    kinds: list[str] = []
    with gw.openai.responses.stream(model="implementer", input="why?", tools=[tool]) as stream:  # type: ignore[list-item]
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_response()
    calls = [o for o in final.output if o.type == "function_call"]
    assert [json.loads(c.arguments) for c in calls] == [
        {"path": "parser.py"},
        {"path": "tests/test_parser.py"},
    ]  # type: ignore[union-attr]
    assert kinds.count("response.function_call_arguments.done") == 2
    assert "response.function_call_arguments.delta" in kinds
    # the message item closes before the first call item opens
    first_call = kinds.index("response.function_call_arguments.delta")
    assert kinds.index("response.output_text.done") < first_call


def test_responses_stream_ends_each_item_before_the_next_is_added(gw: Gateway) -> None:
    """Item 1's ``output_item.added`` came before item 0's ``arguments.done``: OpenAI
    ends an item's events (its arguments done, the item done) before it adds the next."""
    gw.vllm.script.queue(TWO_CALLS)
    tool = {"type": "function", **READ}
    with gw.openai.responses.stream(model="implementer", input="why?", tools=[tool]) as stream:  # type: ignore[list-item]
        events = [e for e in stream if hasattr(e, "output_index")]
        final = stream.get_final_response()
    order = [(e.output_index, e.type) for e in events]  # type: ignore[attr-defined]
    # each item's events are one run, in output order, each ending with its item done
    runs = [i for n, (i, _) in enumerate(order) if n == 0 or order[n - 1][0] != i]
    assert runs == [0, 1, 2], order
    for index in range(3):
        kinds = [kind for i, kind in order if i == index]
        assert kinds[0] == "response.output_item.added", (index, kinds)
        assert kinds[-1] == "response.output_item.done", (index, kinds)
    kinds = [kind for i, kind in order if i == 1]
    assert kinds[-2:] == ["response.function_call_arguments.done", "response.output_item.done"]
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [json.loads(e.arguments) for e in done] == [  # type: ignore[attr-defined]
        {"path": "parser.py"},
        {"path": "tests/test_parser.py"},
    ]
    assert [o.type for o in final.output] == ["message", "function_call", "function_call"]


def test_responses_function_call_outputs_round_trip(gw: Gateway) -> None:
    gw.openai.responses.create(
        model="implementer",
        tools=[{"type": "function", **READ}],  # type: ignore[list-item]
        input=[
            {"role": "user", "content": "fix it"},
            {
                "type": "function_call",
                "call_id": "call_9",
                "name": "read_file",
                "arguments": '{"path":"a.py"}',
            },
            {"type": "function_call_output", "call_id": "call_9", "output": "x = 1"},
        ],
    )
    sent = gw.vllm.chat_requests[-1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_9"
    assert sent[2] == {"role": "tool", "tool_call_id": "call_9", "content": "x = 1"}


# ── an OpenAI client served by the Anthropic cloud, with tools ───────────────────────────


def test_an_openai_client_gets_calls_from_the_anthropic_cloud(gw: Gateway) -> None:
    gw.claude.script.queue(
        Scripted(
            "Reading.", tool_calls=(ScriptedCall("read_file", {"path": "p.py"}, id="toolu_x"),)
        )
    )
    reply = gw.openai.chat.completions.create(
        model="tutor+escalate",
        tools=[{"type": "function", "function": READ}],
        messages=[{"role": "user", "content": "show me parse"}],
    )
    calls = reply.choices[0].message.tool_calls or []
    assert [(c.id, json.loads(c.function.arguments)) for c in calls] == [
        ("toolu_x", {"path": "p.py"})
    ]
    sent = gw.claude.requests[-1].json
    assert sent["tools"][0]["name"] == "read_file"
    assert sent["tools"][0]["input_schema"] == READ["parameters"]


def test_a_key_the_cloud_sends_back_reaches_the_client_masked(gw: Gateway) -> None:
    """A provider echoing the key (in the text, or in a call's arguments that its stream
    cuts every 7 characters) is masked before the client, whole or streamed, and the
    call line counts it; a made-up key in the reply's code stays as written."""
    key = "sk-gateway-test-openai-0123456789"  # the gateway's OPENAI_API_KEY
    sample = "sk-sample-not-a-real-key-000000"
    echo = Scripted(
        f"Your key is {key} and a sample is {sample}.",
        tool_calls=(ScriptedCall("read_file", {"path": f"{key}.env"}, id="call_k"),),
    )
    gw.cloud.script.queue(echo, echo)
    client = gw.openai
    asked = {
        "model": "architect",
        "tools": [{"type": "function", "function": READ}],
        "messages": [{"role": "user", "content": "plan the fix"}],
        "extra_headers": {"x-switchyard-signal": "confidence=0.5"},
    }
    reply = client.chat.completions.create(**asked)  # type: ignore[call-overload]
    message = reply.choices[0].message
    assert message.content == f"Your key is [REDACTED] and a sample is {sample}."
    calls = message.tool_calls or []
    assert [json.loads(c.function.arguments) for c in calls] == [{"path": "[REDACTED].env"}]
    text, arguments = "", ""
    for chunk in client.chat.completions.create(stream=True, **asked):  # type: ignore[call-overload]
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for c in choice.delta.tool_calls or []:
                arguments += c.function.arguments or ""
    assert text == message.content and json.loads(arguments) == {"path": "[REDACTED].env"}
    cloud_calls = [ln for ln in lines_of("call") if ln["values"].get("provider") == "openai"]
    assert [ln["values"]["reply_secrets_masked"] for ln in cloud_calls] == [2, 2]
