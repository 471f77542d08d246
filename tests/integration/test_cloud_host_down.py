"""A cloud host that accepts and never answers is waited on once, not once per model it
serves: after a time-out before any reply, the other models at the same endpoint rest
for the time-out's cooldown, skipped as unhealthy with a skip line naming why, and the
chain moves to another host (its own approval asked) or stays local.

An audit found it: DeepSeek's reasoner waited 120 s, its retry 120 s more, then DeepSeek
chat on the same dead host the same again, then Claude. The retry of a time-out itself
stays: it is the policy's (``[retries.timeout] max_retries = 1``).

The fakes hang (``fail_next("hang")``) and the HTTP client's read timeout is cut to 1 s
here: nothing is timed; the requests each fake received and the audit lines are counted.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from app.backends.base import BackendError, ChatRequest, Message
from app.policy.schema import Policy
from app.router.types import Signals
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration.cloud_kit import (
    Asked,
    cloud_session,
    codes,
    gateway,
    lines_of,
    start_fakes,
)
from tests.integration.test_router_service import ALL_UP, REQ, Resolver, make_router

READ_TIMEOUT_S = 1.0
CHAT = "/chat/completions"  # (DeepSeek's API is at the root)
STUCK = Signals(failed_loops=2)  # the Implementer's stuck loops: deepseek-reasoner first


async def test_a_host_that_never_answers_is_waited_on_for_one_model_only(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> None:
    fakes = start_fakes(fake_openai_factory, fake_anthropic_factory)
    fakes.deepseek.fail_next("hang", 10, path=CHAT)
    asked = Asked()
    request = ChatRequest(messages=[Message(role="user", content="fix it")], max_tokens=64)
    async with cloud_session(
        tmp_path, monkeypatch, fakes, asked, read_timeout_s=READ_TIMEOUT_S
    ) as session:
        result = await session.router.complete("implementer", request, STUCK)
        first = await lines_of(session)
        # within the cooldown, the user's request enters the chain at deepseek-chat: down
        again = await session.router.complete("implementer", request, Signals(user_request=True))
        second = (await lines_of(session))[len(first) :]
    # the reasoner: a try and the policy's one retry; deepseek-chat: never sent
    sent = [r.json["model"] for r in fakes.deepseek.requests_to(CHAT, "POST")]
    assert sent == ["deepseek-reasoner", "deepseek-reasoner"], sent
    assert (result.model, result.text) == ("claude-sonnet-4.6", "From Claude.")
    assert (again.model, again.text) == ("claude-sonnet-4.6", "From Claude.")
    # nobody was asked to approve a model on the dead host; Claude, each time, was
    assert asked.models == ["deepseek-reasoner", "claude-sonnet-4.6", "claude-sonnet-4.6"]
    said = codes(first)
    assert ("retry", "deepseek-reasoner", ["RETRY_TIMEOUT"]) in said, said
    (failed,) = [ln for ln in first if ln.kind == "skip" and ln.to == "deepseek-reasoner"]
    assert failed.reason_codes == ["SKIP_FAILED", "ERR_TIMEOUT"]
    assert failed.values["host_down"] == ["deepseek-chat"]
    assert failed.detail.endswith("; deepseek-chat, on the same host, down too"), failed.detail
    host = fakes.deepseek.base_url.removeprefix("http://")
    for lines in (first, second):
        (down,) = [ln for ln in lines if ln.kind == "skip" and ln.to == "deepseek-chat"]
        assert down.reason_codes[0] == "SKIP_UNHEALTHY", codes(lines)
        assert down.values["detail"] == (
            f"its host {host} did not answer deepseek-reasoner (timed out before any "
            "reply); down for 30s"
        )
        assert down.detail == "deepseek-chat: unhealthy — " + down.values["detail"]
        assert [ln.kind for ln in lines if ln.to == "claude-sonnet-4.6"] == [
            "escalation",
            "approval",
            "call",
        ], codes(lines)
    assert not [ln for ln in second if ln.to == "deepseek-reasoner"]  # (not in this chain)


async def test_the_gateway_waits_on_a_dead_host_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> None:
    """The audit's request, non-streamed, with the stuck-loops signal that enters at the
    reasoner; both cloud hosts hang: one wait for each host, then the local reply."""
    fakes = start_fakes(fake_openai_factory, fake_anthropic_factory)
    fakes.deepseek.fail_next("hang", 10, path=CHAT)
    fakes.claude.fail_next("hang", 10, path="/v1/messages")
    asked = Asked()
    async with (
        cloud_session(
            tmp_path, monkeypatch, fakes, asked, read_timeout_s=READ_TIMEOUT_S
        ) as session,
        gateway(session) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as http,
    ):
        reply = await http.post(
            "/v1/chat/completions",
            json={"model": "implementer+escalate", "messages": [{"role": "user", "content": "x"}]},
            headers={"x-switchyard-signal": "failed_loops=2"},
        )
        lines = await lines_of(session)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-switchyard-escalated"] == "false"
    assert len(fakes.deepseek.requests_to(CHAT, "POST")) == 2
    assert len(fakes.claude.message_requests) == 2
    assert asked.models == ["deepseek-reasoner", "claude-sonnet-4.6"]
    said = codes(lines)
    assert said[0] == ("request", None, ["GATEWAY_REQUEST"]), said
    assert said[-1] == ("request", None, ["GATEWAY_DONE"]), said
    skips = [(to, c[0]) for kind, to, c in said if kind == "skip"]
    assert skips[:4] == [
        ("deepseek-reasoner", "SKIP_FAILED"),
        ("deepseek-chat", "SKIP_UNHEALTHY"),
        ("claude-sonnet-4.6", "SKIP_FAILED"),
        ("gpt-5.1-high", "SKIP_UNAVAILABLE"),
    ], said


# ── what counts as a host that did not answer (in-process backends) ─────────────────────


@pytest.mark.parametrize(
    ("error", "rests"),
    [
        (BackendError("timeout", "no answer", started=False, no_answer=True), True),
        # the host answered, then went quiet mid-reply: the model's trouble, not the host's
        (BackendError("timeout", "quiet mid-stream", started=True), False),
        (BackendError("server_error", "HTTP 503", status=503), False),
        # a host that answers "408" or an error event "timeout_error" answered (a review:
        # each rested every model of the host, its line saying it never answered)
        (BackendError("timeout", "HTTP 408", status=408), False),
        (BackendError("timeout", "timeout_error event", started=False), False),
    ],
    ids=["timeout-before-reply", "timeout-mid-stream", "server-error", "408", "event"],
)
async def test_only_a_timeout_before_any_reply_rests_the_hosts_other_models(
    tmp_path: Path, policy: Policy, error: BackendError, rests: bool
) -> None:
    resolver = Resolver(up=ALL_UP)
    resolver.scripts[("deepseek-reasoner", "cloud")] = [error, error]
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    try:
        result = await router.complete("implementer", REQ, STUCK)
    finally:
        await audit.close()
        await ledger.close()
    assert router.health.is_up("deepseek-chat") is not rests
    served = "claude-sonnet-4.6" if rests else "deepseek-chat"
    assert result.model == served
    assert bool(resolver.sent(("deepseek-chat", "cloud"))) is not rests


async def test_a_model_resting_longer_already_is_not_shortened(
    tmp_path: Path, policy: Policy
) -> None:
    """deepseek-chat's key was refused (an hour's rest): its host's 30 s time-out does
    not bring it back sooner, nor replace why it rests."""
    resolver = Resolver(up=ALL_UP)
    timeout = BackendError("timeout", "no answer", started=False, no_answer=True)
    resolver.scripts[("deepseek-reasoner", "cloud")] = [timeout, timeout]
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    router.health.mark_down("deepseek-chat", 3600.0, "auth: key refused")
    try:
        await router.complete("implementer", REQ, STUCK)
    finally:
        await audit.close()
        await ledger.close()
    assert router.health.reason("deepseek-chat") == "auth: key refused"
    router.clock.advance(60.0)  # type: ignore[attr-defined]
    assert not router.health.is_up("deepseek-chat")
    assert router.health.is_up("deepseek-reasoner")  # (its own 30 s are over)
