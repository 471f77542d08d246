"""The Architect (§1, §2): draft → maieutic self-interrogation → final plan.

Self-critique within the same model is the seed's preferred pattern: one planner writes a
draft, questions it, and writes the final plan. The final step reads the draft's soft
signals (confidence, scope), so a low-confidence plan is what escalates (§3). When the
escalation is denied or unavailable the run goes on with the local plan, marked
low-confidence, and the second-opinion sidecar may give advice (never a decision).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.backends.base import ChatRequest
from app.bus import PlanUpdated
from app.evidence.bundle import PLAN
from app.pipeline import prompts
from app.pipeline.context import RunStopped
from app.pipeline.schemas import Plan, PlanStep
from app.pipeline.second_opinion import advise
from app.pipeline.signals import plan_signals
from app.pipeline.structured import ask_model
from app.router.types import Signals

if TYPE_CHECKING:
    from app.pipeline.context import RunContext

ROLE = "architect"
#: output room for a plan, and for the interrogation's questions
PLAN_TOKENS = 400
QUESTION_TOKENS = 160


async def plan(ctx: RunContext, brief: str) -> Plan:
    """The run's plan (also written to the evidence), or :class:`RunStopped`."""
    ctx.control.current_role = ROLE
    if not ctx.exercised(ROLE):
        return await _the_task_as_plan(ctx)
    await ctx.stage(ROLE, "started", role=ROLE, detail="draft")
    first = Signals(user_request=ctx.wants_escalation(ROLE))
    draft = await ask_model(
        ctx.router,
        ROLE,
        Plan,
        prompts.architect_draft(ctx.task, brief),
        first,
        run=ctx.run_id,
        max_tokens=PLAN_TOKENS,
    )
    await ctx.role_stage(ROLE, draft, "draft")
    current = draft.value
    if current is not None:
        await publish_plan(ctx, current)
        current = await _final(ctx, brief, current)
    if current is None:
        raise RunStopped(f"architect: no valid plan ({draft.error})")
    ctx.bundle.write_json(PLAN, current.model_dump())
    await publish_plan(ctx, current)
    await ctx.stage(
        ROLE,
        "finished",
        role=ROLE,
        detail=f"{len(current.steps)} steps, confidence {current.confidence:.2f}",
    )
    return current


async def _the_task_as_plan(ctx: RunContext) -> Plan:
    """The spec marks the Architect NO (§8): no planner is asked; the plan is the task as
    the human wrote it, one step, and says so."""
    value = Plan(
        goal=ctx.task[:300],
        steps=[
            PlanStep(title=ctx.task[:160], rationale="the spec does not exercise the Architect")
        ],
        confidence=1.0,
        open_questions=[],
    )
    await ctx.audit(
        "route",
        role=ROLE,
        reason_codes=["SPEC_ARCHITECT_NOT_EXERCISED"],
        detail="the spec marks 'Architect/Planner: NO': no planner is asked; the task is the plan",
    )
    ctx.bundle.write_json(PLAN, value.model_dump())
    await publish_plan(ctx, value)
    await ctx.stage(
        ROLE, "finished", role=ROLE, detail="not exercised (spec §8): the task is the plan"
    )
    return value


async def _final(ctx: RunContext, brief: str, draft: Plan) -> Plan:
    """Interrogate the draft, then write the final plan (the draft when that fails)."""
    questions = await ctx.router.complete(
        ROLE,
        ChatRequest(
            messages=prompts.architect_interrogate(ctx.task, draft), max_tokens=QUESTION_TOKENS
        ),
        Signals(),
        run=ctx.run_id,
    )
    signals = Signals(**plan_signals(draft), user_request=ctx.wants_escalation(ROLE))
    final = await ask_model(
        ctx.router,
        ROLE,
        Plan,
        prompts.architect_final(ctx.task, brief, draft, questions.text),
        signals,
        run=ctx.run_id,
        max_tokens=PLAN_TOKENS,
    )
    await ctx.role_stage(ROLE, final, "final")
    chosen = final.value if final.value is not None else draft
    escalation_lost = (
        final.result is not None
        and bool(final.result.decision.reasons)
        and not final.result.escalated
    )
    if escalation_lost:
        await ctx.notice(
            "the escalation was denied or unavailable: going on with the local plan, "
            "marked low-confidence",
            level="warning",
        )
        await advise(
            ctx,
            "low_confidence",
            "Plan:\n" + chosen.model_dump_json(indent=1),
            value=chosen.confidence,
        )
    return chosen


async def publish_plan(ctx: RunContext, value: Plan) -> None:
    await ctx.emit(PlanUpdated(session=ctx.session.id, run=ctx.run_id, plan=value.model_dump()))
