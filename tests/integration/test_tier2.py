"""Tier2 synthesis (GR-008) through the real router, audit chain and ledger.

Backends are the router tests' scripted doubles (recording what they were asked), then a
whole ``switchyard stage0 brief --synth`` against loopback fakes: the Anthropic fake
serving claude-sonnet-4.6 (alias notebooklm) and the vLLM fake serving the local stand-in.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import app.backends.llamacpp as llamacpp
from app.audit.log import AuditLog
from app.audit.types import AuditLine
from app.backends.base import BackendError, ChatRequest
from app.cli.main import main
from app.clock import ManualClock
from app.pipeline.tier2 import SYNTHESIS_JSON, brief_sha, cache_path, synthesize
from app.policy.schema import Policy
from app.router.approvals import AllowDecider, ApprovalBroker, Decider, DenyDecider
from app.router.ledger import BudgetLedger
from app.router.service import Router
from app.stage0.brief import Brief, BriefMetadata
from app.stage0.citations import validate_synthesis
from app.stage0.result import CorpusInfo, QueryParams, SelectedChunk
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policy import policy_pointing
from tests.integration.test_router_service import Resolver
from tests.integration.test_stage0_corpus import make_repo
from tests.socket_guard import SocketGuard

LOCAL = ("llama-3.1-8b", "vllm")
CLOUD = ("claude-sonnet-4.6", "cloud")
ALL_UP = {"vllm", "llamacpp_server", "llamacpp_inprocess"}
CODE = 'def reserve(self, amount):\n    """Hold amount until settled."""\n    return amount'
DOC = "# Ledger\nReserve, then settle. Never settle twice."
A, B = "aaaaaaaaaaaa", "bbbbbbbbbbbb"


# ── the world a test runs in ─────────────────────────────────────────────────────────────


class World:
    def __init__(self, tmp_path: Path, policy: Policy, resolver: Resolver) -> None:
        self.tmp_path = tmp_path
        self.policy = policy
        self.resolver = resolver
        self.clock = ManualClock()
        self.audit: AuditLog | None = None
        self.ledger: BudgetLedger | None = None

    async def open(self) -> None:
        self.audit = await AuditLog.open(
            self.tmp_path / "audit.db", clock=self.clock, policy_version=self.policy.version
        )
        self.ledger = await BudgetLedger.open(
            self.tmp_path / "ledger.db", self.policy.budget, clock=self.clock
        )

    def router(self, session: str = "s1", decider: Decider | None = None) -> Router:
        assert self.audit is not None and self.ledger is not None
        broker = ApprovalBroker(
            decider or AllowDecider(),
            audit=self.audit,
            timeout_s=5,
            clock=self.clock,  # type: ignore[arg-type]
        )

        async def no_sleep(s: float) -> None:
            return None

        return Router(
            self.policy,
            session=session,
            audit=self.audit,
            ledger=self.ledger,
            approvals=broker,
            backends=self.resolver,
            clock=self.clock,
            sleep=no_sleep,
        )

    async def lines(self, session: str = "s1") -> list[AuditLine]:
        assert self.audit is not None
        return await self.audit.lines(session=session)

    async def close(self) -> None:
        if self.audit is not None:
            assert (await self.audit.verify()).ok
            await self.audit.close()
        if self.ledger is not None:
            await self.ledger.close()


@pytest.fixture
async def world(tmp_path: Path, policy: Policy) -> AsyncIterator[World]:
    w = World(tmp_path, policy, Resolver(up=ALL_UP))
    await w.open()
    yield w
    await w.close()


def _chunk(cid: str, text: str, path: str, start: int = 10) -> SelectedChunk:
    return SelectedChunk(
        id=cid,
        path=path,
        start=start,
        end=start + text.count("\n"),
        kind="method" if path.endswith(".py") else "section",
        symbol="Ledger.reserve" if path.endswith(".py") else None,
        lane="chunks",
        relevance=1.0,
        redundancy=0.0,
        mmr=0.7,
        tokens=20,
        text=text,
    )


def make_brief(
    chunks: list[SelectedChunk] | None = None,
    memories: list[str] | None = None,
    task: str = "reserve budget",
) -> Brief:
    chunks = chunks if chunks is not None else [_chunk(A, CODE, "pkg/ledger.py")]
    params = QueryParams(
        weighting="tfidf",
        mmr_lambda=0.7,
        prefilter=150,
        top_k=15,
        code_top_k=10,
        token_budget=8000,
        budget_tokens=8000,
        context_window=None,
        chunk_lines=60,
        chunk_overlap=10,
    )
    corpus = CorpusInfo(hash="0" * 16, files=1, chunks=len(chunks), code_units=1, skipped={})
    code = [c for c in chunks if c.path.endswith(".py")]
    docs = [c for c in chunks if not c.path.endswith(".py")]
    return Brief(
        task=task,
        constitution=None,
        spec=None,
        memories=memories if memories is not None else ["Settling twice was a bug in March."],
        code=code,
        docs=docs,
        risks=[],
        approach=[],
        metadata=BriefMetadata(
            query=task,
            params=params,
            corpus_hash=corpus.hash,
            corpus=corpus,
            chunk_ids=[c.id for c in [*code, *docs]],
            budget_used=40,
            reserved_tokens=5,
        ),
    )


@pytest.fixture
def brief() -> Brief:
    return make_brief([_chunk(A, CODE, "pkg/ledger.py"), _chunk(B, DOC, "docs/ledger.md", 1)])


def reply(claims: list[dict[str, Any]], contradictions: list[dict[str, Any]] | None = None) -> str:
    return json.dumps({"claims": claims, "contradictions": contradictions or []})


GOOD = reply(
    [
        {"text": "reserve holds the amount", "cites": [A], "quote": "Hold amount until settled"},
        {"text": "settle once", "cites": [B, "memory:1"], "quote": "Never settle twice."},
    ]
)
CONTRADICTING = reply(
    [{"text": "reserve holds the amount", "cites": [A]}],
    [{"a": B, "b": "memory:1", "note": "the doc forbids what the memory says happened"}],
)
FABRICATED = reply([{"text": "it retries", "cites": ["deadbeef0000"]}])
MISQUOTED = reply([{"text": "x", "cites": [A], "quote": "Hold the amount until it settles"}])


def synthesis_lines(lines: list[AuditLine]) -> list[AuditLine]:
    return [line for line in lines if line.kind == "synthesis"]


def prompt_of(request: ChatRequest) -> str:
    return "\n".join(m.content for m in request.messages)


# ── through the router ───────────────────────────────────────────────────────────────────


async def test_accepted_first_time_lists_every_source_and_audits_counts(
    world: World, brief: Brief
) -> None:
    world.resolver.scripts[LOCAL] = [GOOD]
    result = await synthesize(world.router(), brief, run="r1")
    assert result.status == "accepted" and result.synthesis is not None
    assert (result.attempts, result.model, result.escalated) == (1, "llama-3.1-8b", False)
    assert result.problems == [] and not result.cached
    assert validate_synthesis(result.synthesis, brief).ok
    assert not result.contradictions_detected
    [request] = world.resolver.sent(LOCAL)
    text = prompt_of(request)
    for needle in (A, "pkg/ledger.py:10-12", B, "docs/ledger.md:1-2", "memory:1", "reserve budget"):
        assert needle in text
    assert request.json_schema is not None and "claims" in request.json_schema["properties"]
    [line] = synthesis_lines(await world.lines())
    assert line.reason_codes == ["TIER2_ACCEPTED"] and line.role == "tier2" and line.run == "r1"
    assert (line.values["claims"], line.values["contradictions"]) == (2, 0)
    assert line.values["brief_sha"] == brief_sha(brief) and line.to == "llama-3.1-8b"


async def test_contradictions_feed_the_librarian_trigger(world: World, brief: Brief) -> None:
    world.resolver.scripts[LOCAL] = [CONTRADICTING]
    result = await synthesize(world.router(), brief)
    assert result.accepted and result.contradictions_detected


async def test_a_fabricated_id_is_retried_with_the_problem_then_accepted(
    world: World, brief: Brief
) -> None:
    world.resolver.scripts[LOCAL] = [FABRICATED, GOOD]
    result = await synthesize(world.router(), brief)
    assert result.status == "accepted" and result.attempts == 2
    problem = "claim 1: cites 'deadbeef0000', which is not in the brief"
    assert result.problems == [problem]
    first, retry = world.resolver.sent(LOCAL)
    assert problem not in prompt_of(first)
    assert problem in retry.messages[-1].content
    # the retry shows the rejected reply back, after the original request
    assert retry.messages[: len(first.messages)] == first.messages
    assert retry.messages[-2].role == "assistant" and "deadbeef0000" in retry.messages[-2].content
    codes = [line.reason_codes for line in synthesis_lines(await world.lines())]
    assert codes == [["TIER2_REJECTED"], ["TIER2_ACCEPTED"]]


async def test_rejected_twice_is_dropped_with_an_audit_line(world: World, brief: Brief) -> None:
    world.resolver.scripts[LOCAL] = [FABRICATED, MISQUOTED]
    result = await synthesize(world.router(), brief)
    assert result.status == "dropped" and result.synthesis is None
    assert result.attempts == 2 and not result.contradictions_detected
    assert result.problems == [
        "claim 1: cites 'deadbeef0000', which is not in the brief",
        "claim 1: quote 'Hold the amount until it settles' is not found verbatim in " + A,
    ]
    assert "rejected twice" in result.reason
    assert len(world.resolver.sent(LOCAL)) == 2  # retried once, not more
    lines = synthesis_lines(await world.lines())
    assert [line.reason_codes for line in lines] == [
        ["TIER2_REJECTED"],
        ["TIER2_REJECTED"],
        ["TIER2_DROPPED"],
    ]
    assert lines[-1].values["problems"] == result.problems
    assert lines[-1].values["attempts"] == 2


async def test_a_reply_that_is_not_json_counts_as_a_rejection(world: World, brief: Brief) -> None:
    world.resolver.scripts[LOCAL] = ["Sure! Here is a summary.", "```json\n" + GOOD + "\n```"]
    result = await synthesize(world.router(), brief)
    assert result.accepted and result.attempts == 2
    assert result.problems[0].startswith("synthesis: not valid JSON")


async def test_not_opted_in_stays_local_opted_in_and_approved_goes_to_the_cloud(
    world: World, brief: Brief
) -> None:
    world.resolver.scripts[LOCAL] = [GOOD]
    world.resolver.scripts[CLOUD] = [GOOD]
    local = await synthesize(world.router(), brief, opt_in=False)
    assert (local.model, local.escalated) == ("llama-3.1-8b", False)
    assert world.resolver.sent(CLOUD) == []
    cloud = await synthesize(world.router(), brief, opt_in=True)
    assert (cloud.model, cloud.runtime, cloud.escalated) == ("claude-sonnet-4.6", "cloud", True)
    kinds = [(line.kind, line.to) for line in await world.lines()]
    assert ("escalation", "claude-sonnet-4.6") in kinds
    assert ("approval", "claude-sonnet-4.6") in kinds
    assert len(world.resolver.sent(CLOUD)) == 1


async def test_denied_escalation_moves_to_the_local_stand_in_and_is_asked_once(
    world: World, brief: Brief, policy: Policy
) -> None:
    world.resolver.scripts[LOCAL] = [FABRICATED, GOOD]
    result = await synthesize(world.router(decider=DenyDecider()), brief, opt_in=True)
    assert result.accepted and (result.model, result.escalated) == ("llama-3.1-8b", False)
    assert result.attempts == 2
    assert world.resolver.sent(CLOUD) == []
    denials = [line.to for line in await world.lines() if line.kind == "denial"]
    # each cloud step of the chain was denied once; the retry did not ask again
    assert denials == policy.chain("tier2") and denials[0] == "claude-sonnet-4.6"


async def test_an_approved_cloud_retry_is_asked_again(world: World, brief: Brief) -> None:
    world.resolver.scripts[CLOUD] = [FABRICATED, GOOD]
    result = await synthesize(world.router(), brief, opt_in=True)
    assert result.accepted and result.escalated and result.attempts == 2
    approvals = [line.to for line in await world.lines() if line.kind == "approval"]
    assert approvals == ["claude-sonnet-4.6", "claude-sonnet-4.6"]  # allow_once: per call


async def test_duplicate_problems_are_reported_once(world: World, brief: Brief) -> None:
    twice = reply([{"text": "x", "cites": ["deadbeef0000", "deadbeef0000"]}])
    world.resolver.scripts[LOCAL] = [twice, GOOD]
    result = await synthesize(world.router(), brief)
    assert result.problems == ["claim 1: cites 'deadbeef0000', which is not in the brief"]


async def test_denied_with_no_local_runtime_is_dropped_not_raised(
    tmp_path: Path, policy: Policy, brief: Brief
) -> None:
    w = World(tmp_path, policy, Resolver(up=set()))
    await w.open()
    try:
        result = await synthesize(w.router(decider=DenyDecider()), brief, opt_in=True)
        assert result.status == "dropped" and result.synthesis is None
        assert result.attempts == 0 and "NO_LOCAL_RUNTIME" in result.reason
        assert w.resolver.sent(CLOUD) == []
        lines = await w.lines()
        assert any(line.kind == "denial" for line in lines)
        [drop] = synthesis_lines(lines)
        assert drop.reason_codes == ["TIER2_DROPPED", "ROUTE_REFUSED"]
    finally:
        await w.close()


async def test_a_failed_local_runtime_is_dropped_with_an_audit_line(
    tmp_path: Path, policy: Policy, brief: Brief
) -> None:
    resolver = Resolver(up={"llamacpp_inprocess"})
    resolver.scripts[("smollm2-135m", "llamacpp_inprocess")] = [
        BackendError("server_error", "model crashed")
    ]
    w = World(tmp_path, policy, resolver)
    await w.open()
    try:
        result = await synthesize(w.router(), brief)
        assert result.status == "dropped" and "model crashed" in result.reason
        [drop] = synthesis_lines(await w.lines())
        assert drop.reason_codes == ["TIER2_DROPPED", "ROUTE_FAILED"]
    finally:
        await w.close()


async def test_the_prompt_is_clipped_to_the_smallest_window_that_may_serve(
    tmp_path: Path, policy: Policy
) -> None:
    from app.router.service import request_tokens

    chunks = [
        _chunk(f"{i:012x}", f"line {i} " + "word " * 500, f"pkg/mod{i}.py") for i in range(30)
    ]
    brief = make_brief(chunks)
    resolver = Resolver(up={"llamacpp_inprocess"}, windows={"smollm2-135m": 4096})
    resolver.scripts[("smollm2-135m", "llamacpp_inprocess")] = [
        reply([{"text": "x", "cites": [chunks[-1].id]}])
    ]
    w = World(tmp_path, policy, resolver)
    await w.open()
    try:
        # opted in, approved: the cloud window is 200k but a denial or failure would land
        # on the 4k local model, so the prompt must fit that one
        result = await synthesize(w.router(decider=DenyDecider()), brief, opt_in=True)
        assert result.accepted, result.problems
        [request] = resolver.sent(("smollm2-135m", "llamacpp_inprocess"))
        assert request.max_tokens == 1024
        assert request_tokens(request) + request.max_tokens <= 4096
        text = prompt_of(request)
        assert all(c.id in text for c in chunks)  # every id is still listed
        assert "clipped to fit the window" in text
        assert not any(line.kind == "degradation" for line in await w.lines())
    finally:
        await w.close()


# ── the cache ────────────────────────────────────────────────────────────────────────────


async def test_cache_hit_on_same_session_and_brief_makes_no_call(
    world: World, brief: Brief, tmp_path: Path
) -> None:
    cache = tmp_path / "state" / "tier2"
    world.resolver.scripts[LOCAL] = [GOOD, GOOD]
    first = await synthesize(world.router("s1"), brief, cache_dir=cache)
    path = cache_path(cache, "s1", brief_sha(brief))
    assert path.is_file() and first.accepted
    again = await synthesize(world.router("s1"), brief, cache_dir=cache)
    assert again.status == "cached" and again.cached and again.attempts == 0
    assert again.synthesis == first.synthesis and again.model == "llama-3.1-8b"
    assert len(world.resolver.sent(LOCAL)) == 1
    cached = synthesis_lines(await world.lines("s1"))[-1]
    assert cached.reason_codes == ["TIER2_CACHED"]
    # another session asks the model again
    other = await synthesize(world.router("s2"), brief, cache_dir=cache)
    assert other.status == "accepted" and len(world.resolver.sent(LOCAL)) == 2
    assert cache_path(cache, "s2", brief_sha(brief)).is_file()
    # and a different brief in the same session too
    changed = make_brief(memories=["Another memory."])
    world.resolver.scripts[LOCAL].append(reply([{"text": "y", "cites": [A]}]))
    assert (await synthesize(world.router("s1"), changed, cache_dir=cache)).status == "accepted"
    assert len(world.resolver.sent(LOCAL)) == 3


async def test_only_accepted_syntheses_are_cached(
    world: World, brief: Brief, tmp_path: Path
) -> None:
    cache = tmp_path / "tier2"
    world.resolver.scripts[LOCAL] = [FABRICATED, MISQUOTED, GOOD]
    assert (await synthesize(world.router(), brief, cache_dir=cache)).status == "dropped"
    assert not cache_path(cache, "s1", brief_sha(brief)).exists()
    assert (await synthesize(world.router(), brief, cache_dir=cache)).status == "accepted"
    assert len(world.resolver.sent(LOCAL)) == 3


async def test_a_tampered_cache_entry_is_a_miss(world: World, brief: Brief, tmp_path: Path) -> None:
    cache = tmp_path / "tier2"
    world.resolver.scripts[LOCAL] = [GOOD, GOOD]
    await synthesize(world.router(), brief, cache_dir=cache)
    path = cache_path(cache, "s1", brief_sha(brief))
    data = json.loads(path.read_text())
    data["synthesis"]["claims"][0]["cites"] = ["deadbeef0000"]
    path.write_text(json.dumps(data))
    result = await synthesize(world.router(), brief, cache_dir=cache)
    assert result.status == "accepted" and len(world.resolver.sent(LOCAL)) == 2


# ── the command line, against loopback fakes ─────────────────────────────────────────────

LOCAL_SERVED = ["meta-llama/Llama-3.1-8B-Instruct"]
_SOURCE = re.compile(r"=== source (\S+) · [^\n]*===\n(.*?)\n=== end ===", re.DOTALL)


def _texts(body: dict[str, Any]) -> str:
    out = []
    for m in body.get("messages", []):
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [b.get("text", "") for b in content if isinstance(b, dict)]
    return "\n".join(out)


def grounded(body: dict[str, Any]) -> str:
    """A synthesis that cites the first listed source and quotes its first line."""
    sid, text = _SOURCE.findall(_texts(body))[0]
    first = next(line.strip() for line in text.splitlines() if line.strip())
    return reply([{"text": "the first source matters", "cites": [sid], "quote": first[:30]}])


@pytest.fixture
def cli_world(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
    socket_guard: SocketGuard,
) -> Iterator[dict[str, Any]]:
    vllm = fake_openai_factory("vllm", models=LOCAL_SERVED)
    vllm.script.respond_with(grounded)
    anthropic = fake_anthropic_factory()
    anthropic.script.respond_with(grounded)
    policy = policy_pointing(tmp_path, anthropic=anthropic.base_url)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed}/v1")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-canary-000000000000000000")
    monkeypatch.setenv("COLUMNS", "200")
    repo = make_repo(tmp_path)
    yield {
        "repo": repo,
        "policy": policy,
        "vllm": vllm,
        "anthropic": anthropic,
        "closed": closed,
        "out": tmp_path / "brief",
    }
    assert socket_guard.attempts == []


def brief_cli(w: dict[str, Any], *extra: str) -> list[str]:
    return [
        "stage0",
        "brief",
        "reserve budget settle",
        "--repo",
        str(w["repo"]),
        "--policy",
        str(w["policy"]),
        "--out",
        str(w["out"]),
        *extra,
    ]


def test_cli_synth_allowed_is_served_by_the_cloud_fake_and_writes_synthesis_json(
    cli_world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(brief_cli(cli_world, "--synth", "--approve", "allow", "--json"))
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    syn = out["synthesis"]
    assert syn["status"] == "accepted" and syn["model"] == "claude-sonnet-4.6"
    assert syn["escalated"] and syn["claims"] == 1
    assert len(cli_world["anthropic"].message_requests) == 1
    assert cli_world["anthropic"].message_requests[0]["model"] == "claude-sonnet-4-6"
    assert cli_world["vllm"].chat_requests == []
    path = cli_world["out"] / SYNTHESIS_JSON
    assert syn["synthesis_json"] == str(path)
    written = json.loads(path.read_text())
    brief = Brief.model_validate_json((cli_world["out"] / "brief.json").read_text())
    assert written["brief_sha"] == brief_sha(brief)
    assert validate_synthesis(json.dumps(written["synthesis"]), brief).ok
    # the same session and brief: served from the cache, no call
    sid = syn["session"]
    rc = main(brief_cli(cli_world, "--synth", "--approve", "allow", "--session", sid))
    text = capsys.readouterr().out
    assert rc == 0 and "cached, no call" in text and "claude-sonnet-4.6" in text
    assert len(cli_world["anthropic"].message_requests) == 1


def test_cli_synth_denied_is_served_by_the_local_stand_in(
    cli_world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(brief_cli(cli_world, "--synth", "--approve", "deny"))
    text = capsys.readouterr().out
    assert rc == 0
    assert "llama-3.1-8b (local)" in text and "1 claims" in text
    assert cli_world["anthropic"].message_requests == []
    assert len(cli_world["vllm"].chat_requests) == 1
    assert (cli_world["out"] / SYNTHESIS_JSON).is_file()


def test_cli_synth_local_only_never_asks_the_cloud(
    cli_world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(brief_cli(cli_world, "--synth", "--approve", "allow", "--local-only", "--json"))
    syn = json.loads(capsys.readouterr().out)["synthesis"]
    assert rc == 0 and syn["status"] == "accepted"
    assert (syn["model"], syn["escalated"]) == ("llama-3.1-8b", False)
    assert cli_world["anthropic"].message_requests == []


def test_cli_synth_dropped_still_exits_0_and_leaves_no_synthesis(
    cli_world: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out_dir: Path = cli_world["out"]
    out_dir.mkdir(parents=True)
    (out_dir / SYNTHESIS_JSON).write_text("{}")  # left over from an earlier brief
    # no local runtime at all: vLLM and llama.cpp server closed, no embedded model
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", f"http://127.0.0.1:{cli_world['closed']}/v1")
    monkeypatch.setattr(llamacpp, "find_embedded_gguf", lambda: None)
    rc = main(brief_cli(cli_world, "--synth", "--approve", "deny", "--json"))
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    syn = out["synthesis"]
    assert syn["status"] == "dropped" and syn["synthesis_json"] is None
    assert "NO_LOCAL_RUNTIME" in syn["reason"]
    assert (out_dir / "brief.json").is_file() and not (out_dir / SYNTHESIS_JSON).exists()
    assert cli_world["anthropic"].message_requests == []
    rc = main(brief_cli(cli_world, "--synth", "--approve", "deny"))
    text = capsys.readouterr().out
    assert rc == 0 and "tier2: dropped (the brief stands on its own)" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--approve", "allow"), "--approve: only with --synth"),
        (("--local-only",), "--local-only: only with --synth"),
        (("--session", "abc"), "--session: only with --synth"),
        (("--synth", "--session", "../etc"), "--session '../etc'"),
    ],
)
def test_cli_usage_errors_exit_2(
    cli_world: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    extra: tuple[str, ...],
    message: str,
) -> None:
    rc = main(brief_cli(cli_world, *extra))
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
