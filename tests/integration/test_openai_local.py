"""The local runtimes' chat streams without the openai SDK (app/backends/openai_local.py):
the same request and the same answers as the SDK's path, on the factory's StreamClient.

The SDK's path is what a client from outside the factory still gets (it has no stream
client), so each comparison runs one request both ways against the same loopback fake.
tests/integration/test_openai_compat.py and test_openai_tool_calls.py run every fault and
flavor through the new path as they stand.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import httpx2
import pytest

from app.backends.base import BackendError, ChatRequest, Message, ToolCall, ToolSpec, collect
from app.backends.http import make_async_client, make_async_client_httpx2
from app.backends.openai_compat import OpenAICompatBackend
from app.backends.openai_local import SseDecoder, chat_body
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.script import Scripted, ScriptedCall
from tests.fakes.server import Reply
from tests.socket_guard import block_non_loopback

pytest_plugins = ["tests.fakes.fixtures"]

RUNTIME = {"vllm": "vllm", "llamacpp": "llamacpp_server", "ollama": "ollama"}
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
READ = ToolSpec(
    name="read_file",
    description="Read a file",
    parameters={"type": "object", "properties": {"path": {"type": "string"}}},
)
GREP = ToolSpec(name="grep", parameters={"type": "object", "properties": {"q": {"type": "string"}}})


@pytest.fixture
async def sdk_client() -> AsyncIterator[httpx2.AsyncClient]:
    """A client from outside the factory: it has no stream client, so the SDK serves."""
    async with httpx2.AsyncClient(trust_env=False, timeout=2.0) as client:
        yield client


def backend(
    server: FakeOpenAIServer, client: Any, flavor: str | None = None
) -> OpenAICompatBackend:
    flavor = flavor or server.flavor
    return OpenAICompatBackend(
        model_id=f"test-{flavor}",
        served_name=server.models[0],
        runtime=RUNTIME[flavor],
        flavor=flavor,  # type: ignore[arg-type]
        base_url=server.base_url,
        api_key=None,
        client=client,
    )


def rich(**kwargs: Any) -> ChatRequest:
    """A request with every field a chat body carries."""
    fields: dict[str, Any] = {
        "messages": [
            Message(role="system", content="You are the implementer."),
            Message(role="user", content="fix the bug — ünïcode too"),
            Message(
                role="assistant",
                content="",
                tool_calls=[ToolCall(id="call_1", name="read_file", arguments='{"path":"a.py"}')],
            ),
            Message(role="tool", tool_call_id="call_1", content="x = 1"),
            Message(role="tool", tool_call_id="call_1", content="no such file", is_error=True),
        ],
        "max_tokens": 300,
        "temperature": 0.3,
        "seed": 11,
        "stop": ["\n\n"],
        "tools": [READ, GREP],
        "tool_choice": "read_file",
        "parallel_tool_calls": False,
    }
    fields.update(kwargs)
    return ChatRequest(**fields)


# ── the same request body as the SDK's ───────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("fake", "flavor", "extra"),
    [
        ("vllm", "vllm", {"json_schema": SCHEMA, "tool_choice": "required"}),
        ("vllm", "vllm", {}),
        ("llamacpp", "llamacpp", {"json_schema": SCHEMA}),
        ("llamacpp", "ollama", {"tool_choice": "none"}),
        ("llamacpp", "ollama", {}),
    ],
)
async def test_the_body_is_the_sdks(
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    loopback_client: httpx.AsyncClient,
    sdk_client: httpx2.AsyncClient,
    fake: str,
    flavor: str,
    extra: dict[str, Any],
) -> None:
    server = fake_openai_factory(fake, replies=['{"ok": true}', '{"ok": true}'])
    request = rich(**extra)
    local = await collect(backend(server, loopback_client, flavor).stream(request))
    via_sdk = await collect(backend(server, sdk_client, flavor).stream(request))
    assert local.model_dump(exclude={"latency_ms", "ttft_ms"}) == via_sdk.model_dump(
        exclude={"latency_ms", "ttft_ms"}
    )
    ours, sdks = server.chat_requests
    assert ours == sdks
    agents = [r.headers.get("user-agent", "") for r in server.requests]
    assert "aiohttp" in agents[0] and "OpenAI" in agents[1]  # each path really ran


def test_extra_body_is_merged_into_the_body() -> None:
    params = {"max_tokens": 5, "extra_body": {"structured_outputs": {"json": SCHEMA}}}
    body = json.loads(chat_body("m", [{"role": "user", "content": "hi"}], params))
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 5,
        "structured_outputs": {"json": SCHEMA},
    }


async def test_tool_calls_stream_as_on_the_sdk(
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    loopback_client: httpx.AsyncClient,
    sdk_client: httpx2.AsyncClient,
) -> None:
    reply = Scripted(
        "Let me look.",
        tool_calls=(
            ScriptedCall("read_file", {"path": "a.py"}),
            ScriptedCall("grep", {"q": "def parse"}),
        ),
    )
    # one fake each: a fake's call ids count its requests
    one, two = (fake_openai_factory("vllm", replies=[reply]) for _ in range(2))
    request = rich(tool_choice="auto", parallel_tool_calls=True)
    ours = [d async for d in backend(one, loopback_client).stream(request)]
    sdks = [d async for d in backend(two, sdk_client).stream(request)]
    assert [d.model_dump(exclude={"latency_ms", "ttft_ms"}) for d in ours] == [
        d.model_dump(exclude={"latency_ms", "ttft_ms"}) for d in sdks
    ]
    assert ours[-1].tool_calls and ours[-1].finish_reason == "tool_calls"  # type: ignore[union-attr]


async def test_cloud_flavors_stay_on_the_sdk(
    fake_openai: FakeOpenAIServer, loopback_client: httpx.AsyncClient
) -> None:
    cloud = OpenAICompatBackend(
        model_id="gpt",
        served_name="gpt-5.1",
        runtime="cloud",
        flavor="openai",
        base_url=fake_openai.base_url,
        api_key="sk-test-0123456789abcdef",
        key_env="OPENAI_API_KEY",
        client=loopback_client,
    )
    assert (await collect(cloud.stream(rich(tools=[], tool_choice=None)))).text
    assert "OpenAI" in fake_openai.last.headers["user-agent"]


# ── errors inside a 200 stream, as the SDK raises them ───────────────────────────────────


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ({"message": "boom", "type": "internal_error"}, "server_error"),
        ({"message": "This model's maximum context length is 8192 tokens"}, "context_length"),
        ("overloaded", "server_error"),
        ({"code": 500}, "server_error"),  # no words at all: the SDK's default message
    ],
)
async def test_an_error_object_mid_stream_maps_as_on_the_sdk(
    fake_vllm: FakeOpenAIServer,
    loopback_client: httpx.AsyncClient,
    sdk_client: httpx2.AsyncClient,
    error: object,
    kind: str,
) -> None:
    original = fake_vllm.handle

    async def with_error(request: Any) -> Reply:
        reply = await original(request)
        assert reply.events
        reply.events[2] = b"data: " + json.dumps({"error": error}).encode() + b"\n\n"
        return reply

    fake_vllm.handle = with_error  # type: ignore[method-assign]
    failures: list[BackendError] = []
    for client in (loopback_client, sdk_client):
        with pytest.raises(BackendError) as info:
            await collect(backend(fake_vllm, client).stream(rich(tools=[], tool_choice=None)))
        failures.append(info.value)
    ours, sdks = failures
    assert (ours.kind, str(ours), ours.status) == (sdks.kind, str(sdks), sdks.status)
    assert ours.kind == kind


# ── GR-009 and the connection ────────────────────────────────────────────────────────────


async def test_a_local_runtime_off_the_machine_is_refused_and_audited() -> None:
    lines: list[dict[str, Any]] = []

    class Sink:
        async def append(self, kind: str, **fields: Any) -> Any:
            lines.append({"kind": kind, **fields})

    client = make_async_client_httpx2(local_only=True, audit=Sink(), session="s1", timeout=2.0)
    vllm = OpenAICompatBackend(
        model_id="qwen",
        served_name="qwen",
        runtime="vllm",
        flavor="vllm",
        base_url="http://10.0.0.5:8000/v1",  # not named by any policy
        api_key=None,
        client=client,
    )
    try:
        with block_non_loopback() as guard, pytest.raises(BackendError) as info:
            await collect(vllm.stream(rich()))
        guard.assert_no_attempts()
    finally:
        await client.aclose()
    assert info.value.kind == "local_only" and "10.0.0.5" in str(info.value)
    assert [(line["kind"], line["values"]) for line in lines] == [
        ("local_only_refusal", {"host": "10.0.0.5", "scheme": "http"})
    ]


async def test_the_connection_is_kept_between_calls(fake_vllm: FakeOpenAIServer) -> None:
    client = make_async_client(local_only=True, timeout=2.0)
    vllm = backend(fake_vllm, client)
    try:
        with block_non_loopback() as guard:
            for _ in range(4):
                assert (await collect(vllm.stream(rich()))).text
    finally:
        await client.aclose()
    connects = [a for a in guard.allowed if a.port == fake_vllm.port and a.call != "getaddrinfo"]
    assert len(connects) == 1, guard.allowed


# ── SSE as servers send it ───────────────────────────────────────────────────────────────

STREAM = (
    b": keep-alive comment\n\n"
    b'data: {"a": 1}\n\n'
    b"event: ping\n\n"  # a field without data: no event
    b'data:{"b": 2}\r\n\r\n'
    b'data: {"c":\ndata: 3}\n\n'
    b"id: 7\nretry: 10\ndata: [DONE]\n\n"
)
EVENTS = [b'{"a": 1}', b'{"b": 2}', b'{"c":\n3}', b"[DONE]"]


def test_sse_events_whole() -> None:
    assert SseDecoder().feed(STREAM) == EVENTS


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 16])
def test_sse_events_cut_anywhere(size: int) -> None:
    decoder = SseDecoder()
    out: list[bytes] = []
    for i in range(0, len(STREAM), size):
        out += decoder.feed(STREAM[i : i + size])
    assert out == EVENTS


def test_an_unfinished_event_waits_for_its_end() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b'data: {"a": 1}\n') == []
    assert decoder.feed(b"\n") == [b'{"a": 1}']
