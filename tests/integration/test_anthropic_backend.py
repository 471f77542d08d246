"""AnthropicBackend against the loopback fake: streaming, usage, every fault.

Each fault ends in a BackendError of the right kind (or a result): never a hang (the
client times out after 2 s) and never an unmapped exception.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import pytest

from app.backends.anthropic_backend import AnthropicBackend
from app.backends.base import (
    Backend,
    BackendError,
    ChatRequest,
    ChatResult,
    Delta,
    Message,
    collect,
)
from app.backends.http import make_async_client_httpx2
from app.backends.provider_common import past_cap
from app.clock import ManualClock
from app.tokens import count_text
from tests.fakes.anthropic_server import FakeAnthropicServer, _input_tokens
from tests.fakes.script import Scripted
from tests.socket_guard import block_non_loopback

pytest_plugins = ["tests.fakes.fixtures"]

KEY = "sk-ant-test-0123456789abcdef"
MODEL = "claude-opus-4-7"
SCHEMA = {"type": "object", "properties": {"verdict": {"type": "string"}}}

Make = Callable[..., AnthropicBackend]


def ask(text: str = "review this diff", **kwargs: Any) -> ChatRequest:
    return ChatRequest(
        messages=[
            Message(role="system", content="You are the judge."),
            Message(role="user", content=text),
        ],
        **kwargs,
    )


@pytest.fixture
def make(loopback_client2: httpx2.AsyncClient) -> Make:
    def build(server: FakeAnthropicServer, **overrides: Any) -> AnthropicBackend:
        kwargs: dict[str, Any] = {
            "model_id": "claude-opus",
            "served_name": MODEL,
            "base_url": server.base_url,
            "api_key": KEY,
            "key_env": "ANTHROPIC_API_KEY",
            "client": loopback_client2,
        }
        kwargs.update(overrides)
        return AnthropicBackend(**kwargs)

    return build


async def fails(stream: AsyncIterator[Delta | ChatResult]) -> tuple[BackendError, list[Delta]]:
    seen: list[Delta] = []
    try:
        async for item in stream:
            if isinstance(item, Delta):
                seen.append(item)
    except BackendError as exc:
        assert exc.__cause__ is None and exc.__context__ is None
        return exc, seen
    except Exception as exc:  # pragma: no cover - the assertion message is the point
        pytest.fail("unmapped exception: " + "".join(traceback.format_exception(exc)))
    pytest.fail("the stream did not fail")


# ── streaming and usage ─────────────────────────────────────────────────────────────────


async def test_is_a_backend(fake_anthropic: FakeAnthropicServer, make: Make) -> None:
    backend = make(fake_anthropic)
    assert isinstance(backend, Backend) and backend.runtime == "cloud"
    assert KEY not in repr(backend)


async def test_streams_text_deltas_then_a_result_with_usage(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    fake_anthropic.script.queue("the diff is safe")
    items = [item async for item in make(fake_anthropic).stream(ask(stop=["END"]))]
    deltas, result = items[:-1], items[-1]
    assert all(isinstance(d, Delta) for d in deltas) and isinstance(result, ChatResult)
    assert [d.text for d in deltas if isinstance(d, Delta)] == ["the ", "diff ", "is ", "safe"]
    assert result.text == "the diff is safe" and result.finish_reason == "end_turn"
    assert result.model == MODEL
    # input from message_start (fake: 4 system words + 3 framing + 3 words), output from
    # message_delta (4 pieces)
    assert (result.usage.tokens_in, result.usage.tokens_out) == (10, 4)
    assert not result.usage.counted_locally
    body = fake_anthropic.message_requests[-1]
    assert body["model"] == MODEL and body["stream"] is True and body["max_tokens"] == 1024
    assert body["system"] == "You are the judge."
    assert body["messages"] == [{"role": "user", "content": "review this diff"}]
    assert body["stop_sequences"] == ["END"]
    headers = fake_anthropic.last.headers
    assert headers["authorization"] == "<redacted>" and headers["anthropic-version"]


async def test_thinking_becomes_reasoning(fake_anthropic: FakeAnthropicServer, make: Make) -> None:
    fake_anthropic.script.queue(Scripted("approve", reasoning="checked the tests"))
    items = [item async for item in make(fake_anthropic).stream(ask())]
    deltas = [i for i in items if isinstance(i, Delta)]
    assert ["r" if d.reasoning else "t" for d in deltas] == ["r", "r", "r", "t"]
    result = items[-1]
    assert isinstance(result, ChatResult)
    assert (result.reasoning, result.text) == ("checked the tests", "approve")


async def test_max_tokens_stop_reason(fake_anthropic: FakeAnthropicServer, make: Make) -> None:
    fake_anthropic.script.queue("a b c d")
    result = await collect(make(fake_anthropic).stream(ask(max_tokens=2)))
    assert (result.text, result.finish_reason) == ("a b ", "max_tokens")


async def test_a_server_that_ignores_max_tokens_is_cut_off(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    """Claude's fake streams its whole reply past a 5-token cap: the relay ends it well
    past the cap (finish ``length``, the gateway's ``max_tokens``), closes the stream, and
    counts the output itself, the prompt as the server said it in ``message_start``."""
    fake_anthropic.ignore_max_tokens = True
    fake_anthropic.event_delay = 0.002
    fake_anthropic.script.queue("word " * 3000)
    result = await collect(make(fake_anthropic).stream(ask(max_tokens=5)))
    assert (result.finish_reason, result.cut_past_cap) == ("length", True)
    assert past_cap(5) < count_text(result.text) <= past_cap(5) + 2
    said_in = fake_anthropic.message_requests[-1]
    assert result.usage.tokens_in == _input_tokens(said_in)  # (the server's own count)
    assert (result.usage.tokens_out, result.usage.counted_locally) == (
        count_text(result.text),
        True,
    )
    written, had = await fake_anthropic.stream_ended()
    assert written < had


async def test_structured_output_schema_goes_into_the_system_prompt(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    fake_anthropic.script.queue('{"verdict": "approve"}')
    result = await collect(make(fake_anthropic).stream(ask(json_schema=SCHEMA)))
    assert json.loads(result.text) == {"verdict": "approve"}
    system = fake_anthropic.message_requests[-1]["system"]
    assert system.startswith("You are the judge.\n\n")
    assert "JSON" in system and json.dumps(SCHEMA, sort_keys=True, separators=(",", ":")) in system


async def test_x_api_key_only_server(
    fake_anthropic_factory: Callable[..., FakeAnthropicServer], make: Make
) -> None:
    # The SDK (2.x) sends the key as a Bearer token; a server that wants x-api-key says 401.
    server = fake_anthropic_factory(accept_bearer=False)
    err, _ = await fails(make(server).stream(ask()))
    assert (err.kind, err.status) == ("auth", 401)


# ── faults → error kinds ─────────────────────────────────────────────────────────────────


async def test_429_rate_limited_with_retry_after(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    fake_anthropic.fail_next("429", retry_after=4)
    err, _ = await fails(make(fake_anthropic).stream(ask()))
    assert (err.kind, err.status, err.retry_after) == ("rate_limited", 429, 4.0)


async def test_429_retry_after_date(fake_anthropic: FakeAnthropicServer, make: Make) -> None:
    fake_anthropic.fail_next("429", retry_after=20, retry_after_date=True)
    err, _ = await fails(make(fake_anthropic).stream(ask()))
    assert err.retry_after is not None and 15.0 <= err.retry_after <= 20.0


@pytest.mark.parametrize("code", ["500", "502", "503", "504", "529"])
async def test_5xx_and_overloaded_are_server_error(
    fake_anthropic: FakeAnthropicServer, make: Make, code: str
) -> None:
    fake_anthropic.fail_next(code)
    err, _ = await fails(make(fake_anthropic).stream(ask()))
    assert (err.kind, err.status) == ("server_error", int(code))


@pytest.mark.parametrize("code", ["401", "403"])
async def test_auth(fake_anthropic: FakeAnthropicServer, make: Make, code: str) -> None:
    fake_anthropic.fail_next(code)
    err, _ = await fails(make(fake_anthropic).stream(ask()))
    assert (err.kind, err.status) == ("auth", int(code))


async def test_wrong_key_never_repeated(
    fake_anthropic_factory: Callable[..., FakeAnthropicServer], make: Make
) -> None:
    server = fake_anthropic_factory(api_key="sk-ant-the-right-one")
    err, _ = await fails(make(server).stream(ask()))
    assert err.kind == "auth"
    for text in (str(err), repr(err), "".join(traceback.format_exception(err))):
        assert KEY not in text


async def test_context_length_in_anthropic_words(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    fake_anthropic.fail_next("context_length")
    err, _ = await fails(make(fake_anthropic).stream(ask()))
    assert (err.kind, err.status) == ("context_length", 400)
    assert "prompt is too long" in str(err)


@pytest.mark.parametrize("status", [400, 422])
async def test_a_request_refused_as_invalid_is_a_bad_request_in_anthropics_words(
    fake_anthropic: FakeAnthropicServer, make: Make, status: int
) -> None:
    """``invalid_request_error``: the request, not the server, as for the OpenAI-protocol
    servers (provider_errors' table); the words kept, a key echoed scrubbed."""
    words = f"tools.0.input_schema: JSON schema is invalid ({KEY})"
    fake_anthropic.fail_next(str(status), message=words)
    err, seen = await fails(make(fake_anthropic).stream(ask()))
    assert (err.kind, err.status) == ("bad_request", status) and seen == []
    assert "tools.0.input_schema: JSON schema is invalid" in str(err)
    assert KEY not in str(err)


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        # the body's type says more than its status: a body too large for the API
        (413, None, "context_length"),
        # our account, not the request (Anthropic answers it as a 400)
        (400, "Your credit balance is too low to access the Anthropic API.", "auth"),
    ],
)
async def test_a_4xx_whose_words_say_more_keeps_their_kind(
    fake_anthropic: FakeAnthropicServer, make: Make, status: int, message: str | None, kind: str
) -> None:
    fake_anthropic.fail_next(str(status), message=message)
    err, _ = await fails(make(fake_anthropic).stream(ask()))
    assert (err.kind, err.status) == (kind, status)


async def test_slow_first_byte_beyond_the_timeout_is_timeout(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    fake_anthropic.fail_next("slow_first_byte", seconds=3.0)
    t0 = time.monotonic()
    err, seen = await fails(make(fake_anthropic).stream(ask()))
    assert err.kind == "timeout" and seen == []
    assert time.monotonic() - t0 < 2.9


async def test_a_stall_mid_stream_is_timeout(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    fast = make_async_client_httpx2(local_only=True, timeout=0.3)
    try:
        fake_anthropic.fail_next("stall", after=4, seconds=1.0)
        err, seen = await fails(make(fake_anthropic, client=fast).stream(ask()))
        assert err.kind == "timeout" and [d.text for d in seen] == ["Hello "]
    finally:
        await fast.aclose()


async def test_a_stream_cut_mid_way_is_server_error(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    fake_anthropic.fail_next("cut_stream", after=5)  # start, block start, ping, 2 deltas
    err, seen = await fails(make(fake_anthropic).stream(ask()))
    assert err.kind == "server_error" and "cut" in str(err)
    assert [d.text for d in seen] == ["Hello ", "from "]


async def test_a_reset_before_any_byte_is_connect(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    fake_anthropic.fail_next("reset")
    err, _ = await fails(make(fake_anthropic).stream(ask()))
    assert err.kind == "connect"


async def test_a_server_that_is_down_is_connect(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    fake_anthropic.down()
    err, _ = await fails(make(fake_anthropic).stream(ask()))
    assert err.kind == "connect"


async def test_invalid_json_event_is_bad_output(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    fake_anthropic.fail_next("invalid_json", after=3)
    err, _ = await fails(make(fake_anthropic).stream(ask()))
    assert err.kind == "bad_output"


@pytest.mark.parametrize("form", ["utf8", "nested"])
async def test_undecodable_bytes_are_bad_output(
    fake_anthropic: FakeAnthropicServer, make: Make, form: str
) -> None:
    """Bytes that are not UTF-8 (or JSON too deep to decode) in an event: the SDK's SSE
    decoder raised UnicodeDecodeError past the backend (a gateway request ended as a bare
    500 with no fallback, an audit)."""
    fake_anthropic.fail_next("undecodable", after=3, form=form)
    err, _ = await fails(make(fake_anthropic).stream(ask()))
    assert err.kind == "bad_output" and "malformed reply" in str(err), err


async def test_overloaded_error_event_mid_stream_is_server_error(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    fake_anthropic.fail_next("error_event", after=4)
    err, seen = await fails(make(fake_anthropic).stream(ask()))
    assert err.kind == "server_error" and "Overloaded" in str(err)
    assert [d.text for d in seen] == ["Hello "]


@pytest.mark.parametrize(
    "fault",
    [
        "429",
        "500",
        "502",
        "503",
        "504",
        "529",
        "401",
        "403",
        "404",
        "400",
        "413",
        "422",
        "reset",
        "cut_stream",
        "invalid_json",
        "undecodable",
        "context_length",
        "error_event",
    ],
)
async def test_no_fault_escapes_as_anything_but_a_backend_error(
    fake_anthropic: FakeAnthropicServer, make: Make, fault: str
) -> None:
    fake_anthropic.fail_next(fault)
    err, _ = await fails(make(fake_anthropic).stream(ask()))
    assert err.kind in {
        "rate_limited",
        "server_error",
        "connect",
        "auth",
        "bad_output",
        "bad_request",
        "context_length",
    }
    assert KEY not in str(err)


async def test_no_key_sends_nothing(fake_anthropic: FakeAnthropicServer, make: Make) -> None:
    backend = make(fake_anthropic, api_key=None)
    err, _ = await fails(backend.stream(ask()))
    assert err.kind == "no_key"
    assert str(err) == "unavailable: no key (ANTHROPIC_API_KEY not set)"
    health = await backend.health()
    assert not health.ok and "ANTHROPIC_API_KEY" in health.detail
    assert fake_anthropic.requests == []


async def test_local_only_refusal_sends_nothing() -> None:
    client = make_async_client_httpx2(local_only=True, timeout=2.0)
    backend = AnthropicBackend(
        model_id="claude-opus",
        served_name=MODEL,
        base_url="https://api.anthropic.com",
        api_key=KEY,
        key_env="ANTHROPIC_API_KEY",
        client=client,
    )
    try:
        with block_non_loopback() as guard:
            err, _ = await fails(backend.stream(ask()))
            health = await backend.health()
        guard.assert_no_attempts()
    finally:
        await client.aclose()
    assert err.kind == "local_only" and "api.anthropic.com" in str(err)
    assert not health.ok and "local_only" in health.detail


# ── health ──────────────────────────────────────────────────────────────────────────────


async def test_health_lists_models_and_is_cached(
    fake_anthropic: FakeAnthropicServer, make: Make
) -> None:
    clock = ManualClock()
    backend = make(fake_anthropic, clock=clock, health_ttl_s=5.0)
    health = await backend.health()
    assert health.ok and health.models == fake_anthropic.models
    assert await backend.context_window() is None
    assert [r.path for r in fake_anthropic.requests] == ["/v1/models"]
    clock.advance(4.0)
    await backend.health()
    assert len(fake_anthropic.requests) == 1
    clock.advance(1.0)
    await backend.health()
    assert len(fake_anthropic.requests) == 2


async def test_health_failures(fake_anthropic: FakeAnthropicServer, make: Make) -> None:
    fake_anthropic.fail_next("529")
    health = await make(fake_anthropic).health()
    assert not health.ok and "529" in health.detail
    fake_anthropic.down()
    health = await make(fake_anthropic).health()
    assert not health.ok and "cannot reach" in health.detail
