"""Several endpoints per local runtime: three loopback vLLM fakes behind one runtime, one
killed in the middle of the run. Requests spread across the healthy ones, move off the
dead one with an audit line (before the next endpoint is tried), and none goes to the
cloud because of it, though every cloud provider is reachable, keyed and approved."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from app.backends.base import BackendError, ChatRequest, ChatResult, Delta, Health, Message
from app.backends.pool import EndpointPool, PooledBackend
from app.clock import ManualClock
from app.config import load_settings
from app.policy import load_policy
from app.router.session import open_session
from app.router.types import Signals
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policy import policy_pointing
from tests.reliability.kit import LOCAL_MODELS, closed_port

#: every cloud provider of the policy, pointed at a fake (Anthropic's as an OpenAI-style
#: one: what matters is that no request arrives, whatever its shape)
CLOUD = {"openai": "openai", "anthropic": "openai", "deepseek": "deepseek", "moonshot": "moonshot"}


def _policy_with_endpoints(path: Path, urls: list[str]) -> Path:
    text = path.read_text(encoding="utf-8")
    old = 'base_url = "http://127.0.0.1:8000/v1"'
    assert old in text
    listed = ", ".join(f'"{u}"' for u in urls[1:])
    text = text.replace(old, f'base_url = "{urls[0]}"\nbase_urls = [{listed}]', 1)
    path.write_text(text, encoding="utf-8")
    return path


async def test_a_killed_endpoint_moves_requests_to_the_others_never_to_the_cloud(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
) -> None:
    boxes = [fake_openai_factory("vllm", models=LOCAL_MODELS, default_reply="ok") for _ in range(3)]
    cloud = {name: fake_openai_factory(flavor) for name, flavor in CLOUD.items()}
    for name in CLOUD:
        monkeypatch.setenv(f"{name.upper()}_API_KEY", "sk-test-key")
    path = policy_pointing(tmp_path, **{n: s.base_url for n, s in cloud.items()})
    policy = load_policy(_policy_with_endpoints(path, [b.base_url for b in boxes])).policy
    assert policy.runtimes["vllm"].urls == [b.base_url for b in boxes]
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    settings = load_settings()

    async def ask(session: object, i: int) -> tuple[str, str]:
        result = await session.router.complete(  # type: ignore[attr-defined]
            "architect",
            ChatRequest(messages=[Message(role="user", content=f"plan step {i}")]),
            Signals(),
        )
        return result.runtime, result.text

    async with open_session(settings, policy, approve="allow") as session:
        first = await asyncio.gather(*(ask(session, i) for i in range(12)))
        served_before = [len(b.chat_requests) for b in boxes]
        boxes[1].stop()  # one GPU box dies in the middle of the run
        second = await asyncio.gather(*(ask(session, i) for i in range(12, 30)))
        lines = await session.audit.lines(session=session.id)

    assert [r for r, _ in first + second] == ["vllm"] * 30  # every request served locally
    assert all(n > 0 for n in served_before), served_before  # spread across all three
    after = [len(b.chat_requests) - n for b, n in zip(boxes, served_before, strict=True)]
    assert after[1] == 0 and after[0] > 0 and after[2] > 0
    assert sum(after) == 18
    down = [line for line in lines if "ENDPOINT_DOWN" in line.reason_codes]
    assert down and all(line.values["endpoint"] == boxes[1].base_url for line in down)
    assert down[0].values["endpoints_up"] == 2 and down[0].kind == "degradation"
    # the runtime itself never went down, nothing escalated, no cloud fake saw a request
    assert not [line for line in lines if "RUNTIME_DOWN" in line.reason_codes]
    assert not [line for line in lines if line.kind in ("escalation", "runtime_fallback")]
    assert [s.requests for s in cloud.values()] == [[], [], [], []]


def test_the_pool_picks_the_least_busy_healthy_endpoint_in_turn() -> None:
    clock = ManualClock()
    pool = EndpointPool("vllm", ["a", "b", "c"], clock, cooldown_s=30)
    picks = [pool.pick() for _ in range(6)]
    assert sorted(picks) == ["a", "a", "b", "b", "c", "c"]  # ties go round
    pool.begin("a")
    pool.begin("b")
    assert pool.pick() == "c"  # the least in flight
    pool.mark_down("c")
    assert pool.pick() in ("a", "b") and pool.healthy() == ["a", "b"]
    assert pool.pick({"a", "b"}) is None
    clock.advance(31)
    assert pool.pick() == "c"  # back after its cooldown


def test_the_loader_checks_every_endpoint(tmp_path: Path) -> None:
    from app.errors import PolicyError

    path = policy_pointing(tmp_path)
    _policy_with_endpoints(path, ["http://127.0.0.1:8000/v1", "https://api.openai.com/v1"])
    with pytest.raises(PolicyError, match=r"base_urls.*cloud provider's host"):
        load_policy(path)


class _Refusing:
    """An endpoint's backend that refuses every request as invalid (vLLM's 400)."""

    model_id, runtime = "qwen3-14b", "vllm"

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        self.calls += 1
        raise BackendError("bad_request", "qwen3-14b (vllm): HTTP 400: invalid schema", status=400)
        yield Delta()  # (an async generator)

    async def health(self) -> Health:
        return Health(ok=True)

    async def context_window(self) -> int | None:
        return None

    async def aclose(self) -> None:
        return None


async def test_a_request_an_endpoint_refuses_as_invalid_marks_nothing_down_nor_moves() -> None:
    """The request, not the endpoint: the next endpoint would refuse it too, and a box
    marked down for it would take every other request's share off it."""
    pool = EndpointPool("vllm", ["a", "b"], ManualClock(), cooldown_s=30)
    endpoints = {"a": _Refusing(), "b": _Refusing()}
    said: list[str] = []

    async def on_down(url: str, exc: BackendError, left: int) -> None:
        said.append(url)

    pooled = PooledBackend(pool, endpoints, on_down)
    with pytest.raises(BackendError) as refused:
        async for _ in pooled.stream(ChatRequest(messages=[Message(role="user", content="x")])):
            pass
    assert refused.value.kind == "bad_request"
    assert sum(e.calls for e in endpoints.values()) == 1  # sent once, to one endpoint
    assert pool.healthy() == ["a", "b"] and said == []
