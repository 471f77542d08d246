"""One request replayed under one policy: decide() on the recorded inputs, walking the
request the way the router did.

The world is the recorded one. Where the router met a denial, a failed cloud call or a
local runtime going down, the replay meets the same when its walk reaches that model or
runtime (a denial of the whole chain denies the same models at once). A model the
request never tried is assumed to answer, and its approval, when one is needed, to be
granted: the replay counts the approvals it would have asked. The budget is the
policy's own simulated ledger (:mod:`.ledger`), never the one recorded.

Speed (a replay runs decide() for every request under two policies): decide() runs with
no budget first, memoised on everything else it reads. A budget can only skip cloud
steps, so that answer stands unless it escalates to a model whose estimate exceeds
what is left; only then does decide() run again with the budgets. Two policies that
agree on everything decide() reads for a role share the memo for it (:func:`role_view`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from app.policy.schema import Policy
from app.router.cost import cost_usd
from app.router.decide import decide
from app.router.ledger.money import NANO
from app.router.recorded import RecordedInputs
from app.router.simulate.ledger import SimLedger
from app.router.simulate.requests import Request
from app.router.types import Decision, RouterState, Signals

#: as many decisions as the router makes for one request at most
MAX_STEPS = 16
#: memo entries kept before it is cleared (bounded memory on long logs)
MEMO_LIMIT = 200_000

OutcomeKind = Literal["local", "cloud", "refused", "failed"]


@dataclass(frozen=True, slots=True)
class Pick:
    """What the replay needs of a Decision (small, so the memo stays small)."""

    action: str
    target: str | None
    provider: str | None
    runtime: str | None
    needs_approval: bool
    est_cost_usd: float
    reasons: tuple[str, ...]
    #: the cloud steps a budget skipped: (model, provider)
    budget_skips: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, d: Decision, policy: Policy) -> Pick:
        budget = tuple(
            (s.model, policy.model(s.model).provider) for s in d.skipped if s.reason == "budget"
        )
        return cls(
            action=d.action,
            target=d.target,
            provider=d.provider,
            runtime=d.runtime,
            needs_approval=d.needs_approval,
            est_cost_usd=d.est_cost_usd,
            reasons=tuple(d.reason_codes) or ((d.refusal_code,) if d.refusal_code else ()),
            budget_skips=budget,
        )


@dataclass(frozen=True, slots=True)
class Blocked:
    model: str
    provider: str
    cap: str


@dataclass(slots=True)
class Outcome:
    kind: OutcomeKind
    #: a cloud model id, or ``model@runtime`` for a local one
    target: str | None = None
    provider: str | None = None
    cost_nusd: int = 0
    #: no cloud tokens were recorded for this request: the cost is an estimate
    estimated: bool = False
    asks: int = 0
    reasons: tuple[str, ...] = ()
    blocked: list[Blocked] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.kind, self.target)


def role_view(policy: Policy, role: str) -> tuple[Any, ...]:
    """Everything of ``policy`` that decide() reads for ``role``: equal views decide alike
    (the version aside, which a Pick does not keep). tests/unit/test_simulate_replay.py
    holds this to decide()."""
    return (
        policy.roles.get(role),
        tuple(policy.triggers_for(role)),
        policy.aliases,
        policy.models,
        policy.runtimes,
        policy.local_chain,
        policy.embeddings,
    )


class Memo:
    """decide() without budgets, memoised; shared by the replays of one simulation."""

    def __init__(self) -> None:
        self._picks: dict[tuple[Any, ...], Pick] = {}
        self._views: dict[str, list[tuple[tuple[Any, ...], int]]] = {}
        self.hits = 0
        self.misses = 0

    def view_id(self, policy: Policy, role: str) -> int:
        view = role_view(policy, role)
        known = self._views.setdefault(role, [])
        for seen, vid in known:
            if seen == view:
                return vid
        vid = sum(len(v) for v in self._views.values())
        known.append((view, vid))
        return vid

    def get(self, key: tuple[Any, ...]) -> Pick | None:
        pick = self._picks.get(key)
        if pick is None:
            self.misses += 1
        else:
            self.hits += 1
        return pick

    def put(self, key: tuple[Any, ...], pick: Pick) -> None:
        if len(self._picks) >= MEMO_LIMIT:
            self._picks.clear()
        self._picks[key] = pick


class Replayer:
    """Replays requests, in order, under one policy with its own simulated ledger."""

    def __init__(self, policy: Policy, memo: Memo) -> None:
        self.policy = policy
        self.memo = memo
        self.ledger = SimLedger(policy.budget, [p for p in policy.providers if p != "local"])
        self._views: dict[str, int] = {}

    def view(self, role: str) -> int:
        vid = self._views.get(role)
        if vid is None:
            vid = self._views[role] = self.memo.view_id(self.policy, role)
        return vid

    def replay(self, req: Request, local_only: bool) -> Outcome:
        first = req.steps[0].inputs
        last = req.steps[-1]
        final = last.inputs
        signals = first.signals
        new_down = frozenset(final.down) - frozenset(first.down)
        groups = _denial_groups(req)
        served = {c.model for c in req.calls}
        denied: frozenset[str] = frozenset()
        failed: dict[str, str] = {}
        down = frozenset(first.down)
        asks = 0
        blocked: list[Blocked] = []
        vid = self.view(req.role)
        for _ in range(MAX_STEPS):
            pristine = not denied and not failed and len(down) == len(first.down)
            key: tuple[Any, ...] = (vid, req.role, local_only, req.key)
            if not pristine:
                key = (*key, denied, tuple(sorted(failed.items())), down)
            pick = self.memo.get(key)
            if pick is None:
                state = _state(first, local_only, {}, denied, failed, down)
                pick = Pick.of(decide(self.policy, req.role, signals, state), self.policy)
                self.memo.put(key, pick)
            if pick.action == "escalate":
                pick = self._with_budget(req, pick, signals, local_only, denied, failed, down)
                blocked += [
                    Blocked(m, p, self.ledger.binding_cap(req.session, req.day, p))
                    for m, p in pick.budget_skips
                ]
            if pick.action == "refuse":
                return Outcome("refused", asks=asks, reasons=pick.reasons, blocked=blocked)
            if pick.action == "escalate":
                model = str(pick.target)
                asks += pick.needs_approval
                # A model that failed was approved first; a "deny all" after it lists it
                # among the denied too. A cap's stop at the reservation is the replay's
                # own ledger's to decide.
                why = final.failed.get(model)
                if why is not None:
                    if not why.startswith("budget:"):
                        failed = {**failed, model: why}
                        down = down | ({model} & new_down)
                        continue
                elif model in final.denied:
                    denied = denied | groups.get(model, frozenset({model}))
                    continue
                if model not in served and last.kind == "escalation" and last.to == model:
                    return Outcome("failed", model, asks=asks, blocked=blocked)
                out = self._cloud(req, model, pick)
                out.asks, out.blocked = asks, blocked
                return out
            target = f"{pick.target}@{pick.runtime}"
            runtime_key = f"runtime:{pick.runtime}"
            if runtime_key in final.failed:
                failed = {**failed, runtime_key: final.failed[runtime_key]}
                continue
            if runtime_key in new_down and runtime_key not in down:
                down = down | {runtime_key}
                continue
            if target not in served and last.kind != "escalation" and last.to == target:
                return Outcome("failed", target, asks=asks, blocked=blocked)
            return Outcome(
                "local", target, "local", asks=asks, reasons=pick.reasons, blocked=blocked
            )
        return Outcome("failed", asks=asks, blocked=blocked)

    def _with_budget(
        self,
        req: Request,
        pick: Pick,
        signals: Signals,
        local_only: bool,
        denied: frozenset[str],
        failed: dict[str, str],
        down: frozenset[str],
    ) -> Pick:
        """The budget-free pick, unless the ledger cannot cover its estimate: then decide()
        again, with what the ledger leaves for every provider (as the router reads it)."""
        assert pick.provider is not None
        left = self.ledger.left_usd(req.session, req.day, [pick.provider])[pick.provider]
        if pick.est_cost_usd <= left:
            return pick
        first = req.steps[0].inputs
        budgets = self.ledger.left_usd(req.session, req.day)
        state = _state(first, local_only, budgets, denied, failed, down)
        return Pick.of(decide(self.policy, req.role, signals, state), self.policy)

    def _cloud(self, req: Request, model: str, pick: Pick) -> Outcome:
        """Served by ``model``: priced by this policy on the request's recorded tokens."""
        cloud = [c for c in req.calls if c.cloud]
        estimated = not cloud
        calls = cloud or [c for c in req.calls if not c.cloud]
        spec = self.policy.model(model)
        if calls:
            tokens_in = sum(c.tokens_in for c in calls)
            tokens_out = sum(c.tokens_out for c in calls)
            cost = cost_usd(spec, tokens_in, tokens_out)
        else:
            cost = pick.est_cost_usd  # nothing was served: decide()'s own estimate
        amount = round(cost * NANO)
        self.ledger.settle(req.session, req.day, spec.provider, amount)
        return Outcome(
            "cloud",
            model,
            spec.provider,
            cost_nusd=amount,
            estimated=estimated,
            reasons=pick.reasons,
        )


def _state(
    first: RecordedInputs,
    local_only: bool,
    budgets: dict[str, float],
    denied: frozenset[str],
    failed: dict[str, str],
    down: frozenset[str],
) -> RouterState:
    """The RouterState decide() reads at this point of the walk (built as the router's
    ``_state`` builds it: a local runtime that failed this request counts as down)."""
    health = {k: False for k in down}
    health.update({k: False for k in failed if k.startswith("runtime:")})
    return RouterState.model_construct(
        local_only=local_only,
        session_left_usd=float("inf"),
        day_left_usd=float("inf"),
        provider_left_usd=budgets,
        health=health,
        unavailable=first.unavailable,
        failed=failed,
        approved=frozenset(first.approved),
        denied=denied,
        context_windows=first.windows,
    )


def _denial_groups(req: Request) -> dict[str, frozenset[str]]:
    """Model → the models denied together with it (a "deny all" denies a whole chain)."""
    if len(req.steps) < 2:
        return {}
    out: dict[str, frozenset[str]] = {}
    before: frozenset[str] = frozenset()
    for step in req.steps:
        now = frozenset(step.inputs.denied)
        added = now - before
        for model in added:
            out[model] = added
        before = now
    return out
