"""Prompt-cache usage, end to end: a provider's cache reads (and Anthropic's cache writes)
are charged at the catalog's cache prices, recorded in the ``call`` line and the ledger,
and told to the client in its own protocol's fields, whichever protocol the provider spoke.

A user's audit found it: Anthropic reported ``input_tokens: 10`` beside
``cache_read_input_tokens: 100000``; the ledger charged 100010 tokens at the input price
(``$0.100045`` where Haiku bills ``$0.010045``) and the client was told
``input_tokens: 100010`` with no cache field. DeepSeek's ``prompt_cache_hit_tokens`` were
charged at the cache-miss price alike. Claude Code's traffic is mostly cache reads: it hit
the caps about ten times too early.

The gateway runs in the test's loop on a session over the loopback fakes
(:mod:`tests.integration.cloud_kit`); the clients are the real openai and anthropic SDKs.
Each charge is held to the figure worked out by hand from the shipped catalog's prices.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

from app.router.session import Session
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration.cloud_kit import Asked, Fakes, cloud_session, gateway, lines_of, start_fakes

ASK: list[MessageParam] = [{"role": "user", "content": "explain closures"}]
CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "explain closures"}]
#: what the audit's Anthropic fake said: 10 tokens past the cache, 100000 read from it
CLAUDE_CACHED = {"input_tokens": 10, "cache_read_input_tokens": 100000, "output_tokens": 7}
#: Haiku 4.5 by hand: 10 × $1 + 100000 × $0.10 + 7 × $5 per million tokens
HAIKU_USD = (10 * 1.0 + 100000 * 0.10 + 7 * 5.0) / 1e6
#: DeepSeek's own dialect: 100000 of the prompt's 100010 tokens hit its cache
DEEPSEEK_CACHED = {
    "prompt_tokens": 100010,
    "completion_tokens": 5,
    "total_tokens": 100015,
    "prompt_cache_hit_tokens": 100000,
    "prompt_cache_miss_tokens": 10,
}
#: DeepSeek V3.2 by hand: 10 × $0.28 (miss) + 100000 × $0.028 (hit) + 5 × $0.42
DEEPSEEK_USD = (10 * 0.28 + 100000 * 0.028 + 5 * 0.42) / 1e6


@pytest.fixture
def fakes(
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> Fakes:
    return start_fakes(fake_openai_factory, fake_anthropic_factory)


def _anthropic(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key="anything", max_retries=0)


def _openai(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="anything", max_retries=0)


async def _calls(session: Session, to: str) -> list[dict[str, Any]]:
    """The values of the session's ``call`` lines to ``to``, each with its detail."""
    lines = await lines_of(session, kind="call")
    return [{**ln.values, "detail": ln.detail} for ln in lines if ln.to == to]


async def _spent(session: Session) -> dict[str, Any]:
    """The ledger's totals for the session, as ``switchyard budget --json`` says them."""
    report = await session.router.ledger.report(session.id)
    total: dict[str, Any] = report["total"]
    return total


# ── Anthropic's cache reads ──────────────────────────────────────────────────────────────


@pytest.mark.parametrize("cumulative_delta", [False, True])
async def test_an_anthropic_cache_read_is_charged_at_the_cache_price_and_told_to_the_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fakes: Fakes, cumulative_delta: bool
) -> None:
    """The audit's reply, to an Anthropic client: the charge is Haiku's cache-read price,
    the client sees the three parts of its prompt (whole and streamed), the call line and
    the ledger say 100010 in, 100000 of them cached. ``cumulative_delta``: the fake's
    ``message_delta`` says the input's usage again, as the API lately does."""
    fakes.claude.usage_override = CLAUDE_CACHED
    fakes.claude.cumulative_delta = cumulative_delta
    async with (
        cloud_session(tmp_path, monkeypatch, fakes, Asked()) as session,
        gateway(session) as url,
    ):
        client = _anthropic(url)
        whole = await client.messages.create(model="tutor+escalate", max_tokens=64, messages=ASK)
        async with client.messages.stream(
            model="tutor+escalate", max_tokens=64, messages=ASK
        ) as stream:
            streamed = await stream.get_final_message()
        calls = await _calls(session, "claude-haiku-4.5")
        spent = await _spent(session)
        requests = [ln.values for ln in await lines_of(session, kind="request")]
    for usage in (whole.usage, streamed.usage):
        assert usage.input_tokens == 10
        assert usage.cache_read_input_tokens == 100000
        assert usage.cache_creation_input_tokens == 0
        assert usage.output_tokens == 7
    assert len(calls) == 2
    for call in calls:
        assert (call["tokens_in"], call["tokens_cached"], call["tokens_out"]) == (100010, 100000, 7)
        assert "tokens_cache_write" not in call
        assert call["cost_usd"] == pytest.approx(HAIKU_USD, abs=1e-12)
        assert call["detail"] == "100010 in (100000 cached) / 7 out, $0.010045"
    # the ledger: both calls, each charged $0.010045 (it charged $0.100045 each)
    assert spent["cost_usd"] == pytest.approx(2 * HAIKU_USD, abs=1e-12)
    assert (spent["tokens_in"], spent["tokens_cached"]) == (200020, 200000)
    done = [v for v in requests if v.get("outcome") == "ok"]
    assert [v["tokens_cached"] for v in done] == [100000, 100000]


async def test_an_anthropic_cache_write_is_charged_at_the_write_price(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fakes: Fakes
) -> None:
    """A prompt partly written to the cache, partly read: each part at its price (a
    write at 1.25 × input), and an OpenAI client told the reads as its cached tokens, the
    writes in its prompt_tokens (its protocol has no field for them)."""
    fakes.claude.usage_override = {
        "input_tokens": 40,
        "cache_creation_input_tokens": 3000,
        "cache_read_input_tokens": 20000,
        "output_tokens": 9,
    }
    async with (
        cloud_session(tmp_path, monkeypatch, fakes, Asked()) as session,
        gateway(session) as url,
    ):
        reply = await _openai(url).chat.completions.create(model="tutor+escalate", messages=CHAT)
        calls = await _calls(session, "claude-haiku-4.5")
        spent = await _spent(session)
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 23040
    assert reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == 20000
    [call] = calls
    assert (call["tokens_in"], call["tokens_cached"], call["tokens_cache_write"]) == (
        23040,
        20000,
        3000,
    )
    # Haiku 4.5 by hand: 40 × $1 + 3000 × $1.25 + 20000 × $0.10 + 9 × $5 per million
    usd = (40 * 1.0 + 3000 * 1.25 + 20000 * 0.10 + 9 * 5.0) / 1e6
    assert call["cost_usd"] == pytest.approx(usd, abs=1e-12)
    assert call["detail"] == "23040 in (20000 cached, 3000 written to the cache) / 9 out, $0.005835"
    assert spent["cost_usd"] == pytest.approx(usd, abs=1e-12)
    assert (spent["tokens_in"], spent["tokens_cached"]) == (23040, 20000)


async def test_an_openai_client_is_told_an_anthropic_cache_read_as_its_cached_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fakes: Fakes
) -> None:
    """Chat Completions (whole, and streamed with its usage chunk) and Responses in,
    Anthropic out: the whole prompt, and of it the cache's reads."""
    fakes.claude.usage_override = CLAUDE_CACHED
    async with (
        cloud_session(tmp_path, monkeypatch, fakes, Asked()) as session,
        gateway(session) as url,
    ):
        client = _openai(url)
        whole = await client.chat.completions.create(model="tutor+escalate", messages=CHAT)
        chunks = await client.chat.completions.create(
            model="tutor+escalate",
            messages=CHAT,
            stream=True,
            stream_options={"include_usage": True},
        )
        last = [chunk async for chunk in chunks][-1]
        response = await client.responses.create(
            model="tutor", input="explain closures", extra_headers={"x-switchyard-escalate": "1"}
        )
        spent = await _spent(session)
    for usage in (whole.usage, last.usage):
        assert usage is not None
        assert (usage.prompt_tokens, usage.completion_tokens) == (100010, 7)
        assert usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == 100000
    assert response.usage is not None
    assert response.usage.input_tokens == 100010
    assert response.usage.input_tokens_details.cached_tokens == 100000
    assert spent["cost_usd"] == pytest.approx(3 * HAIKU_USD, abs=1e-12)


# ── DeepSeek's cache hits (an OpenAI-compatible provider) ────────────────────────────────


async def test_a_deepseek_cache_hit_is_charged_at_the_hit_price_and_told_to_each_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fakes: Fakes
) -> None:
    """DeepSeek's usage dialect (``prompt_cache_hit_tokens``): an OpenAI client sees the
    hits as ``prompt_tokens_details.cached_tokens``, an Anthropic client as its cache
    reads beside the misses; each call is charged at DeepSeek's published hit price."""
    fakes.deepseek.usage_override = DEEPSEEK_CACHED
    async with (
        cloud_session(tmp_path, monkeypatch, fakes, Asked()) as session,
        gateway(session) as url,
    ):
        chat = await _openai(url).chat.completions.create(
            model="implementer+escalate", messages=CHAT
        )
        message = await _anthropic(url).messages.create(
            model="implementer+escalate", max_tokens=64, messages=ASK
        )
        calls = await _calls(session, "deepseek-chat")
        spent = await _spent(session)
    assert chat.usage is not None and chat.usage.prompt_tokens == 100010
    assert chat.usage.prompt_tokens_details is not None
    assert chat.usage.prompt_tokens_details.cached_tokens == 100000
    assert message.usage.input_tokens == 10
    assert message.usage.cache_read_input_tokens == 100000
    assert message.usage.cache_creation_input_tokens == 0
    assert len(calls) == 2
    for call in calls:
        assert (call["tokens_in"], call["tokens_cached"]) == (100010, 100000)
        assert call["cost_usd"] == pytest.approx(DEEPSEEK_USD, abs=1e-12)
    # it charged $0.028005 a call, the cache hits at the miss price
    assert spent["cost_usd"] == pytest.approx(2 * DEEPSEEK_USD, abs=1e-12)
    assert (spent["tokens_in"], spent["tokens_cached"]) == (200020, 200000)


async def test_openais_own_cached_tokens_field_is_read_and_the_fewer_of_two_is_believed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fakes: Fakes
) -> None:
    """``prompt_tokens_details.cached_tokens`` (OpenAI's field, which DeepSeek sends too)
    is read; where it and DeepSeek's own say different counts, the fewer is taken (a
    cached token is the cheaper one: the charge is never below the bill)."""
    fakes.deepseek.usage_override = {
        "prompt_tokens": 100010,
        "completion_tokens": 5,
        "total_tokens": 100015,
        "prompt_tokens_details": {"cached_tokens": 60000},
        "prompt_cache_hit_tokens": 100000,
        "prompt_cache_miss_tokens": 10,
    }
    async with (
        cloud_session(tmp_path, monkeypatch, fakes, Asked()) as session,
        gateway(session) as url,
    ):
        chat = await _openai(url).chat.completions.create(
            model="implementer+escalate", messages=CHAT
        )
        [call] = await _calls(session, "deepseek-chat")
    assert chat.usage is not None and chat.usage.prompt_tokens_details is not None
    assert chat.usage.prompt_tokens_details.cached_tokens == 60000
    assert call["tokens_cached"] == 60000
    usd = (40010 * 0.28 + 60000 * 0.028 + 5 * 0.42) / 1e6
    assert call["cost_usd"] == pytest.approx(usd, abs=1e-12)


# ── a split that cannot be the call's ────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("fake", "usage", "said"),
    [
        # more read from the cache than the whole prompt
        (
            "deepseek",
            {
                "prompt_tokens": 100,
                "completion_tokens": 5,
                "total_tokens": 105,
                "prompt_cache_hit_tokens": 100000,
            },
            "100 in (100000 cached) / 5 out",
        ),
        # a negative cache read beside a large fresh count (the sum looked like a prompt)
        (
            "claude",
            {"input_tokens": 100000, "cache_read_input_tokens": -99000, "output_tokens": 7},
            "1000 in (-99000 cached) / 7 out",
        ),
    ],
)
async def test_a_cache_split_that_cannot_be_the_calls_is_not_believed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fakes: Fakes,
    fake: str,
    usage: dict[str, int],
    said: str,
) -> None:
    """Checked part by part, as the totals are: the usage is refused (the line keeps
    what the server said), the tokens counted here, and the call settles at no less than
    its estimate, never at the cache's price for tokens never sent."""
    server = fakes.deepseek if fake == "deepseek" else fakes.claude
    server.usage_override = usage
    model = "implementer+escalate" if fake == "deepseek" else "tutor+escalate"
    async with (
        cloud_session(tmp_path, monkeypatch, fakes, Asked()) as session,
        gateway(session) as url,
    ):
        reply = await _openai(url).chat.completions.create(model=model, messages=CHAT)
        [call] = [ln for ln in await lines_of(session, kind="call") if "@" not in str(ln.to)]
        [escalation] = await lines_of(session, kind="escalation")
    assert call.values["usage_refused"] == said
    assert call.values["usage_counted_locally"] is True
    assert "tokens_cached" not in call.values
    assert call.values["cost_usd"] >= escalation.values["est_cost_usd"] > 0
    assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == 0
