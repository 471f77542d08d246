"""What one recorded request met, read once for both policies' replays (a World), and
the RouterState decide() reads at a point of a replay's walk."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from app.policy.schema import Policy
from app.router.recorded import CHECK
from app.router.simulate.picks import Pick
from app.router.simulate.requests import Inputs, Request
from app.router.types import RouterState, Signals


class Tokens(NamedTuple):
    """A request's tokens as a cloud model is priced on them (app.router.cost)."""

    tokens_in: int
    tokens_out: int
    #: of tokens_in: read from a provider's prompt cache, written to it
    tokens_cached: int = 0
    tokens_cache_write: int = 0


_NONE: frozenset[str] = frozenset()
#: first decisions' states (immutable): a log holds few distinct ones
_STATES: dict[tuple[object, ...], RouterState] = {}
_STATES_KEPT = 4096


@dataclass(slots=True)
class World:
    req: Request
    first: Inputs
    #: at its last decision: what had failed, been denied, gone down meanwhile
    failed: Mapping[str, str]
    denied: frozenset[str]
    new_down: frozenset[str]
    groups: dict[str, frozenset[str]]
    #: the models that answered (``model@runtime`` for a local one)
    served: frozenset[str]
    last_kind: str
    last_to: str | None
    first_down: frozenset[str]
    single: bool
    _recorded: Pick | None = None
    _signals: Signals | None = None
    #: per replayer (by id): no trigger of its policy fires on the signals
    quiet_under: dict[int, bool] = field(default_factory=dict)

    @classmethod
    def of(cls, req: Request) -> World:
        first, last = req.steps[0].inputs, req.steps[-1]
        single = len(req.steps) == 1
        served = frozenset(c.model for c in req.calls)
        if last.kind == CHECK and last.to is not None:
            # a check asks no model: the local output it read stands, as if its target
            # served it (a replay that stays local ends where the check did)
            served = served | {last.to}
        return cls(
            req=req,
            first=first,
            failed=last.inputs.failed,
            denied=_NONE if single else frozenset(last.inputs.denied),
            new_down=_NONE if single else frozenset(last.inputs.down) - frozenset(first.down),
            groups={} if single else _denial_groups(req),
            served=served,
            last_kind=last.kind,
            last_to=last.to,
            first_down=frozenset(first.down) if first.down else _NONE,
            single=single,
        )

    @property
    def signals(self) -> Signals:
        if self._signals is None:
            self._signals = self.first.signals()
        return self._signals

    @property
    def fired(self) -> bool:
        """A trigger fired for the first decision (its line names a reason)."""
        step = self.req.steps[0]
        codes = step.codes[1:] if step.kind in ("runtime_fallback", "refusal") else step.codes
        return bool(codes)

    def recorded_key(self) -> tuple[str, str | None]:
        """How the request ended in the log: (outcome kind, target)."""
        if self.last_kind == "refusal":
            return ("refused", None)
        if self.last_to not in self.served:
            return ("failed", self.last_to)
        return ("cloud" if self.last_kind == "escalation" else "local", self.last_to)

    def tokens(self) -> tuple[Tokens | None, bool]:
        """What a cloud model is priced on: the request's cloud calls' tokens, with the
        parts of their prompts a provider's cache read and wrote (a prompt cached once is
        cached for the next model as well, as the recorded one's was), else its local
        calls' (then an estimate, True; a local server's cache is no provider's: no part
        of them cached), else nothing (None)."""
        calls = self.req.calls
        cloud = [c for c in calls if c.cloud]
        priced = cloud or calls
        if not priced:
            return None, True
        tokens_in, tokens_out = sum(c.tokens_in for c in priced), sum(c.tokens_out for c in priced)
        if not cloud:
            return Tokens(tokens_in, tokens_out), True
        cached = sum(c.tokens_cached for c in cloud)
        written = sum(c.tokens_cache_write for c in cloud)
        return Tokens(tokens_in, tokens_out, cached, written), False

    def recorded_pick(self, policy: Policy) -> Pick:
        """The first decision as its line records it (what decide() returned then). The
        replays that read it agree with its policy on the models it names."""
        if self._recorded is None:
            self._recorded = self._read_pick(policy)
        return self._recorded

    def _read_pick(self, policy: Policy) -> Pick:
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
        """The first decision's state, no budget (shared by both policies' replays, and
        by every request that recorded the same one)."""
        first = self.first
        key = (
            local_only,
            self.first_down,
            tuple(first.approved),
            tuple(first.windows.items()),
            tuple(first.unavailable.items()),
        )
        state = _STATES.get(key)
        if state is None:
            if len(_STATES) >= _STATES_KEPT:
                _STATES.clear()
            state = _STATES[key] = walk_state(first, local_only, {}, _NONE, {}, self.first_down)
        return state


def walk_state(
    first: Inputs,
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
        unavailable=dict(first.unavailable),
        failed=failed,
        approved=first.approved,
        denied=denied,
        context_windows=dict(first.windows),
    )


def _denial_groups(req: Request) -> dict[str, frozenset[str]]:
    """Model → the models denied together with it (a "deny all" denies a whole chain)."""
    out: dict[str, frozenset[str]] = {}
    before: frozenset[str] = _NONE
    for step in req.steps:
        now = frozenset(step.inputs.denied)
        added = now - before
        for model in added:
            out[model] = added
        before = now
    return out
