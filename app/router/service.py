"""The router at work: one routed request, end to end.

decide (pure) → audit line → approval (escalations) → budget reservation → backend call
with retries → settle → audit line. A failure moves down the chain it belongs to: a
local runtime that fails is marked down and the runtime chain continues; a cloud step
that fails is skipped and the next cloud step needs its own approval. Every such move is
an audit line before it takes effect (GR-005).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.audit.types import AuditLine, AuditSink
from app.backends.base import Backend, BackendError, ChatRequest, ChatResult, Delta, Message
from app.bus import Bus, TokenDelta
from app.clock import Clock, SystemClock
from app.errors import BudgetExceeded, SwitchyardError
from app.policy.schema import Policy
from app.router.approvals import ApprovalBroker, ApprovalRequest
from app.router.cost import cost_usd, estimate_tokens
from app.router.decide import decide, fired_triggers
from app.router.ledger import BudgetLedger
from app.router.retry import HealthBook, backoff_delay, rule_for
from app.router.types import Decision, RouterState, Signals, Skip

RUNTIME_LABEL = {
    "vllm": "vLLM",
    "llamacpp_server": "llama.cpp server",
    "llamacpp_inprocess": "in-process",
    "sentence_transformers": "sentence-transformers",
    "cloud": "cloud",
}
#: a request never walks more steps than this (every chain in the policy is shorter)
MAX_STEPS = 16

DeltaHook = Callable[[Delta], Awaitable[None]]


class RouteRefused(SwitchyardError):
    """The router cannot serve this request at all (e.g. CV/Camera, no local runtime)."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        why = "; ".join(decision.notes) or decision.refusal_code or "refused"
        super().__init__(f"{decision.role}: {decision.refusal_code}: {why}")


class RouteStaysLocal(SwitchyardError):
    """``complete(..., cloud_only=True)`` would have served the request locally (no
    trigger, denied, unavailable): raised before any call, so a prompt sized for a cloud
    window never reaches a small local model."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        super().__init__("; ".join(decision.notes) or "the router chose a local model")


class RouteFailed(SwitchyardError):
    """Every step that could serve failed; the last error is attached."""


class BackendResolver(Protocol):
    """Where the router gets backends and what it knows about reachability."""

    def backend(self, model_id: str, runtime: str) -> Backend: ...

    def unavailable(self) -> dict[str, str]:
        """Cloud models that cannot be reached at all (e.g. no API key), with why."""
        ...

    async def runtime_up(self, runtime: str) -> bool:
        """A cached health probe of a local runtime."""
        ...

    def context_windows(self) -> dict[str, int]:
        """Windows of models as they actually serve (GGUF metadata, max_model_len)."""
        ...


@dataclass
class RoutedResult:
    text: str
    reasoning: str
    model: str
    runtime: str
    provider: str
    tokens_in: int
    tokens_out: int
    usage_counted_locally: bool
    cost_usd: float
    latency_ms: float
    finish_reason: str
    decision: Decision
    escalated: bool
    approver: str | None = None
    audit: list[AuditLine] = field(default_factory=list)


def input_hash(request: ChatRequest) -> str:
    """sha256 of the request's messages (provenance without the content, GR-013)."""
    blob = json.dumps(
        [m.model_dump() for m in request.messages], sort_keys=True, separators=(",", ":")
    )
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def request_tokens(request: ChatRequest) -> int:
    return sum(estimate_tokens(m.content) + 4 for m in request.messages)


class Router:
    def __init__(
        self,
        policy: Policy,
        *,
        session: str,
        audit: AuditSink,
        ledger: BudgetLedger,
        approvals: ApprovalBroker,
        backends: BackendResolver,
        health: HealthBook | None = None,
        clock: Clock | None = None,
        bus: Bus | None = None,
        local_only: bool | Callable[[], bool] = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.policy = policy
        self.session = session
        self.audit = audit
        self.ledger = ledger
        self.approvals = approvals
        self.backends = backends
        self.clock = clock or SystemClock()
        self.health = health or HealthBook(self.clock)
        self.bus = bus
        self._local_only = local_only
        self._sleep = sleep

    @property
    def local_only(self) -> bool:
        flag = self._local_only
        return flag() if callable(flag) else flag

    # ── state ────────────────────────────────────────────────────────────────────────

    async def _state(
        self, denied: set[str], failed: dict[str, str], with_budget: bool, local_only: bool
    ) -> RouterState:
        health = self.health.down()
        # a local runtime that failed this request only (e.g. its window was too small)
        health.update({k: False for k in failed if k.startswith("runtime:")})
        for runtime in self.policy.local_chain.order:
            key = f"runtime:{runtime}"
            if key not in health and not await self.backends.runtime_up(runtime):
                health[key] = False
        approved = frozenset(
            m
            for m, model in self.policy.models.items()
            if model.provider != "local"
            and self.approvals.is_session_allowed(self.session, model.provider, m)
        )
        provider_left: dict[str, float] = {}
        if with_budget:
            # one read for every provider
            provider_left = await self.ledger.left_usd_many(
                self.session, [name for name in self.policy.providers if name != "local"]
            )
        return RouterState(
            local_only=local_only,
            provider_left_usd=provider_left,
            health=health,
            # a model with no key is not skipped here: the human is asked first, and an
            # approved escalation then ends in an audited "unavailable: no key" (below)
            unavailable={},
            failed=dict(failed),
            approved=approved,
            denied=frozenset(denied),
            context_windows=self.backends.context_windows(),
        )

    async def decide(
        self,
        role: str,
        signals: Signals,
        denied: set[str] | None = None,
        failed: dict[str, str] | None = None,
    ) -> Decision:
        denied = denied or set()
        failed = failed or {}
        local_only = self.local_only
        # Budget reads touch the ledger: only pay for them when a trigger may escalate.
        # One pass is enough: a budget can only add skips to a cloud chain, so when
        # decide() would not escalate without the budgets read, it decides the same with
        # them; and it can only escalate when a trigger fires outside local_only.
        with_budget = not local_only and bool(fired_triggers(self.policy, role, signals))
        state = await self._state(denied, failed, with_budget, local_only)
        return decide(self.policy, role, signals, state)

    # ── one request ──────────────────────────────────────────────────────────────────

    async def complete(
        self,
        role: str,
        request: ChatRequest,
        signals: Signals | None = None,
        *,
        run: str | None = None,
        on_delta: DeltaHook | None = None,
        cloud_only: bool = False,
    ) -> RoutedResult:
        signals = signals or Signals()
        if signals.context_estimate is None:
            signals = signals.model_copy(update={"context_estimate": request_tokens(request)})
        lines: list[AuditLine] = []
        denied: set[str] = set()
        failed: dict[str, str] = {}
        said_skips: set[tuple[str, str]] = set()
        last_error: BackendError | None = None

        async def write(kind: str, **kw: Any) -> AuditLine:
            line = await self.audit.append(kind, session=self.session, run=run, role=role, **kw)
            lines.append(line)
            return line

        for _ in range(MAX_STEPS):
            d = await self.decide(role, signals, denied, failed)
            for skip in d.skipped:
                # failures and denials were audited when they happened
                if skip.model in failed or skip.model in denied:
                    continue
                if skip.runtime == "cloud" and (skip.model, skip.reason) not in said_skips:
                    said_skips.add((skip.model, skip.reason))
                    await write(
                        "skip",
                        to=skip.model,
                        reason_codes=[f"SKIP_{skip.reason.upper()}"],
                        values={"reason": skip.reason, "detail": skip.detail},
                        detail=_skip_text(skip),
                    )
            if d.action == "refuse":
                await write(
                    "refusal",
                    reason_codes=[d.refusal_code or "REFUSED", *d.reason_codes],
                    detail="; ".join(d.notes),
                )
                raise RouteRefused(d)
            if d.action == "escalate":
                result = await self._escalate(d, request, run, on_delta, write, denied, failed)
                if result is None:
                    continue
                result.audit = lines
                return result
            if cloud_only:
                raise RouteStaysLocal(d)
            try:
                result = await self._serve_local(d, request, run, on_delta, write, failed)
            except BackendError as exc:
                last_error = exc
                assert d.runtime is not None
                if d.runtime == "llamacpp_inprocess":
                    raise RouteFailed(f"{d.target} in-process failed: {exc}") from None
                key = f"runtime:{d.runtime}"
                where = RUNTIME_LABEL[d.runtime]
                if exc.kind == "context_length":
                    # the prompt, not the server: skip it for this request only
                    failed[key] = "context length exceeded"
                    await write(
                        "degradation",
                        from_=f"{d.target}@{d.runtime}",
                        reason_codes=["RUNTIME_SKIPPED", "ERR_CONTEXT_LENGTH"],
                        values={"error": exc.kind},
                        detail=f"{d.target} on {where}: the prompt exceeds its window "
                        f"({exc}); skipped for this request, not marked down",
                    )
                    continue
                # a failed local deployment is marked down at once: no slow retries
                rule = rule_for(self.policy, "connect")
                cooldown = rule.cooldown_s if rule else 30.0
                self.health.mark_down(key, cooldown, f"{exc.kind}: {exc}")
                await write(
                    "degradation",
                    from_=f"{d.target}@{d.runtime}",
                    reason_codes=["RUNTIME_DOWN", f"ERR_{exc.kind.upper()}"],
                    values={"cooldown_s": cooldown, "error": exc.kind},
                    detail=f"{d.target} on {where} failed ({exc}); marked down for {cooldown:g}s",
                )
                continue
            result.audit = lines
            return result
        raise RouteFailed(f"{role}: no step could serve the request ({last_error})")

    def _why_local(self, skip: Skip, failed: dict[str, str]) -> str:
        """How a local runtime step is described in the runtime-fallback line."""
        if skip.reason != "unhealthy":
            return skip.reason.replace("_", " ")
        key = f"runtime:{skip.runtime}"
        if key in failed:
            return failed[key]
        down = self.health.reason(key)
        return f"down ({down.split(':', 1)[0]})" if down else "unreachable"

    async def _serve_local(
        self,
        d: Decision,
        request: ChatRequest,
        run: str | None,
        on_delta: DeltaHook | None,
        write: Callable[..., Awaitable[AuditLine]],
        failed: dict[str, str],
    ) -> RoutedResult:
        assert d.target is not None and d.runtime is not None and d.local is not None
        label = RUNTIME_LABEL.get(d.runtime, d.runtime)
        values: dict[str, Any] = {"runtime": d.runtime, "window": d.local.context_window}
        if d.notes:
            values["notes"] = d.notes
        if d.local.substituted_for:
            src_model, _, src_rt = d.local.substituted_for.partition(" on ")
            gone = [s for s in d.skipped if s.runtime != "cloud"]
            steps = []
            for skip in gone:
                why = self._why_local(skip, failed)
                where = RUNTIME_LABEL.get(skip.runtime, skip.runtime)
                steps.append(
                    f"{where} {why}"
                    if skip.model == src_model
                    else f"{skip.model} on {where} {why}"
                )
            values["skipped"] = [s.model_dump() for s in gone]
            await write(
                "runtime_fallback",
                from_=f"{src_model}@{src_rt}",
                to=f"{d.target}@{d.runtime}",
                reason_codes=["GR005_RUNTIME_FALLBACK", *d.reason_codes],
                values=values,
                detail=f"{src_model} on {', '.join(steps)} → {d.target} {label}",
            )
        else:
            await write(
                "route",
                to=f"{d.target}@{d.runtime}",
                reason_codes=d.reason_codes,
                values=values,
                detail=f"{d.role} → {d.target} ({label})",
            )
        backend = self.backends.backend(d.target, d.runtime)
        result = await self._call(backend, request, d, run, on_delta, write)
        await self.ledger.record_call(
            session=self.session,
            run=run,
            role=d.role,
            model=d.target,
            provider="local",
            tokens_in=result.usage.tokens_in,
            tokens_out=result.usage.tokens_out,
            latency_ms=result.latency_ms,
            cost_usd=0.0,
            outcome="ok",
        )
        await write(
            "call",
            to=f"{d.target}@{d.runtime}",
            values=_call_values(result, 0.0),
            detail=f"{result.usage.tokens_in} in / {result.usage.tokens_out} out, $0",
        )
        return _routed(d, result, 0.0, escalated=False)

    async def _escalate(
        self,
        d: Decision,
        request: ChatRequest,
        run: str | None,
        on_delta: DeltaHook | None,
        write: Callable[..., Awaitable[AuditLine]],
        denied: set[str],
        failed: dict[str, str],
    ) -> RoutedResult | None:
        """Serve ``d`` in the cloud; None means: decide again (denied, over budget, failed)."""
        assert d.target is not None and d.provider is not None
        values = {r.signal: r.value for r in d.reasons}
        provenance = {
            "trigger": [r.trigger for r in d.reasons],
            "values": values,
            "policy_version": d.policy_version,
            "input_hash": input_hash(request),
            "model": d.target,
            "est_cost_usd": round(d.est_cost_usd, 6),
        }
        origin = d.local.model if d.local else None
        await write(
            "escalation",
            from_=origin,
            to=d.target,
            reason_codes=d.reason_codes,
            values={**values, "chain_step": d.chain_step, "est_cost_usd": d.est_cost_usd},
            provenance=provenance,
            detail=f"{', '.join(r.text for r in d.reasons)} → {d.target}",
        )
        approver = "session-approval"
        if d.needs_approval:
            decision = await self.approvals.request(
                ApprovalRequest(
                    session=self.session,
                    run=run,
                    role=d.role,
                    model=d.target,
                    provider=d.provider,
                    reasons=[r.model_dump() for r in d.reasons],
                    values=values,
                    est_cost_usd=d.est_cost_usd,
                    budget_left_usd=min(await self.ledger.left_usd(self.session, d.provider), 1e12),
                )
            )
            if not decision.allowed:
                denied.add(d.target)
                if decision.decision == "deny_all":
                    denied.update(d.chain)  # the rest of the chain is not asked again
                return None
            approver = decision.decided_by
        missing = self.backends.unavailable().get(d.target)
        if missing is not None:
            failed[d.target] = missing
            await write(
                "skip",
                to=d.target,
                reason_codes=["SKIP_UNAVAILABLE"],
                values={"reason": "unavailable", "detail": missing, "approver": approver},
                detail=f"{d.target}: {missing}",
            )
            return None
        try:
            reservation = await self.ledger.reserve(
                session=self.session,
                provider=d.provider,
                role=d.role,
                model=d.target,
                amount_usd=d.est_cost_usd,
                run=run,
            )
        except BudgetExceeded as exc:
            await write(
                "budget_stop",
                to=d.target,
                reason_codes=["GR011_BUDGET_CAP"],
                values={"est_cost_usd": d.est_cost_usd},
                detail=str(exc),
            )
            failed[d.target] = f"budget: {exc}"
            return None
        backend = self.backends.backend(d.target, "cloud")
        try:
            result = await self._call(backend, request, d, run, on_delta, write)
        except BackendError as exc:
            await self.ledger.release(reservation.id)
            rule = rule_for(self.policy, exc.kind)
            if rule is not None and rule.cooldown_s > 0 and exc.kind != "context_length":
                self.health.mark_down(d.target, rule.cooldown_s, str(exc))
            failed[d.target] = f"{exc.kind}: {exc}"
            await write(
                "skip",
                to=d.target,
                reason_codes=["SKIP_FAILED", f"ERR_{exc.kind.upper()}"],
                values={"error": exc.kind, "status": exc.status},
                detail=f"{d.target} failed ({exc}); moving down the chain",
            )
            return None
        model = self.policy.model(d.target)
        actual = cost_usd(model, result.usage.tokens_in, result.usage.tokens_out)
        await self.ledger.settle(
            reservation.id,
            actual_usd=actual,
            tokens_in=result.usage.tokens_in,
            tokens_out=result.usage.tokens_out,
            latency_ms=result.latency_ms,
        )
        await write(
            "call",
            to=d.target,
            reason_codes=d.reason_codes,
            values=_call_values(result, actual),
            provenance={**provenance, "approver": approver, "cost_usd": round(actual, 6)},
            detail=f"{result.usage.tokens_in} in / {result.usage.tokens_out} out, ${actual:.4f}",
        )
        routed = _routed(d, result, actual, escalated=True)
        routed.approver = approver
        return routed

    async def _call(
        self,
        backend: Backend,
        request: ChatRequest,
        d: Decision,
        run: str | None,
        on_delta: DeltaHook | None,
        write: Callable[..., Awaitable[AuditLine]],
    ) -> ChatResult:
        attempt = 0
        while True:
            try:
                final: ChatResult | None = None
                async for item in backend.stream(request):
                    if isinstance(item, ChatResult):
                        final = item
                        continue
                    if on_delta is not None:
                        await on_delta(item)
                    if self.bus is not None and item.text:
                        await self.bus.publish(
                            TokenDelta(
                                session=self.session,
                                role=d.role,
                                model=backend.model_id,
                                text=item.text,
                            )
                        )
                if final is None:
                    raise BackendError("bad_output", "stream ended without a result")
                return final
            except BackendError as exc:
                attempt += 1
                if d.runtime != "cloud" and exc.kind != "bad_output":
                    raise  # local: marked down and the runtime chain moves on, at once
                rule = rule_for(self.policy, exc.kind)
                delay = backoff_delay(rule, attempt, exc.retry_after) if rule else None
                if delay is None:
                    raise
                repair = exc.kind == "bad_output"
                await write(
                    "retry",
                    to=backend.model_id,
                    reason_codes=[f"RETRY_{exc.kind.upper()}"],
                    values={"attempt": attempt, "delay_s": delay, "status": exc.status},
                    detail=f"{backend.model_id}: {exc}; "
                    + (
                        "one repair attempt (GR-012)"
                        if repair
                        else f"retry {attempt} in {delay:g}s"
                    ),
                )
                if repair:
                    request = repair_request(request, str(exc))
                await self._sleep(delay)


def repair_request(request: ChatRequest, problem: str) -> ChatRequest:
    """GR-012's one repair attempt: say what was wrong and sample differently."""
    note = Message(
        role="user",
        content=f"Your previous reply was rejected: {problem}. Reply again with the complete "
        "answer only, fixing exactly that problem"
        + (" and matching the JSON schema." if request.json_schema else "."),
    )
    seed = None if request.seed is None else request.seed + 1
    return request.model_copy(update={"messages": [*request.messages, note], "seed": seed})


def _skip_text(skip: Skip) -> str:
    if skip.detail.startswith(skip.reason):
        return f"{skip.model}: {skip.detail}"
    reason = skip.reason.replace("_", " ")
    return f"{skip.model}: {reason}{(' — ' + skip.detail) if skip.detail else ''}"


def _call_values(result: ChatResult, cost: float) -> dict[str, Any]:
    return {
        "tokens_in": result.usage.tokens_in,
        "tokens_out": result.usage.tokens_out,
        "usage_counted_locally": result.usage.counted_locally,
        "latency_ms": round(result.latency_ms, 1),
        "cost_usd": round(cost, 6),
        "finish_reason": result.finish_reason,
    }


def _routed(d: Decision, result: ChatResult, cost: float, *, escalated: bool) -> RoutedResult:
    assert d.target is not None
    return RoutedResult(
        text=result.text,
        reasoning=result.reasoning,
        model=d.target,
        runtime=d.runtime or "",
        provider=d.provider or "local",
        tokens_in=result.usage.tokens_in,
        tokens_out=result.usage.tokens_out,
        usage_counted_locally=result.usage.counted_locally,
        cost_usd=cost,
        latency_ms=result.latency_ms,
        finish_reason=result.finish_reason,
        decision=d,
        escalated=escalated,
    )
