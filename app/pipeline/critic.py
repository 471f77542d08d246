"""The critic-only sidecar (§2, GR-001): one model critiques the plan and the diff
without rewriting them. Its report goes to the evidence; nothing reads it to decide."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.evidence.bundle import CRITIQUE
from app.pipeline import prompts
from app.pipeline.schemas import CritiqueReport, Plan
from app.pipeline.structured import ask_model
from app.policy.consensus import critic_enabled
from app.router.types import Signals

if TYPE_CHECKING:
    from app.pipeline.context import RunContext


async def critique(ctx: RunContext, plan: Plan | None, diff: str) -> CritiqueReport | None:
    """The critique when the sidecar is on (SPEC_KIT_CRITIC / the policy), else None."""
    if not critic_enabled(ctx.policy, ctx.session.settings.critic):
        return None
    if not ctx.exercised(ctx.policy.consensus.critic_role):
        return None  # the spec marks the critic's role NO (§8): no critique this run
    answer = await ask_model(
        ctx.router,
        ctx.policy.consensus.critic_role,
        CritiqueReport,
        prompts.critic(ctx.task, plan, diff),
        Signals(),
        run=ctx.run_id,
        max_tokens=ctx.policy.generation.critique_tokens,
    )
    ctx.bundle.write_json(
        CRITIQUE, answer.value.model_dump() if answer.value else {"error": answer.error}
    )
    return answer.value
