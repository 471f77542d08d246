"""A session over loopback fakes for the cloud path's fault tests, and the gateway on it.

The shipped policy is pointed at a DeepSeek fake and an Anthropic fake (OpenAI has no
key: its steps are skipped as unavailable), vLLM's fake serves the local roles, the
llama.cpp server's port is closed. Approvals are allowed, one at a time, and each one
asked is recorded. The gateway runs on uvicorn in the test's own loop, so a test may
shorten the HTTP client's timeouts with ``monkeypatch`` (production: 120 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from app.audit.types import AuditLine
from app.backends.machine import free_port
from app.config import load_settings
from app.gateway.app import GatewayConfig
from app.gateway.server import serve
from app.policy import load_policy
from app.router.approvals import ApprovalDecision, ApprovalRequest
from app.router.session import Session, open_session
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policy import policy_pointing
from tests.ports import closed_port
from tests.reliability.kit import LOCAL_MODELS

LOCAL_REPLY = "Served on this machine."


@dataclass
class Fakes:
    vllm: FakeOpenAIServer
    deepseek: FakeOpenAIServer
    claude: FakeAnthropicServer


def start_fakes(
    openai_factory: Callable[..., FakeOpenAIServer],
    anthropic_factory: Callable[..., FakeAnthropicServer],
) -> Fakes:
    return Fakes(
        vllm=openai_factory("vllm", models=LOCAL_MODELS, default_reply=LOCAL_REPLY),
        deepseek=openai_factory("deepseek", default_reply="From DeepSeek."),
        claude=anthropic_factory(default_reply="From Claude."),
    )


@dataclass
class Asked:
    """Allows every escalation once, and keeps which model each approval was asked for."""

    models: list[str] = field(default_factory=list)
    name: str = "test:allow"

    async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
        self.models.append(req.model)
        return ApprovalDecision(decision="allow_once", decided_by=self.name, reason="test")


@contextlib.asynccontextmanager
async def cloud_session(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fakes: Fakes,
    asked: Asked,
    *,
    read_timeout_s: float | None = None,
    budget: dict[str, Any] | None = None,
) -> AsyncIterator[Session]:
    """A session whose cloud is the fakes; ``read_timeout_s``: the HTTP client's;
    ``budget``: the policy's ``[budget]`` fields to replace (``session_usd=…``)."""
    if read_timeout_s is not None:
        import app.backends.http as http

        # the registry imports the factory when it first makes its client
        monkeypatch.setattr(
            http,
            "make_async_client_httpx2",
            functools.partial(
                http.make_async_client_httpx2,
                timeout=httpx2.Timeout(read_timeout_s, connect=1.0),
            ),
        )
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", fakes.vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-cloud-kit-deepseek-0123456789")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-cloud-kit-0123456789")
    pointed = policy_pointing(
        tmp_path, deepseek=fakes.deepseek.base_url, anthropic=fakes.claude.base_url
    )
    policy = load_policy(pointed).policy
    if budget:
        policy = policy.model_copy(update={"budget": policy.budget.model_copy(update=budget)})
    async with open_session(load_settings(), policy, decider=asked) as session:
        yield session


@contextlib.asynccontextmanager
async def gateway(session: Session) -> AsyncIterator[str]:
    """``switchyard serve`` on ``session``, on loopback; its base URL."""
    port = free_port()
    server = asyncio.create_task(
        serve(session, host="127.0.0.1", port=port, config=GatewayConfig())
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def lines_of(session: Session, **where: Any) -> list[AuditLine]:
    """The session's audit lines (the chain verified), those whose fields are ``where``."""
    assert (await session.audit.verify()).ok
    lines = await session.audit.lines()
    return [ln for ln in lines if all(getattr(ln, k) == v for k, v in where.items())]


def codes(lines: list[AuditLine]) -> list[tuple[str, str | None, list[str]]]:
    """(kind, to, reason codes) of each line: what a failed assertion shows."""
    return [(ln.kind, ln.to, ln.reason_codes) for ln in lines]
