"""The Librarian over the real router, audit chain (SQLite), ledger and approvals broker;
backends are in-process doubles that answer from what the request carries."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from app.audit.log import AuditLog
from app.backends.base import ChatRequest, ChatResult, Delta, Health, Usage
from app.pipeline.librarian import MAP_SYSTEM, REDUCE_SYSTEM, condense, render_sources
from app.policy.schema import Policy
from app.router.approvals import DenyDecider
from app.router.ledger import BudgetLedger
from app.router.service import Router, request_tokens
from app.tokens import count_text
from tests.integration.test_router_service import ALL_UP, Resolver, make_router

Responder = Callable[[ChatRequest], str]
SOURCE_ID = re.compile(r'<source id="([^"]+)"')
NOTE_LINE = re.compile(r"^- (.*) \[([^\]]+)\]$", re.MULTILINE)
LOCAL = ("llama-3.1-8b", "vllm")
KIMI = ("kimi-k2-instruct", "cloud")


class AnsweringBackend:
    """A Backend double whose reply is computed from the request."""

    def __init__(self, model_id: str, runtime: str, respond: Responder) -> None:
        self.model_id = model_id
        self.runtime = runtime
        self.respond = respond
        self.requests: list[ChatRequest] = []

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        self.requests.append(request)
        text = self.respond(request)
        yield Delta(text=text)
        yield ChatResult(
            text=text,
            usage=Usage(tokens_in=request_tokens(request), tokens_out=count_text(text)),
            finish_reason="stop",
            model=self.model_id,
            latency_ms=1.0,
        )

    async def health(self) -> Health:
        return Health(ok=True)

    async def context_window(self) -> int | None:
        return None

    async def aclose(self) -> None:
        return None


class Backends(Resolver):
    """The router's resolver with answering backends and chosen serving windows."""

    def __init__(self, windows: dict[str, int], **responders: Responder) -> None:
        super().__init__(up=ALL_UP)
        self.windows = windows
        self.responders = {
            LOCAL: responders.get("local", notes_reply),
            KIMI: responders.get("kimi", notes_reply),
        }
        self.answering: dict[tuple[str, str], AnsweringBackend] = {}

    def backend(self, model_id: str, runtime: str) -> AnsweringBackend:  # type: ignore[override]
        key = (model_id, runtime)
        if key not in self.answering:
            respond = self.responders.get(key, unexpected(key))
            self.answering[key] = AnsweringBackend(model_id, runtime, respond)
        return self.answering[key]

    def context_windows(self) -> dict[str, int]:
        return dict(self.windows)

    def not_served(self) -> dict[str, bool]:
        return {}

    def requests(self, key: tuple[str, str]) -> list[ChatRequest]:
        return self.answering[key].requests if key in self.answering else []


def unexpected(key: tuple[str, str]) -> Responder:
    def fail(_request: ChatRequest) -> str:
        raise AssertionError(f"no request was meant for {key}")

    return fail


def user_text(request: ChatRequest) -> str:
    return request.messages[1].content


def is_reduce(request: ChatRequest) -> bool:
    return request.messages[0].content == REDUCE_SYSTEM


def notes_reply(request: ChatRequest, confidence: float = 0.9, reduce_conf: float = 0.8) -> str:
    """Map: one short point per source id it was given. Reduce: points of up to 6 ids."""
    text = user_text(request)
    if is_reduce(request):
        ids = list(dict.fromkeys(i for m in NOTE_LINE.finditer(text) for i in m[2].split(", ")))
        chunks = [ids[i : i + 6] for i in range(0, len(ids), 6)]
        points = [{"text": f"merged {len(c)}", "sources": c} for c in chunks]
        return json.dumps({"points": points, "confidence": reduce_conf})
    ids = list(dict.fromkeys(SOURCE_ID.findall(text)))
    points = [{"text": f"note on {i}", "sources": [i]} for i in ids]
    return json.dumps({"points": points, "contradictions": [], "confidence": confidence})


def sources(n: int, chars: int = 600) -> list[tuple[str, str]]:
    return [
        (f"src/mod{i:03}.py:1-20", f"def f{i}():\n" + (f"    # detail {i} " * 200)[:chars])
        for i in range(n)
    ]


async def condense_lines(audit: AuditLog) -> list[Any]:
    return [line for line in await audit.lines(session="s1") if line.kind == "condense"]


async def close(audit: AuditLog, ledger: BudgetLedger) -> None:
    await audit.close()
    await ledger.close()


async def test_sources_that_fit_come_back_unchanged_without_a_call(
    tmp_path: Path, policy: Policy
) -> None:
    backends = Backends({"llama-3.1-8b": 4096})
    router, audit, ledger = await make_router(tmp_path, policy, backends)
    given = sources(3, 100)
    result = await condense(router, "what does f do?", given, 2000, run="r1")
    assert not result.condensed and result.calls == 0 and result.model is None
    assert result.text == render_sources(given)
    assert result.tokens_out <= 2000
    assert backends.answering == {}  # no backend was even made
    assert await audit.lines(session="s1") == []
    await close(audit, ledger)


async def test_too_big_for_a_small_window_maps_in_groups_then_reduces(
    tmp_path: Path, policy: Policy
) -> None:
    window = 2048
    backends = Backends({"llama-3.1-8b": window})
    router, audit, ledger = await make_router(tmp_path, policy, backends)
    given = sources(30)
    result = await condense(router, "what does f do?", given, 400, run="r1")

    assert result.condensed and not result.escalated and not result.clipped
    assert result.model == "llama-3.1-8b"
    assert result.groups >= 3 and result.map_calls == result.groups
    assert result.reduce_rounds >= 1
    assert result.calls == result.map_calls + len(
        [r for r in backends.requests(LOCAL) if is_reduce(r)]
    )
    assert result.tokens_out <= 400 and count_text(result.text) <= 400
    # every source id survives into the result, so a reader can cite it
    for sid, _ in given:
        assert sid in result.text
    assert {s for p in result.points for s in p.sources} == {sid for sid, _ in given}
    # every map request fits the serving window with room for its answer
    maps = [r for r in backends.requests(LOCAL) if not is_reduce(r)]
    assert len(maps) == result.map_calls
    for req in maps:
        assert req.messages[0].content == MAP_SYSTEM
        assert request_tokens(req) + req.max_tokens <= window
    # the sources went out in order, each exactly once
    seen = [i for r in maps for i in SOURCE_ID.findall(user_text(r))]
    assert seen == [sid for sid, _ in given]
    (line,) = await condense_lines(audit)
    assert line.run == "r1" and line.role == "librarian" and line.to == "llama-3.1-8b"
    assert "LIBRARIAN_MAP_REDUCE" in line.reason_codes
    assert line.values["tokens_in"] == result.tokens_in > 400
    assert line.values["tokens_out"] == result.tokens_out
    assert line.values["groups"] == result.groups
    assert line.values["map_calls"] == result.map_calls
    assert line.values["reduce_rounds"] == result.reduce_rounds
    assert line.values["model"] == "llama-3.1-8b"
    assert (await audit.verify()).ok
    await close(audit, ledger)


async def test_grouping_is_deterministic(tmp_path: Path, policy: Policy) -> None:
    prompts = []
    for attempt in range(2):
        backends = Backends({"llama-3.1-8b": 2048})
        router, audit, ledger = await make_router(tmp_path / str(attempt), policy, backends)
        result = await condense(router, "q", sources(25), 300)
        prompts.append(([user_text(r) for r in backends.requests(LOCAL)], result.text))
        await close(audit, ledger)
    assert prompts[0] == prompts[1]


async def test_a_map_reply_that_is_not_json_keeps_a_raw_excerpt(
    tmp_path: Path, policy: Policy
) -> None:
    broken_group: list[str] = []

    def local(request: ChatRequest) -> str:
        ids = SOURCE_ID.findall(user_text(request))
        if not is_reduce(request) and (not broken_group or ids[0] == broken_group[0]):
            if not broken_group:
                broken_group.extend(ids)
            return "Sure! Here are my notes: the functions are small."  # no JSON at all
        return notes_reply(request)

    backends = Backends({"llama-3.1-8b": 2048}, local=local)
    router, audit, ledger = await make_router(tmp_path, policy, backends)
    given = sources(20)
    result = await condense(router, "what does f do?", given, 600, run="r1")

    assert result.condensed and result.text
    assert "LIBRARIAN_MAP_UNUSABLE" in result.reason_codes
    assert any("kept a raw excerpt" in n for n in result.notes)
    # the first group was asked twice (one GR-012 repair), then kept as raw excerpts
    first = [r for r in backends.requests(LOCAL) if SOURCE_ID.findall(user_text(r))[:1]]
    assert sum(1 for r in first if SOURCE_ID.findall(user_text(r))[0] == broken_group[0]) == 2
    assert result.map_calls == result.groups + 1
    for sid in broken_group:
        assert sid in result.text
    (line,) = await condense_lines(audit)
    assert "LIBRARIAN_MAP_UNUSABLE" in line.reason_codes
    await close(audit, ledger)


async def test_low_local_confidence_asks_to_escalate_and_uses_kimi_when_allowed(
    tmp_path: Path, policy: Policy
) -> None:
    def local(request: ChatRequest) -> str:
        return notes_reply(request, reduce_conf=0.3)

    def kimi(request: ChatRequest) -> str:
        ids = list(dict.fromkeys(SOURCE_ID.findall(user_text(request))))
        chunks = [ids[i : i + 10] for i in range(0, len(ids), 10)]
        points = [{"text": "kimi summary", "sources": c} for c in chunks]
        return json.dumps({"points": points, "confidence": 0.95})

    backends = Backends({"llama-3.1-8b": 2048}, local=local, kimi=kimi)
    router, audit, ledger = await make_router(tmp_path, policy, backends)
    given = sources(20)
    result = await condense(router, "what does f do?", given, 500, run="r1")

    assert result.escalated and result.model == "kimi-k2-instruct"
    assert result.confidence == 0.95
    assert "LIBRARIAN_LOW_SYNTH_CONFIDENCE" in result.reason_codes
    assert "LIBRARIAN_ESCALATED" in result.reason_codes
    (ask,) = backends.requests(KIMI)
    assert set(SOURCE_ID.findall(user_text(ask))) == {sid for sid, _ in given}
    lines = await audit.lines(session="s1")
    (escalation,) = [ln for ln in lines if ln.kind == "escalation"]
    assert escalation.to == "kimi-k2-instruct"
    assert "LIBRARIAN_LOW_SYNTH_CONFIDENCE" in escalation.reason_codes
    assert escalation.values["local_synth_confidence"] == 0.3
    assert [ln.kind for ln in lines if ln.kind in ("approval", "denial")] == ["approval"]
    (line,) = await condense_lines(audit)
    assert line.values["escalated"] is True and line.to == "kimi-k2-instruct"
    for sid, _ in given:
        assert sid in result.text
    await close(audit, ledger)


async def test_low_local_confidence_denied_keeps_the_local_result(
    tmp_path: Path, policy: Policy
) -> None:
    def local(request: ChatRequest) -> str:
        return notes_reply(request, reduce_conf=0.3)

    backends = Backends({"llama-3.1-8b": 2048}, local=local)
    router, audit, ledger = await make_router(tmp_path, policy, backends, decider=DenyDecider())
    given = sources(20)
    result = await condense(router, "what does f do?", given, 500, run="r1")

    assert not result.escalated and result.model == "llama-3.1-8b"
    assert result.confidence == 0.3
    assert "LIBRARIAN_ESCALATION_DECLINED" in result.reason_codes
    assert backends.requests(KIMI) == []
    lines = await audit.lines(session="s1")
    assert any(ln.kind == "denial" for ln in lines)
    # the router never fell back to sending the escalation prompt to the local model
    local_asks = backends.requests(LOCAL)
    assert all(r.messages[0].content in (MAP_SYSTEM, REDUCE_SYSTEM) for r in local_asks)
    (line,) = await condense_lines(audit)
    assert "LIBRARIAN_ESCALATION_DECLINED" in line.reason_codes
    assert line.values["escalated"] is False
    for sid, _ in given:
        assert sid in result.text
    await close(audit, ledger)


async def test_a_full_sweep_escalates_to_kimi_in_one_call(tmp_path: Path, policy: Policy) -> None:
    backends = Backends({"llama-3.1-8b": 2048})
    router, audit, ledger = await make_router(tmp_path, policy, backends)
    given = sources(20)
    # a budget Kimi's 20 notes fit (each names its path twice: ~25 tokens by app.tokens)
    result = await condense(router, "survey", given, 800, run="r1", full_sweep=True)

    assert result.escalated and result.model == "kimi-k2-instruct" and result.calls == 1
    assert backends.requests(LOCAL) == []  # the sweep was Kimi's alone
    assert "LIBRARIAN_FULL_SWEEP" in result.reason_codes
    assert "LIBRARIAN_ESCALATED" in result.reason_codes
    kinds = [ln.kind for ln in await audit.lines(session="s1")]
    assert kinds == ["escalation", "approval", "call", "condense"]
    await close(audit, ledger)


async def test_a_job_too_big_for_kimi_goes_to_kimi_in_big_balanced_groups(
    tmp_path: Path, policy: Policy
) -> None:
    def kimi(request: ChatRequest) -> str:
        ids = list(dict.fromkeys(SOURCE_ID.findall(user_text(request))))
        chunks = [ids[i : i + 12] for i in range(0, len(ids), 12)]
        points = [{"text": "k", "sources": c} for c in chunks]
        return json.dumps({"points": points, "confidence": 0.9})

    backends = Backends({"llama-3.1-8b": 8192}, kimi=kimi)
    router, audit, ledger = await make_router(tmp_path, policy, backends)
    given = sources(300, 3600)  # ~310k tokens: more than Kimi's 262k window
    result = await condense(router, "survey", given, 4000, run="r1")

    asks = backends.requests(KIMI)
    assert len(asks) == 2  # two big groups, each over 100k so each fires the trigger
    for req in asks:
        assert request_tokens(req) > 100_000 and request_tokens(req) + 8192 <= 262_144
    assert [i for r in asks for i in SOURCE_ID.findall(user_text(r))] == [s for s, _ in given]
    map_asks = [r for r in backends.requests(LOCAL) if not is_reduce(r)]
    assert map_asks == []  # nothing was mapped locally; the merge (reduce) is local
    assert result.escalated and result.reduce_rounds >= 1
    assert {"LIBRARIAN_CONTEXT_LARGE", "LIBRARIAN_ESCALATED"} <= set(result.reason_codes)
    kinds = [ln.kind for ln in await audit.lines(session="s1")]
    assert kinds.count("escalation") == 2 and kinds.count("approval") == 2
    assert count_text(result.text) <= 4000
    await close(audit, ledger)


async def test_local_only_never_escalates_and_says_why(tmp_path: Path, policy: Policy) -> None:
    backends = Backends({"llama-3.1-8b": 2048})
    router, audit, ledger = await make_router(tmp_path, policy, backends, local_only=True)
    result = await condense(router, "survey", sources(20), 500, full_sweep=True)

    assert not result.escalated and backends.requests(KIMI) == []
    assert "LIBRARIAN_ESCALATION_UNAVAILABLE" in result.reason_codes
    assert any("GR-009" in n for n in result.notes)
    kinds = {ln.kind for ln in await audit.lines(session="s1")}
    assert not kinds & {"escalation", "approval", "denial"}
    await close(audit, ledger)


async def test_reduce_that_cannot_shrink_ends_clipped_with_a_marker(
    tmp_path: Path, policy: Policy
) -> None:
    def local(request: ChatRequest) -> str:
        if is_reduce(request):  # a reduce that only repeats what it was given
            points = [
                {"text": m[1], "sources": m[2].split(", ")}
                for m in NOTE_LINE.finditer(user_text(request))
            ]
            return json.dumps({"points": points[:40], "confidence": 0.9})
        return notes_reply(request)

    backends = Backends({"llama-3.1-8b": 2048}, local=local)
    router, audit, ledger = await make_router(tmp_path, policy, backends)
    result = await condense(router, "q", sources(30), 120)
    assert result.clipped and "LIBRARIAN_CLIPPED" in result.reason_codes
    assert "clipped by the Librarian" in result.text
    assert count_text(result.text) <= 120
    assert result.reduce_rounds <= 3
    await close(audit, ledger)


async def test_no_runtime_at_all_clips_the_sources_and_says_so(
    tmp_path: Path, policy: Policy
) -> None:
    backends = Backends({"llama-3.1-8b": 2048})
    backends.up = set()
    router, audit, ledger = await make_router(tmp_path, policy, backends)
    result = await condense(router, "q", sources(10), 200, run="r1")
    assert result.model is None and result.calls == 0 and result.clipped
    assert "LIBRARIAN_ROUTE_FAILED" in result.reason_codes
    assert count_text(result.text) <= 200 and "src/mod000.py:1-20" in result.text
    (line,) = await condense_lines(audit)
    assert "LIBRARIAN_ROUTE_FAILED" in line.reason_codes
    await close(audit, ledger)


def test_budget_must_be_positive(policy: Policy) -> None:
    import asyncio

    router: Any = object()
    with pytest.raises(ValueError, match="budget"):
        asyncio.run(condense(router, "q", [], 0))


async def test_router_type_is_the_real_router(tmp_path: Path, policy: Policy) -> None:
    # the helper builds the production Router, not a double
    backends = Backends({"llama-3.1-8b": 2048})
    router, audit, ledger = await make_router(tmp_path, policy, backends)
    assert type(router) is Router
    await close(audit, ledger)


async def test_a_reply_with_no_point_is_unusable_and_keeps_the_sources(
    tmp_path: Path, policy: Policy
) -> None:
    """Valid JSON with zero points and a junk contradiction was taken as a condensation
    with confidence 1.0 that dropped every source (`"points": [], "contradictions":
    ["1"]`). It is an unusable reply: the group keeps a raw excerpt of each source."""

    def local(request: ChatRequest) -> str:
        if is_reduce(request):
            return notes_reply(request)
        return json.dumps({"points": [], "contradictions": ["1"], "confidence": 1.0})

    backends = Backends({"llama-3.1-8b": 2048}, local=local)
    router, audit, ledger = await make_router(tmp_path, policy, backends, decider=DenyDecider())
    given = sources(3)
    result = await condense(router, "what functions exist", given, 400, full_sweep=True)

    assert "LIBRARIAN_MAP_UNUSABLE" in result.reason_codes
    assert any("the reply holds no point" in n for n in result.notes)
    assert result.contradictions == [] and "LIBRARIAN_CONTRADICTIONS" not in result.reason_codes
    assert result.points and all(p.text.startswith("(raw excerpt)") for p in result.points)
    assert {s for p in result.points for s in p.sources} == {sid for sid, _ in given}
    assert result.confidence == 0.0  # nothing vouched for what no model condensed
    await close(audit, ledger)


async def test_junk_contradictions_are_dropped_and_real_ones_kept(
    tmp_path: Path, policy: Policy
) -> None:
    real = "src/mod000.py waits 30 seconds but src/mod001.py waits 60 seconds"

    def local(request: ChatRequest) -> str:
        reply = json.loads(notes_reply(request))
        reply["contradictions"] = ["1", "none", "No contradictions found.", "  ", real]
        return json.dumps(reply)

    backends = Backends({"llama-3.1-8b": 2048}, local=local)
    router, audit, ledger = await make_router(tmp_path, policy, backends, decider=DenyDecider())
    result = await condense(router, "what does f do?", sources(20), 600)
    assert result.contradictions == [real]
    await close(audit, ledger)


async def test_a_merge_with_no_point_keeps_the_notes_it_was_given(
    tmp_path: Path, policy: Policy
) -> None:
    def local(request: ChatRequest) -> str:
        if is_reduce(request):
            return json.dumps({"points": [{"text": " ", "sources": []}], "confidence": 1.0})
        return notes_reply(request)

    backends = Backends({"llama-3.1-8b": 2048}, local=local)
    router, audit, ledger = await make_router(tmp_path, policy, backends, decider=DenyDecider())
    given = sources(30)
    result = await condense(router, "what does f do?", given, 4000)
    assert "LIBRARIAN_REDUCE_UNUSABLE" in result.reason_codes
    assert {s for p in result.points for s in p.sources} == {sid for sid, _ in given}
    await close(audit, ledger)
