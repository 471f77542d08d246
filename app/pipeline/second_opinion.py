"""The escalation-only second opinion (§2): advice on a failure or a High-Risk change.

A sidecar, never an owner. It is asked only when one of its triggers fires (repeated
failed loops, a High-Risk change, a low-confidence plan) or the user asks, so the router
treats it as any escalation: an approval, a budget, never under local_only, and no local
stand-in. Whatever it says is written to the evidence bundle and the audit log as
advice; nothing in the pipeline reads it back to decide (the tests, the Judge and the
merge gate do). A denied or unavailable escalation means no second opinion, audited, and
the run goes on exactly as it would have.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.backends.base import Message
from app.counted import counted
from app.evidence.bundle import SECOND_OPINION
from app.pipeline.checked import record_check
from app.pipeline.prompts import clip
from app.pipeline.schemas import Strict
from app.pipeline.structured import ask_model, typed_request
from app.policy.schema import Policy
from app.router.decide import fired_triggers
from app.router.routed import skip_text
from app.router.service import RouteFailed, Router, RouteRefused
from app.router.types import Decision, Signals

if TYPE_CHECKING:
    from app.pipeline.context import RunContext

ROLE = "second_opinion"
Occasion = Literal["failure", "high_risk", "low_confidence", "user_request"]
#: what became of a request for a second opinion: ``advice`` (an opinion); no cloud step
#: could serve because it was ``denied``, ``unavailable`` (no key), ``local_only``
#: (GR-009) or ``over_budget`` (GR-011), or for a mix of those and other reasons
#: (``refused``: see ``passed_over``); ``no_trigger``; the call ``failed`` (no reply); or
#: a reply came back (called, paid) and was ``malformed`` (GR-012, after its one repair)
Outcome = Literal[
    "advice",
    "denied",
    "unavailable",
    "local_only",
    "over_budget",
    "refused",
    "no_trigger",
    "failed",
    "malformed",
]

SYSTEM = (
    "You are a senior engineer giving a second opinion on another model's work. You do "
    "not rewrite it and you do not approve or reject it: you point out the likely cause "
    "of a failure or the risks of a change, and what to try or check next. Be specific: "
    "name files, functions and tests. Reply with JSON only."
)


class SecondOpinion(Strict):
    """What the sidecar may say: an assessment and suggestions, no verdict field."""

    assessment: str = Field(max_length=1500)
    likely_causes: list[str] = Field(default_factory=list, max_length=6)
    risks: list[str] = Field(default_factory=list, max_length=6)
    suggestions: list[str] = Field(default_factory=list, max_length=6)
    confidence: float = Field(ge=0.0, le=1.0)


class AdviceRecord(BaseModel):
    """One second opinion as the evidence keeps it (``second_opinion.json``)."""

    model_config = ConfigDict(frozen=True)

    occasion: Occasion
    advisory: Literal[True] = True
    model: str | None = None
    provider: str | None = None
    opinion: SecondOpinion | None = None
    #: why there is no opinion (denied, unavailable, not triggered, bad reply)
    skipped: str | None = None
    #: what became of the request (None: a bundle written before it was recorded)
    outcome: Outcome | None = None
    #: the cloud steps passed over, "model: why" (a refusal's, for the reader)
    passed_over: list[str] = Field(default_factory=list)
    #: generations made and what they cost, the rejected ones' too (None: nothing came
    #: back, or a bundle written before it was recorded)
    calls: int | None = None
    cost_usd: float | None = None


_SKIP_OUTCOME: dict[str, Outcome] = {
    "denied": "denied",
    "unavailable": "unavailable",
    "local_only": "local_only",
    "budget": "over_budget",
}


def refusal_outcome(decision: Decision) -> tuple[Outcome, list[str]]:
    """Why a refused request got no second opinion, from its decision's cloud skips
    (pure): one reason when every cloud step was passed over for it, else ``refused``."""
    cloud = [s for s in decision.skipped if s.runtime == "cloud"]
    if not cloud:
        return ("refused" if decision.reasons else "no_trigger"), []
    kinds: set[Outcome] = set()
    for skip in cloud:
        # a step tried in this request says why it failed first ("budget: ...")
        why = skip.reason if skip.reason != "failed" else skip.detail.partition(":")[0]
        kinds.add(_SKIP_OUTCOME.get(why, "refused"))
    said = [
        # "failed — budget: ..." read as a call that failed: the detail says why
        f"{s.model}: {s.detail}" if s.reason == "failed" and s.detail else skip_text(s)
        for s in cloud
    ]
    return (kinds.pop() if len(kinds) == 1 else "refused"), said


def occasion_signals(occasion: Occasion, *, value: float | None, user: bool) -> Signals:
    """The signals that fire the sidecar's trigger for ``occasion`` (pure)."""
    if occasion == "failure":
        return Signals(failed_loops=int(value or 0), user_request=user)
    if occasion == "high_risk":
        return Signals(high_risk=True, user_request=user)
    if occasion == "low_confidence":
        return Signals(confidence=value, user_request=user)
    return Signals(user_request=True)


def triggered(policy: Policy, occasion: Occasion, *, value: float | None, user: bool) -> bool:
    """Whether the sidecar's policy triggers fire for this occasion (pure).

    The pipeline asks only then: an occasion below its threshold (a plan at 0.8 when the
    policy says < 0.75) is no reason for a second opinion; :func:`advise` records that
    decision as a ``check`` line instead (what ``policy simulate`` replays).
    """
    if ROLE not in policy.roles:
        return False
    signals = occasion_signals(occasion, value=value, user=user)
    return bool(fired_triggers(policy, ROLE, signals))


def max_tokens(policy: Policy) -> int:
    spec = policy.roles.get(ROLE)
    return spec.max_output_tokens if spec else 1024


def messages_for(occasion: Occasion, task: str, subject: str) -> list[Message]:
    what = {
        "failure": "The implementation attempts below failed. What is the likely cause, "
        "and what should the next attempt do differently?",
        "high_risk": "The change below is classified High-Risk. What could go wrong, and "
        "what should the reviewer check before merging?",
        "low_confidence": "The plan below has low confidence. What is missing or wrong?",
        "user_request": "The user asked for a second opinion on the work below.",
    }[occasion]
    return [
        Message(role="system", content=SYSTEM),
        Message(role="user", content=f"Task: {task}\n\n{what}\n\n{subject}"),
    ]


async def ask_second_opinion(
    router: Router,
    occasion: Occasion,
    task: str,
    subject: str,
    *,
    run: str,
    value: float | None = None,
    user_request: bool = False,
    grounds: tuple[tuple[str, str], ...] = (),
) -> AdviceRecord:
    """Ask the sidecar once; always returns a record and writes one ``advice`` audit line.

    Never raises for a refused, denied or failed route: advice is optional by design.
    """
    signals = occasion_signals(occasion, value=value, user=user_request)
    if grounds:  # what a grounded value rests on, said in the trigger's text
        signals = signals.model_copy(update={"grounds": grounds})
    record: AdviceRecord
    try:
        answer = await ask_model(
            router,
            ROLE,
            SecondOpinion,
            messages_for(occasion, task, subject),
            signals,
            run=run,
            max_tokens=max_tokens(router.policy),
        )
    except RouteRefused as exc:
        outcome, passed_over = refusal_outcome(exc.decision)
        record = AdviceRecord(
            occasion=occasion, skipped=str(exc), outcome=outcome, passed_over=passed_over
        )
    except RouteFailed as exc:
        record = AdviceRecord(occasion=occasion, skipped=str(exc), outcome="failed")
    else:
        r = answer.result
        billed = answer.billed()
        cost = round(billed.cost_usd, 9) if billed is not None else None
        if answer.value is not None and r is not None:
            record = AdviceRecord(
                occasion=occasion,
                model=r.model,
                provider=r.provider,
                opinion=answer.value,
                outcome="advice",
                calls=answer.calls,
                cost_usd=cost,
            )
        elif r is None:  # no step could serve: nothing came back
            record = AdviceRecord(
                occasion=occasion, skipped=answer.error or "no reply", outcome="failed"
            )
        else:
            why = answer.error or "no valid reply"
            if not answer.rejected and answer.problems:  # the repair was not served
                why = f"reply does not fit SecondOpinion ({answer.problems[0]}); {why}"
            record = AdviceRecord(
                occasion=occasion,
                model=r.model,
                provider=r.provider,
                skipped=why,
                outcome="malformed",
                calls=answer.calls,
                cost_usd=cost,
            )
    await router.audit.append(
        "advice",
        session=router.session,
        run=run,
        role=ROLE,
        to=record.model,
        reason_codes=[
            f"SECOND_OPINION_{occasion.upper()}",
            "ADVISORY_ONLY" if record.opinion else "SECOND_OPINION_SKIPPED",
        ],
        values={
            "occasion": occasion,
            "confidence": record.opinion.confidence if record.opinion else None,
            "suggestions": len(record.opinion.suggestions) if record.opinion else 0,
        },
        detail=(
            f"second opinion from {record.model} on the {occasion.replace('_', ' ')}: "
            "advice only, it never decides"
            if record.opinion
            else f"no second opinion on the {occasion.replace('_', ' ')}: {record.skipped}"
        ),
    )
    return record


async def advise(
    ctx: RunContext,
    occasion: Occasion,
    subject: str,
    value: float | None = None,
    *,
    basis: str = "",
) -> None:
    """A run's second opinion: into the evidence and the audit, never into a decision.

    Asked only when the sidecar's policy trigger fires for the occasion (or the user
    asked for it); otherwise the decision not to ask is recorded (a ``check`` line).
    """
    user = ctx.wants_escalation(ROLE)
    if not triggered(ctx.policy, occasion, value=value, user=user):
        await _record_no_trigger(ctx, occasion, subject, value, basis, user=user)
        return
    record = await ask_second_opinion(
        ctx.router,
        occasion,
        ctx.task,
        subject,
        run=ctx.run_id,
        value=value,
        user_request=user,
        grounds=_grounds(occasion, basis),
    )
    ctx.advice.append(record)
    ctx.bundle.write_json(
        SECOND_OPINION, {"advisory": True, "opinions": [a.model_dump() for a in ctx.advice]}
    )
    if record.opinion is not None:
        await ctx.notice(
            f"second opinion from {record.model} (advice only, in the evidence): "
            + clip(record.opinion.assessment, 200)
        )


def _grounds(occasion: Occasion, basis: str) -> tuple[tuple[str, str], ...]:
    return (("confidence", basis),) if basis and occasion == "low_confidence" else ()


async def _record_no_trigger(
    ctx: RunContext,
    occasion: Occasion,
    subject: str,
    value: float | None,
    basis: str,
    *,
    user: bool,
) -> None:
    """The occasion fires none of the sidecar's triggers: the decision that no second
    opinion is needed is a ``check`` line (:mod:`app.pipeline.checked`) with the inputs
    decide() read on the request an opinion would have sent, so ``policy simulate``
    replays it under a policy that would ask (a lower bar, a trigger added). Not under a
    policy without the sidecar: there is no decision to make."""
    if ROLE not in ctx.policy.roles:
        return
    signals = occasion_signals(occasion, value=value, user=user)
    grounds = _grounds(occasion, basis)
    if grounds:
        signals = signals.model_copy(update={"grounds": grounds})
    request = typed_request(
        SecondOpinion, messages_for(occasion, ctx.task, subject), max_tokens(ctx.policy)
    )
    d, inputs = await ctx.router.decide_unserved(ROLE, request, signals)
    await record_check(
        ctx.router,
        ROLE,
        d,
        inputs,
        run=ctx.run_id,
        subject=_what(occasion, value, basis),
        needed="no second opinion needed",
        values={"occasion": occasion},
    )


def _what(occasion: Occasion, value: float | None, basis: str) -> str:
    """What the occasion's check is about, for its line ("the plan at confidence 0.60
    (self 0.60)")."""
    if occasion == "failure":
        return f"the Implementer's {counted(int(value or 0), 'failed loop')}"
    if occasion == "low_confidence":
        said = "unknown" if value is None else f"{value:.2f}"
        return f"the plan at confidence {said}" + (f" ({basis})" if basis else "")
    if occasion == "high_risk":
        return "the High-Risk change"
    return "the user's request"
