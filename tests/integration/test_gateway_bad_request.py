"""A request a backend refuses as invalid (HTTP 400, 413, 422 in its own words) is the
client's to fix, not an outage: the gateway answers it in the client's protocol, with
the backend's words and its status, and routes nothing else because of it.

A user audit found it: a vLLM answering ``400 invalid schema`` to one client's request
was marked down for 30 s (``RUNTIME_DOWN … ERR_SERVER_ERROR``), that client got a 200
from the 135M fallback model, and every other client's request was served by it too
until the cooldown ran out. On the cloud path the same 400 was retried, the model
rested, and the chain walked on to the next provider: another approval, another
reservation, the same request sent again.

The loopback fakes answer with each server's own error body (vLLM's ``BadRequestError``
object, DeepSeek's ``invalid_request_error``); the clients are the real openai and
anthropic SDKs; the audit, the ledger and the health book are read after.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from app.audit.types import AuditLine
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration.cloud_kit import (
    LOCAL_REPLY,
    Asked,
    cloud_session,
    codes,
    gateway,
    lines_of,
    start_fakes,
)

#: where vLLM's fake and DeepSeek's answer a chat (DeepSeek's API is at the root)
VLLM_CHAT = "/v1/chat/completions"
CLOUD_CHAT = "/chat/completions"
#: vLLM's words for a response_format schema it cannot compile
VLLM_WORDS = "invalid schema: 'properties' must be an object"
DEEPSEEK_WORDS = "Invalid tools: function 'edit' has an invalid parameters schema"
#: (Any: the message types of both SDKs)
ASK: Any = [{"role": "user", "content": "fix it"}]


def _all_codes(lines: list[AuditLine]) -> list[str]:
    return [c for ln in lines for c in ln.reason_codes]


async def test_a_vllm_400_is_the_clients_400_and_every_other_client_is_served_by_vllm(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> None:
    fakes = start_fakes(fake_openai_factory, fake_anthropic_factory)
    fakes.vllm.fail_next("400", 3, path=VLLM_CHAT, message=VLLM_WORDS)
    async with (
        cloud_session(tmp_path, monkeypatch, fakes, Asked()) as session,
        gateway(session) as url,
    ):
        chat = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        messages = anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0)
        # OpenAI's shape, whole
        with pytest.raises(openai.BadRequestError) as refused:
            await chat.chat.completions.create(model="implementer", messages=ASK)
        # Anthropic's shape, streamed: the status before any event
        with pytest.raises(anthropic.BadRequestError) as refused_too:
            await messages.messages.create(
                model="implementer", max_tokens=64, messages=ASK, stream=True
            )
        # a structured request (GR-012's owner in the way): the same answer
        with pytest.raises(openai.BadRequestError) as refused_structured:
            await chat.chat.completions.create(
                model="implementer",
                messages=ASK,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "fix", "schema": {"type": "object"}},
                },
            )
        # the next client's request: served by vLLM, as before the 400
        served = await chat.chat.completions.with_raw_response.create(
            model="implementer",
            messages=ASK,
        )
        assert session.router.health.down() == {}
        lines = await lines_of(session)
        await chat.close()
        await messages.close()

    assert refused.value.status_code == 400
    assert refused.value.response.headers["x-should-retry"] == "false"
    error: Any = refused.value.body
    assert error["type"] == "invalid_request_error" and VLLM_WORDS in error["message"]
    assert refused_too.value.status_code == 400
    body: Any = refused_too.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert VLLM_WORDS in body["error"]["message"]
    assert refused_structured.value.status_code == 400
    assert VLLM_WORDS in refused_structured.value.message

    assert served.headers["x-switchyard-model"] == "qwen2.5-coder-32b"
    assert served.headers["x-switchyard-runtime"] == "vllm"
    assert served.parse().choices[0].message.content == LOCAL_REPLY
    assert len(fakes.vllm.chat_requests) == 4  # each request sent once, and only there

    said = codes(lines)
    assert "RUNTIME_DOWN" not in _all_codes(lines), said
    assert not [c for c in said if c[0] == "runtime_fallback"], said
    failed = [ln for ln in lines if "ERR_BAD_REQUEST" in ln.reason_codes]
    assert [(ln.kind, ln.reason_codes) for ln in failed] == [
        ("degradation", ["ROUTE_FAILED", "ERR_BAD_REQUEST"])
    ] * 3, said
    assert "bad request from vLLM" in failed[0].detail and VLLM_WORDS in failed[0].detail
    closing = [ln.values for ln in lines if "GATEWAY_FAILED" in ln.reason_codes]
    assert [v["status"] for v in closing] == [400, 400, 400], said


async def test_a_cloud_400_on_an_escalation_is_sent_once_asked_once_and_released(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> None:
    fakes = start_fakes(fake_openai_factory, fake_anthropic_factory)
    fakes.deepseek.fail_next("400", path=CLOUD_CHAT, message=DEEPSEEK_WORDS)
    asked = Asked()
    async with (
        cloud_session(tmp_path, monkeypatch, fakes, asked) as session,
        gateway(session) as url,
    ):
        chat = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError) as refused:
            await chat.chat.completions.create(model="implementer+escalate", messages=ASK)
        snap = await session.ledger.snapshot(session.id)
        rested = session.router.health.down()
        first = await lines_of(session)
        # the model was not rested: the next escalation is served by it
        again = await chat.chat.completions.create(
            model="implementer+escalate",
            messages=ASK,
        )
        await chat.close()

    assert refused.value.status_code == 400
    error: Any = refused.value.body
    assert DEEPSEEK_WORDS in error["message"] and "bad request" in error["message"]
    assert asked.models == ["deepseek-chat", "deepseek-chat"]  # no second provider asked
    assert len(fakes.deepseek.requests_to(CLOUD_CHAT, "POST")) == 2  # once per request
    assert fakes.claude.message_requests == []
    assert snap.reserved_usd == 0 and snap.per_session.spent_usd == 0
    assert (snap.calls, snap.failed) == (1, 1)  # released, at $0
    assert rested == {}
    assert again.choices[0].message.content == "From DeepSeek."

    said = codes(first)
    assert not [c for c in said if c[0] == "retry"], said
    skip = [ln for ln in first if ln.kind == "skip" and ln.to == "deepseek-chat"]
    assert [ln.reason_codes for ln in skip] == [
        ["SKIP_FAILED", "ERR_BAD_REQUEST", "ROUTE_FAILED"]
    ], said
    assert skip[0].values["status"] == 400
    assert "bad request from deepseek" in skip[0].detail
    assert said[-1] == ("request", None, ["GATEWAY_FAILED"]), said


@pytest.mark.parametrize("fault", ["429", "500"])
async def test_a_cloud_429_or_5xx_is_retried_and_walks_on_as_before(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
    fault: str,
) -> None:
    """The server's trouble, not the request's: retried by the policy, the model rested,
    the next step asked and served."""
    fakes = start_fakes(fake_openai_factory, fake_anthropic_factory)
    tries = {"429": 3, "500": 2}[fault]  # the policy's retries of each, and the try
    fakes.deepseek.fail_next(fault, tries, path=CLOUD_CHAT, retry_after=0)
    asked = Asked()
    async with (
        cloud_session(tmp_path, monkeypatch, fakes, asked) as session,
        gateway(session) as url,
    ):
        chat = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        served = await chat.chat.completions.create(
            model="implementer+escalate",
            messages=ASK,
        )
        rested = session.router.health.down()
        lines = await lines_of(session)
        await chat.close()

    assert served.choices[0].message.content == "From Claude."
    assert asked.models == ["deepseek-chat", "claude-sonnet-4.6"]
    assert len(fakes.deepseek.requests_to(CLOUD_CHAT, "POST")) == tries
    assert "deepseek-chat" in rested
    kind = {"429": "RATE_LIMITED", "500": "SERVER_ERROR"}[fault]
    said = codes(lines)
    assert ("retry", "deepseek-chat", [f"RETRY_{kind}"]) in said, said
    assert ("skip", "deepseek-chat", ["SKIP_FAILED", f"ERR_{kind}"]) in said, said
