"""The planner's brief: Stage0 (retrieval, no LLM), the opted-in Tier2 synthesis, and the
Librarian's condensing when the brief does not fit the planner's window.

The full brief always stays in the evidence; what the planner reads is clipped to its
window with room for its answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.evidence.bundle import BRIEF, CONDENSED, SYNTHESIS, TASK_BRIEF
from app.pipeline import prompts
from app.pipeline.briefing import brief_sources, synthesis_markdown
from app.pipeline.recall import playbook_bullets, recall_memories
from app.router.types import Signals
from app.tokens import count_text

if TYPE_CHECKING:
    from app.pipeline.context import RunContext
    from app.stage0.brief import Brief

#: the planner's brief must leave this much of its window for the plan
PLANNER_ANSWER_TOKENS = 1200
PLANNER_MIN_TOKENS = 600
#: the evidence file holding what the user's editor showed the run (ACP)
EDITOR_CONTEXT = "editor_context.md"


@dataclass(frozen=True)
class Briefing:
    #: what the planner reads (fits its window)
    text: str
    #: the repository's constitution, for the Judge's gate ("" when there is none)
    constitution: str
    #: the Tier2 synthesis marked two sources as contradicting (a Librarian trigger)
    contradictions: bool


async def prepare_brief(ctx: RunContext) -> Briefing:
    await ctx.stage("stage0", "started", role="stage0", detail="TF-IDF + MMR, no LLM")
    decision = await ctx.router.decide("architect", Signals())
    window = decision.local.context_window if decision.local else None
    # the editor's buffers (ACP) take their share of the planner's window from Stage0's
    editor = ctx.options.editor_context
    stage0_window = window
    if window and editor:
        stage0_window = max(PLANNER_MIN_TOKENS * 2, window - count_text(editor))
    playbook = await playbook_bullets(ctx.session)
    memories = await recall_memories(ctx.session, ctx.task, ctx.repo)

    def build() -> Brief:
        from app.stage0.engine import Stage0

        # the commit the run works on, not the working tree (RunContext.base)
        with Stage0(ctx.repo, ctx.policy, rev=ctx.base) as engine:
            return engine.brief(
                ctx.task,
                ctx.bundle.path,
                spec=ctx.options.spec,
                memories=memories,
                approach=playbook,
                context_window=stage0_window,
            )

    brief = await asyncio.to_thread(build)
    ctx.bundle.adopt(TASK_BRIEF, BRIEF)  # (Stage0 wrote them: the seal checks them too)
    await ctx.stage("stage0", "finished", role="stage0", detail="TASK_BRIEF.md written")
    # the constitution gate: the Judge checks the diff against these rules
    constitution = ""
    if brief.constitution is not None:
        constitution = f"{brief.constitution.path}:\n{brief.constitution.text}"
    text = brief.to_markdown()
    if editor:
        ctx.bundle.write_text(EDITOR_CONTEXT, editor)
        text += "\n\n" + editor
    synthesis, contradictions = "", False
    if ctx.options.tier2:
        synthesis, contradictions = await _tier2(ctx, brief)
    text += synthesis
    # what the planner reads must fit its window with room for its answer
    budget_tokens = max(PLANNER_MIN_TOKENS, (window or 8192) - PLANNER_ANSWER_TOKENS)
    sweep = ctx.options.full_sweep and ctx.exercised("librarian")
    if sweep or count_text(text) > budget_tokens:
        if ctx.exercised("librarian"):
            text = await _condense(ctx, brief, synthesis, budget_tokens, contradictions)
        else:
            await ctx.audit(
                "degradation",
                role="librarian",
                reason_codes=["SPEC_LIBRARIAN_NOT_EXERCISED"],
                values={"tokens": count_text(text), "budget": budget_tokens},
                detail="the brief exceeds the planner's window and the spec marks 'Librarian: "
                "NO': the brief is clipped, not condensed (the whole brief is in the evidence)",
            )
    return Briefing(prompts.clip(text, budget_tokens * 3), constitution, contradictions)


async def _condense(
    ctx: RunContext, brief: Brief, synthesis: str, budget_tokens: int, contradictions: bool
) -> str:
    """The brief does not fit the planner's window: the Librarian condenses it (map, then
    reduce; Kimi only on its triggers). The full brief stays in the evidence."""
    from app.pipeline.librarian import condense
    from app.pipeline.librarian.sweep import sweep_sources, tool_actions, tool_heavy

    sweep = ctx.options.full_sweep
    what = "a whole-repository sweep" if sweep else "the brief exceeds the window"
    await ctx.stage("librarian", "started", role="librarian", detail=what)
    sources = brief_sources(brief, synthesis)
    searches = 1  # Stage0's query for the brief
    if sweep:
        swept = await asyncio.to_thread(sweep_sources, ctx.repo, ctx.policy, ctx.base)
        sources += [s for s in swept if s[0] not in {sid for sid, _ in sources}]
    actions = tool_actions(sources, searches)
    result = await condense(
        ctx.router,
        ctx.task,
        sources,
        budget_tokens,
        run=ctx.run_id,
        full_sweep=sweep,
        contradictions_detected=contradictions,
        tool_heavy=tool_heavy(actions, ctx.policy),
    )
    ctx.charge("librarian", result.calls)
    ctx.bundle.write_json(CONDENSED, result.model_dump(mode="json"))
    await ctx.stage(
        "librarian",
        "finished",
        role="librarian",
        model=result.model or "",  # None: no model's answer was usable
        detail=f"{result.tokens_in} → {result.tokens_out} tokens"
        + ("" if result.model else ", no Librarian answer was usable: raw excerpts kept"),
    )
    return f"# Task brief (condensed by the Librarian)\n\n**Task:** {ctx.task}\n\n" + result.text


async def _tier2(ctx: RunContext, brief: Brief) -> tuple[str, bool]:
    """The opted-in Tier2 synthesis (GR-008): checked claims for the planner, or nothing.

    A dropped synthesis costs the run nothing: the brief stands on its own. Either way
    the result (with its problems) goes into the evidence.
    """
    from app.paths import repo_state_dir
    from app.pipeline.tier2 import synthesize

    await ctx.stage("tier2", "started", role="tier2", detail="citation-grounded synthesis")
    result = await synthesize(
        ctx.session,
        brief,
        session=ctx.session.id,
        run=ctx.run_id,
        opt_in=True,
        cache_dir=repo_state_dir(ctx.repo, "tier2"),
    )
    ctx.bundle.write_json(SYNTHESIS, result.model_dump(mode="json"))
    await ctx.stage(
        "tier2",
        "finished",
        role="tier2",
        model=result.model,
        detail=f"{result.status}: {result.reason}" if result.reason else result.status,
    )
    return synthesis_markdown(result.synthesis), result.contradictions_detected
