"""The router end to end over real SQLite (audit chain, budget ledger) and the real
approvals broker; backends are scripted in-process doubles of the Backend protocol."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import pytest

from app.audit.log import AuditLog
from app.backends.base import BackendError, ChatRequest, ChatResult, Delta, Health, Message, Usage
from app.clock import ManualClock
from app.policy.schema import Policy
from app.router.approvals import AllowDecider, ApprovalBroker, DenyDecider
from app.router.cost import cost_usd
from app.router.ledger import BudgetLedger
from app.router.routed import input_hash, request_tokens
from app.router.service import BadRequest, RouteFailed, Router, RouteRefused
from app.router.types import RouterState, Signals
from app.tokens import count_text


class ScriptedBackend:
    def __init__(self, model_id: str, runtime: str, script: list[str | Exception]) -> None:
        self.model_id = model_id
        self.runtime = runtime
        self.script = script
        self.calls = 0
        self.requests: list[ChatRequest] = []
        self.usage = Usage(tokens_in=1000, tokens_out=200)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        self.calls += 1
        self.requests.append(request)
        step = self.script.pop(0) if self.script else f"reply from {self.model_id}"
        if isinstance(step, Exception):
            raise step
        for word in step.split(" "):
            yield Delta(text=word + " ")
        yield ChatResult(
            text=step,
            usage=self.usage,
            finish_reason="stop",
            model=self.model_id,
            latency_ms=5.0,
        )

    async def health(self) -> Health:
        return Health(ok=True)

    async def context_window(self) -> int | None:
        return None

    async def aclose(self) -> None:
        return None


class Resolver:
    def __init__(
        self,
        *,
        up: set[str],
        unavailable: dict[str, str] | None = None,
        windows: dict[str, int] | None = None,
    ) -> None:
        self.up = up
        self._unavailable = unavailable or {}
        self.windows = windows if windows is not None else {"smollm2-135m": 8192}
        self.scripts: dict[tuple[str, str], list[str | Exception]] = {}
        self.made: dict[tuple[str, str], ScriptedBackend] = {}

    def backend(self, model_id: str, runtime: str) -> ScriptedBackend:
        key = (model_id, runtime)
        if key not in self.made:
            self.made[key] = ScriptedBackend(model_id, runtime, self.scripts.get(key, []))
        return self.made[key]

    def unavailable(self) -> dict[str, str]:
        return dict(self._unavailable)

    async def runtime_up(self, runtime: str) -> bool:
        return runtime in self.up

    def context_windows(self) -> dict[str, int]:
        return dict(self.windows)

    def not_served(self) -> dict[str, bool]:
        return {}

    def sent(self, key: tuple[str, str]) -> list[ChatRequest]:
        """Every request the backend for ``key`` was sent (none if it was never made)."""
        made = self.made.get(key)
        return made.requests if made is not None else []


REQ = ChatRequest(messages=[Message(role="user", content="plan the fix")], max_tokens=64)


async def make_router(
    tmp_path: Path,
    policy: Policy,
    resolver: Resolver,
    *,
    decider: object = None,
    local_only: bool = False,
) -> tuple[Router, AuditLog, BudgetLedger]:
    clock = ManualClock()
    audit = await AuditLog.open(tmp_path / "audit.db", clock=clock, policy_version=policy.version)
    ledger = await BudgetLedger.open(tmp_path / "ledger.db", policy.budget, clock=clock)
    broker = ApprovalBroker(
        decider or AllowDecider(),
        audit=audit,
        timeout_s=5,
        clock=clock,  # type: ignore[arg-type]
    )
    slept: list[float] = []

    async def no_sleep(s: float) -> None:
        slept.append(s)

    router = Router(
        policy,
        session="s1",
        audit=audit,
        ledger=ledger,
        approvals=broker,
        backends=resolver,
        clock=clock,
        local_only=local_only,
        sleep=no_sleep,
    )
    return router, audit, ledger


ALL_UP = {"vllm", "llamacpp_server", "llamacpp_inprocess"}


async def test_vllm_unreachable_falls_back_in_process_with_audit_line(
    tmp_path: Path, policy: Policy
) -> None:
    resolver = Resolver(up={"llamacpp_inprocess"})
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    result = await router.complete("tutor", REQ)
    assert (result.model, result.runtime) == ("smollm2-135m", "llamacpp_inprocess")
    kinds = [line.kind for line in result.audit]
    assert kinds == ["runtime_fallback", "call"]
    fallback = result.audit[0]
    assert fallback.detail == (
        "qwen2.5-coder-7b on vLLM unreachable, llama.cpp server unreachable → "
        "smollm2-135m in-process"
    )
    assert "GR005_RUNTIME_FALLBACK" in fallback.reason_codes
    assert (await audit.verify()).ok
    await audit.close()
    await ledger.close()


async def test_a_call_lines_cost_is_the_ledgers_to_the_nano_dollar(
    tmp_path: Path, policy: Policy
) -> None:
    """Call lines rounded the cost to 6 decimals while the ledger keeps nano-dollars:
    0.001576 against 0.00157625, so the audit's costs never added up to ``budget``."""
    resolver = Resolver(up=ALL_UP)
    resolver.backend("gpt-5.1-high", "cloud").usage = Usage(tokens_in=1237, tokens_out=3)
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    try:
        result = await router.complete("architect", REQ, Signals(confidence=0.5))
        call = result.audit[-1]
        expected = (1237 * 1.25 + 30) / 1e6
        assert call.values["cost_usd"] == call.provenance["cost_usd"] == expected
        report = await ledger.report(session="s1")
        assert report["total"]["cost_usd"] == call.values["cost_usd"]
    finally:  # an open store's thread would keep a failing run from exiting
        await audit.close()
        await ledger.close()


def _places(usd: float) -> int:
    """How many decimal places ``usd`` is spelled with (in JSON, as repr spells it)."""
    exponent = Decimal(repr(usd)).as_tuple().exponent
    assert isinstance(exponent, int)
    return -exponent


async def test_an_escalations_estimate_is_the_ledgers_to_the_nano_dollar_in_every_line(
    tmp_path: Path, policy: Policy
) -> None:
    """The escalation and approval lines carried decide()'s float sum unrounded
    (0.00011675999999999999) and the provenance rounded it to 6 places, while the ledger
    reserved nano-dollars: each line now says the same figure, the one reserved."""
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    try:
        for max_tokens in range(60, 72):  # outputs whose float sums are noisy
            request = REQ.model_copy(update={"max_tokens": max_tokens})
            await router.complete("implementer", request, Signals(failed_loops=2))
        lines = await audit.lines(session="s1")
        escalations = [ln for ln in lines if ln.kind == "escalation"]
        approvals = [ln for ln in lines if ln.kind == "approval"]
        assert len(escalations) == len(approvals) == 12
        model = policy.model("deepseek-reasoner")
        thinking = policy.generation.reasoning_tokens(model.reasoning_effort)
        noisy = 0
        for max_tokens, esc, ok in zip(range(60, 72), escalations, approvals, strict=True):
            est = esc.values["est_cost_usd"]
            tokens_in = esc.values["inputs"]["signals"]["context_estimate"]
            usd = (tokens_in * 0.28 + (max_tokens + thinking) * 0.42) / 1e6
            noisy += _places(usd) > 9
            assert est == round(usd, 9) and _places(est) <= 9, est
            assert ok.values["est_cost_usd"] == esc.provenance["est_cost_usd"] == est
        assert noisy  # (the figures above were noisy, unrounded)
    finally:
        await audit.close()
        await ledger.close()


async def test_escalation_approved_reserves_settles_and_records_provenance(
    tmp_path: Path, policy: Policy
) -> None:
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    result = await router.complete("architect", REQ, Signals(confidence=0.5))
    assert result.escalated and result.model == "gpt-5.1-high"
    assert [line.kind for line in await audit.lines(session="s1")] == [
        "escalation",
        "approval",
        "call",
    ]
    call = result.audit[-1]
    prov = call.provenance
    assert prov["trigger"] == ["architect_low_confidence"]
    assert prov["values"] == {"confidence": 0.5}
    assert prov["policy_version"] == "1.0.0"
    assert prov["input_hash"] == input_hash(REQ)
    assert prov["approver"] == "headless:allow"
    assert prov["cost_usd"] == pytest.approx((1000 * 1.25 + 200 * 10.0) / 1e6)
    snap = await ledger.snapshot("s1")
    assert snap.by_provider["openai"] == pytest.approx(prov["cost_usd"])
    await audit.close()
    await ledger.close()


async def test_no_keys_skips_every_cloud_step_and_stays_local(
    tmp_path: Path, policy: Policy
) -> None:
    missing = {m: "no key" for m in policy.chain("architect")}
    resolver = Resolver(up={"llamacpp_inprocess"}, unavailable=missing)
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    result = await router.complete("architect", REQ, Signals(confidence=0.5))
    assert not result.escalated and result.model == "smollm2-135m"
    skips = [line for line in result.audit if line.kind == "skip"]
    assert [s.to for s in skips] == policy.chain("architect")
    assert all("SKIP_UNAVAILABLE" in s.reason_codes for s in skips)
    assert result.audit[-2].kind == "runtime_fallback"
    await audit.close()
    await ledger.close()


async def test_denial_moves_down_and_ends_local(tmp_path: Path, policy: Policy) -> None:
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver, decider=DenyDecider())
    result = await router.complete("architect", REQ, Signals(confidence=0.5))
    assert not result.escalated and result.model == "qwen3-14b"
    kinds = [line.kind for line in await audit.lines(session="s1")]
    # each cloud step asked separately, each denied; then the local plan goes on
    assert kinds.count("denial") == len(policy.chain("architect"))
    assert kinds[-2:] == ["route", "call"]
    assert (await ledger.snapshot("s1")).by_provider == {}
    # what became of the cloud steps, for a caller that says why it stayed local
    said = result.passed_over.split("; ")
    assert sorted(said) == sorted(f"{m}: denied" for m in policy.chain("architect")), said
    await audit.close()
    await ledger.close()


async def test_cloud_failure_retries_then_moves_to_next_step(
    tmp_path: Path, policy: Policy
) -> None:
    resolver = Resolver(up=ALL_UP)
    resolver.scripts[("deepseek-reasoner", "cloud")] = [
        BackendError("server_error", "503", status=503),
        BackendError("server_error", "503", status=503),
    ]
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    result = await router.complete("implementer", REQ, Signals(failed_loops=2))
    assert result.model == "deepseek-chat"
    kinds = [line.kind for line in await audit.lines(session="s1")]
    assert kinds == [
        "escalation",
        "approval",
        "retry",
        "skip",  # reasoner: one retry, then skipped
        "escalation",
        "approval",
        "call",  # chat: its own approval
    ]
    snap = await ledger.snapshot("s1")
    assert snap.reserved_usd == 0  # the failed reservation was released
    await audit.close()
    await ledger.close()


class CutShort(ScriptedBackend):
    """Its first ``cuts`` tries' replies break after a few words (a connection reset):
    the provider bills the prompt and those words, and no result stands for them."""

    def __init__(self, model_id: str, cuts: int) -> None:
        super().__init__(model_id, "cloud", [])
        self.cuts = cuts

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        if self.calls < self.cuts:
            self.calls += 1
            self.requests.append(request)
            yield Delta(text="the first part of an answer that ")
            raise BackendError("server_error", "connection reset mid-reply")
        async for item in super().stream(request):
            yield item


@asynccontextmanager
async def cutting(
    path: Path, policy: Policy, cuts: int
) -> AsyncIterator[tuple[Router, AuditLog, BudgetLedger, Resolver]]:
    """A router whose deepseek-reasoner cuts its first ``cuts`` tries short, on stores
    in ``path``, closed after."""
    resolver = Resolver(up=ALL_UP)
    resolver.made[("deepseek-reasoner", "cloud")] = CutShort("deepseek-reasoner", cuts)
    os.makedirs(path, exist_ok=True)
    router, audit, ledger = await make_router(path, policy, resolver)
    try:
        yield router, audit, ledger, resolver
    finally:
        await audit.close()
        await ledger.close()


@pytest.mark.parametrize("cuts", [1, 2])
async def test_a_try_cut_short_after_its_reply_began_is_charged(
    tmp_path: Path, policy: Policy, cuts: int
) -> None:
    """A whole (not streamed) reply whose first try broke mid-reply was retried, and the
    broken try, which the provider bills, cost nothing against the caps (an audit). It
    is counted here and charged with the call (or, when every try broke, with the
    released reservation), and its line says so."""
    async with cutting(tmp_path, policy, cuts) as (
        router,
        audit,
        ledger,
        _,
    ):
        result = await router.complete("implementer", REQ, Signals(failed_loops=2))
        line = next(
            line
            for line in await audit.lines(session="s1")
            if line.to == "deepseek-reasoner" and line.kind in ("call", "skip")
        )
        assert line.values["tries_cut_short"] == cuts
        tokens_in, tokens_out = (
            request_tokens(REQ) * cuts,
            count_text("the first part of an answer that ") * cuts,
        )
        assert line.values["cut_short_tokens_in"] == tokens_in
        assert line.values["cut_short_tokens_out"] == tokens_out
        reasoner = policy.model("deepseek-reasoner")
        cut_usd = cost_usd(reasoner, tokens_in, tokens_out)
        assert line.values["cut_short_cost_usd"] == round(cut_usd, 9) > 0
        report = await ledger.report(session="s1")
        if cuts == 1:  # retried once and served: one call, both tries' cost
            assert result.model == "deepseek-reasoner" and line.kind == "call"
            assert line.values["cost_usd"] == pytest.approx(
                cost_usd(reasoner, 1000, 200) + cut_usd, abs=1e-9
            )
        else:  # every try broke: the step is skipped, what it was billed charged
            assert result.model == "deepseek-chat" and line.kind == "skip"
            assert "billed" in line.detail
        calls = sum(
            line.values["cost_usd"]
            for line in await audit.lines(session="s1")
            if line.kind == "call"
        )
        assert report["total"]["cost_usd"] == pytest.approx(
            calls + (cut_usd if cuts == 2 else 0), abs=1e-9
        )


async def test_a_retry_after_a_billed_cut_is_reserved_for_or_not_made(
    tmp_path: Path, policy: Policy
) -> None:
    """One reservation covers one try: retries after tries cut short (billed) settled
    past it, and past the cap (a review). A retry after a billed try reserves again
    first; when the cap leaves no room, no retry is made, said, and the chain moves on."""
    async with cutting(tmp_path / "a", policy, 1) as (
        router,
        audit,
        ledger,
        resolver,
    ):
        await router.complete("implementer", REQ, Signals(failed_loops=2))
        lines = await audit.lines(session="s1")
        estimate = next(ln for ln in lines if ln.kind == "escalation").values["est_cost_usd"]
        snap = await ledger.snapshot("s1")
        assert snap.reserved_usd == 0  # the retry's reservation released with the call
    cap = estimate * 1.5  # room for one try's reservation, not two
    tight = policy.model_copy(
        update={"budget": policy.budget.model_copy(update={"session_usd": cap})}
    )
    async with cutting(tmp_path / "b", tight, 1) as (
        router,
        audit,
        ledger,
        resolver,
    ):
        result = await router.complete("implementer", REQ, Signals(failed_loops=2))
        lines = await audit.lines(session="s1")
        stop = next(ln for ln in lines if ln.kind == "budget_stop")
        assert stop.to == "deepseek-reasoner" and stop.values["retry_after_cut"] is True
        assert resolver.made[("deepseek-reasoner", "cloud")].calls == 1  # no second try
        assert result.model != "deepseek-reasoner"
        # what the cut try was billed stays within the one reservation it had
        assert 0 < (await ledger.snapshot("s1")).by_model["deepseek-reasoner"] <= estimate


async def test_a_stream_broken_after_it_reached_the_reader_is_charged_once(
    tmp_path: Path, policy: Policy
) -> None:
    """A streamed try cut after its first words reached the reader is settled at its
    estimate; it was counted as a try cut short as well, and charged twice (a review)."""
    async with cutting(tmp_path, policy, 5) as (
        router,
        audit,
        ledger,
        _,
    ):
        seen: list[Delta] = []

        async def on_delta(d: Delta) -> None:
            seen.append(d)

        with pytest.raises(RouteFailed):
            await router.complete("implementer", REQ, Signals(failed_loops=2), on_delta=on_delta)
        lines = await audit.lines(session="s1")
        estimate = next(ln for ln in lines if ln.kind == "escalation").values["est_cost_usd"]
        spent = (await ledger.snapshot("s1")).by_model["deepseek-reasoner"]
        assert spent == pytest.approx(estimate, abs=1e-9)
        budget = next(ln for ln in lines if ln.kind == "budget")
        assert "cut_short_cost_usd" not in budget.values


class LaunchedEmbedded(Resolver):
    """A llama.cpp server ``local serve`` made without a GGUF: up, serving the embedded
    SmolLM2 under its catalog id, so no other local model (the registry's probe says)."""

    def not_served(self) -> dict[str, bool]:
        return {"runtime:llamacpp_server:qwen2.5-coder-7b": False}


async def test_a_server_that_does_not_serve_the_roles_model_is_passed_over_and_said(
    tmp_path: Path, policy: Policy
) -> None:
    """The tutor's qwen2.5-coder-7b was sent to that server, SmolLM2 answered, and the
    audit and the ledger named qwen2.5-coder-7b (an audit)."""
    resolver = LaunchedEmbedded(up={"llamacpp_server", "llamacpp_inprocess"})
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    try:
        result = await router.complete("tutor", REQ)
        assert (result.model, result.runtime) == ("smollm2-135m", "llamacpp_inprocess")
        assert ("qwen2.5-coder-7b", "llamacpp_server") not in resolver.made
        assert result.audit[0].detail == (
            "qwen2.5-coder-7b on vLLM unreachable, llama.cpp server serves another model → "
            "smollm2-135m in-process"
        )
    finally:
        await audit.close()
        await ledger.close()


async def test_local_runtime_failure_marks_it_down_and_falls_back(
    tmp_path: Path, policy: Policy
) -> None:
    resolver = Resolver(up=ALL_UP)
    resolver.scripts[("qwen3-14b", "vllm")] = [BackendError("connect", "refused")]
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    result = await router.complete("architect", REQ)
    assert result.runtime == "llamacpp_server"
    kinds = [line.kind for line in result.audit]
    assert kinds == ["route", "degradation", "runtime_fallback", "call"]
    assert resolver.made[("qwen3-14b", "vllm")].calls == 1  # never retried slowly
    # the next request skips vLLM without trying it (cooldown)
    again = await router.complete("architect", REQ)
    assert again.runtime == "llamacpp_server"
    assert resolver.made[("qwen3-14b", "vllm")].calls == 1
    await audit.close()
    await ledger.close()


def _invalid(model: str, flavor: str) -> BackendError:
    """A request the backend refuses as invalid, as provider_errors maps its 400."""
    return BackendError("bad_request", f"{model} ({flavor}): HTTP 400: invalid schema", status=400)


@pytest.mark.parametrize("runtime", ["vllm", "llamacpp_server"])
async def test_a_request_a_local_runtime_refuses_as_invalid_fails_there_marking_nothing_down(
    tmp_path: Path, policy: Policy, runtime: str
) -> None:
    """An audit: vLLM's ``400 invalid schema`` to one client marked vLLM down for 30 s,
    that client was answered by the 135M fallback model, and so was every other client
    meanwhile. The request, not the runtime: no fallback, nothing marked down, the route
    fails with the runtime's words, and the next request is served where it always is."""
    up = ALL_UP if runtime == "vllm" else ALL_UP - {"vllm"}
    resolver = Resolver(up=up)
    resolver.scripts[("qwen3-14b", runtime)] = [_invalid("qwen3-14b", runtime)]
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    with pytest.raises(BadRequest) as failed:
        await router.complete("architect", REQ)
    assert failed.value.status == 400 and failed.value.model == "qwen3-14b"
    assert "HTTP 400: invalid schema" in str(failed.value) and not failed.value.too_long
    assert str(failed.value).startswith("bad request: ")
    assert list(resolver.made) == [("qwen3-14b", runtime)]  # no fallback was tried
    lines = await audit.lines(session="s1")
    first = "route" if runtime == "vllm" else "runtime_fallback"  # (vLLM not up)
    assert [ln.kind for ln in lines] == [first, "degradation"]
    said = lines[-1]
    assert said.reason_codes == ["ROUTE_FAILED", "ERR_BAD_REQUEST"]
    assert said.values["status"] == 400 and "not marked down" in said.detail
    assert "RUNTIME_DOWN" not in [c for ln in lines for c in ln.reason_codes]
    assert router.health.down() == {}
    again = await router.complete("architect", REQ)
    assert (again.model, again.runtime) == ("qwen3-14b", runtime)
    assert resolver.made[("qwen3-14b", runtime)].calls == 2
    await audit.close()
    await ledger.close()


async def test_a_request_a_cloud_model_refuses_as_invalid_is_sent_once_and_nowhere_else(
    tmp_path: Path, policy: Policy
) -> None:
    """Not retried (the same 400 again), the model not rested, no next cloud step (another
    approval, another reservation, the same request sent to another provider); the
    reservation released, nothing spent."""
    resolver = Resolver(up=ALL_UP)
    resolver.scripts[("deepseek-reasoner", "cloud")] = [
        _invalid("deepseek-reasoner", "deepseek"),
        "never asked again",
    ]
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    with pytest.raises(BadRequest) as failed:
        await router.complete("implementer", REQ, Signals(failed_loops=2))
    assert failed.value.status == 400 and "invalid schema" in str(failed.value)
    assert resolver.made[("deepseek-reasoner", "cloud")].calls == 1
    assert list(resolver.made) == [("deepseek-reasoner", "cloud")]  # no next step
    lines = await audit.lines(session="s1")
    assert [ln.kind for ln in lines] == ["escalation", "approval", "skip"]
    assert lines[-1].reason_codes == ["SKIP_FAILED", "ERR_BAD_REQUEST", "ROUTE_FAILED"]
    assert "the route fails (bad request from deepseek)" in lines[-1].detail
    snap = await ledger.snapshot("s1")
    assert snap.reserved_usd == 0 and snap.per_session.spent_usd == 0
    assert (snap.calls, snap.failed) == (1, 1)  # released as a failed call, at $0
    assert router.health.down() == {}  # not rested: the next request may use it
    await audit.close()
    await ledger.close()


def _too_long(model: str) -> BackendError:
    return BackendError("context_length", f"{model}: prompt is 9000 tokens; the window is 8192")


@pytest.mark.parametrize(
    ("vllm", "server", "inprocess", "too_long"),
    [
        # every local runtime refused the prompt for its size: shorten it, do not retry
        ("too long", "too long", "too long", True),
        # a server that failed is marked down for its cooldown: a retry would skip it and
        # meet the same small window, so it is still the prompt to change
        ("too long", "down", "too long", True),
        ("too long", "too long", "broken", False),  # the last one broke: a retry may do
    ],
)
async def test_a_prompt_too_long_for_every_model_tried_is_said_so(
    tmp_path: Path, policy: Policy, vllm: str, server: str, inprocess: str, too_long: bool
) -> None:
    def step(model: str, how: str) -> BackendError:
        if how == "too long":
            return _too_long(model)
        return BackendError("connect" if how == "down" else "server_error", f"{model}: {how}")

    resolver = Resolver(up=ALL_UP)
    resolver.scripts[("qwen3-14b", "vllm")] = [step("qwen3-14b", vllm)]
    resolver.scripts[("qwen3-14b", "llamacpp_server")] = [step("qwen3-14b", server)]
    resolver.scripts[("smollm2-135m", "llamacpp_inprocess")] = [step("smollm2", inprocess)]
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    with pytest.raises(RouteFailed) as failed:
        await router.complete("architect", REQ)
    assert failed.value.too_long is too_long
    assert all(made.calls == 1 for made in resolver.made.values())
    await audit.close()
    await ledger.close()


async def test_a_cloud_step_that_failed_otherwise_keeps_the_failure_retryable(
    tmp_path: Path, policy: Policy
) -> None:
    chain = policy.chain("architect")
    resolver = Resolver(up={"llamacpp_inprocess"}, unavailable={m: "no key" for m in chain[1:]})
    broken = BackendError("server_error", "503", status=503)
    resolver.scripts[(chain[0], "cloud")] = [broken] * 5
    resolver.scripts[("smollm2-135m", "llamacpp_inprocess")] = [_too_long("smollm2")]
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    with pytest.raises(RouteFailed) as failed:
        await router.complete("architect", REQ, Signals(confidence=0.5))
    assert resolver.made[(chain[0], "cloud")].calls >= 1
    assert failed.value.too_long is False
    await audit.close()
    await ledger.close()


async def test_cloud_steps_without_a_key_do_not_hide_that_the_prompt_is_too_long(
    tmp_path: Path, policy: Policy
) -> None:
    missing = {m: "no key" for m in policy.chain("architect")}
    resolver = Resolver(up={"llamacpp_inprocess"}, unavailable=missing)
    resolver.scripts[("smollm2-135m", "llamacpp_inprocess")] = [_too_long("smollm2")]
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    with pytest.raises(RouteFailed) as failed:
        await router.complete("architect", REQ, Signals(confidence=0.5))
    assert failed.value.too_long is True  # no retry gives a key: it is the prompt to change
    # and the client is told what became of the cloud steps, not only the local window
    said = str(failed.value)
    assert all(f"{m}: unavailable: no key" in said for m in policy.chain("architect"))
    await audit.close()
    await ledger.close()


async def test_local_only_never_calls_a_cloud_backend(tmp_path: Path, policy: Policy) -> None:
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver, local_only=True)
    result = await router.complete("implementer", REQ, Signals(failed_loops=5))
    assert not result.escalated
    assert all(rt != "cloud" for (_, rt) in resolver.made)
    assert {line.kind for line in result.audit} >= {"skip", "route"}
    assert all(
        "SKIP_LOCAL_ONLY" in line.reason_codes for line in result.audit if line.kind == "skip"
    )
    await audit.close()
    await ledger.close()


async def test_cv_is_refused_and_audited(tmp_path: Path, policy: Policy) -> None:
    router, audit, ledger = await make_router(tmp_path, policy, Resolver(up=ALL_UP))
    with pytest.raises(RouteRefused, match="CV_NOT_LLM_ROLE"):
        await router.complete("cv", REQ)
    (line,) = await audit.tail(1)
    assert line.kind == "refusal"
    await audit.close()
    await ledger.close()


async def test_budget_cap_stops_the_escalation(tmp_path: Path, policy: Policy) -> None:
    tight = policy.model_copy(
        update={"budget": policy.budget.model_copy(update={"session_usd": 0.043})}
    )
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, tight, resolver)
    # ~0.041 estimated: fits once, then the settled spend leaves too little for the next
    first = await router.complete("architect", REQ, Signals(confidence=0.5))
    assert first.escalated
    second = await router.complete("architect", REQ, Signals(confidence=0.5))
    # GPT-5.1 no longer fits: the cheaper next step does, after an audited budget skip
    assert second.model == "deepseek-reasoner"
    skip = next(line for line in second.audit if line.kind == "skip")
    assert skip.to == "gpt-5.1-high" and "SKIP_BUDGET" in skip.reason_codes
    await audit.close()
    await ledger.close()

    broke = policy.model_copy(
        update={"budget": policy.budget.model_copy(update={"session_usd": 0.0})}
    )
    (tmp_path / "b").mkdir()
    router, audit, ledger = await make_router(tmp_path / "b", broke, resolver)
    third = await router.complete("architect", REQ, Signals(confidence=0.5))
    assert not third.escalated and third.provider == "local"
    assert [line.reason_codes[0] for line in third.audit if line.kind == "skip"] == [
        "SKIP_BUDGET",
        "SKIP_BUDGET",
    ]
    await audit.close()
    await ledger.close()


async def test_cloud_only_raises_before_any_local_call(tmp_path: Path, policy: Policy) -> None:
    from app.router.service import RouteStaysLocal

    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver, decider=DenyDecider())
    with pytest.raises(RouteStaysLocal) as caught:
        await router.complete("architect", REQ, Signals(confidence=0.5), cloud_only=True)
    assert caught.value.decision.action == "local"
    assert resolver.made == {}  # no backend was even built
    kinds = [line.kind for line in await audit.lines(session="s1")]
    assert "call" not in kinds and "route" not in kinds and "denial" in kinds
    # without a trigger there is nothing cloud to try: the same, at once
    with pytest.raises(RouteStaysLocal):
        await router.complete("architect", REQ, Signals(), cloud_only=True)
    await audit.close()
    await ledger.close()


async def test_deny_all_keeps_the_role_local_without_asking_each_step(
    tmp_path: Path, policy: Policy
) -> None:
    from app.router.approvals import ApprovalDecision, ApprovalRequest

    asked: list[str] = []

    class DenyAll:
        name = "test:deny-all"

        async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
            asked.append(req.model)
            return ApprovalDecision(decision="deny_all", decided_by=self.name)

    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver, decider=DenyAll())
    result = await router.complete("architect", REQ, Signals(confidence=0.5))
    assert not result.escalated and result.model == "qwen3-14b"
    assert asked == ["gpt-5.1-high"]  # the first step only; the rest of the chain is not asked
    lines = await audit.lines(session="s1")
    assert [line.kind for line in lines] == ["escalation", "denial", "route", "call"]
    assert lines[1].reason_codes == ["DENIED_ALL"]
    await audit.close()
    await ledger.close()


async def test_nobody_is_asked_to_approve_a_call_the_budget_no_longer_covers(
    tmp_path: Path, policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests at once: the other one reserved what was left after this one's
    decision, and the human was asked to approve a call the reservation then refused."""
    from app.router.approvals import ApprovalDecision, ApprovalRequest

    asked: list[str] = []

    class Asking:
        name = "human"

        async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
            asked.append(req.model)
            return ApprovalDecision(decision="allow_once", decided_by=self.name)

    router, audit, ledger = await make_router(
        tmp_path, policy, Resolver(up=ALL_UP), decider=Asking()
    )

    async def spent_meanwhile(session: str, provider: str) -> float:
        return 0.0  # what the budget holds once the other request has reserved

    monkeypatch.setattr(ledger, "left_usd", spent_meanwhile)
    result = await router.complete("architect", REQ, Signals(confidence=0.5))
    assert not result.escalated and asked == []
    stops = [line for line in result.audit if line.kind == "budget_stop"]
    assert stops and all("before asking for approval" in line.detail for line in stops)
    await audit.close()
    await ledger.close()


async def test_a_stop_before_approval_says_what_is_left_to_the_nano_dollar(
    tmp_path: Path, policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop line rounded what was left to 6 places (0.000012345 read 0.000012), beside
    an estimate and a ledger in nano-dollars."""
    router, audit, ledger = await make_router(tmp_path, policy, Resolver(up=ALL_UP))

    async def little_left(session: str, provider: str) -> float:
        return 0.000012345  # (12,345 nano-dollars: less than any cloud step's estimate)

    monkeypatch.setattr(ledger, "left_usd", little_left)
    try:
        result = await router.complete("architect", REQ, Signals(confidence=0.5))
        stops = [line for line in result.audit if line.kind == "budget_stop"]
        assert stops and all(line.values["left_usd"] == 0.000012345 for line in stops)
    finally:
        await audit.close()
        await ledger.close()


async def test_deny_all_outranks_an_earlier_allow_for_the_session(
    tmp_path: Path, policy: Policy
) -> None:
    """`a` for gpt-5.1-high, then `d` (deny all: stay local) on another escalation: the
    next request for gpt-5.1-high went to the cloud without asking, because the router
    asks nobody about a model allowed for the session."""
    from app.router.approvals import ApprovalDecision, ApprovalRequest

    answers = ["allow_session", "deny_all"]
    asked: list[str] = []

    class Human:
        name = "human"

        async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
            asked.append(req.model)
            return ApprovalDecision(decision=answers.pop(0), decided_by=self.name)

    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver, decider=Human())
    first = await router.complete("architect", REQ, Signals(confidence=0.5))
    assert first.escalated and first.model == "gpt-5.1-high"
    second = await router.complete("implementer", REQ, Signals(user_request=True))
    assert not second.escalated
    third = await router.complete("architect", REQ, Signals(confidence=0.5))
    assert not third.escalated, third.model
    assert asked == ["gpt-5.1-high", "deepseek-chat"]  # nobody asked again
    cloud_calls = [key for key, made in resolver.made.items() if key[1] == "cloud" and made.calls]
    assert cloud_calls == [("gpt-5.1-high", "cloud")]
    denials = [line for line in await audit.lines() if line.kind == "denial"]
    assert [d.reason_codes for d in denials] == [["DENIED_ALL"], ["DENIED_ALL_REUSED"]]
    await audit.close()
    await ledger.close()


async def test_a_deny_all_between_the_decision_and_the_call_keeps_it_local(
    tmp_path: Path, policy: Policy
) -> None:
    """A model allowed for the session is decided without asking; a "d" answered on
    another question while this request wrote its escalation line and read the ledger
    did not stop it (a review): it asks the broker then, which answers with the denial."""
    from app.router.approvals import ApprovalDecision, ApprovalRequest

    class Human:
        name = "human"

        async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
            return ApprovalDecision(decision="allow_session", decided_by=self.name)

    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver, decider=Human())
    first = await router.complete("architect", REQ, Signals(confidence=0.5))
    assert first.escalated and first.model == "gpt-5.1-high"
    broker = router.approvals
    add = audit.add

    async def d_meanwhile(kind: str, **fields: object) -> object:
        if kind == "escalation":  # the other question's "d", as this line is written
            broker._stay_local(router.session)
        return await add(kind, **fields)  # type: ignore[arg-type]

    audit.add = d_meanwhile  # type: ignore[method-assign]
    second = await router.complete("architect", REQ, Signals(confidence=0.5))
    assert not second.escalated, second.model
    cloud_calls = [made.calls for key, made in resolver.made.items() if key[1] == "cloud"]
    assert cloud_calls == [1]  # the first request's call alone
    denials = [line for line in await audit.lines() if line.kind == "denial"]
    assert [d.reason_codes for d in denials] == [["DENIED_ALL_REUSED"]]
    await audit.close()
    await ledger.close()


async def test_an_escalation_under_an_earlier_session_approval_says_so_before_the_call(
    tmp_path: Path, policy: Policy
) -> None:
    """A model allowed for the session is called with nobody asked: the escalation line
    (written before the call) says the session's approval covers it, where the tail and an
    editor's conversation showed an escalation, then a call, and no approval between (an
    ACP audit); the first request's line, asked, says nothing of the kind."""
    from app.router.approvals import ApprovalDecision, ApprovalRequest

    class Human:
        name = "human"

        async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
            return ApprovalDecision(decision="allow_session", decided_by=self.name)

    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver, decider=Human())
    for _ in range(2):
        assert (await router.complete("architect", REQ, Signals(confidence=0.5))).escalated
    kinds = [(line.kind, line.values.get("approval")) for line in await audit.lines()]
    escalations = [v for kind, v in kinds if kind == "escalation"]
    assert escalations == [None, "session"]
    second = [line for line in await audit.lines() if line.kind == "escalation"][1]
    assert "approved for this session earlier" in (second.detail or "")
    # the second request's call follows its escalation line with no question between
    assert [k for k, _ in kinds[-2:]] == ["escalation", "call"]
    await audit.close()
    await ledger.close()


async def test_a_runtime_resting_after_a_failure_is_no_reason_to_call_a_prompt_too_long(
    tmp_path: Path, policy: Policy
) -> None:
    """vLLM failed once and rests for its cooldown: the embedded model's window was then
    the only one left, and the client was told the prompt was too long (a 400 nobody
    retries, for a prompt the role's real model takes)."""
    resolver = Resolver(up={"vllm", "llamacpp_inprocess"})
    resolver.scripts[("qwen3-14b", "vllm")] = [BackendError("server_error", "vllm: 500")]
    resolver.scripts[("smollm2-135m", "llamacpp_inprocess")] = [_too_long("smollm2")]
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    with pytest.raises(RouteFailed) as failed:
        await router.complete("architect", REQ)
    assert failed.value.too_long is False
    assert "vllm down for now after a failure (retry soon)" in str(failed.value)
    await audit.close()
    await ledger.close()


async def test_a_cloud_step_the_decision_skipped_for_budget_is_named_in_the_failure(
    tmp_path: Path, policy: Policy
) -> None:
    broke = policy.model_copy(
        update={"budget": policy.budget.model_copy(update={"session_usd": 0.0001})}
    )
    missing = {m: "no key" for m in broke.chain("architect")[1:]}
    resolver = Resolver(up={"llamacpp_inprocess"}, unavailable=missing)
    resolver.scripts[("smollm2-135m", "llamacpp_inprocess")] = [_too_long("smollm2")]
    router, audit, ledger = await make_router(tmp_path, broke, resolver)
    with pytest.raises(RouteFailed) as failed:
        await router.complete("architect", REQ, Signals(confidence=0.5))
    said = str(failed.value)
    assert "gpt-5.1-high: budget" in said, said
    assert "unavailable: unavailable" not in said
    await audit.close()
    await ledger.close()


class Ticker:
    """A coroutine standing for the gateway's other clients: it counts its turns."""

    def __init__(self) -> None:
        self.turns = 0
        self.stop = False

    async def run(self) -> None:
        while not self.stop:
            self.turns += 1
            await asyncio.sleep(0)


class SlowToMake(Resolver):
    """Making a cloud backend takes a while (an SDK's import): it is over once the loop
    has taken ``turns`` turns meanwhile, or after ``give_up_s`` when the loop takes none
    (the wait runs on the loop's own thread then, and nothing else can run)."""

    def __init__(self, ticker: Ticker, *, turns: int = 3, give_up_s: float = 5.0) -> None:
        super().__init__(up=ALL_UP)
        self.ticker, self.need, self.give_up_s = ticker, turns, give_up_s
        #: per pair made: the loop's turns while it was made, and the thread it was made on
        self.making: dict[tuple[str, str], tuple[int, int]] = {}
        self.asked_on: list[int] = []

    def backend(self, model_id: str, runtime: str) -> ScriptedBackend:
        key = (model_id, runtime)
        self.asked_on.append(threading.get_ident())
        if key not in self.made and runtime == "cloud":
            before = self.ticker.turns
            give_up = time.monotonic() + self.give_up_s
            while self.ticker.turns < before + self.need and time.monotonic() < give_up:
                time.sleep(0.001)
            self.making[key] = (self.ticker.turns - before, threading.get_ident())
        return super().backend(model_id, runtime)


async def test_the_loop_serves_others_while_a_cloud_backend_is_made_the_first_time(
    tmp_path: Path, policy: Policy
) -> None:
    """The first escalation to a model makes its backend, which imports its SDK (seconds
    for anthropic): the gateway's other clients go on being served meanwhile. Later
    requests to the same model ask the resolver on the loop, with no thread hop."""
    ticker = Ticker()
    resolver = SlowToMake(ticker)
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    others = asyncio.create_task(ticker.run())
    try:
        result = await router.complete("architect", REQ, Signals(confidence=0.5))
        assert result.escalated and result.model == "gpt-5.1-high"
        turns, made_on = resolver.making[("gpt-5.1-high", "cloud")]
        assert turns >= resolver.need  # the loop kept turning while it was made
        assert made_on != threading.get_ident()  # on a worker thread
        asked = len(resolver.asked_on)
        again = await router.complete("architect", REQ, Signals(confidence=0.5))
        assert again.model == "gpt-5.1-high"
        assert resolver.asked_on[asked:] == [threading.get_ident()]  # made: asked inline
    finally:
        ticker.stop = True
        await others
    await audit.close()
    await ledger.close()


async def test_the_state_decide_reads_holds_every_read_and_the_defaults_otherwise(
    tmp_path: Path, policy: Policy
) -> None:
    # RouterState is given only its non-empty containers (issue 20): the same state as
    # every field given, whichever of them are empty
    resolver = Resolver(up={"llamacpp_inprocess"}, windows={})
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    providers = [name for name in policy.providers if name != "local"]
    try:
        bare = await router._state(set(), {}, False, False)
        assert bare == RouterState(
            local_only=False,
            provider_left_usd={},
            health={"runtime:vllm": False, "runtime:llamacpp_server": False},
            unavailable={},
            failed={},
            approved=frozenset(),
            denied=frozenset(),
            context_windows={},
        )
        router.approvals._session_allowed.add(("s1", "openai", "gpt-5.1-high"))
        router.health.mark_down("deepseek-reasoner", 60, "rate limited")
        resolver.windows = {"smollm2-135m": 8192}
        failed = {"runtime:llamacpp_inprocess": "context_length: too long", "kimi-k2": "x"}
        denied = {"gpt-5.1-high"}
        full = await router._state(denied, failed, True, True)
        # the request goes on changing its own: the state made keeps what it was given
        failed["deepseek-reasoner"] = "y"
        denied.add("kimi-k2")
        assert full == RouterState(
            local_only=True,
            provider_left_usd=await ledger.left_usd_many("s1", providers),
            health={
                "deepseek-reasoner": False,
                "runtime:vllm": False,
                "runtime:llamacpp_server": False,
                "runtime:llamacpp_inprocess": False,
            },
            unavailable={},
            failed={"runtime:llamacpp_inprocess": "context_length: too long", "kimi-k2": "x"},
            approved=frozenset({"gpt-5.1-high"}),
            denied=frozenset({"gpt-5.1-high"}),
            context_windows={"smollm2-135m": 8192},
        )
        assert set(full.provider_left_usd) == set(providers)
        # every runtime up, nothing down: no health given, the default's
        resolver.up = ALL_UP
        router.health.mark_up("deepseek-reasoner")
        up = await router._state(set(), {}, False, False)
        assert up == RouterState(
            health={},
            approved=frozenset({"gpt-5.1-high"}),
            context_windows={"smollm2-135m": 8192},
        )
    finally:
        await audit.close()
        await ledger.close()


async def test_the_reservation_covers_the_requests_own_output_cap(
    tmp_path: Path, policy: Policy
) -> None:
    """`ask --max-tokens 1000000` was reserved at the role's 4,096 output tokens and billed
    past every cap; a request's own cap is what its reservation covers, both ways."""
    tight = policy.model_copy(
        update={"budget": policy.budget.model_copy(update={"session_usd": 0.5})}
    )
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, tight, resolver)
    # GPT-5.1's 100k output tokens cost $1: past the cap (the role's 4,096 cost $0.2)
    huge = REQ.model_copy(update={"max_tokens": 100_000})
    # a signal's lower figure does not shrink it either
    result = await router.complete("architect", huge, Signals(confidence=0.5, output_tokens=1))
    skip = next(line for line in result.audit if line.kind == "skip")
    assert skip.to == "gpt-5.1-high" and "SKIP_BUDGET" in skip.reason_codes
    assert resolver.sent(("gpt-5.1-high", "cloud")) == []
    esc = next(line for line in result.audit if line.kind == "escalation")
    price = policy.model(esc.to or "").price_out_usd_per_mtok
    assert esc.to == "deepseek-reasoner"
    assert esc.values["est_cost_usd"] >= 100_000 * price / 1e6
    await audit.close()
    await ledger.close()


@pytest.mark.parametrize(
    ("role", "signals", "model", "refused"),
    [
        ("architect", Signals(confidence=0.5), "gpt-5.1-high", None),
        ("tutor", Signals(user_request=True), "claude-haiku-4.5", "-5 in / 3 out"),
    ],
    ids=["reasoning-model-no-usage", "usage-refused"],
)
async def test_a_call_whose_billing_is_unknown_settles_at_its_estimate(
    tmp_path: Path,
    policy: Policy,
    role: str,
    signals: Signals,
    model: str,
    refused: str | None,
) -> None:
    """No usage from GPT-5.1 High: the call settled at the visible reply's tokens (one
    token: $0.0000475), releasing the $0.2 reservation that covered its billed thinking.
    A server's usage that cannot be this call's (on a model that does not reason) is
    counted here; what the provider bills is then not known either."""
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    cloud = resolver.backend(model, "cloud")
    cloud.usage = Usage(tokens_in=20, tokens_out=1, counted_locally=True, refused=refused)
    result = await router.complete(role, REQ, signals)
    assert result.model == model and result.usage_counted_locally
    esc = next(line for line in result.audit if line.kind == "escalation")
    call = next(line for line in result.audit if line.kind == "call")
    assert call.values.get("usage_refused") == refused
    assert call.values["settled_at_estimate"] is True
    assert result.cost_usd == pytest.approx(esc.values["est_cost_usd"])
    await audit.close()
    await ledger.close()


async def test_a_callers_context_estimate_raises_the_count_never_lowers_it(
    tmp_path: Path, policy: Policy
) -> None:
    """`ask --signal context_estimate=1` priced a 24k-token prompt at one token, past a
    $0.01 cap; the gateway took the larger of the two already, the router did not."""
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    long = REQ.model_copy(update={"messages": [Message(role="user", content="word " * 20_000)]})
    counted = request_tokens(long)
    low = await router.complete("architect", long, Signals(confidence=0.5, context_estimate=1))
    high = await router.complete(
        "architect", long, Signals(confidence=0.5, context_estimate=counted + 1000)
    )
    (esc_low,) = [line for line in low.audit if line.kind == "escalation"]
    (esc_high,) = [line for line in high.audit if line.kind == "escalation"]
    price = policy.model(esc_low.to or "").price_in_usd_per_mtok
    assert esc_low.values["est_cost_usd"] >= counted * price / 1e6
    assert esc_high.values["est_cost_usd"] > esc_low.values["est_cost_usd"]
    await audit.close()
    await ledger.close()


async def test_a_fault_on_the_way_settles_the_call_at_its_estimate_and_says_so(
    tmp_path: Path, policy: Policy
) -> None:
    """An error that is no backend's failure (a reply no model of ours reads) left the
    reservation in flight until it expired and the call with no closing line."""
    resolver = Resolver(up=ALL_UP)
    resolver.scripts[("claude-haiku-4.5", "cloud")] = [ValueError("a usage pydantic refused")]
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    with pytest.raises(ValueError, match="pydantic refused"):
        await router.complete("tutor", REQ, Signals(user_request=True))
    lines = await audit.lines()
    esc = next(line for line in lines if line.kind == "escalation")
    last = lines[-1]
    assert last.kind == "budget" and last.reason_codes == ["CALL_ERROR", "SETTLED_AT_ESTIMATE"]
    assert "the call ended in an error (ValueError)" in last.detail
    snap = await ledger.snapshot("s1")
    assert snap.reserved_usd == 0
    assert snap.per_session.spent_usd == pytest.approx(esc.values["est_cost_usd"])
    await audit.close()
    await ledger.close()


async def test_a_local_call_cancelled_mid_way_is_recorded_and_said(
    tmp_path: Path, policy: Policy
) -> None:
    """A Ctrl-C or a client gone mid-generation left the route line with nothing after it,
    and the ledger's failed calls missed it (an audit)."""
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    started = asyncio.Event()

    class Blocking(ScriptedBackend):
        async def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
            started.set()
            await asyncio.Event().wait()  # generates until cancelled
            yield Delta(text="never")

    resolver.made[("qwen2.5-coder-7b", "vllm")] = Blocking("qwen2.5-coder-7b", "vllm", [])
    task = asyncio.create_task(router.complete("tutor", REQ))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    lines = await audit.lines()
    assert [line.kind for line in lines][-2:] == ["route", "call"]
    assert lines[-1].reason_codes == ["CALL_CANCELLED"]
    assert lines[-1].values["outcome"] == "cancelled"
    report = await ledger.report()
    assert report["total"]["calls"] == 1 and report["total"]["failed"] == 1
    await audit.close()
    await ledger.close()
