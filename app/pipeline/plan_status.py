"""Each plan step's status, as the runner knows it, published on the bus (pure rules,
one publisher)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from app.bus import PlanStepsChanged
from app.evidence.layout import PLAN_STEPS
from app.pipeline.schemas import Plan
from app.pipeline.signals import diff_files

if TYPE_CHECKING:
    from app.pipeline.context import RunContext

Status = Literal["pending", "active", "done", "failed", "skipped"]


def finished_statuses(plan: Plan, diff: str) -> list[Status]:
    """Tests green: a step is done when the final change touches one of its files (or it
    names none); a step whose files the change never touched is skipped."""
    touched = set(diff_files(diff))
    out: list[Status] = []
    for step in plan.steps:
        named = {f.strip().removeprefix("./") for f in step.files if f.strip()}
        out.append("done" if not named or named & touched else "skipped")
    return out


async def publish_steps(ctx: RunContext, statuses: list[Status], detail: str) -> None:
    ctx.bundle.write_json(PLAN_STEPS, {"statuses": list(statuses), "detail": detail})
    await ctx.emit(
        PlanStepsChanged(
            session=ctx.session.id, run=ctx.run_id, statuses=list(statuses), detail=detail
        )
    )
