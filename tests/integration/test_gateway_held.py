"""A request held for an approval stays alive: the gateway sends the protocol's own
keep-alive (an SSE comment for OpenAI, an Anthropic ``ping`` event) until the human
decides, then streams the reply. The gateway runs in this test's event loop on uvicorn,
with a decider that takes its time; loopback fakes behind it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.backends.machine import free_port
from app.config import load_settings
from app.gateway.app import GatewayConfig
from app.gateway.server import serve
from app.policy import load_policy
from app.router.approvals import ApprovalDecision, ApprovalRequest
from app.router.session import open_session
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policy import policy_pointing
from tests.reliability.kit import LOCAL_MODELS, closed_port


class SlowDecider:
    """Decides after ``seconds`` (a human reading the modal)."""

    name = "test:slow"

    def __init__(self, seconds: float, decision: str) -> None:
        self.seconds = seconds
        self.decision = decision

    async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
        await asyncio.sleep(self.seconds)
        return ApprovalDecision(decision=self.decision, decided_by=self.name, reason="test")  # type: ignore[arg-type]


async def _listening(port: int) -> None:
    """Until the gateway accepts connections on ``port``."""
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return
        except OSError:
            await asyncio.sleep(0.05)


def _held_policy(
    tmp_path: Path,
    monkeypatch: Any,
    cloud: FakeOpenAIServer,
    vllm: FakeOpenAIServer,
    claude: FakeAnthropicServer,
    *,
    keepalive_s: float,
) -> Any:
    """The environment pointed at the fakes, and the policy with this keep-alive."""
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-held-test-0123456789abcdef")
    policy = load_policy(
        policy_pointing(tmp_path, openai=cloud.base_url, anthropic=claude.url)
    ).policy
    return policy.model_copy(
        update={"gateway": policy.gateway.model_copy(update={"keepalive_s": keepalive_s})}
    )


async def _held(
    tmp_path: Path,
    monkeypatch: Any,
    cloud: FakeOpenAIServer,
    vllm: FakeOpenAIServer,
    claude: FakeAnthropicServer,
    decision: str,
    path: str,
    body: dict[str, Any],
) -> list[str]:
    policy = _held_policy(tmp_path, monkeypatch, cloud, vllm, claude, keepalive_s=0.2)
    port = free_port()
    lines: list[str] = []
    async with open_session(load_settings(), policy, decider=SlowDecider(1.2, decision)) as session:
        server = asyncio.create_task(
            serve(session, host="127.0.0.1", port=port, config=GatewayConfig())
        )
        try:
            await _listening(port)
            async with (
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
                client.stream("POST", path, json=body) as resp,
            ):
                assert resp.status_code == 200
                async for line in resp.aiter_lines():
                    if line:
                        lines.append(line)
        finally:
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)
    return lines


async def test_an_openai_stream_held_for_approval_gets_keepalives_then_the_cloud_reply(
    tmp_path: Path,
    monkeypatch: Any,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> None:
    cloud = fake_openai_factory("openai", default_reply="from the cloud")
    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS, default_reply="from vLLM")
    body = {
        "model": "architect+escalate",
        "stream": True,
        "messages": [{"role": "user", "content": "plan"}],
    }
    lines = await _held(
        tmp_path, monkeypatch, cloud, vllm, fake_anthropic_factory(), "allow_once",
        "/v1/chat/completions", body,
    )  # fmt: skip
    first_data = next(i for i, ln in enumerate(lines) if ln.startswith("data:"))
    keepalives = [ln for ln in lines[:first_data] if ln.startswith(": keep-alive")]
    assert len(keepalives) >= 3  # ~1.2 s held, one every 0.2 s
    chunks = [json.loads(ln[6:]) for ln in lines if ln.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "from the cloud" and len(cloud.chat_requests) == 1
    assert lines[-1] == "data: [DONE]"
    assert vllm.chat_requests == []


async def test_an_anthropic_stream_held_and_denied_pings_then_is_served_locally(
    tmp_path: Path,
    monkeypatch: Any,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> None:
    cloud = fake_openai_factory("openai", default_reply="from the cloud")
    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS, default_reply="from vLLM")
    body = {
        "model": "architect+escalate",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "plan"}],
    }
    lines = await _held(
        tmp_path, monkeypatch, cloud, vllm, fake_anthropic_factory(), "deny_all",
        "/v1/messages", body,
    )  # fmt: skip
    events = [ln.removeprefix("event: ") for ln in lines if ln.startswith("event:")]
    assert events[0] == "message_start"
    pings = events[1 : events.index("content_block_start")]
    assert len(pings) >= 3 and set(pings) == {"ping"}
    assert events[-1] == "message_stop"
    assert cloud.chat_requests == [] and vllm.chat_requests


async def test_a_stream_that_fails_after_it_started_says_so_inside_the_stream(
    tmp_path: Path,
    monkeypatch: Any,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> None:
    """Held for an approval, the stream has started (keep-alives, status 200) when the
    prompt turns out too long for the cloud, vLLM and the embedded model: the failure is
    an error event in the stream, with the same code a 400 before the start would carry."""
    cloud = fake_openai_factory("openai", default_reply="from the cloud")
    cloud.fail_next("context_length", 1, path="/v1/chat/completions")
    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS, default_reply="from vLLM")
    vllm.fail_next("context_length", 1, path="/v1/chat/completions")
    body = {
        "model": "architect+escalate",
        "stream": True,
        "messages": [{"role": "user", "content": "tokens " * 9_000}],
    }
    lines = await _held(
        tmp_path, monkeypatch, cloud, vllm, fake_anthropic_factory(), "allow_once",
        "/v1/chat/completions", body,
    )  # fmt: skip
    assert lines[0].startswith(": keep-alive")
    data = [json.loads(ln[6:]) for ln in lines if ln.startswith("data: {")]
    assert data[-1]["error"]["code"] == "context_length_exceeded", data[-1]
    assert "prompt is too long" in data[-1]["error"]["message"]
    assert lines[-1] == "data: [DONE]"
    assert len(cloud.chat_requests) == 1 and len(vllm.chat_requests) == 1


class HeldDecider:
    """Holds the approval until released, then allows it: a human who says "y" late."""

    name = "test:held"

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.withdrawn = asyncio.Event()
        self.release = asyncio.Event()

    async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
        self.asked.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.withdrawn.set()
            raise
        return ApprovalDecision(decision="allow_once", decided_by=self.name, reason="test")


ASKED = [{"role": "user", "content": "plan"}]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "architect+escalate", "messages": ASKED}),
        ("/v1/responses", {"model": "architect+escalate", "input": "plan"}),
        ("/v1/messages", {"model": "architect+escalate", "max_tokens": 100, "messages": ASKED}),
    ],
)
async def test_a_stream_whose_client_hangs_up_while_held_withdraws_its_approval(
    tmp_path: Path,
    monkeypatch: Any,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
    path: str,
    body: dict[str, Any],
) -> None:
    """Before its first event a stream has written nothing, so no failed write tells that
    its client left: the approval stayed asked until the first keep-alive, and a "y" in
    that time sent the request to the cloud, billed, for nobody. The disconnect is
    watched, as for a whole reply: the approval is withdrawn at once."""
    cloud = fake_openai_factory("openai", default_reply="from the cloud")
    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS, default_reply="from vLLM")
    claude = fake_anthropic_factory()
    # no keep-alive within the test: only the disconnect can end the wait
    policy = _held_policy(tmp_path, monkeypatch, cloud, vllm, claude, keepalive_s=120.0)
    port = free_port()
    decider = HeldDecider()
    async with open_session(load_settings(), policy, decider=decider) as session:
        server = asyncio.create_task(
            serve(session, host="127.0.0.1", port=port, config=GatewayConfig())
        )
        try:
            await _listening(port)
            payload = json.dumps({**body, "stream": True}).encode()
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            await asyncio.wait_for(decider.asked.wait(), 30)  # (a guard against a hang)
            writer.close()  # the agent is stopped while its request is held
            await writer.wait_closed()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(decider.withdrawn.wait(), 15)
            decider.release.set()  # a "y" late: it must reach nobody
            closing: list[Any] = []
            for _ in range(600):  # (until the request's closing line, bounded)
                lines = await session.audit.lines(session=session.id)
                closing = [
                    ln
                    for ln in lines
                    if ln.kind == "request" and ln.reason_codes != ["GATEWAY_REQUEST"]
                ]
                if closing:
                    break
                await asyncio.sleep(0.05)
        finally:
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)
        lines = await session.audit.lines(session=session.id)
    assert cloud.chat_requests == [] and vllm.chat_requests == []
    assert decider.withdrawn.is_set()
    (denial,) = [ln for ln in lines if ln.kind in ("approval", "denial")]
    assert (denial.kind, denial.reason_codes) == ("denial", ["APPROVAL_CANCELLED"])
    assert denial.provenance["approver"] == "cancelled"
    assert [(ln.values["status"], ln.values["outcome"]) for ln in closing] == [
        (499, "client went away")
    ]
