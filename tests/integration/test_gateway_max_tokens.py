"""What a call is charged when the provider does not behave, through the gateway.

A user audit found two:

* a server that ignores ``max_tokens`` (the cloud's or vLLM's) streamed ~3,000 tokens for
  30 s to a client that asked for 5; the ledger said ``STREAM_BROKEN``,
  ``SETTLED_AT_ESTIMATE``, $0.000005, tokens_out 0. The relay now ends such a reply well
  past its cap: ``length`` (Anthropic's ``max_tokens``) for the client, the upstream
  connection closed, the call settled at what was delivered. A stream broken mid-way
  (the server drops it, the client goes away) settles at no less than what it delivered.
* a cloud call that timed out (the provider took the request, held it, was retried,
  held it again) was one ledger row, ``failed``, $0, for both tries, where a cancelled
  call is settled at its estimate. Each try the provider took is now its own row at its
  estimate, with a ``budget`` line; a connection refused costs nothing.

The gateway runs in the test's loop over loopback fakes (:mod:`tests.integration.cloud_kit`:
DeepSeek, Claude, vLLM), the real openai and anthropic SDKs as its clients; the HTTP
client's read timeout is cut to 1 s where the fakes hang. Nothing is timed: the fakes'
records, the audit lines and the ledger's rows are read.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from app.backends.base import ChatRequest, Message
from app.policy.schema import Policy
from app.router.cost import cost_usd
from app.router.ledger import BudgetLedger
from app.router.routed import request_tokens
from app.router.session import Session
from app.tokens import count_text
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration.cloud_kit import (
    Asked,
    Fakes,
    cloud_session,
    codes,
    gateway,
    lines_of,
    start_fakes,
)

ASKED = "plan the fix"
MESSAGES: Any = [{"role": "user", "content": ASKED}]  # (each SDK types its own)
#: what a server that ignores max_tokens goes on with: 3,000 words, a token each
ENDLESS = "word " * 3000
#: the user's request for the Implementer enters the cloud at deepseek-chat
TO_CLOUD = "implementer+escalate"
READ_TIMEOUT_S = 1.0
CHAT = "/chat/completions"  # (DeepSeek's API is at the root)


def _estimate(policy: Policy, model: str, max_tokens: int) -> float:
    """The reservation of one call of ``ASKED`` to ``model`` (decide()'s estimate)."""
    prompt = request_tokens(ChatRequest(messages=[Message(role="user", content=ASKED)]))
    return cost_usd(policy.model(model), prompt, max_tokens)


def _delivered(policy: Policy, model: str, text: str) -> float:
    """What ``text`` delivered in reply to ``ASKED`` costs, counted here."""
    prompt = request_tokens(ChatRequest(messages=[Message(role="user", content=ASKED)]))
    return cost_usd(policy.model(model), prompt, count_text(text))


async def _rows(session: Session, model: str) -> list[dict[str, Any]]:
    """The ledger's rows of ``model``'s calls, in order."""
    ledger = session.router.ledger
    assert isinstance(ledger, BudgetLedger)
    await ledger.flush()
    with sqlite3.connect(ledger.path) as db:
        db.row_factory = sqlite3.Row
        found = db.execute(
            "SELECT outcome, cost_nusd, tokens_in, tokens_out FROM calls WHERE model = ?"
            " ORDER BY id",
            (model,),
        ).fetchall()
    return [dict(r) for r in found]


def _openai(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="anything", max_retries=0)


async def _chat_stream(url: str, model: str, max_tokens: int) -> tuple[str, str, Any]:
    """A streamed chat completion: its text, finish reason and usage."""
    pieces: list[str] = []
    finish, usage = "", None
    async with _openai(url) as client:
        stream = await client.chat.completions.create(
            model=model,
            messages=MESSAGES,
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
            if chunk.usage:
                usage = chunk.usage
    return "".join(pieces), finish, usage


async def _messages_stream(url: str, model: str, max_tokens: int) -> tuple[str, str, int]:
    """A streamed Anthropic message: its text, stop reason and output tokens."""
    client = anthropic.AsyncAnthropic(base_url=url, api_key="anything", max_retries=0)
    async with (
        client,
        client.messages.stream(
            model=model,
            max_tokens=max_tokens,
            messages=MESSAGES,
        ) as stream,
    ):
        async for _ in stream.text_stream:
            pass
        final = await stream.get_final_message()
    text = "".join(b.text for b in final.content if b.type == "text")
    return text, final.stop_reason or "", final.usage.output_tokens


@pytest.fixture
def fakes(
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> Fakes:
    return start_fakes(fake_openai_factory, fake_anthropic_factory)


# ── a server that ignores max_tokens ───────────────────────────────────────────────────


@pytest.mark.parametrize("protocol", ["chat", "messages"])
async def test_a_cloud_server_that_ignores_max_tokens_is_cut_off_and_charged_what_it_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fakes: Fakes, protocol: str
) -> None:
    fakes.deepseek.ignore_max_tokens = True
    fakes.deepseek.script.respond_with(lambda body: ENDLESS)
    fakes.deepseek.event_delay = 0.001  # (3,000 events: seconds, unless cut off)
    async with (
        cloud_session(tmp_path, monkeypatch, fakes, Asked()) as session,
        gateway(session) as url,
    ):
        if protocol == "chat":
            text, finish, usage = await _chat_stream(url, TO_CLOUD, 5)
            assert finish == "length"
            told_out = usage.completion_tokens
        else:
            text, finish, told_out = await _messages_stream(url, TO_CLOUD, 5)
            assert finish == "max_tokens"
        lines = await lines_of(session)
        rows = await _rows(session, "deepseek-chat")
        estimate = _estimate(session.policy, "deepseek-chat", 5)
        delivered = _delivered(session.policy, "deepseek-chat", text)
    # cut off a little past twice the cap, by the shared counter: not 3,000 words
    assert 5 < count_text(text) <= 2 * 5 + 16 + 1, len(text)
    written, had = await fakes.deepseek.stream_ended()
    assert written < had, "the upstream stream was read to its end, not closed"
    (call,) = [ln for ln in lines if ln.kind == "call" and ln.to == "deepseek-chat"]
    assert call.values["finish_reason"] == "length"
    assert call.values["cut_past_max_tokens"] is True
    # settled at what was delivered (the server's usage never came): more than reserved
    assert call.values["tokens_out"] == count_text(text) == told_out
    assert call.values["cost_usd"] == pytest.approx(delivered, abs=1e-9)
    assert delivered > estimate
    assert call.values["over_estimate"] is True
    assert call.values["reserved_usd"] == pytest.approx(estimate, abs=1e-9)
    assert [(r["outcome"], r["tokens_out"]) for r in rows] == [("ok", count_text(text))]
    assert rows[0]["cost_nusd"] == round(delivered * 1e9)


async def test_a_local_server_that_ignores_max_tokens_is_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fakes: Fakes
) -> None:
    """vLLM's fake streams its whole reply past a 5-token cap: ended at the relay, said
    ``length``, and the call line says why (free, as every local call)."""
    fakes.vllm.ignore_max_tokens = True
    fakes.vllm.script.respond_with(lambda body: ENDLESS)
    fakes.vllm.event_delay = 0.001
    async with (
        cloud_session(tmp_path, monkeypatch, fakes, Asked()) as session,
        gateway(session) as url,
    ):
        text, finish, usage = await _chat_stream(url, "implementer", 5)
        lines = await lines_of(session)
    assert finish == "length" and 5 < count_text(text) <= 27
    written, had = await fakes.vllm.stream_ended()
    assert written < had
    (call,) = [ln for ln in lines if ln.kind == "call"]
    assert call.values["cut_past_max_tokens"] is True and call.values["cost_usd"] == 0.0
    assert call.values["tokens_out"] == usage.completion_tokens == count_text(text)
    assert "went on past max_tokens" in call.detail


async def test_a_server_within_its_cap_is_not_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fakes: Fakes
) -> None:
    """A reply that ends by itself at the cap (the fake honours it) is its own: the
    relay's count never ends it first."""
    fakes.deepseek.script.respond_with(lambda body: ENDLESS)
    async with (
        cloud_session(tmp_path, monkeypatch, fakes, Asked()) as session,
        gateway(session) as url,
    ):
        text, finish, usage = await _chat_stream(url, TO_CLOUD, 40)
        lines = await lines_of(session)
    assert finish == "length" and text == "word " * 40
    (call,) = [ln for ln in lines if ln.kind == "call"]
    assert "cut_past_max_tokens" not in call.values
    assert call.values["tokens_out"] == usage.completion_tokens == 40  # (the fake's usage)
    written, had = await fakes.deepseek.stream_ended()
    assert written == had


# ── a stream broken mid-way, after more than its cap was delivered ─────────────────────


@pytest.mark.parametrize("how", ["server_drops", "client_goes"])
async def test_a_stream_broken_after_more_than_its_estimate_is_charged_what_it_delivered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fakes: Fakes, policy: Policy, how: str
) -> None:
    """21 words sent to a client that asked for 5 (under the relay's cut), then the
    server drops the connection, or the client hangs up while the server stalls: settled
    at what was delivered, not the 5-token estimate, and past the reservation said as a
    settlement says it, with the session cap it carried past (GR011)."""
    fakes.deepseek.ignore_max_tokens = True
    fakes.deepseek.script.respond_with(lambda body: ENDLESS)
    words = 21
    if how == "server_drops":
        fakes.deepseek.fail_next("cut_stream", path=CHAT, after=1 + words)
    else:
        fakes.deepseek.fail_next("stall", path=CHAT, after=1 + words, seconds=30)
    # a session cap the reservation fits under and the delivered reply does not
    estimate = _estimate(policy, "deepseek-chat", 5)
    cap = (estimate + _delivered(policy, "deepseek-chat", "word " * (words - 1))) / 2
    got: list[str] = []
    async with (
        cloud_session(
            tmp_path, monkeypatch, fakes, Asked(), budget={"session_usd": cap}
        ) as session,
        gateway(session) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as http,
    ):
        body = {"model": TO_CLOUD, "messages": MESSAGES, "max_tokens": 5, "stream": True}
        async with http.stream("POST", "/v1/chat/completions", json=body) as reply:
            async for line in reply.aiter_lines():
                if '"content":"word ' in line:
                    got.append("word ")
                if how == "client_goes" and len(got) == words - 1:
                    # the server stalls now (the last word it sent may be held back a
                    # moment: it could begin a key, app.router.reply_mask): hang up
                    break
        for _ in range(400):  # a cancelled request's lines are written after the hang-up
            lines = await lines_of(session)
            if any(ln.reason_codes == ["GATEWAY_FAILED"] for ln in lines):
                break
            await asyncio.sleep(0.05)
        rows = await _rows(session, "deepseek-chat")
    # what the server sent, counted as it came: the client saw it, but for the end held
    # back a moment (it could begin a key: app.router.reply_mask) when the stream ended
    assert words - 1 <= len(got) <= words
    sent = next(ln.values["tokens_out"] for ln in lines if ln.kind == "budget")
    assert sent in (count_text("word " * (words - 1)), count_text("word " * words))
    delivered = _delivered(policy, "deepseek-chat", "word " * (sent - 1))
    budget = [ln for ln in lines if ln.kind == "budget"]
    assert [ln.reason_codes for ln in budget] == [
        ["STREAM_BROKEN" if how == "server_drops" else "CALL_CANCELLED", "SETTLED_AT_DELIVERED"],
        ["GR011_CAP_CROSSED"],
    ], codes(lines)
    settled, crossed = budget
    assert settled.values["cost_usd"] == pytest.approx(delivered, abs=1e-9)
    assert settled.values["over_estimate"] is True
    assert settled.values["reserved_usd"] == pytest.approx(estimate, abs=1e-9)
    assert "settled at what was delivered" in settled.detail
    assert [c["cap"] for c in crossed.values["caps"]] == ["session"]
    assert "cost more than its reservation" in crossed.detail
    outcome = "failed" if how == "server_drops" else "cancelled"
    assert [(r["outcome"], r["tokens_out"]) for r in rows] == [(outcome, sent)]
    assert rows[0]["cost_nusd"] == round(delivered * 1e9)


# ── a cloud call that times out ─────────────────────────────────────────────────────────


@pytest.mark.parametrize("fault", ["hang", "stall", "down"])
async def test_each_try_the_provider_took_and_held_past_the_timeout_is_its_own_charge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fakes: Fakes, fault: str
) -> None:
    """``hang``: the provider takes the request and says nothing; ``stall``: it opens the
    stream, sends a word and goes quiet; both past the (1 s) read timeout, then again on
    the policy's one retry. Each try is a ledger row of its own at its estimate (it may
    have been processed and billed), with its line, and the retry was reserved for
    first. ``down``: the connection is refused, nothing was sent: $0."""
    if fault == "down":
        fakes.deepseek.down()
    elif fault == "hang":
        fakes.deepseek.fail_next("hang", 2, path=CHAT)
    else:
        fakes.deepseek.fail_next("stall", 2, path=CHAT, after=2, seconds=5)
    async with (
        cloud_session(
            tmp_path, monkeypatch, fakes, Asked(), read_timeout_s=READ_TIMEOUT_S
        ) as session,
        gateway(session) as url,
    ):
        async with _openai(url) as client:
            reply = await client.chat.completions.create(
                model=TO_CLOUD,
                messages=MESSAGES,
                max_tokens=64,
            )
        lines = await lines_of(session)
        rows = await _rows(session, "deepseek-chat")
        estimate = _estimate(session.policy, "deepseek-chat", 64)
        snap = await session.router.ledger.snapshot(session.id)
    assert reply.choices[0].message.content == "From Claude."  # (the next step served)
    (skip,) = [ln for ln in lines if ln.kind == "skip" and ln.to == "deepseek-chat"]
    budget = [ln for ln in lines if ln.kind == "budget" and ln.to == "deepseek-chat"]
    if fault == "down":
        assert skip.reason_codes == ["SKIP_FAILED", "ERR_CONNECT"]
        assert not budget and "tries_timed_out" not in skip.values
        assert [(r["outcome"], r["cost_nusd"]) for r in rows] == [("failed", 0)]
        return
    assert skip.reason_codes == ["SKIP_FAILED", "ERR_TIMEOUT"]
    assert len(fakes.deepseek.requests_to(CHAT, "POST")) == 2
    assert [ln.reason_codes for ln in budget] == [["CALL_TIMED_OUT", "SETTLED_AT_ESTIMATE"]] * 2
    assert [ln.values["try"] for ln in budget] == [1, 2]
    assert all("the provider may bill what it generated" in ln.detail for ln in budget)
    # the order: the first try's charge, then its retry (reserved for), then the second's
    said = [(ln.kind, ln.reason_codes[0]) for ln in lines if ln.to == "deepseek-chat"]
    at = said.index(("budget", "CALL_TIMED_OUT"))
    assert said[at + 1] == ("retry", "RETRY_TIMEOUT"), said
    assert skip.values["tries_timed_out"] == 2
    assert skip.values["timed_out_cost_usd"] == pytest.approx(2 * estimate, abs=1e-9)
    assert "2 tries timed out after the provider took the request" in skip.detail
    assert [(r["outcome"], r["cost_nusd"]) for r in rows] == [
        ("timeout", round(estimate * 1e9))
    ] * 2
    # the stalled tries had sent a word before the silence: counted, within the estimate
    assert [r["tokens_out"] for r in rows] == [0, 0] if fault == "hang" else [2, 2]
    assert snap.reserved_usd == 0
