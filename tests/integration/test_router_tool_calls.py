"""Tool calls through the router end to end (Router.complete → RoutedResult.tool_calls),
over real SQLite (audit chain, ledger) and the real approvals broker: a scripted
in-process backend, then the real adapters against the loopback fakes (a local vLLM
route and a cloud escalation to Anthropic, whose request leaves masked)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest

from app.audit.log import AuditLog
from app.backends.anthropic_backend import AnthropicBackend
from app.backends.base import (
    Backend,
    ChatRequest,
    ChatResult,
    Delta,
    Health,
    Message,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
)
from app.backends.openai_compat import OpenAICompatBackend
from app.clock import ManualClock
from app.policy.schema import Policy
from app.router.approvals import AllowDecider, ApprovalBroker
from app.router.ledger import BudgetLedger
from app.router.service import Router
from app.router.types import Signals
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.script import Scripted, ScriptedCall

pytest_plugins = ["tests.fakes.fixtures"]

ALL_UP = {"vllm", "llamacpp_server", "llamacpp_inprocess"}
READ = ToolSpec(
    name="read_file",
    parameters={"type": "object", "properties": {"path": {"type": "string"}}},
)
CALLS = [
    ToolCall(id="call_a", name="read_file", arguments='{"path": "a.py"}'),
    ToolCall(id="call_b", name="read_file", arguments='{"path": "b.py"}'),
]


class ToolCallingBackend:
    """Streams a word of text, then two calls in fragments, as an adapter does."""

    def __init__(self, model_id: str, runtime: str) -> None:
        self.model_id, self.runtime = model_id, runtime
        self.requests: list[ChatRequest] = []

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        self.requests.append(request)
        yield Delta(text="Reading.")
        for i, call in enumerate(CALLS):
            yield Delta(tool_calls=[ToolCallDelta(index=i, id=call.id, name=call.name)])
            half = len(call.arguments) // 2
            for piece in (call.arguments[:half], call.arguments[half:]):
                yield Delta(tool_calls=[ToolCallDelta(index=i, arguments=piece)])
        yield ChatResult(
            text="Reading.",
            tool_calls=CALLS,
            usage=Usage(tokens_in=100, tokens_out=20),
            finish_reason="tool_calls",
            model=self.model_id,
        )

    async def health(self) -> Health:
        return Health(ok=True)

    async def context_window(self) -> int | None:
        return None

    async def aclose(self) -> None:
        return None


class Resolver:
    """Backends by (model, runtime): given ones first, else a ToolCallingBackend."""

    def __init__(self, given: dict[tuple[str, str], Backend] | None = None) -> None:
        self.given = given or {}
        self.made: dict[tuple[str, str], Backend] = {}

    def backend(self, model_id: str, runtime: str) -> Backend:
        key = (model_id, runtime)
        if key not in self.made:
            self.made[key] = self.given.get(key) or ToolCallingBackend(model_id, runtime)
        return self.made[key]

    def unavailable(self) -> dict[str, str]:
        return {}

    async def runtime_up(self, runtime: str) -> bool:
        return runtime in ALL_UP

    def context_windows(self) -> dict[str, int]:
        return {"smollm2-135m": 8192}

    def not_served(self) -> dict[str, bool]:
        return {}


@pytest.fixture
async def router(tmp_path: Path, policy: Policy) -> AsyncIterator[tuple[Router, Resolver]]:
    clock = ManualClock()
    audit = await AuditLog.open(tmp_path / "audit.db", clock=clock, policy_version=policy.version)
    ledger = await BudgetLedger.open(tmp_path / "ledger.db", policy.budget, clock=clock)
    broker = ApprovalBroker(AllowDecider(), audit=audit, timeout_s=5, clock=clock)  # type: ignore[arg-type]
    resolver = Resolver()

    async def no_sleep(_: float) -> None:
        return None

    yield (
        Router(
            policy,
            session="s1",
            audit=audit,
            ledger=ledger,
            approvals=broker,
            backends=resolver,
            clock=clock,
            sleep=no_sleep,
        ),
        resolver,
    )
    await audit.close()
    await ledger.close()


def asked(*messages: Message) -> ChatRequest:
    history = list(messages) or [Message(role="user", content="look at a.py and b.py")]
    return ChatRequest(messages=history, tools=[READ], tool_choice="auto", max_tokens=64)


async def test_calls_reach_the_routed_result_and_the_audit(
    router: tuple[Router, Resolver], policy: Policy
) -> None:
    service, resolver = router
    seen: list[Delta] = []

    async def on_delta(delta: Delta) -> None:
        seen.append(delta)

    result = await service.complete("implementer", asked(), on_delta=on_delta)
    assert result.tool_calls == CALLS
    assert result.finish_reason == "tool_calls" and result.text == "Reading."
    # the fragments are forwarded in order, as they came
    fragments = [f for d in seen for f in d.tool_calls]
    assert [(f.index, f.name) for f in fragments if f.name] == [(0, "read_file"), (1, "read_file")]
    for i, call in enumerate(CALLS):
        assert "".join(f.arguments for f in fragments if f.index == i) == call.arguments
    (backend,) = resolver.made.values()
    assert isinstance(backend, ToolCallingBackend)
    assert backend.requests[0].tools == [READ] and backend.requests[0].tool_choice == "auto"
    call_line = result.audit[-1]
    assert call_line.kind == "call" and call_line.values["tool_calls"] == 2


async def test_a_local_vllm_route_with_tools_end_to_end(
    router: tuple[Router, Resolver],
    policy: Policy,
    fake_vllm: FakeOpenAIServer,
    loopback_client: httpx.AsyncClient,
) -> None:
    service, resolver = router
    model = policy.roles["implementer"].default
    resolver.given[(model, "vllm")] = OpenAICompatBackend(
        model_id=model,
        served_name=fake_vllm.models[0],
        runtime="vllm",
        flavor="vllm",
        base_url=fake_vllm.base_url,
        api_key=None,
        client=loopback_client,
    )
    fake_vllm.script.queue(
        Scripted("Let me look.", tool_calls=(ScriptedCall("read_file", {"path": "a.py"}),))
    )
    result = await service.complete("implementer", asked())
    assert (result.model, result.runtime) == (model, "vllm")
    assert result.text == "Let me look." and result.finish_reason == "tool_calls"
    (call,) = result.tool_calls
    assert (call.name, json.loads(call.arguments)) == ("read_file", {"path": "a.py"})
    body = fake_vllm.chat_requests[-1]
    assert [t["function"]["name"] for t in body["tools"]] == ["read_file"]
    assert body["tool_choice"] == "auto"


async def test_a_cloud_escalation_sends_calls_and_results_masked(
    router: tuple[Router, Resolver],
    fake_anthropic: FakeAnthropicServer,
    loopback_client2: httpx2.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "tok-9f8e7d6c5b4a39281706"
    monkeypatch.setenv("DEPLOY_TOKEN", secret)
    service, resolver = router
    resolver.given[("claude-haiku-4.5", "cloud")] = AnthropicBackend(
        model_id="claude-haiku-4.5",
        served_name="claude-haiku-4-5",
        base_url=fake_anthropic.base_url,
        api_key="sk-ant-test-key",
        key_env="ANTHROPIC_API_KEY",
        client=loopback_client2,
    )
    fake_anthropic.script.queue(
        Scripted("", tool_calls=(ScriptedCall("read_file", {"path": "deploy.env"}),))
    )
    earlier = ToolCall(id="toolu_1", name="read_file", arguments=json.dumps({"path": secret}))
    request = asked(
        Message(role="user", content="why does the deploy fail?"),
        Message(role="assistant", tool_calls=[earlier]),
        Message(role="tool", tool_call_id="toolu_1", content=f"TOKEN={secret}"),
    )
    result: Any = await service.complete("tutor", request, Signals(user_request=True))
    assert result.escalated and result.model == "claude-haiku-4.5"
    assert [c.name for c in result.tool_calls] == ["read_file"]
    assert result.tool_calls[0].id.startswith("toolu_01")
    assert result.finish_reason == "tool_calls"
    sent = json.dumps(fake_anthropic.message_requests[-1])
    assert secret not in sent and "[REDACTED]" in sent
    turns = fake_anthropic.message_requests[-1]["messages"]
    assert turns[1]["content"][0]["input"] == {"path": "[REDACTED]"}
    assert turns[2]["content"][0]["tool_use_id"] == "toolu_1"


def test_reasoning_sent_back_is_masked_like_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    # DeepSeek and Kimi get an assistant turn's reasoning back (reasoning_content)
    from app.router.calling import mask_request

    secret = "tok-0a1b2c3d4e5f60718293"
    monkeypatch.setenv("DEPLOY_TOKEN", secret)
    turn = Message(role="assistant", reasoning=f"the token is {secret}", tool_calls=CALLS)
    masked, count = mask_request(asked(Message(role="user", content="go"), turn))
    assert count == 1 and masked.messages[1].reasoning == "the token is [REDACTED]"
