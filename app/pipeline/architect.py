"""The Architect (§1, §2): draft → maieutic self-interrogation → final plan.

Self-critique within the same model is the seed's preferred pattern: one planner writes a
draft, questions it, and writes the final plan, locally. The final plan's confidence is
then grounded (:mod:`.grounding`: the model's self-report capped by checks against the
repository and the task; no model is asked), and the escalation decision reads that
grounded value with the plan's scope (§3). When a trigger fires, the cloud planner writes
the plan (after the human's approval); when the escalation is denied or unavailable the
run goes on with the local plan, marked low-confidence, and the second-opinion sidecar
may give advice (never a decision).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from app.backends.base import ChatRequest, Message
from app.bus import PlanUpdated
from app.counted import counted
from app.evidence.bundle import PLAN
from app.pipeline import prompts
from app.pipeline.checked import record_check
from app.pipeline.context import RunStopped
from app.pipeline.grounding import Grounded, ground_plan
from app.pipeline.repo_facts import repo_facts
from app.pipeline.schemas import Plan, PlanStep
from app.pipeline.second_opinion import advise
from app.pipeline.signals import plan_signals
from app.pipeline.structured import Answer, ask_model, typed_request
from app.router.decide import fired_triggers
from app.router.service import RouteRefused, RouteStaysLocal
from app.router.types import Decision, Signals

if TYPE_CHECKING:
    from app.pipeline.context import RunContext

ROLE = "architect"
#: the evidence file with the final plan's grounded confidence (self-report, cap, reasons)
GROUNDING = "plan_grounding.json"


async def plan(ctx: RunContext, brief: str) -> Plan:
    """The run's plan (also written to the evidence), or :class:`RunStopped`."""
    ctx.control.current_role = ROLE
    if not ctx.exercised(ROLE):
        return await _the_task_as_plan(ctx)
    await ctx.stage(ROLE, "started", role=ROLE, detail="draft")
    first = Signals(user_request=ctx.wants_escalation(ROLE))
    ctx.guard_calls(ROLE)
    asked = prompts.architect_draft(ctx.task, brief, ctx.options.within)
    draft = await ask_model(
        ctx.router,
        ROLE,
        Plan,
        asked,
        first,
        run=ctx.run_id,
        max_tokens=ctx.policy.generation.plan_tokens,
    )
    ctx.charge(ROLE, draft.calls)
    await ctx.role_stage(ROLE, draft, "draft")
    current = draft.value
    grounded: Grounded | None = None
    if current is not None:
        await publish_plan(ctx, current)
        current, grounded = await _final(ctx, brief, current)
    elif not first.user_request and not escalated(draft) and ctx.wants_escalation(ROLE):
        # `e` pressed while the draft was written, and the draft failed: the request is
        # heard here (it was dropped, with no line, and the run stopped: a user-audit).
        # Not when the draft itself was the cloud's, asked for (--escalate, or e before
        # it): that prompt would go out, and be paid or asked for, twice.
        cloud = await _escalate(ctx, asked, Signals(user_request=True))
        if cloud is not None and cloud.value is not None:
            await ctx.role_stage(ROLE, cloud, "escalated")
            current = cloud.value
            facts = await asyncio.to_thread(repo_facts, ctx.repo, ctx.base)
            grounded = ground_plan(current, ctx.task, facts, ctx.policy.grounding)
    if current is None or grounded is None:
        raise RunStopped(f"architect: no valid plan ({draft.error})")
    ctx.bundle.write_json(PLAN, current.model_dump())
    ctx.bundle.write_json(GROUNDING, grounded.as_json())
    await publish_plan(ctx, current, grounded)
    await ctx.stage(
        ROLE,
        "finished",
        role=ROLE,
        detail=(
            f"{counted(len(current.steps), 'step')}, "
            f"confidence {grounded.value:.2f} ({grounded.basis})"
        ),
    )
    return current


def escalated(answer: Answer[Plan]) -> bool:
    return answer.result is not None and answer.result.escalated


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


async def _final(ctx: RunContext, brief: str, draft: Plan) -> tuple[Plan, Grounded]:
    """Interrogate the draft and write the final plan locally (the draft when that fails);
    then escalate on the final plan's grounded signals. Returns the plan and its grounding."""
    ctx.guard_calls(ROLE)
    questions = await ctx.router.complete(
        ROLE,
        ChatRequest(
            messages=prompts.architect_interrogate(ctx.task, draft),
            max_tokens=ctx.policy.generation.question_tokens,
        ),
        Signals(),
        run=ctx.run_id,
    )
    ctx.charge(ROLE, 1)
    messages = prompts.architect_final(ctx.task, brief, draft, questions.text, ctx.options.within)
    ctx.guard_calls(ROLE)
    final = await ask_model(
        ctx.router,
        ROLE,
        Plan,
        messages,
        Signals(user_request=ctx.wants_escalation(ROLE)),
        run=ctx.run_id,
        max_tokens=ctx.policy.generation.plan_tokens,
    )
    ctx.charge(ROLE, final.calls)
    await ctx.role_stage(ROLE, final, "final")
    chosen = final.value if final.value is not None else draft
    # the repository read once: an escalated plan is grounded in the same files
    facts = await asyncio.to_thread(repo_facts, ctx.repo, ctx.base)
    grounded = ground_plan(chosen, ctx.task, facts, ctx.policy.grounding)
    if final.result is not None and final.result.escalated:
        return chosen, grounded  # the user asked: the cloud planner wrote it
    signals = Signals(
        **plan_signals(chosen, grounded.value),
        user_request=ctx.wants_escalation(ROLE),
        grounds=(("confidence", grounded.basis),),
    )
    if not fired_triggers(ctx.policy, ROLE, signals):
        # a decision too, recorded with what it read: without its line a stricter policy
        # replayed on the log found nothing to escalate (0.95 under a 0.99 bar: a user
        # audit of `policy simulate`)
        request = typed_request(Plan, messages, ctx.policy.generation.plan_tokens)
        d, inputs = await ctx.router.decide_unserved(ROLE, request, signals)
        await _record_check(ctx, d, inputs, chosen, grounded)
        return chosen, grounded
    # the panes show the plan the escalation is about, at its grounded confidence, while
    # the human decides (the modal's 0.45 beside a pane still reading the draft's 1.00)
    await publish_plan(ctx, chosen, grounded)
    cloud = await _escalate(ctx, messages, signals, checked=(chosen, grounded))
    if cloud is not None and cloud.value is not None:
        await ctx.role_stage(ROLE, cloud, "escalated")
        escalated = ground_plan(cloud.value, ctx.task, facts, ctx.policy.grounding)
        again = Signals(
            **plan_signals(cloud.value, escalated.value),
            grounds=(("confidence", escalated.basis),),
        )
        # (the confidence trigger alone: a confident cloud plan of 9 steps fires the scope
        # trigger and read "still low-confidence (0.90)", a review)
        low = [r for t, r in fired_triggers(ctx.policy, ROLE, again) if t.signal == "confidence"]
        if low:
            # the cloud planner's plan is still under the bar: the run goes on with it (no
            # planner is left to ask), said in the audit, and the sidecar's advice is asked
            # as for a local plan left low (it went on unsaid, a conformance audit)
            await ctx.audit(
                "run",
                role=ROLE,
                reason_codes=["ARCHITECT_ESCALATED_PLAN_LOW", *(r.code for r in low)],
                values={"confidence": escalated.value, "basis": escalated.basis},
                detail=f"the escalated plan is still low-confidence ({escalated.value:.2f}:"
                f" {escalated.basis}); going on with it",
            )
            await ctx.notice(
                f"the escalated plan is still low-confidence ({escalated.value:.2f}); going on"
                " with it",
                level="warning",
            )
            await advise(
                ctx,
                "low_confidence",
                "Plan:\n"
                + cloud.value.model_dump_json(indent=1)
                + f"\n\nGrounding: {escalated.basis}",
                value=escalated.value,
                basis=escalated.basis,
            )
        return cloud.value, escalated
    await ctx.notice(
        "the escalation was denied or unavailable: going on with the local plan, "
        f"marked low-confidence ({grounded.value:.2f}: {grounded.basis})",
        level="warning",
    )
    await advise(
        ctx,
        "low_confidence",
        "Plan:\n" + chosen.model_dump_json(indent=1) + f"\n\nGrounding: {grounded.basis}",
        value=grounded.value,
        basis=grounded.basis,
    )
    return chosen, grounded


async def _escalate(
    ctx: RunContext,
    messages: list[Message],
    signals: Signals,
    *,
    checked: tuple[Plan, Grounded] | None = None,
) -> Answer[Plan] | None:
    """The final plan's triggers fired: the cloud planner writes the plan (approval,
    budget and local_only are the router's). None when it stays local (denied,
    unavailable, local_only): the local plan stands and no local generation is repeated.
    ``checked``: the plan (and its grounding) whose signals these are. When the router
    kept it local at its first decision (local_only, every cloud step over budget), no
    line of its records that decision, and a ``check`` line does (the user's own request
    for the cloud planner, with no plan to read, too)."""
    ctx.guard_calls(ROLE)
    try:
        answer = await ask_model(
            ctx.router,
            ROLE,
            Plan,
            messages,
            signals,
            run=ctx.run_id,
            max_tokens=ctx.policy.generation.plan_tokens,
            cloud_only=True,
        )
    except RouteStaysLocal as stays:
        # the router audited the skips and denials (an escalation line records a decision
        # that was asked about; one kept local at once is not recorded but here)
        if stays.inputs is None:
            pass
        elif checked is not None:
            await _record_check(ctx, stays.decision, stays.inputs, *checked, req=stays.req)
        else:
            subject = "the user's request for the cloud planner (the draft failed)"
            await record_check(
                ctx.router,
                ROLE,
                stays.decision,
                stays.inputs,
                run=ctx.run_id,
                subject=subject,
                req=stays.req,
            )
        return None
    except RouteRefused:
        return None  # the router audited the refusal, with its inputs
    ctx.charge(ROLE, answer.calls)
    return answer


async def _record_check(
    ctx: RunContext,
    d: Decision,
    inputs: dict[str, Any],
    value: Plan,
    grounded: Grounded,
    *,
    req: int | None = None,
) -> None:
    """The decision on the final plan that sent nothing to the cloud, as a decision line
    (:mod:`app.pipeline.checked`): no trigger fired (no escalation was needed), or
    one fired and the router could not leave the machine (``d``'s notes say why). Its
    ``inputs`` (the grounded confidence, the plan's scope, the prompt an escalation would
    send) are what ``policy simulate`` replays under another policy."""
    steps = counted(len(value.steps), "step")
    asked = counted(len(value.open_questions), "open question")
    scope = f"confidence {grounded.value:.2f} ({grounded.basis}), {steps}, {asked}"
    await record_check(
        ctx.router, ROLE, d, inputs, run=ctx.run_id, subject=f"the final plan ({scope})", req=req
    )


async def publish_plan(ctx: RunContext, value: Plan, grounded: Grounded | None = None) -> None:
    """The plan for the panes; with its grounding, the confidence shown is the grounded
    one (the self-report and the reasons ride along)."""
    shown = value.model_dump()
    if grounded is not None:
        shown["confidence"] = grounded.value
        shown["grounding"] = grounded.as_json()
    await ctx.emit(PlanUpdated(session=ctx.session.id, run=ctx.run_id, plan=shown))
