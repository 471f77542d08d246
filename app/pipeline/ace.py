"""ACE (§1): after an interesting failure, the reflector names patterns and the curator
keeps the good ones as playbook bullets for later briefs. A lesson not learned never
stops a run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.pipeline import prompts
from app.pipeline.recall import curate
from app.pipeline.schemas import Reflection
from app.pipeline.signals import interesting_failure
from app.pipeline.structured import ask_model
from app.router.service import RouteRefused
from app.router.types import Signals

if TYPE_CHECKING:
    from app.pipeline.context import RunContext

ROLE = "ace"
REFLECTION_TOKENS = 400


async def reflect(ctx: RunContext, failures: list[str], diff: str) -> int:
    """Reflect when the run is worth it; returns the number of bullets kept."""
    why = interesting_failure(failures, diff, ctx.policy.ace)
    if not why:
        return 0
    try:
        answer = await ask_model(
            ctx.router,
            ROLE,
            Reflection,
            prompts.reflector(ctx.task, [*failures, *why[len(failures) > 0 :]]),
            Signals(interesting_failure=True),
            run=ctx.run_id,
            max_tokens=REFLECTION_TOKENS,
        )
    except RouteRefused:
        return 0  # audited by the router
    if answer.value is None:
        return 0
    return await curate(ctx.session, ctx.run_id, answer.value.patterns)
