"""The router at work: one routed request, end to end.

decide (pure) → audit line → approval (escalations) → budget reservation → backend call
with retries → settle → audit line. A failure moves down the chain it belongs to: a
local runtime that fails is marked down and the runtime chain continues; a cloud step
that fails is skipped and the next cloud step needs its own approval. A request the
backend refused as invalid (``bad_request``) moves nowhere: the route fails with
:class:`BadRequest`, nothing marked down. Every such move is an audit line before it
takes effect (GR-005). The steps themselves live in
:mod:`app.router.local_step` and :mod:`app.router.cloud_step`; a reply's content is
checked (and repaired once) by :mod:`app.router.structured`, never here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from app.audit.types import Appended
from app.backends.base import Backend, BackendError, ChatRequest, ChatResult
from app.bus import Bus
from app.clock import Clock, SystemClock
from app.policy.fingerprint import fingerprint
from app.policy.schema import Policy
from app.remembered import Digests
from app.router.approvals import ApprovalBroker
from app.router.calling import Billing, call_backend
from app.router.cloud_step import escalate
from app.router.decide import decide, fired_triggers, repriced
from app.router.ledger.api import Ledger
from app.router.ledger.keepalive import InFlight
from app.router.local_step import serve_local
from app.router.recorded import record_inputs
from app.router.retry import HealthBook, rule_for
from app.router.routed import (
    RUNTIME_LABEL,
    TOO_LONG,
    BackendResolver,
    BadRequest,
    DeltaHook,
    RoutedResult,
    RouteFailed,
    RouteRefused,
    RouteStaysLocal,
    StreamBroken,
    Write,
    bad_request,
    request_tokens,
    schema_tokens,
    skip_text,
    too_long,
    tried,
)
from app.router.types import Decision, RouterState, Signals

if TYPE_CHECKING:
    from app.audit.base import AuditBase

__all__ = [
    "BackendResolver",
    "BadRequest",
    "DeltaHook",
    "RouteFailed",
    "RouteRefused",
    "RouteStaysLocal",
    "RoutedResult",
    "Router",
    "request_tokens",
]

#: a request never walks more steps than this (every chain in the policy is shorter)
MAX_STEPS = 16


class Router:
    def __init__(
        self,
        policy: Policy,
        *,
        session: str,
        audit: AuditBase,
        ledger: Ledger,
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
        self.sleep = sleep
        #: a check per run, made before each of its routed requests and approvals; it
        #: raises to stop them (the pipeline's stop: an ``x`` pressed while the Architect
        #: worked was heard only when the stage ended, after three more calls and an
        #: escalation)
        self.run_gates: dict[str, Callable[[], None]] = {}
        #: who asked for a run's requests, when another program did (the gateway's client):
        #: its approval prompt names it, where two agents may be asking at once
        self.run_origins: dict[str, str] = {}
        #: the cloud calls in flight, whose reservations are renewed while they last
        self.in_flight = InFlight(ledger)
        #: the policy's fingerprint, for the decision lines (computed once per policy)
        self._fingerprint: tuple[Policy, str] | None = None
        self._cloud: tuple[Policy, tuple[tuple[str, str], ...]] | None = None
        self._providers: tuple[Policy, tuple[str, ...]] | None = None
        #: the resolver, and the (model, runtime) pairs it has made a backend for
        self._made: tuple[BackendResolver, set[tuple[str, str]]] = (backends, set())

    @property
    def local_only(self) -> bool:
        flag = self._local_only
        return flag() if callable(flag) else flag

    # ── state ────────────────────────────────────────────────────────────────────────

    async def _state(
        self, denied: set[str], failed: dict[str, str], with_budget: bool, local_only: bool
    ) -> RouterState:
        health = self.health.down()
        if failed:
            # a local runtime that failed this request only (e.g. its window was too small)
            health.update({k: False for k in failed if k.startswith("runtime:")})
        for runtime in self.policy.local_chain.order:
            key = f"runtime:{runtime}"
            if key not in health and not await self.backends.runtime_up(runtime):
                health[key] = False
        not_served = self.backends.not_served()
        if not_served:
            health.update(not_served)
        # Only what is not empty is given: an empty container is the field's default, and
        # each one given is validated and copied (the usual state 2.4 -> 1.6 µs alone, 5.9
        # in place for the whole model: issue 20). A model with no key is never among
        # ``unavailable`` here (decide() stays free of the keys): the cloud step skips it,
        # audited, before anyone is asked to approve it.
        given: dict[str, Any] = {"local_only": local_only}
        if health:
            given["health"] = health
        approved = self.approvals.allowed_of(self.session, self._cloud_models())
        if approved:
            given["approved"] = approved
        if with_budget:
            # one read for every provider
            given["provider_left_usd"] = await self.ledger.left_usd_many(
                self.session, self._cloud_providers()
            )
        # (validated into a dict and a frozenset of the state's own: the request goes on
        # changing its sets)
        if failed:
            given["failed"] = failed
        if denied:
            given["denied"] = denied
        windows = self.backends.context_windows()
        if windows:
            given["context_windows"] = windows
        return RouterState(**given)

    def _cloud_providers(self) -> tuple[str, ...]:
        """Every provider in the policy but the local one (listed once per policy)."""
        if self._providers is None or self._providers[0] is not self.policy:
            names = tuple(name for name in self.policy.providers if name != "local")
            self._providers = (self.policy, names)
        return self._providers[1]

    def _cloud_models(self) -> tuple[tuple[str, str], ...]:
        """(model, provider) of every cloud model in the policy (listed once per policy)."""
        if self._cloud is None or self._cloud[0] is not self.policy:
            models = self.policy.models.items()
            cloud = tuple((m, model.provider) for m, model in models if model.provider != "local")
            self._cloud = (self.policy, cloud)
        return self._cloud[1]

    async def decide(
        self,
        role: str,
        signals: Signals,
        denied: set[str] | None = None,
        failed: dict[str, str] | None = None,
    ) -> Decision:
        d, _ = await self._decide_recorded(role, signals, denied or set(), failed or {}, 0)
        return d

    async def decide_recorded(self, role: str, signals: Signals) -> tuple[Decision, dict[str, Any]]:
        """:meth:`decide` for ``signals`` as given, and the inputs its line would record
        (:mod:`app.router.recorded`): nothing is served, asked or written. For a caller
        whose decision is about no one request (the Librarian's on a whole job) and
        that records it as a ``check`` when it keeps the work local."""
        return await self._decide_recorded(role, signals, set(), {}, 0)

    async def decide_unserved(
        self, role: str, request: ChatRequest, signals: Signals
    ) -> tuple[Decision, dict[str, Any]]:
        """The first decision :meth:`complete` would make for ``request`` now, and the
        inputs its line would record (:mod:`app.router.recorded`): nothing is served,
        asked or written. A pipeline step that reads a role's output against its
        triggers and does not escalate (the Architect's final plan) records its decision
        with these, as the router's own lines do, so ``policy simulate`` replays it. The
        signals get the request's prompt estimate as :meth:`complete` gives them (its
        lines inline: the request path)."""
        counted = request_tokens(request)
        given = signals.context_estimate
        extra = 0 if request.json_schema is None else schema_tokens(request)
        if given is None or counted > given:
            signals = signals.with_estimate(counted, request.max_tokens, extra)
        elif signals.output_tokens != request.max_tokens or extra:
            signals = signals.with_estimate(None, request.max_tokens, extra)
        return await self._decide_recorded(role, signals, set(), {}, 0)

    async def _decide_recorded(
        self, role: str, signals: Signals, denied: set[str], failed: dict[str, str], step: int
    ) -> tuple[Decision, dict[str, Any]]:
        """:meth:`decide`, and the inputs it read as the decision line records them."""
        local_only = self.local_only
        # Budget reads touch the ledger: only pay for them when a trigger may escalate.
        # One pass is enough: a budget can only add skips to a cloud chain, so when
        # decide() would not escalate without the budgets read, it decides the same with
        # them; and it can only escalate when a trigger fires outside local_only.
        fired = fired_triggers(self.policy, role, signals)
        with_budget = not local_only and bool(fired)
        state = await self._state(denied, failed, with_budget, local_only)
        d = decide(self.policy, role, signals, state, fired=fired)
        if self._fingerprint is None or self._fingerprint[0] is not self.policy:
            self._fingerprint = (self.policy, fingerprint(self.policy))
        inputs = record_inputs(
            signals, state, step, budget_read=with_budget, policy=self._fingerprint[1]
        )
        return d, inputs

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
        digests: Digests | None = None,
    ) -> RoutedResult:
        """Route ``request`` for ``role``: decide, escalate or serve locally, fall back,
        audit each step. ``digests``: the request's (app.remembered.Digests), when its
        caller digested its texts already (the gateway's count)."""
        self.gate(run)
        signals = signals or Signals()
        # each long text digested once: for its count, its hash and its masking
        digests = Digests() if digests is None else digests
        # the reservation covers what the request may be billed: its own output cap, not
        # the role's default (`ask --max-tokens 1000000` was reserved at 4,096 tokens and
        # billed past every cap), nor a signal's lower figure; and a caller's
        # context_estimate may raise the prompt's count, never lower it (`ask --signal
        # context_estimate=1` priced a 24k-token prompt at one token, past a $0.01 cap)
        counted = request_tokens(request, digests)
        given = signals.context_estimate
        extra = 0 if request.json_schema is None else schema_tokens(request)
        if given is None or counted > given:
            signals = signals.with_estimate(counted, request.max_tokens, extra)
        elif signals.output_tokens != request.max_tokens or extra:
            signals = signals.with_estimate(None, request.max_tokens, extra)
        lines: list[Appended] = []
        denied: set[str] = set()
        failed: dict[str, str] = {}
        said_skips: set[tuple[str, str]] = set()
        skipped: dict[str, str] = {}  # cloud steps the decisions passed over, for a failure
        last_error: BackendError | None = None
        req: int | None = None  # the seq of this request's first line (recorded.py)

        async def write(kind: str, **kw: Any) -> Appended:
            nonlocal req
            if req is not None:
                kw["values"] = {**(kw.get("values") or {}), "req": req}
            line = await self.audit.add(kind, session=self.session, run=run, role=role, **kw)
            req = line.seq if req is None else req
            lines.append(line)
            return line

        for step in range(MAX_STEPS):
            d, inputs = await self._decide_recorded(role, signals, denied, failed, step)
            for skip in d.skipped:
                # failures and denials were audited when they happened
                if skip.model in failed or skip.model in denied:
                    continue
                if skip.runtime == "cloud" and (skip.model, skip.reason) not in said_skips:
                    said_skips.add((skip.model, skip.reason))
                    if skip.reason == "unhealthy" and not skip.detail:
                        # why it rests (its own failure, or its host's time-out), which
                        # decide() does not know: "unhealthy" alone said nothing
                        why = self.health.reason(skip.model)
                        skip = skip.model_copy(update={"detail": why}) if why else skip
                    skipped.setdefault(skip.model, skip_text(skip))
                    await write(
                        "skip",
                        to=skip.model,
                        # with the triggers that wanted this step (a cloud_only request
                        # that stays local writes no route line to carry them)
                        reason_codes=[f"SKIP_{skip.reason.upper()}", *d.reason_codes],
                        values={"reason": skip.reason, "detail": skip.detail},
                        detail=skip_text(skip),
                    )
            if d.action == "refuse":
                await write(
                    "refusal",
                    reason_codes=[d.refusal_code or "REFUSED", *d.reason_codes],
                    values={"inputs": inputs},
                    detail="; ".join(d.notes),
                )
                raise RouteRefused(d)
            if d.action == "escalate":
                result = await escalate(
                    self,
                    d,
                    request,
                    run,
                    on_delta,
                    write,
                    denied,
                    failed,
                    inputs=inputs,
                    digest_of=digests,
                )
                if result is None:
                    continue
                result.appended = lines
                return result
            if cloud_only:
                # the first decision's inputs, which no line of this request carries (a
                # later one's first decision was its escalation line's): the caller's to
                # record (app.router.recorded's check), with the request its skips opened
                if step:
                    raise RouteStaysLocal(d)
                raise RouteStaysLocal(d, inputs, req)
            try:
                result = await serve_local(
                    self, d, request, run, on_delta, write, failed, inputs=inputs
                )
            except StreamBroken as broken:
                # the reader holds part of this reply: no other runtime may continue it
                assert d.runtime is not None
                if d.runtime != "llamacpp_inprocess":
                    self._rest(d.runtime, "stream_broken", str(broken.error))
                await write(
                    "degradation",
                    from_=f"{d.target}@{d.runtime}",
                    reason_codes=["STREAM_BROKEN"],
                    values={"error": str(broken.error)[:300]},
                    detail=f"{broken}; the reply ends here (no fallback continues it)",
                )
                raise RouteFailed(str(broken)) from None
            except BackendError as exc:
                last_error = exc
                assert d.runtime is not None
                if exc.kind == "bad_request":
                    # the request, not the runtime: refused again anywhere down the chain
                    raise await self._bad_request(
                        d, exc, write, tried(failed, denied, skipped)
                    ) from None
                if d.runtime == "llamacpp_inprocess":
                    # a runtime resting after a passing failure (a 500, a cut stream, a
                    # time-out) may serve this prompt in a moment: not "too long", which a
                    # client never retries. One that was not there at all (connect) is
                    # no reason to wait: then it is the prompt to shorten or compact.
                    resting = self._resting()
                    rest = (
                        f"; {', '.join(resting)} down for now after a failure (retry soon)"
                        if resting
                        else ""
                    )
                    raise RouteFailed(
                        f"{d.target} in-process failed: {exc}{rest}"
                        f"{tried(failed, denied, skipped)}",
                        too_long=too_long(failed, exc.kind) and not resting,
                    ) from None
                key = f"runtime:{d.runtime}"
                where = RUNTIME_LABEL[d.runtime]
                if exc.kind == "context_length":
                    # the prompt, not the server: skip it for this request only
                    failed[key] = f"{TOO_LONG}: the prompt exceeds its window"
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
                cooldown = self._rest(d.runtime, exc.kind, str(exc))
                await write(
                    "degradation",
                    from_=f"{d.target}@{d.runtime}",
                    reason_codes=["RUNTIME_DOWN", f"ERR_{exc.kind.upper()}"],
                    values={"cooldown_s": cooldown, "error": exc.kind},
                    detail=f"{d.target} on {where} failed ({exc}); marked down for {cooldown:g}s",
                )
                continue
            result.appended = lines
            if failed or denied or skipped:
                result.passed_over = tried(failed, denied, skipped).removeprefix("; before it: ")
            return result
        raise RouteFailed(
            f"{role}: no step could serve the request ({last_error})"
            f"{tried(failed, denied, skipped)}",
            too_long=too_long(failed),
        )

    async def _bad_request(
        self, d: Decision, exc: BackendError, write: Write, steps: str
    ) -> BadRequest:
        """A local runtime refused the request as invalid: said (not marked down, no
        fallback), and the route's failure to raise."""
        assert d.target is not None and d.runtime is not None
        where = RUNTIME_LABEL.get(d.runtime, d.runtime)
        await write(
            "degradation",
            from_=f"{d.target}@{d.runtime}",
            reason_codes=["ROUTE_FAILED", "ERR_BAD_REQUEST"],
            values={"error": exc.kind, "status": exc.status},
            detail=f"{d.target} on {where} refused the request as invalid ({exc}); not "
            f"marked down, no fallback: the route fails (bad request from {where})",
        )
        return bad_request(d.target, where, exc, steps)

    def _rest(self, runtime: str, kind: str, text: str) -> float:
        """Mark a local runtime down for its cooldown after a failure of ``kind``; the
        cooldown. The reason starts with the kind, which :meth:`_resting` reads."""
        rule = rule_for(self.policy, "connect")
        cooldown = rule.cooldown_s if rule else 30.0
        self.health.mark_down(f"runtime:{runtime}", cooldown, f"{kind}: {text}")
        return cooldown

    def _resting(self) -> list[str]:
        """Local runtimes down for now after a passing failure (not one that was not
        there at all: a connect failure)."""
        return sorted(
            key.removeprefix("runtime:")
            for key in self.health.down()
            if key.startswith("runtime:")
            and (self.health.reason(key) or "").partition(":")[0] != "connect"
        )

    def gate(self, run: str | None) -> None:
        """Run ``run``'s check (:attr:`run_gates`), which raises when it must stop."""
        if run is None or not self.run_gates:
            return  # (the request path's common case: a call of no run)
        check = self.run_gates.get(run)
        if check is not None:
            check()

    async def call(
        self,
        d: Decision,
        request: ChatRequest,
        write: Write,
        on_delta: DeltaHook | None,
        billing: Billing | None = None,
    ) -> ChatResult:
        """One call on ``d``'s backend (retried as the policy says when it is a cloud one;
        ``billing``: :func:`~app.router.calling.call_backend`'s)."""
        assert d.target is not None and d.runtime is not None
        key = (d.target, d.runtime)
        resolver, made = self._made
        if resolver is self.backends and key in made:
            backend = resolver.backend(d.target, d.runtime)
        else:
            backend = await self._first_backend(*key)
        return await call_backend(
            backend,
            request,
            policy=self.policy,
            session=self.session,
            role=d.role,
            cloud=d.runtime == "cloud",
            write=write,
            on_delta=on_delta,
            bus=self.bus,
            sleep=self.sleep,
            billing=billing,
        )

    async def _first_backend(self, model: str, runtime: str) -> Backend:
        """The resolver's backend for a pair it has not made for this router, made on a
        worker thread: making one may import its SDK (``anthropic`` takes seconds) and the
        loop goes on serving every other request meanwhile. Later calls ask inline."""
        if self._made[0] is not self.backends:  # a resolver swapped in: its pairs are new
            self._made = (self.backends, set())
        resolver, made = self._made
        backend = await asyncio.to_thread(resolver.backend, model, runtime)
        made.add((model, runtime))
        return backend

    async def repeat(
        self,
        previous: RoutedResult,
        request: ChatRequest,
        *,
        run: str | None = None,
        on_delta: DeltaHook | None = None,
        digests: Digests | None = None,
    ) -> RoutedResult:
        """Serve ``request`` where ``previous`` was served (the structured owner's repair).

        A local reply is repaired locally: a fresh decision that reads no trigger, so a
        repair never turns a local request into a cloud one. A cloud reply is repaired by
        the same model: a second cloud call, asked for again unless the model is approved
        for the session, with its own reservation. When that step cannot serve (denied,
        over budget, failed) the repair fails; it never walks on to another cloud model.
        """
        self.gate(run)
        role = previous.decision.role
        digests = Digests() if digests is None else digests
        if not previous.escalated:
            local = Signals(context_estimate=request_tokens(request, digests))
            return await self.complete(
                role, request, local, run=run, on_delta=on_delta, digests=digests
            )
        lines: list[Appended] = []
        # the repair belongs to the request it repairs (a simulation adds its cost there)
        first = previous.appended[0].line if previous.appended else None
        of = first.values.get("req", first.seq) if first is not None else None

        async def write(kind: str, **kw: Any) -> Appended:
            if of is not None:
                kw["values"] = {**(kw.get("values") or {}), "req": of}
            line = await self.audit.add(kind, session=self.session, run=run, role=role, **kw)
            lines.append(line)
            return line

        d = previous.decision
        assert d.target is not None and d.provider is not None
        needs = not self.approvals.is_session_allowed(self.session, d.provider, d.target)
        denied: set[str] = set()
        failed: dict[str, str] = {}
        prompt = request_tokens(request, digests) + schema_tokens(request)
        again = repriced(self.policy, d, prompt, request.max_tokens).model_copy(
            update={"needs_approval": needs}
        )
        result = await escalate(
            self, again, request, run, on_delta, write, denied, failed, digest_of=digests
        )
        if result is None:
            why = "; ".join(failed.values()) or ("denied" if denied else "unavailable")
            raise RouteFailed(f"{role}: the repair on {d.target} was not served ({why})")
        result.appended = lines
        return result
