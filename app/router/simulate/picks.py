"""The small values a replay works with: what it keeps of a decision (a Pick), how a
request ended (an Outcome), and the role view that says when two policies decide alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from app.policy.schema import Policy
from app.router.types import Decision

OutcomeKind = Literal["local", "cloud", "refused", "failed"]


class Pick(NamedTuple):
    """What the replay needs of a Decision (a tuple: made and kept by the hundred thousand)."""

    action: str
    target: str | None
    provider: str | None
    runtime: str | None
    needs_approval: bool
    est_cost_usd: float
    #: as the decision line writes them
    reasons: tuple[str, ...]
    #: the cloud steps a budget skipped: (model, provider)
    budget_skips: tuple[tuple[str, str], ...] = ()

    @property
    def where(self) -> str:
        """A local pick's ``model@runtime`` (how lines name a local target)."""
        return f"{self.target}@{self.runtime}"


def pick_of(d: Decision, policy: Policy) -> Pick:
    budget = tuple(
        (s.model, policy.model(s.model).provider) for s in d.skipped if s.reason == "budget"
    )
    reasons = d.reason_codes
    return Pick(
        d.action,
        d.target,
        d.provider,
        d.runtime,
        d.needs_approval,
        d.est_cost_usd,
        (d.refusal_code or "REFUSED", *reasons) if d.action == "refuse" else tuple(reasons),
        budget,
    )


class Blocked(NamedTuple):
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


def role_view(policy: Policy, role: str, *, quiet: bool = False) -> tuple[Any, ...]:
    """Everything of ``policy`` that decide() reads for ``role``: equal views decide alike
    (the version aside, which a Pick does not keep). ``quiet=True`` leaves out the
    triggers, the prices and the reasoning tokens billed with them: decide() reads the
    triggers to see whether one fires and the others only to cost an escalation, so
    quiet views that are equal decide alike wherever no trigger fires under either
    policy. tests/unit/test_simulate_replay.py holds both to decide()."""
    if not quiet:
        g = policy.generation
        return (
            policy.roles.get(role),
            tuple(policy.triggers_for(role)),
            policy.aliases,
            policy.models,
            policy.runtimes,
            policy.local_chain,
            policy.embeddings,
            # a reasoning model's thinking, billed as output: the escalation's estimate
            (g.reasoning_low_tokens, g.reasoning_medium_tokens, g.reasoning_high_tokens),
        )
    free = {
        "price_in_usd_per_mtok": 0.0,
        "price_out_usd_per_mtok": 0.0,
        "price_cache_read_usd_per_mtok": None,
        "price_cache_write_usd_per_mtok": None,
    }
    models = {mid: m.model_copy(update=free) for mid, m in policy.models.items()}
    return (
        policy.roles.get(role),
        policy.aliases,
        models,
        policy.runtimes,
        policy.local_chain,
        policy.embeddings,
    )
