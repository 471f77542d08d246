"""Prompt-cache prices: the catalog's published figures, a call priced in its parts in
integers (never a float sum), a model without a cache price charged at its input price,
a cache split that cannot be the call's refused, and each dialect's usage read."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import anthropic
import pytest

from app.backends.anthropic_backend import _Events
from app.backends.base import Usage, plausible_usage
from app.backends.openai_stream import ChunkState, cached_tokens
from app.backends.provider_errors import ErrorMapper, SdkErrors
from app.clock import ManualClock
from app.errors import PolicyError
from app.policy import load_policy
from app.policy.schema import Model
from app.router.cost import cost_nusd, cost_usd
from tests.unit.test_policy_loader import insert_after, line_of, replace_line

CATALOG = load_policy().policy


def model(name: str) -> Model:
    return CATALOG.model(name)


# ── the shipped catalog ──────────────────────────────────────────────────────────────────

#: each cloud model's (cache read, cache write) per million tokens, as the providers
#: publish them (the seed names no prices); None: none published, charged at input
PUBLISHED = {
    "gpt-5.1-high": (0.125, None),
    "gpt-5.1-low": (0.125, None),
    "text-embedding-3-small": (None, None),
    "claude-opus-4.7": (0.50, 6.25),
    "claude-sonnet-4.6": (0.30, 3.75),
    "claude-haiku-4.5": (0.10, 1.25),
    "deepseek-chat": (0.028, None),
    "deepseek-reasoner": (0.028, None),
    "kimi-k2-instruct": (0.15, None),
    "kimi-k2-thinking": (0.15, None),
    "kimi-k2-thinking-turbo": (0.15, None),
    "moonshot-v1-128k": (None, None),
}


def test_every_cloud_model_carries_its_published_cache_prices() -> None:
    cloud = {mid for mid, m in CATALOG.models.items() if m.provider != "local"}
    assert cloud == set(PUBLISHED)
    for mid, (read, write) in PUBLISHED.items():
        m = model(mid)
        assert (m.price_cache_read_usd_per_mtok, m.price_cache_write_usd_per_mtok) == (
            read,
            write,
        ), mid


def test_the_cache_prices_keep_the_providers_documented_ratios() -> None:
    """Anthropic: reads 0.1 × input, 5-minute writes 1.25 × input, for every Claude model;
    OpenAI and DeepSeek: cached input 0.1 × input; no cache read dearer than the input."""
    for mid, m in CATALOG.models.items():
        read, write = m.price_cache_read_usd_per_mtok, m.price_cache_write_usd_per_mtok
        if read is not None:
            assert read <= m.price_in_usd_per_mtok, mid
        if m.provider in ("anthropic", "openai", "deepseek") and read is not None:
            assert read == pytest.approx(m.price_in_usd_per_mtok * 0.1), mid
        if m.provider == "anthropic":
            assert write == pytest.approx(m.price_in_usd_per_mtok * 1.25), mid


# ── pricing a call in its parts ──────────────────────────────────────────────────────────


def test_the_audits_calls_cost_what_the_providers_bill() -> None:
    """Haiku: 10 past the cache, 100000 read from it, 7 out (it was charged $0.100045);
    DeepSeek chat: 10 missed, 100000 hit, 5 out (it was charged $0.0280049)."""
    haiku = model("claude-haiku-4.5")
    assert cost_nusd(haiku, 100010, 7, tokens_cached=100000) == 10 * 1000 + 100000 * 100 + 7 * 5000
    assert cost_usd(haiku, 100010, 7, tokens_cached=100000) == 0.010045
    assert cost_usd(haiku, 100010, 7) == 0.100045  # (no split reported: the input price)
    deepseek = model("deepseek-chat")
    # in nano-dollars a token: 10 × 280 + 100000 × 28 + 5 × 420
    assert cost_nusd(deepseek, 100010, 5, tokens_cached=100000) == 2800 + 2_800_000 + 2100
    assert cost_usd(deepseek, 100010, 5, tokens_cached=100000) == 0.0028049


def test_a_cache_write_is_charged_at_the_write_price() -> None:
    sonnet = model("claude-sonnet-4.6")
    # 100 × $3 + 2000 × $3.75 + 500 × $0.30 + 50 × $15 per million, in nano-dollars
    got = cost_nusd(sonnet, 2600, 50, tokens_cached=500, tokens_cache_write=2000)
    assert got == 300_000 + 7_500_000 + 150_000 + 750_000


@pytest.mark.parametrize("mid", ["moonshot-v1-128k", "text-embedding-3-small"])
def test_a_model_without_a_cache_price_charges_cached_tokens_at_the_input_price(mid: str) -> None:
    m = model(mid)
    whole = cost_nusd(m, 5000, 10)
    assert cost_nusd(m, 5000, 10, tokens_cached=4000) == whole
    assert cost_nusd(m, 5000, 10, tokens_cache_write=4000) == whole


def test_a_model_without_a_write_price_charges_writes_at_the_input_price() -> None:
    m = model("claude-haiku-4.5").model_copy(update={"price_cache_write_usd_per_mtok": None})
    assert cost_nusd(m, 3000, 0, tokens_cache_write=3000) == 3000 * 1000
    assert cost_nusd(m, 3000, 0, tokens_cache_write=1000, tokens_cached=2000) == 1000_000 + 200_000


def test_a_local_model_costs_nothing_cached_or_not() -> None:
    assert cost_nusd(model("qwen3-14b"), 100000, 10, tokens_cached=90000) == 0


def test_parts_past_the_prompt_are_cut_to_it_the_cheaper_read_first() -> None:
    """No backend passes such a usage on (plausible_usage); priced anyway, the parts are
    held to the prompt, the dearer write kept (never charged below the prompt's bill)."""
    haiku = model("claude-haiku-4.5")
    assert cost_nusd(haiku, 100, 0, tokens_cached=500) == 100 * 100
    assert cost_nusd(haiku, 100, 0, tokens_cached=100, tokens_cache_write=100) == 100 * 1250
    assert cost_nusd(haiku, 100, 0, tokens_cached=-50) == 100 * 1000


def test_prices_past_three_decimals_are_summed_exactly() -> None:
    """Summed in pico-dollars a token: a price of $0.0375 per million is 37,500 of them,
    so a million tokens read from the cache cost $0.0375 exactly."""
    m = model("deepseek-chat").model_copy(
        update={"price_cache_read_usd_per_mtok": 0.0375, "price_in_usd_per_mtok": 0.1}
    )
    assert cost_nusd(m, 1_000_000, 0, tokens_cached=1_000_000) == 37_500_000


# ── usage that cannot be the call's ──────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("parts", "ok"),
    [
        ((100, 5, 0, 0), True),
        ((100, 5, 100, 0), True),
        ((100, 5, 60, 40), True),
        ((100, 5, 101, 0), False),  # more read than the prompt
        ((100, 5, 60, 41), False),  # the parts past the prompt
        ((100, 5, -1, 0), False),
        ((100, 5, 0, -1), False),
        ((10**9, 5, 0, 0), False),  # (the totals' own check still holds)
    ],
)
def test_plausible_usage_checks_the_cached_parts(
    parts: tuple[int, int, int, int], ok: bool
) -> None:
    assert plausible_usage(*parts) is ok


# ── each dialect's usage ─────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("usage", "cached"),
    [
        ({"prompt_tokens": 9, "completion_tokens": 1}, 0),
        ({"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": 4}}, 4),  # OpenAI, vLLM
        ({"prompt_tokens": 9, "prompt_tokens_details": None}, 0),
        ({"prompt_tokens": 9, "prompt_cache_hit_tokens": 6, "prompt_cache_miss_tokens": 3}, 6),
        ({"prompt_tokens": 9, "cached_tokens": 5}, 5),  # Moonshot
        # two that disagree: the fewer (the charge is never below the bill)
        ({"prompt_tokens_details": {"cached_tokens": 8}, "prompt_cache_hit_tokens": 2}, 2),
        ({"prompt_cache_hit_tokens": "6", "cached_tokens": True}, 0),  # not counts
    ],
)
def test_cached_tokens_reads_each_dialect(usage: dict[str, object], cached: int) -> None:
    assert cached_tokens(usage) == cached


def _usage_of(state: ChunkState | _Events) -> Usage:
    """The usage of the call ``state`` has read (it ended properly)."""
    errors = ErrorMapper(
        SdkErrors.of(anthropic, base=anthropic.AnthropicError),
        label="t",
        base_url="http://127.0.0.1:9",
        api_key=None,
        clock=ManualClock(),
    )
    return state.result(["x"], errors=errors, latency_ms=0.0, ttft_ms=None).usage


def test_kimis_usage_in_its_last_choice_carries_its_cached_tokens() -> None:
    state = ChunkState(model="kimi")
    state.feed({"choices": [{"delta": {"content": "hi"}}]})
    usage = {"prompt_tokens": 900, "completion_tokens": 2, "cached_tokens": 800}
    state.feed({"choices": [{"delta": {}, "finish_reason": "stop", "usage": usage}]})
    got = _usage_of(state)
    assert (got.tokens_in, got.tokens_cached, got.tokens_out) == (900, 800, 2)


def _event(kind: str, **fields: object) -> SimpleNamespace:
    return SimpleNamespace(type=kind, **fields)


def _usage(**fields: object) -> SimpleNamespace:
    base = {
        "input_tokens": None,
        "cache_creation_input_tokens": None,
        "cache_read_input_tokens": None,
    }
    return SimpleNamespace(**{**base, **fields})


def test_anthropics_three_input_parts_make_the_prompt_and_its_split() -> None:
    state = _Events(model="claude")
    start = _usage(
        input_tokens=10,
        cache_creation_input_tokens=300,
        cache_read_input_tokens=5000,
        output_tokens=1,
    )
    state.feed(_event("message_start", message=SimpleNamespace(model="claude", usage=start)))
    state.feed(
        _event(
            "message_delta",
            delta=SimpleNamespace(stop_reason="end_turn"),
            usage=_usage(output_tokens=4),
        )
    )
    state.feed(_event("message_stop"))
    state.text.append("ok")
    got = _usage_of(state)
    assert (got.tokens_in, got.tokens_cached, got.tokens_cache_write, got.tokens_out) == (
        5310,
        5000,
        300,
        4,
    )


def test_a_cumulative_message_delta_is_the_last_word_its_missing_parts_kept() -> None:
    """The API's message_delta says the input again (cumulative); a part it leaves out
    (null) stays as message_start said it, as the SDK's own accumulator reads it."""
    state = _Events(model="claude")
    start = _usage(
        input_tokens=10, cache_creation_input_tokens=0, cache_read_input_tokens=0, output_tokens=1
    )
    state.feed(_event("message_start", message=SimpleNamespace(model="claude", usage=start)))
    delta = _usage(input_tokens=12, cache_read_input_tokens=7000, output_tokens=3)
    state.feed(_event("message_delta", delta=SimpleNamespace(stop_reason="end_turn"), usage=delta))
    state.feed(_event("message_stop"))
    state.text.append("ok")
    got = _usage_of(state)
    assert (got.tokens_in, got.tokens_cached, got.tokens_cache_write) == (7012, 7000, 0)


# ── the policy file ──────────────────────────────────────────────────────────────────────


def test_a_local_model_with_a_cache_price_is_refused(tmp_path: Path) -> None:
    at = line_of('served_name = "Qwen/Qwen3-14B-AWQ"')
    path = tmp_path / "p.toml"
    path.write_text(insert_after(at, "price_cache_read_usd_per_mtok = 0.1"), encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert any("models.qwen3-14b: local models cost 0" in p for p in info.value.problems)


def test_a_negative_cache_price_is_refused(tmp_path: Path) -> None:
    at = line_of("price_cache_read_usd_per_mtok = 0.028", after="[models.deepseek-chat]")
    path = tmp_path / "p.toml"
    path.write_text(replace_line(at, "price_cache_read_usd_per_mtok = -0.028"), encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert any("price_cache_read_usd_per_mtok" in p for p in info.value.problems)


def test_an_anthropic_model_without_a_write_price_is_warned_of(tmp_path: Path) -> None:
    """Its cache writes would be charged at the input price, below Anthropic's 1.25 ×."""
    at = line_of("price_cache_write_usd_per_mtok = 1.25", after='[models."claude-haiku-4.5"]')
    path = tmp_path / "p.toml"
    path.write_text(replace_line(at, ""), encoding="utf-8")
    loaded = load_policy(path)
    said = [w for w in loaded.warnings if "price_cache_write_usd_per_mtok" in w]
    assert len(said) == 1 and "claude-haiku-4.5" in said[0] and "1.25" in said[0]
    assert loaded.policy.model("claude-haiku-4.5").price_cache_write_usd_per_mtok is None
