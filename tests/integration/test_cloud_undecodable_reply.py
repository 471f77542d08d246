"""A cloud provider that answers bytes no decoder reads (not UTF-8) gets what a stream of
JSON garbage gets: ``bad_output``, retried once, the step skipped, the chain walked down
and the request served locally, every move audited; through the router and through the
gateway.

An audit found it: the fake answered every POST ``200 text/event-stream`` with
``data: \\xff\\xfe\\x00garbage``; the SDKs' SSE decoders raised UnicodeDecodeError past
the backend, the gateway answered a bare 500, the audit had no ``call`` line and no
closing line, and neither the next cloud step nor the local fallback was tried.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from app.audit.types import AuditLine
from app.backends.base import ChatRequest, Message
from app.router.types import Signals
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.server import LoopbackServer, Reply, Request
from tests.integration.cloud_kit import (
    LOCAL_REPLY,
    Asked,
    cloud_session,
    codes,
    gateway,
    lines_of,
    start_fakes,
)

#: what the audit's fake answered
AUDIT_BYTES = b"data: \xff\xfe\x00garbage\n\n"
#: the Implementer's chain from the user's request: DeepSeek chat, Claude Sonnet, then
#: GPT-5.1 High (no key here)
CLOUD_STEPS = ["deepseek-chat", "claude-sonnet-4.6"]


def garbage_on_every_post(server: LoopbackServer) -> None:
    """Every POST answered as the audit's fake answered it; a GET as before."""
    original = server.handle

    async def handle(request: Request) -> Reply:
        if request.method == "POST":
            return Reply.sse([AUDIT_BYTES])
        return await original(request)

    server.handle = handle  # type: ignore[method-assign]


def bad_output_steps(lines: list[AuditLine]) -> None:
    """Each cloud step: asked, retried once as a server's fault, then skipped as
    bad_output; no call ended in an error the budget had to settle."""
    said = codes(lines)
    for model in CLOUD_STEPS:
        assert ("escalation", model) in [(k, to) for k, to, _ in said], said
        assert ("approval", model) in [(k, to) for k, to, _ in said], said
        assert ("retry", model, ["RETRY_BAD_OUTPUT"]) in said, said
        assert ("skip", model, ["SKIP_FAILED", "ERR_BAD_OUTPUT"]) in said, said
    assert not [c for c in said if c[0] == "budget"], said  # (CALL_ERROR: settled at estimate)
    assert not [c for c in said if c[0] == "call" and c[1] in CLOUD_STEPS], said


async def test_the_router_walks_past_undecodable_replies_to_the_local_model(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> None:
    fakes = start_fakes(fake_openai_factory, fake_anthropic_factory)
    garbage_on_every_post(fakes.deepseek)
    garbage_on_every_post(fakes.claude)
    asked = Asked()
    request = ChatRequest(messages=[Message(role="user", content="fix it")], max_tokens=64)
    async with cloud_session(tmp_path, monkeypatch, fakes, asked) as session:
        result = await session.router.complete("implementer", request, Signals(user_request=True))
        lines = await lines_of(session)
    assert result.text == LOCAL_REPLY and not result.escalated
    assert "deepseek-chat: bad_output" in result.passed_over
    assert asked.models == CLOUD_STEPS  # each step its own approval
    assert len(fakes.deepseek.requests_to("/chat/completions", "POST")) == 2  # a try, a retry
    assert len(fakes.claude.message_requests) == 2
    assert len(fakes.vllm.chat_requests) == 1
    bad_output_steps(lines)
    said = codes(lines)
    unavailable = [c for c in said if c[:2] == ("skip", "gpt-5.1-high")]
    assert unavailable and "SKIP_UNAVAILABLE" in unavailable[0][2], "\n".join(map(str, said))
    assert said[-1][:2] == ("call", "qwen2.5-coder-32b@vllm"), said


async def test_the_gateway_serves_locally_after_undecodable_cloud_replies(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> None:
    """Both protocols, whole and streamed: a 200 in the protocol's shape with the local
    reply, and each request's audit complete, from its GATEWAY_REQUEST line to its
    GATEWAY_DONE."""
    fakes = start_fakes(fake_openai_factory, fake_anthropic_factory)
    garbage_on_every_post(fakes.deepseek)
    garbage_on_every_post(fakes.claude)
    asked = Asked()
    ask = [{"role": "user", "content": "fix it"}]
    async with (
        cloud_session(tmp_path, monkeypatch, fakes, asked) as session,
        gateway(session) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as http,
    ):
        whole = await http.post(
            "/v1/chat/completions", json={"model": "implementer+escalate", "messages": ask}
        )
        assert whole.status_code == 200, whole.text
        assert whole.json()["choices"][0]["message"]["content"] == LOCAL_REPLY
        body = {"model": "implementer+escalate", "max_tokens": 64, "messages": ask, "stream": True}
        async with http.stream("POST", "/v1/messages", json=body) as streamed:
            assert streamed.status_code == 200
            events = [
                json.loads(line[6:])
                async for line in streamed.aiter_lines()
                if line.startswith("data: ")
            ]
        lines = await lines_of(session)
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert text == LOCAL_REPLY and events[-1]["type"] == "message_stop", events
    assert asked.models == CLOUD_STEPS * 2
    requests = {ln.run for ln in lines if ln.kind == "request"}
    assert len(requests) == 2
    for run in requests:
        mine = [ln for ln in lines if ln.run == run]
        said = codes(mine)
        assert said[0] == ("request", None, ["GATEWAY_REQUEST"]), said
        assert said[-1] == ("request", None, ["GATEWAY_DONE"]), said
        bad_output_steps(mine)
        assert ("route", "qwen2.5-coder-32b@vllm") in [(k, to) for k, to, _ in said], said
