"""ACE (§1): after a failure, the reflector names patterns and the curator keeps the good
ones as playbook bullets for later briefs. A lesson not learned never stops a run.

Local-first: the local reflector always goes first, with no trigger. Kimi is ACE's
escalation, asked only on ACE's own trigger (an interesting failure: the policy's
``[ace]`` bounds on failed loops and diff size) and only when the local reflection kept
no lesson; the router asks the human and never leaves the machine under local_only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.backends.base import Message
from app.pipeline import prompts
from app.pipeline.checked import record_check
from app.pipeline.context import RunStopped
from app.pipeline.recall import curate
from app.pipeline.schemas import Reflection
from app.pipeline.signals import interesting_failure
from app.pipeline.structured import ask_model
from app.router.service import RouteRefused, RouteStaysLocal
from app.router.types import Signals

if TYPE_CHECKING:
    from app.pipeline.context import RunContext

ROLE = "ace"


async def reflect(ctx: RunContext, failures: list[str], diff: str) -> int:
    """Reflect when the run had a failure or is interesting; returns the bullets kept."""
    why = interesting_failure(failures, diff, ctx.policy.ace)
    if not failures and not why:
        return 0
    messages = prompts.reflector(ctx.task, [*failures, *(w for w in why if "loops" not in w)])
    local = await _ask(ctx, messages, Signals(), cloud_only=False)
    kept = await curate(ctx.session, ctx.run_id, local.patterns) if local else 0
    if kept or not why:
        return kept
    # an interesting failure the local reflector learned nothing from: ACE's escalation
    cloud = await _ask(ctx, messages, Signals(interesting_failure=True), cloud_only=True)
    return await curate(ctx.session, ctx.run_id, cloud.patterns) if cloud else 0


async def _ask(
    ctx: RunContext, messages: list[Message], signals: Signals, *, cloud_only: bool
) -> Reflection | None:
    """A reflection, or None (refused, staying local, or no usable reply: all audited;
    a ``cloud_only`` request kept local at its first decision by a ``check`` line)."""
    try:
        ctx.guard_calls(ROLE)
    except RunStopped:
        return None  # the stage's call cap: a lesson not learned never stops a run
    try:
        answer = await ask_model(
            ctx.router,
            ROLE,
            Reflection,
            messages,
            signals,
            run=ctx.run_id,
            max_tokens=ctx.policy.generation.reflection_tokens,
            cloud_only=cloud_only,
        )
    except RouteStaysLocal as stays:
        if stays.inputs is not None:
            # kept local at its first decision (no trigger fired, local_only, every cloud
            # step over budget): no line of the router's holds that decision, this one does
            await record_check(
                ctx.router,
                ROLE,
                stays.decision,
                stays.inputs,
                run=ctx.run_id,
                subject="the run's failure (the local reflection kept no lesson from it)",
                req=stays.req,
            )
        return None
    except RouteRefused:
        return None  # audited by the router
    ctx.charge(ROLE, answer.calls)
    return answer.value
