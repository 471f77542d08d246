"""GR-001: no consensus. Every stage has one owner; the legacy flag is accepted and ignored.

§2 "Implementation" of the seed, as Python: ``SPEC_KIT_CONSENSUS=false`` (default) is the
single-owner pipeline; ``=true`` is legacy mode, which only earns a deprecation warning on
first use, because there is no voting code to switch on. ``SPEC_KIT_CRITIC=true`` enables
the non-blocking critic-only sidecar.
"""

from __future__ import annotations

import warnings
from typing import Literal

from pydantic import BaseModel, ConfigDict

from app.audit.types import AuditSink
from app.errors import UsageError
from app.policy.schema import Policy

ConsensusMode = Literal["single_owner", "legacy_ignored"]

REASON_SINGLE_OWNER = "GR001_SINGLE_OWNER"
LEGACY_WARNING = (
    "SPEC_KIT_CONSENSUS=true is deprecated and ignored (GR-001): consensus/voting is not"
    " part of the pipeline; each stage keeps a single owner."
)

# Once per process, like the seed's "tracing::warn on first invocation".
_warned = False


class UnknownStage(UsageError):
    """A stage name that is not a role of the policy."""


class ConsensusOutcome(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    consensus_ok: bool
    skipped: bool
    mode: ConsensusMode
    #: the deprecation text whenever the legacy flag is on (the Python warning fires once)
    warning: str | None = None
    stage: str
    #: the stage's single owner (empty for a deterministic stage such as stage0)
    agents: list[str]


def _reset_for_tests() -> None:
    global _warned
    _warned = False


def expected_agents_for_stage(policy: Policy, stage: str) -> list[str]:
    """The stage's one preferred agent: its role's default model id, alias-resolved.

    The consensus flag does not change the answer. A stage served by no model (stage0's
    deterministic retrieval) has no agent: ``[]``.
    """
    role = policy.roles.get(stage)
    if role is None:
        known = ", ".join(sorted(policy.roles))
        raise UnknownStage(f"unknown stage {stage!r}; stages are the policy's roles: {known}")
    if role.default is None:
        return []
    return [policy.resolve(role.default)]


def consensus_requested(policy: Policy, settings_consensus: bool) -> bool:
    """Whether the legacy consensus flag is on, in the policy file or the environment."""
    return policy.consensus.enabled or settings_consensus


def critic_enabled(policy: Policy, settings_critic: bool) -> bool:
    """Whether the critic-only sidecar runs (policy ``consensus.critic`` or SPEC_KIT_CRITIC)."""
    return policy.consensus.critic or settings_critic


async def run_spec_consensus(
    policy: Policy,
    stage: str,
    *,
    enabled: bool,
    audit: AuditSink,
    session: str,
    run: str | None = None,
) -> ConsensusOutcome:
    """Skip consensus for ``stage``, always, and say so in one audit line (GR-001, GR-005).

    ``enabled`` is the legacy flag (see :func:`consensus_requested`). With it on, a
    DeprecationWarning is issued on the first call in the process and the outcome carries
    the warning text; the stage still has one owner.
    """
    global _warned
    agents = expected_agents_for_stage(policy, stage)
    mode: ConsensusMode = "legacy_ignored" if enabled else "single_owner"
    warning = LEGACY_WARNING if enabled else None
    if enabled and not _warned:
        _warned = True
        warnings.warn(LEGACY_WARNING, DeprecationWarning, stacklevel=2)

    owner = agents[0] if agents else "no model (deterministic)"
    detail = f"consensus skipped: single-owner pipeline; stage {stage} is owned by {owner}"
    if enabled:
        detail += "; SPEC_KIT_CONSENSUS=true is deprecated and ignored"
    await audit.append(
        "consensus",
        session=session,
        run=run,
        role=stage,
        to=agents[0] if agents else None,
        reason_codes=[REASON_SINGLE_OWNER],
        values={"consensus_flag": enabled, "mode": mode, "agents": agents},
        detail=detail,
    )
    return ConsensusOutcome(
        consensus_ok=True, skipped=True, mode=mode, warning=warning, stage=stage, agents=agents
    )


__all__ = [
    "ConsensusOutcome",
    "UnknownStage",
    "consensus_requested",
    "critic_enabled",
    "expected_agents_for_stage",
    "run_spec_consensus",
]
