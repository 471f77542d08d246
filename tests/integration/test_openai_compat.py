"""OpenAICompatBackend against the loopback fakes: every flavor, every fault.

Each fault ends in a BackendError of the right kind (or a result): never a hang (the
client times out after 2 s) and never an unmapped exception.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from app.backends.base import (
    Backend,
    BackendError,
    ChatRequest,
    ChatResult,
    Delta,
    Message,
    collect,
)
from app.backends.http import make_async_client
from app.backends.openai_compat import (
    OpenAICompatBackend,
    flavor_for,
    retry_after_seconds,
    scrub,
)
from app.backends.provider_common import past_cap
from app.clock import ManualClock
from app.tokens import count_messages, count_text
from tests.fakes.openai_server import FakeOpenAIServer, KeyEcho, echoed, embedding_for
from tests.fakes.script import Scripted, ScriptedCall, count_words
from tests.fakes.server import Reply
from tests.socket_guard import block_non_loopback

pytest_plugins = ["tests.fakes.fixtures"]

KEY = "sk-test-0123456789abcdef"
KEY_ENV = {
    "openai": "OPENAI_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "moonshot": "MOONSHOT_API_KEY",
}
RUNTIME = {"vllm": "vllm", "llamacpp": "llamacpp_server"}
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}

Make = Callable[..., OpenAICompatBackend]


def ask(text: str = "hello there", **kwargs: Any) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], **kwargs)


@pytest.fixture
def make(loopback_client: httpx.AsyncClient) -> Make:
    """Build a backend for a fake server, with the fixture's guarded 2 s client."""

    def build(server: FakeOpenAIServer, **overrides: Any) -> OpenAICompatBackend:
        flavor = server.flavor
        served = {"deepseek": "deepseek-chat"}.get(flavor, server.models[0])
        kwargs: dict[str, Any] = {
            "model_id": f"test-{flavor}",
            "served_name": served,
            "runtime": RUNTIME.get(flavor, "cloud"),
            "flavor": flavor,
            "base_url": server.base_url,
            "api_key": KEY if flavor in KEY_ENV else None,
            "key_env": KEY_ENV.get(flavor),
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


async def fails(stream: AsyncIterator[Delta | ChatResult]) -> tuple[BackendError, list[Delta]]:
    """Drain until the stream fails; the error must be a BackendError (never anything else)."""
    seen: list[Delta] = []
    try:
        async for item in stream:
            if isinstance(item, Delta):
                seen.append(item)
    except BackendError as exc:
        # Raised outside the except block: no SDK exception (and no key) rides along.
        assert exc.__cause__ is None and exc.__context__ is None
        return exc, seen
    except Exception as exc:  # pragma: no cover - the assertion message is the point
        pytest.fail("unmapped exception: " + "".join(traceback.format_exception(exc)))
    pytest.fail("the stream did not fail")


# ── streaming, usage, reasoning ─────────────────────────────────────────────────────────


async def test_is_a_backend(fake_vllm: FakeOpenAIServer, make: Make) -> None:
    backend = make(fake_vllm)
    assert isinstance(backend, Backend)
    assert backend.model_id == "test-vllm" and backend.runtime == "vllm"


async def test_vllm_streams_deltas_in_order_then_one_result(
    fake_vllm: FakeOpenAIServer, make: Make
) -> None:
    fake_vllm.script.queue("fix the off by one")
    deltas, result = await drain(make(fake_vllm).stream(ask(seed=7, stop=["\n\n"])))
    assert [d.text for d in deltas] == ["fix ", "the ", "off ", "by ", "one"]
    assert result.text == "fix the off by one" and result.finish_reason == "stop"
    assert result.model == fake_vllm.models[0]
    # usage is the server's (the fake counts words: 4 framing + 2 prompt words; 5 pieces)
    assert (result.usage.tokens_in, result.usage.tokens_out) == (6, 5)
    assert not result.usage.counted_locally
    assert result.ttft_ms is not None and result.latency_ms >= result.ttft_ms
    body = fake_vllm.chat_requests[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == fake_vllm.models[0]
    assert body["max_tokens"] == 1024 and body["temperature"] == 0.2
    assert body["seed"] == 7 and body["stop"] == ["\n\n"]
    assert "response_format" not in body and "structured_outputs" not in body


@pytest.mark.parametrize("flavor", ["vllm", "llamacpp", "openai", "deepseek", "moonshot"])
async def test_every_flavor_answers(
    fake_openai_factory: Callable[..., FakeOpenAIServer], make: Make, flavor: str
) -> None:
    server = fake_openai_factory(flavor, replies=["all good"])
    result = await collect(make(server).stream(ask()))
    assert result.text == "all good"
    if flavor in KEY_ENV:
        assert server.last.headers["authorization"] == "<redacted>"  # the key was sent


async def test_llamacpp_stream_without_usage_is_counted_locally(
    fake_llamacpp: FakeOpenAIServer, make: Make
) -> None:
    fake_llamacpp.script.queue("def parse(tokens): return tokens")
    result = await collect(make(fake_llamacpp).stream(ask("write parse")))
    assert result.usage.counted_locally
    assert result.usage.tokens_in == count_messages(["write parse"])
    assert result.usage.tokens_out == count_text("def parse(tokens): return tokens")
    assert fake_llamacpp.chat_requests[-1]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("prompt_tokens", "completion_tokens", "refused"),
    [
        (-5, -100_000, "-5 in / -100000 out"),
        (10**24, 3, "> 1e18 in / 3 out"),
        (7, 10**8 + 1, "7 in / 100000001 out"),
    ],
)
async def test_a_usage_that_cannot_be_the_calls_is_refused_and_counted_here(
    fake_openai: FakeOpenAIServer,
    make: Make,
    prompt_tokens: int,
    completion_tokens: int,
    refused: str,
) -> None:
    """A negative count raised a ValidationError past the call's audit line; 1e24 tokens
    settled at $1e18 and overflowed the ledger's fold, breaking every later command."""
    fake_openai.usage_override = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": 0,
    }
    fake_openai.script.queue("a b c")
    result = await collect(make(fake_openai).stream(ask("write parse")))
    assert result.usage.counted_locally
    assert result.usage.refused == refused
    assert result.usage.tokens_in == count_messages(["write parse"])
    assert result.usage.tokens_out == count_text("a b c")


async def test_moonshot_usage_in_the_last_choice_is_read(
    fake_moonshot: FakeOpenAIServer, make: Make
) -> None:
    fake_moonshot.script.queue("a b c")
    result = await collect(make(fake_moonshot).stream(ask()))
    assert not result.usage.counted_locally and result.usage.tokens_out == 3


async def test_deepseek_reasoner_reasoning_comes_first(
    fake_deepseek: FakeOpenAIServer, make: Make
) -> None:
    fake_deepseek.script.queue(Scripted("x = 1", reasoning="loop twice failed so"))
    backend = make(fake_deepseek, served_name="deepseek-reasoner")
    deltas, result = await drain(backend.stream(ask()))
    kinds = ["r" if d.reasoning else "t" for d in deltas]
    assert kinds == ["r"] * 4 + ["t"] * 3
    assert all(not (d.reasoning and d.text) for d in deltas)
    assert result.reasoning == "loop twice failed so" and result.text == "x = 1"
    assert result.usage.tokens_out == 7 and not result.usage.counted_locally
    assert "seed" not in fake_deepseek.chat_requests[-1]  # DeepSeek takes no seed


async def test_openai_reasoning_effort_and_max_completion_tokens(
    fake_openai: FakeOpenAIServer, make: Make
) -> None:
    backend = make(fake_openai, served_name="gpt-5.1", reasoning_effort="high")
    request = ask(max_tokens=300).model_copy(
        update={"top_p": 0.9, "presence_penalty": 0.0, "frequency_penalty": 0.5, "stop": ["END"]}
    )
    await collect(backend.stream(request))
    body = fake_openai.chat_requests[-1]
    assert body["reasoning_effort"] == "high"
    assert body["max_completion_tokens"] == 300 and "max_tokens" not in body
    # reasoning models refuse sampling fields: a client's presence_penalty 0 made every
    # escalation to GPT-5.1 a 400 (a review)
    for field in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "stop"):
        assert field not in body, field


@pytest.mark.parametrize(
    ("reply", "stops", "text", "matched"),
    [
        ("alpha beta END gamma delta", ["END"], "alpha beta ", "END"),
        ("alpha beta END gamma delta", ["D gam", "zzz"], "alpha beta EN", "D gam"),  # 2 pieces
        ("alpha beta gamma", ["zzz"], "alpha beta gamma", None),
        ("alpha beta EN", ["END"], "alpha beta EN", None),  # held, then released at the end
    ],
)
async def test_a_reasoning_model_is_cut_at_the_clients_stop(
    fake_openai: FakeOpenAIServer,
    make: Make,
    reply: str,
    stops: list[str],
    text: str,
    matched: str | None,
) -> None:
    """A reasoning model takes no ``stop`` (OpenAI answers 400), so the reply ran past the
    client's stop sequence. It is cut here: nothing past it is released, in the deltas or
    the result, the finish is ``stop`` with the sequence named, and the stream is read to
    its end for the usage, which bills the whole generation."""
    fake_openai.script.queue(reply)
    backend = make(fake_openai, served_name="gpt-5.1", reasoning_effort="high")
    items = [item async for item in backend.stream(ask(stop=stops))]
    result = items[-1]
    assert isinstance(result, ChatResult)
    deltas = [d for d in items[:-1] if isinstance(d, Delta)]
    assert "".join(d.text for d in deltas) == text == result.text
    assert [d.stop_sequence for d in deltas if d.stop_sequence] == ([matched] if matched else [])
    assert result.finish_reason == "stop"
    assert result.usage.tokens_out == count_words(reply) and not result.usage.counted_locally
    assert "stop" not in fake_openai.chat_requests[-1]


async def test_a_reasoning_models_cap_includes_its_thinking_budget(
    fake_openai: FakeOpenAIServer, make: Make
) -> None:
    """`ask --max-tokens 256` to gpt-5.1 at high effort: the thinking budget the policy
    sets for the effort rides on top (OpenAI counts reasoning in max_completion_tokens),
    and the registry builds the catalog's reasoning models that way."""
    from app.backends.registry import BackendRegistry
    from app.policy import load_policy

    backend = make(
        fake_openai, served_name="gpt-5.1", reasoning_effort="high", reasoning_tokens=16384
    )
    await collect(backend.stream(ask(max_tokens=256)))
    assert fake_openai.chat_requests[-1]["max_completion_tokens"] == 256 + 16384
    plain = make(fake_openai, served_name="gpt-4.1", reasoning_tokens=16384)
    await collect(plain.stream(ask(max_tokens=256)))
    assert fake_openai.chat_requests[-1]["max_completion_tokens"] == 256  # no effort, no budget
    policy = load_policy().policy
    built = BackendRegistry(policy, local_only=False).backend("gpt-5.1-high", "cloud")
    assert isinstance(built, OpenAICompatBackend)
    assert built.reasoning_tokens == policy.generation.reasoning_high_tokens > 256


async def test_max_tokens_reached_is_finish_length(fake_vllm: FakeOpenAIServer, make: Make) -> None:
    fake_vllm.script.queue("one two three four")
    result = await collect(make(fake_vllm).stream(ask(max_tokens=2)))
    assert (result.text, result.finish_reason) == ("one two ", "length")


@pytest.mark.parametrize("flavor", ["vllm", "openai"])
async def test_a_server_that_ignores_max_tokens_is_cut_off_its_call_dropped(
    fake_openai_factory: Callable[..., FakeOpenAIServer], make: Make, flavor: str
) -> None:
    """A server that goes on past ``max_tokens`` (by the shared counter, well past it:
    :func:`past_cap`) is ended by the relay, mid tool call here: what was passed on is the
    result's text, finish ``length``, no call (one cut off is no call to run), its stream
    closed, and the output counted from what was passed on (the server's usage never came)."""
    server = fake_openai_factory(flavor)
    server.ignore_max_tokens = True
    server.event_delay = 0.002  # (~130 events: a while, unless cut off)
    server.script.queue(
        Scripted("word " * 10, tool_calls=(ScriptedCall("edit", {"text": "many words " * 60}),))
    )
    deltas, result = await drain(make(server).stream(ask(max_tokens=8)))
    assert (result.finish_reason, result.tool_calls, result.cut_past_cap) == ("length", [], True)
    assert result.text == "".join(d.text for d in deltas) == "word " * 10
    assert any(d.tool_calls for d in deltas)  # (the call had begun)
    arguments = "".join(f.arguments for d in deltas for f in d.tool_calls)
    # past the cut by no more than the delta that crossed it
    assert past_cap(8) < count_text(result.text) + count_text(arguments) <= past_cap(8) + 4
    assert result.usage.counted_locally
    assert result.usage.tokens_out == count_text(result.text) + count_text("edit " + arguments)
    written, had = await server.stream_ended()
    assert written < had


async def test_a_reasoning_models_thinking_is_not_held_to_the_reply_cap(
    fake_deepseek: FakeOpenAIServer, make: Make
) -> None:
    """DeepSeek's reasoner thinks past its ``max_tokens``: the relay's cut counts the
    reply alone (its text and calls), never the reasoning."""
    fake_deepseek.script.queue(Scripted("x = 1", reasoning="think it over " * 200))
    backend = make(fake_deepseek, served_name="deepseek-reasoner")
    result = await collect(backend.stream(ask(max_tokens=4)))
    assert (result.text, result.finish_reason, result.cut_past_cap) == ("x = 1", "stop", False)


async def test_consumer_may_stop_early(fake_vllm: FakeOpenAIServer, make: Make) -> None:
    fake_vllm.script.queue("many words in this reply")
    fake_vllm.event_delay = 0.01
    backend = make(fake_vllm)
    stream = backend.stream(ask())
    first = await anext(stream)
    assert isinstance(first, Delta)
    await stream.aclose()  # type: ignore[attr-defined]
    # the backend (and its pooled connection) still serve the next call
    assert (await collect(backend.stream(ask()))).text == "Hello from the fake."


# ── structured output, per server ───────────────────────────────────────────────────────


async def test_vllm_structured_outputs_field(fake_vllm: FakeOpenAIServer, make: Make) -> None:
    fake_vllm.script.queue('{"ok": true}')
    result = await collect(make(fake_vllm).stream(ask(json_schema=SCHEMA)))
    assert json.loads(result.text) == {"ok": True}
    body = fake_vllm.chat_requests[-1]
    assert body["structured_outputs"] == {"json": SCHEMA}
    assert "guided_json" not in body and "response_format" not in body


async def test_vllm_guided_json_for_older_servers(fake_vllm: FakeOpenAIServer, make: Make) -> None:
    backend = make(fake_vllm, structured_field="guided_json")
    await collect(backend.stream(ask(json_schema=SCHEMA)))
    body = fake_vllm.chat_requests[-1]
    assert body["guided_json"] == SCHEMA and "structured_outputs" not in body


async def test_llamacpp_json_object_with_schema_ok(
    fake_llamacpp: FakeOpenAIServer, make: Make
) -> None:
    fake_llamacpp.script.queue('{"ok": false}')
    result = await collect(make(fake_llamacpp).stream(ask(json_schema=SCHEMA)))
    assert json.loads(result.text) == {"ok": False}
    rf = fake_llamacpp.chat_requests[-1]["response_format"]
    assert rf == {"type": "json_object", "schema": SCHEMA}


async def test_llamacpp_refuses_json_schema_with_500(
    fake_llamacpp: FakeOpenAIServer, make: Make
) -> None:
    # an Ollama-flavored backend pointed at a llama.cpp server sends json_schema: 500
    backend = make(fake_llamacpp, flavor="ollama", runtime="ollama")
    err, _ = await fails(backend.stream(ask(json_schema=SCHEMA)))
    assert (err.kind, err.status) == ("server_error", 500)
    assert fake_llamacpp.chat_requests[-1]["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize("flavor", ["openai", "deepseek", "moonshot"])
async def test_cloud_json_object_and_schema_in_a_system_message(
    fake_openai_factory: Callable[..., FakeOpenAIServer], make: Make, flavor: str
) -> None:
    server = fake_openai_factory(flavor, replies=['{"ok": true}'])
    request = ChatRequest(
        messages=[
            Message(role="system", content="You are the architect."),
            Message(role="user", content="plan it"),
        ],
        json_schema=SCHEMA,
    )
    await collect(make(server).stream(request))
    body = server.chat_requests[-1]
    assert body["response_format"] == {"type": "json_object"}
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "system", "user"]
    assert body["messages"][0]["content"] == "You are the architect."
    instruction = body["messages"][1]["content"]
    assert (
        "JSON" in instruction
        and json.dumps(SCHEMA, sort_keys=True, separators=(",", ":")) in instruction
    )


# ── faults → error kinds ─────────────────────────────────────────────────────────────────


async def test_429_retry_after_seconds(fake_openai: FakeOpenAIServer, make: Make) -> None:
    fake_openai.fail_next("429", retry_after=2)
    err, _ = await fails(make(fake_openai).stream(ask()))
    assert (err.kind, err.status, err.retry_after) == ("rate_limited", 429, 2.0)


async def test_429_retry_after_http_date(fake_vllm: FakeOpenAIServer, make: Make) -> None:
    fake_vllm.fail_next("429", retry_after=30, retry_after_date=True)
    err, _ = await fails(make(fake_vllm).stream(ask()))
    assert err.kind == "rate_limited"
    assert err.retry_after is not None and 25.0 <= err.retry_after <= 30.0


async def test_429_retry_after_ms_wins(fake_openai: FakeOpenAIServer, make: Make) -> None:
    fake_openai.fail_next("429", retry_after=9, retry_after_ms=250)
    err, _ = await fails(make(fake_openai).stream(ask()))
    assert err.retry_after == 0.25


async def test_429_without_retry_after(fake_vllm: FakeOpenAIServer, make: Make) -> None:
    fake_vllm.fail_next("429", retry_after=None)
    err, _ = await fails(make(fake_vllm).stream(ask()))
    assert (err.kind, err.retry_after) == ("rate_limited", None)


async def test_429_insufficient_quota_is_auth(fake_openai: FakeOpenAIServer, make: Make) -> None:
    fake_openai.fail_next("429", quota=True)
    err, _ = await fails(make(fake_openai).stream(ask()))
    assert (err.kind, err.status) == ("auth", 429)


@pytest.mark.parametrize("code", ["500", "502", "503", "504", "529"])
@pytest.mark.parametrize("flavor", ["vllm", "llamacpp", "openai"])
async def test_5xx_is_server_error(
    fake_openai_factory: Callable[..., FakeOpenAIServer], make: Make, flavor: str, code: str
) -> None:
    server = fake_openai_factory(flavor)
    server.fail_next(code)
    err, _ = await fails(make(server).stream(ask()))
    assert (err.kind, err.status) == ("server_error", int(code))


@pytest.mark.parametrize("code", ["401", "403"])
async def test_401_403_are_auth(fake_openai: FakeOpenAIServer, make: Make, code: str) -> None:
    fake_openai.fail_next(code)
    err, _ = await fails(make(fake_openai).stream(ask()))
    assert (err.kind, err.status) == ("auth", int(code))


@pytest.mark.parametrize(
    "echo", ["whole", "partial", "upper", "basic", "percent", "escaped", "split"]
)
async def test_a_wrong_key_is_auth_and_never_repeated(
    fake_openai_factory: Callable[..., FakeOpenAIServer], make: Make, echo: KeyEcho
) -> None:
    """Nor in part (OpenAI's 401 shows the key's first 8 and last 4 characters), nor in
    another form a provider or a relay gives it back in (an audit found each of them
    repeated in skip lines, --json errors and the audit log)."""
    server = fake_openai_factory("openai", api_key="sk-the-right-one")
    server.key_echo = echo
    err, _ = await fails(make(server).stream(ask()))  # sends KEY, which the server echoes
    assert err.kind == "auth"
    shown = echoed(KEY, echo)
    for text in (str(err), repr(err), "".join(traceback.format_exception(err))):
        assert KEY not in text and KEY[-4:] not in text
        assert shown not in text and KEY.upper() not in text.upper()
        assert not any(KEY[i : i + 12].lower() in text.lower() for i in range(len(KEY) - 11))
    assert "[redacted]" in str(err)


async def test_404_model_not_served(fake_vllm: FakeOpenAIServer, make: Make) -> None:
    err, _ = await fails(make(fake_vllm, served_name="not/served").stream(ask()))
    assert (err.kind, err.status) == ("server_error", 404)


@pytest.mark.parametrize("status", [400, 413, 422])
@pytest.mark.parametrize("flavor", ["vllm", "llamacpp", "openai", "deepseek", "moonshot"])
async def test_a_request_refused_as_invalid_is_a_bad_request_in_the_servers_words(
    fake_openai_factory: Callable[..., FakeOpenAIServer], make: Make, flavor: str, status: int
) -> None:
    """The request itself, not the server (an audit: vLLM's ``400 invalid schema`` read
    as a server error marked the runtime down for every client): its own kind, its status
    and the server's words, a key it echoes scrubbed. Both ways in: the local runtimes'
    stream without the SDK, the cloud's through it."""
    server = fake_openai_factory(flavor)
    server.fail_next(str(status), message=f"invalid schema: 'type' is not a string ({KEY})")
    err, seen = await fails(make(server).stream(ask()))
    assert (err.kind, err.status) == ("bad_request", status)
    assert "invalid schema: 'type' is not a string" in str(err) and seen == []
    assert KEY not in str(err) and "[redacted]" in str(err)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("Your credit balance is too low to access the API.", None),
        ("Billing hard limit has been reached.", "billing_hard_limit_reached"),
    ],
)
async def test_a_400_about_our_account_is_auth_not_a_bad_request(
    fake_openai: FakeOpenAIServer, make: Make, message: str, code: str | None
) -> None:
    """Not the request's fault: another provider may serve it, this one not for a while."""
    fake_openai.handle = _answering(  # type: ignore[method-assign]
        fake_openai._error(400, message, "invalid_request_error", code=code)
    )
    err, _ = await fails(make(fake_openai).stream(ask()))
    assert (err.kind, err.status) == ("auth", 400)


@pytest.mark.parametrize(
    ("message", "type_", "code"),
    [
        ("The request was rejected because it was considered high risk", "content_filter", None),
        ("The response was filtered", "invalid_request_error", "content_filter"),
        ("Content Exists Risk", "invalid_request_error", None),
    ],
)
async def test_a_400_from_a_providers_content_filter_fails_the_step_not_the_route(
    fake_openai: FakeOpenAIServer, make: Make, message: str, type_: str, code: str | None
) -> None:
    """Moonshot's, Azure's and DeepSeek's content filters: another provider may serve the
    request, so the step fails (the chain goes on), where a bad_request ends the route."""
    fake_openai.handle = _answering(  # type: ignore[method-assign]
        fake_openai._error(400, message, type_, code=code)
    )
    err, _ = await fails(make(fake_openai).stream(ask()))
    assert (err.kind, err.status) == ("server_error", 400)


def _answering(reply: Reply) -> Callable[..., Any]:
    async def handle(request: Any) -> Reply:
        return reply

    return handle


async def test_slow_first_byte_beyond_the_timeout_is_timeout(
    fake_vllm: FakeOpenAIServer, make: Make
) -> None:
    fake_vllm.fail_next("slow_first_byte", seconds=3.0)
    t0 = time.monotonic()
    err, seen = await fails(make(fake_vllm).stream(ask()))
    assert err.kind == "timeout" and seen == [] and not err.started  # (no status line)
    assert time.monotonic() - t0 < 2.9  # the client's 2 s, not the server's 3 s


async def test_slow_first_byte_within_the_timeout_succeeds(
    fake_vllm: FakeOpenAIServer, make: Make
) -> None:
    fake_vllm.fail_next("slow_first_byte", seconds=0.2)
    assert (await collect(make(fake_vllm).stream(ask()))).text == "Hello from the fake."


async def test_a_stall_mid_stream_is_timeout(fake_vllm: FakeOpenAIServer, make: Make) -> None:
    fast = make_async_client(local_only=True, timeout=0.3)
    try:
        fake_vllm.fail_next("stall", after=2, seconds=1.0)
        err, seen = await fails(make(fake_vllm, client=fast).stream(ask()))
        assert err.kind == "timeout" and [d.text for d in seen] == ["Hello "]
        assert err.started  # the stream was open: the provider had taken the request
    finally:
        await fast.aclose()


@pytest.mark.parametrize("flavor", ["vllm", "llamacpp", "openai", "deepseek"])
async def test_a_stream_cut_mid_way_is_server_error(
    fake_openai_factory: Callable[..., FakeOpenAIServer], make: Make, flavor: str
) -> None:
    server = fake_openai_factory(flavor, replies=["one two three four five"])
    server.fail_next("cut_stream", after=3)  # role chunk + two words, then the drop
    err, seen = await fails(make(server).stream(ask()))
    assert err.kind == "server_error" and "cut" in str(err) and err.started
    assert [d.text for d in seen] == ["one ", "two "]


async def test_a_reset_before_any_byte_is_connect(fake_vllm: FakeOpenAIServer, make: Make) -> None:
    fake_vllm.fail_next("reset")
    err, seen = await fails(make(fake_vllm).stream(ask()))
    assert err.kind == "connect" and seen == [] and not err.started


async def test_a_server_that_is_down_is_connect(fake_vllm: FakeOpenAIServer, make: Make) -> None:
    backend = make(fake_vllm)
    await collect(backend.stream(ask()))  # a pooled keep-alive connection exists
    fake_vllm.fail_next("down")
    err, _ = await fails(backend.stream(ask()))
    assert err.kind == "connect"
    fake_vllm.up()
    assert (await collect(backend.stream(ask()))).text


@pytest.mark.parametrize("flavor", ["vllm", "llamacpp", "openai", "moonshot"])
async def test_invalid_json_chunk_is_bad_output(
    fake_openai_factory: Callable[..., FakeOpenAIServer], make: Make, flavor: str
) -> None:
    server = fake_openai_factory(flavor)
    server.fail_next("invalid_json", after=2)
    err, _ = await fails(make(server).stream(ask()))
    assert err.kind == "bad_output"


@pytest.mark.parametrize("form", ["utf8", "nested"])
@pytest.mark.parametrize("flavor", ["vllm", "llamacpp", "openai", "deepseek", "moonshot"])
async def test_undecodable_bytes_are_bad_output(
    fake_openai_factory: Callable[..., FakeOpenAIServer], make: Make, flavor: str, form: str
) -> None:
    """Bytes that are not UTF-8 (or JSON too deep to decode) mid-stream: the SDK's SSE
    decoder raised UnicodeDecodeError past the backend, and a gateway request ended as a
    bare 500 with no fallback (an audit). Now what a chunk that is not JSON is."""
    server = fake_openai_factory(flavor)
    server.fail_next("undecodable", after=2, form=form)
    err, seen = await fails(make(server).stream(ask()))
    assert err.kind == "bad_output" and "malformed reply" in str(err), err
    assert [d.text for d in seen] == ["Hello "]


async def test_the_audits_bytes_at_the_start_of_a_stream_are_bad_output(
    fake_openai_factory: Callable[..., FakeOpenAIServer], make: Make
) -> None:
    """The audit's exact body: every POST answered 200 with one undecodable event."""
    server = fake_openai_factory("deepseek")

    async def garbage(request: Any) -> Reply:
        return Reply.sse([b"data: \xff\xfe\x00garbage\n\n"])

    server.handle = garbage  # type: ignore[method-assign]
    err, seen = await fails(make(server).stream(ask()))
    assert err.kind == "bad_output" and "UnicodeDecodeError" in str(err), err
    assert seen == []


async def test_a_chunk_of_the_wrong_shape_is_bad_output(
    fake_vllm: FakeOpenAIServer, make: Make
) -> None:
    original = fake_vllm.handle

    async def wrong_shape(request: Any) -> Any:
        reply = await original(request)
        if reply.events:
            reply.events[1] = b'data: {"choices": [{"delta": {"content": 5}}]}\n\n'
        return reply

    fake_vllm.handle = wrong_shape  # type: ignore[method-assign]
    err, _ = await fails(make(fake_vllm).stream(ask()))
    assert err.kind == "bad_output"


@pytest.mark.parametrize("flavor", ["vllm", "llamacpp", "openai", "deepseek", "moonshot"])
async def test_context_length_in_each_servers_words(
    fake_openai_factory: Callable[..., FakeOpenAIServer], make: Make, flavor: str
) -> None:
    server = fake_openai_factory(flavor)
    server.fail_next("context_length")
    err, _ = await fails(make(server).stream(ask()))
    assert (err.kind, err.status) == ("context_length", 400)


async def test_local_only_refusal_sends_nothing_and_is_audited() -> None:
    lines: list[dict[str, Any]] = []

    class Sink:
        async def append(self, kind: str, **fields: Any) -> Any:
            lines.append({"kind": kind, **fields})

    client = make_async_client(local_only=True, audit=Sink(), session="s1", timeout=2.0)
    backend = OpenAICompatBackend(
        model_id="gpt-5.1",
        served_name="gpt-5.1",
        runtime="cloud",
        flavor="openai",
        base_url="https://api.openai.com/v1",
        api_key=KEY,
        key_env="OPENAI_API_KEY",
        client=client,
    )
    try:
        with block_non_loopback() as guard:
            err, _ = await fails(backend.stream(ask()))
            health = await backend.health()
        guard.assert_no_attempts()
    finally:
        await client.aclose()
    assert err.kind == "local_only" and "api.openai.com" in str(err)
    assert not health.ok and "local_only" in health.detail
    assert [line["kind"] for line in lines] == ["local_only_refusal", "local_only_refusal"]
    assert KEY not in repr(lines)


@pytest.mark.parametrize("flavor", ["openai", "deepseek", "moonshot"])
async def test_no_key_sends_nothing(
    fake_openai_factory: Callable[..., FakeOpenAIServer], make: Make, flavor: str
) -> None:
    server = fake_openai_factory(flavor)
    backend = make(server, api_key=None)
    err, _ = await fails(backend.stream(ask()))
    assert err.kind == "no_key"
    assert str(err) == f"unavailable: no key ({KEY_ENV[flavor]} not set)"
    health = await backend.health()
    assert not health.ok and KEY_ENV[flavor] in health.detail
    with pytest.raises(BackendError) as embed_err:
        await backend.embed(["x"])
    assert embed_err.value.kind == "no_key"
    assert server.requests == []


async def test_local_servers_need_no_key(fake_vllm: FakeOpenAIServer, make: Make) -> None:
    backend = make(fake_vllm, api_key=None, key_env=None)
    assert (await collect(backend.stream(ask()))).text


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
    ],
)
@pytest.mark.parametrize("flavor", ["vllm", "llamacpp", "openai", "deepseek", "moonshot"])
async def test_no_fault_escapes_as_anything_but_a_backend_error(
    fake_openai_factory: Callable[..., FakeOpenAIServer], make: Make, flavor: str, fault: str
) -> None:
    server = fake_openai_factory(flavor)
    server.fail_next(fault)
    err, _ = await fails(make(server).stream(ask()))
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


# ── health and context window ───────────────────────────────────────────────────────────


async def test_vllm_health_and_context_window_from_max_model_len(
    fake_openai_factory: Callable[..., FakeOpenAIServer], make: Make
) -> None:
    server = fake_openai_factory("vllm", max_model_len=16384)
    backend = make(server)
    health = await backend.health()
    assert health.ok and health.context_window == 16384 and health.models == server.models
    assert await backend.context_window() == 16384
    assert [r.path for r in server.requests] == ["/health", "/v1/models"]


async def test_health_is_cached_for_its_ttl(fake_vllm: FakeOpenAIServer, make: Make) -> None:
    clock = ManualClock()
    backend = make(fake_vllm, clock=clock, health_ttl_s=5.0)
    first = await backend.health()
    sent = len(fake_vllm.requests)
    clock.advance(4.9)
    assert await backend.health() == first
    assert await backend.context_window() == 32768
    assert len(fake_vllm.requests) == sent  # nothing sent within the TTL
    clock.advance(0.2)
    await backend.health()
    assert len(fake_vllm.requests) == 2 * sent


async def test_llamacpp_window_from_props(
    fake_openai_factory: Callable[..., FakeOpenAIServer], make: Make
) -> None:
    server = fake_openai_factory("llamacpp", n_ctx=4096)
    backend = make(server)
    assert (await backend.health()).ok
    assert await backend.context_window() == 4096


async def test_cloud_has_no_window_and_no_health_endpoint(
    fake_openai: FakeOpenAIServer, make: Make
) -> None:
    backend = make(fake_openai)
    health = await backend.health()
    assert health.ok and health.context_window is None
    assert [r.path for r in fake_openai.requests] == ["/v1/models"]
    assert fake_openai.last.headers["authorization"] == "<redacted>"  # the key was sent


async def test_loading_server_is_not_healthy(fake_llamacpp: FakeOpenAIServer, make: Make) -> None:
    fake_llamacpp.healthy = False
    health = await make(fake_llamacpp).health()
    assert not health.ok and "loading" in health.detail


async def test_wrong_model_served_is_not_healthy(fake_vllm: FakeOpenAIServer, make: Make) -> None:
    health = await make(fake_vllm, served_name="other/model").health()
    assert not health.ok and "not other/model" in health.detail
    assert health.models == fake_vllm.models


async def test_down_server_is_not_healthy(fake_vllm: FakeOpenAIServer, make: Make) -> None:
    fake_vllm.down()
    health = await make(fake_vllm).health()
    assert (health.ok, health.detail) == (False, "unreachable")


async def test_health_probe_times_out_after_one_second(
    fake_vllm: FakeOpenAIServer, make: Make
) -> None:
    fake_vllm.fail_next("slow_first_byte", seconds=2.0)
    t0 = time.monotonic()
    health = await make(fake_vllm).health()
    assert not health.ok and "no answer within 1 s" in health.detail
    assert time.monotonic() - t0 < 1.8


async def test_health_5xx_is_not_healthy(fake_vllm: FakeOpenAIServer, make: Make) -> None:
    fake_vllm.fail_next("500", path="/v1/models")
    health = await make(fake_vllm).health()
    assert not health.ok and "500" in health.detail


# ── embeddings ──────────────────────────────────────────────────────────────────────────


async def test_embeddings(fake_vllm: FakeOpenAIServer, make: Make) -> None:
    vectors = await make(fake_vllm).embed(["alpha", "beta"])
    assert vectors == [embedding_for("alpha"), embedding_for("beta")]
    body = fake_vllm.last.json
    assert body["input"] == ["alpha", "beta"] and body["encoding_format"] == "float"


async def test_embeddings_of_nothing_send_nothing(fake_vllm: FakeOpenAIServer, make: Make) -> None:
    assert await make(fake_vllm).embed([]) == []
    assert fake_vllm.requests == []


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("500", "server_error"),
        ("429", "rate_limited"),
        ("invalid_json", "bad_output"),
        ("undecodable", "bad_output"),
        ("reset", "connect"),
        ("cut_stream", "connect"),
    ],
)
async def test_embedding_faults(
    fake_vllm: FakeOpenAIServer, make: Make, fault: str, kind: str
) -> None:
    fake_vllm.fail_next(fault)
    with pytest.raises(BackendError) as info:
        await make(fake_vllm).embed(["alpha"])
    assert info.value.kind == kind


# ── helpers ─────────────────────────────────────────────────────────────────────────────


def test_retry_after_parsing() -> None:
    clock = ManualClock()
    now = clock.now()
    assert retry_after_seconds({"retry-after": "3"}, now) == 3.0
    assert retry_after_seconds({"retry-after": "-4"}, now) == 0.0
    assert retry_after_seconds({"retry-after": "Thu, 01 Jan 2026 12:00:10 GMT"}, now) == 10.0
    assert retry_after_seconds({"retry-after": "Thu, 01 Jan 2026 11:00:00 GMT"}, now) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}, now) is None
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}, now) == 1.5
    assert retry_after_seconds({}, now) is None


def test_scrub_removes_keys_and_shortens() -> None:
    assert scrub("key sk-abcdefgh1234 bad", []) == "key [redacted] bad"
    assert scrub("my key is hunter2-long", ["hunter2-long"]) == "my key is [redacted]"
    assert len(scrub("x" * 1000, [])) == 300


def test_token_counter_is_deterministic_and_plausible() -> None:
    assert count_text("") == 0
    assert count_text("hello world") == 2
    assert count_text("internationalization") == 4
    assert count_text("2026") == 2
    assert count_text("    return x\n") == count_text("    return x\n")
    prose = "The quick brown fox jumps over the lazy dog. " * 20
    assert 180 <= count_text(prose) <= 260  # ~10 tokens a sentence in real BPE vocabularies
    assert count_messages(["hi"]) == 4 + 1 + 3


def test_flavor_for_catalog_entries() -> None:
    assert flavor_for(runtime="vllm", provider="local") == "vllm"
    assert flavor_for(runtime="llamacpp_server", provider="local") == "llamacpp"
    assert flavor_for(runtime="ollama", provider="local") == "ollama"
    assert flavor_for(runtime=None, provider="deepseek") == "deepseek"
    assert flavor_for(runtime=None, provider="moonshot") == "moonshot"
    assert flavor_for(runtime=None, provider="openai") == "openai"
    with pytest.raises(ValueError):
        flavor_for(runtime="llamacpp_inprocess", provider="local")
