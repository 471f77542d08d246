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

from app.policy.fingerprint import fingerprint
from app.policy.schema import Policy
from app.router.cost import cost_usd
from app.router.decide import decide
from app.router.ledger.money import NANO
from app.router.recorded import RecordedInputs
from app.router.simulate.indexed import IndexedPolicy
from app.router.simulate.ledger import SimLedger
from app.router.simulate.requests import InputsKey, Request
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
            # as the decision line writes them
            reasons=(
                (d.refusal_code or "REFUSED", *d.reason_codes)
                if d.action == "refuse"
                else tuple(d.reason_codes)
            ),
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


@dataclass(slots=True)
class World:
    """What one recorded request met, read once for both policies' replays."""

    req: Request
    signals: Signals
    first: RecordedInputs
    #: the request's first inputs, budget aside (the memo's key)
    key: InputsKey
    #: at its last decision: what had failed, been denied, gone down meanwhile
    failed: dict[str, str]
    denied: frozenset[str]
    new_down: frozenset[str]
    groups: dict[str, frozenset[str]]
    #: the models that answered (``model@runtime`` for a local one)
    served: frozenset[str]
    #: the cloud models skipped as unreachable before an approval was asked
    unasked: set[str]
    last_kind: str
    last_to: str | None
    #: the tokens a cloud model is priced on, and whether they are an estimate
    tokens: tuple[int, int] | None
    estimated: bool
    _states: dict[bool, RouterState] = field(default_factory=dict)

    @classmethod
    def of(cls, req: Request) -> World:
        first, last = req.steps[0].inputs, req.steps[-1]
        cloud = [c for c in req.calls if c.cloud]
        priced = cloud or req.calls
        tokens = (
            (sum(c.tokens_in for c in priced), sum(c.tokens_out for c in priced))
            if priced
            else None
        )
        return cls(
            req=req,
            signals=first.signals,
            first=first,
            key=req.key,
            failed=last.inputs.failed,
            denied=frozenset(last.inputs.denied),
            new_down=frozenset(last.inputs.down) - frozenset(first.down),
            groups=_denial_groups(req) if len(req.steps) > 1 else {},
            served=frozenset(c.model for c in req.calls),
            unasked=req.unasked,
            last_kind=last.kind,
            last_to=last.to,
            tokens=tokens,
            estimated=not cloud,
        )

    def recorded_pick(self, policy: Policy) -> Pick:
        """The first decision as its line records it (what decide() returned then)."""
        step = self.req.steps[0]
        skips = tuple((m, policy.model(m).provider) for m in self.req.budget_skips)
        if step.kind == "refusal":
            return Pick("refuse", None, None, None, False, 0.0, step.codes, skips)
        if step.kind == "escalation":
            model = str(step.to)
            provider = policy.model(model).provider
            ask = model not in self.first.approved
            return Pick(
                "escalate", model, provider, "cloud", ask, step.est_cost_usd, step.codes, skips
            )
        target, _, runtime = str(step.to).partition("@")
        codes = step.codes[1:] if step.kind == "runtime_fallback" else step.codes
        return Pick("local", target, "local", runtime, False, 0.0, codes, skips)

    def state(self, local_only: bool) -> RouterState:
        """The first decision's state, no budget (shared by both policies' replays)."""
        state = self._states.get(local_only)
        if state is None:
            down = frozenset(self.first.down)
            state = self._states[local_only] = _state(
                self.first, local_only, {}, frozenset(), {}, down
            )
        return state


class Replayer:
    """Replays requests, in order, under one policy with its own simulated ledger."""

    def __init__(
        self,
        policy: Policy,
        memo: Memo,
        *,
        trust_record: bool = True,
        reference: Replayer | None = None,
    ) -> None:
        """``reference``: the replayer of the policy the log is compared with; a role whose
        view this policy shares with it decides as the record says, where that one does."""
        self.policy = IndexedPolicy.of(policy)
        self.memo = memo
        self.ledger = SimLedger(policy.budget, [p for p in policy.providers if p != "local"])
        self._views: dict[str, int] = {}
        self.reference = reference
        #: decisions made under this very policy are read from their lines, not re-made
        self._fingerprint = fingerprint(policy) if trust_record and reference is None else None

    def _as_recorded(self, w: World, local_only: bool) -> Pick | None:
        """The first decision's recorded answer, when decide() is bound to give it again
        (GR-004): the policy it was made under (or one that agrees with it on everything
        decide() reads for the role), the recorded state, and the budget the router read
        equal to what this ledger leaves. Otherwise None: decide() runs."""
        first, ref = w.first, self.reference or self
        if (
            ref._fingerprint is None
            or first.policy != ref._fingerprint
            or len(w.req.steps) != 1
            or local_only != first.local_only
            or (ref is not self and self.view(w.req.role) != ref.view(w.req.role))
        ):
            return None
        if first.left is not None and self.ledger.left_usd(w.req.session, w.req.day) != first.left:
            return None
        return w.recorded_pick(self.policy)

    def view(self, role: str) -> int:
        vid = self._views.get(role)
        if vid is None:
            vid = self._views[role] = self.memo.view_id(self.policy, role)
        return vid

    def replay(self, w: World, local_only: bool) -> Outcome:
        req = w.req
        first_down = frozenset(w.first.down)
        denied: frozenset[str] = frozenset()
        failed: dict[str, str] = {}
        down = first_down
        asks = 0
        blocked: list[Blocked] = []
        recorded = self._as_recorded(w, local_only)
        for _ in range(MAX_STEPS):
            if recorded is not None:
                pick, recorded = recorded, None
            else:
                pick = self._decide(w, local_only, denied, failed, down, first_down)
            blocked += [
                Blocked(m, p, self.ledger.binding_cap(req.session, req.day, p))
                for m, p in pick.budget_skips
            ]
            if pick.action == "refuse":
                return Outcome("refused", asks=asks, reasons=pick.reasons, blocked=blocked)
            if pick.action == "escalate":
                model = str(pick.target)
                asks += pick.needs_approval and model not in w.unasked
                # A model that failed was approved first; a "deny all" after it lists it
                # among the denied too. A cap's stop at the reservation is the replay's
                # own ledger's to decide.
                why = w.failed.get(model)
                if why is not None:
                    if not why.startswith("budget:"):
                        failed = {**failed, model: why}
                        down = down | ({model} & w.new_down)
                        continue
                elif model in w.denied:
                    denied = denied | w.groups.get(model, frozenset({model}))
                    continue
                if model not in w.served and w.last_kind == "escalation" and w.last_to == model:
                    return Outcome("failed", model, asks=asks, blocked=blocked)
                out = self._cloud(w, model, pick)
                out.asks, out.blocked = asks, blocked
                return out
            target = f"{pick.target}@{pick.runtime}"
            runtime_key = f"runtime:{pick.runtime}"
            if runtime_key in w.failed:
                failed = {**failed, runtime_key: w.failed[runtime_key]}
                continue
            if runtime_key in w.new_down and runtime_key not in down:
                down = down | {runtime_key}
                continue
            if target not in w.served and w.last_kind != "escalation" and w.last_to == target:
                return Outcome("failed", target, asks=asks, blocked=blocked)
            return Outcome(
                "local", target, "local", asks=asks, reasons=pick.reasons, blocked=blocked
            )
        return Outcome("failed", asks=asks, blocked=blocked)

    def _decide(
        self,
        w: World,
        local_only: bool,
        denied: frozenset[str],
        failed: dict[str, str],
        down: frozenset[str],
        first_down: frozenset[str],
    ) -> Pick:
        """decide() at this point of the walk: memoised without the budget, then checked
        against this policy's ledger."""
        pristine = not denied and not failed and down is first_down
        key: tuple[Any, ...] = (self.view(w.req.role), local_only, w.key)
        if not pristine:
            key = (*key, denied, tuple(sorted(failed.items())), down)
        pick = self.memo.get(key)
        if pick is None:
            if pristine:
                state = w.state(local_only)
            else:
                state = _state(w.first, local_only, {}, denied, failed, down)
            pick = Pick.of(decide(self.policy, w.req.role, w.signals, state), self.policy)
            self.memo.put(key, pick)
        if pick.action == "escalate":
            pick = self._with_budget(w, pick, local_only, denied, failed, down)
        return pick

    def _with_budget(
        self,
        w: World,
        pick: Pick,
        local_only: bool,
        denied: frozenset[str],
        failed: dict[str, str],
        down: frozenset[str],
    ) -> Pick:
        """The budget-free pick, unless the ledger cannot cover its estimate: then decide()
        again, with what the ledger leaves for every provider (as the router reads it)."""
        assert pick.provider is not None
        req = w.req
        left = self.ledger.left_usd(req.session, req.day, [pick.provider])[pick.provider]
        if pick.est_cost_usd <= left:
            return pick
        budgets = self.ledger.left_usd(req.session, req.day)
        state = _state(w.first, local_only, budgets, denied, failed, down)
        return Pick.of(decide(self.policy, req.role, w.signals, state), self.policy)

    def _cloud(self, w: World, model: str, pick: Pick) -> Outcome:
        """Served by ``model``: priced by this policy on the request's recorded tokens."""
        spec = self.policy.model(model)
        # nothing served in the record: decide()'s own estimate
        cost = cost_usd(spec, *w.tokens) if w.tokens is not None else pick.est_cost_usd
        amount = round(cost * NANO)
        self.ledger.settle(w.req.session, w.req.day, spec.provider, amount)
        return Outcome(
            "cloud",
            model,
            spec.provider,
            cost_nusd=amount,
            estimated=w.estimated,
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
    return RouterState(
        local_only=local_only,
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
