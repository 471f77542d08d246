"""The Judge (§1): rare, budget-gated, after the diff and its tests; must cite evidence.

The cloud Judge is required when the change is High-Risk (GR-002); otherwise the local
stand-in's verdict is advice that can never approve a merge (GR-003). A verdict whose
citations do not resolve to this run's evidence is recorded as rejected. The merge gate
reads the records, not a model's say-so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.evidence.bundle import HIGHRISK
from app.pipeline import prompts
from app.pipeline.command_files import command_files
from app.pipeline.critic import critique
from app.pipeline.schemas import Plan, Verdict
from app.pipeline.second_opinion import advise
from app.pipeline.signals import diff_files
from app.pipeline.structured import ask_model
from app.pipeline.verdict_check import EvidenceIndex, check_verdict
from app.policy.gate import GateInput, GateResult, VerdictRecord, merge_gate
from app.policy.highrisk import HighRiskResult, classify_diff
from app.router.types import Signals

if TYPE_CHECKING:
    from app.pipeline.context import RunContext

ROLE = "judge"


@dataclass(frozen=True)
class Judgement:
    gate: GateResult
    high_risk: HighRiskResult
    verdicts: list[VerdictRecord]


async def judge(
    ctx: RunContext,
    plan: Plan | None,
    *,
    diff: str,
    test_logs: list[str],
    tests_green: bool,
    worktree: Path,
    constitution: str,
    test_argv: Sequence[str] = (),
) -> Judgement:
    ctx.control.current_role = ROLE
    spec_hr = ctx.options.overrides.high_risk if ctx.options.overrides else None
    # off the event loop (up to 64 files read); None: too many to follow, so every file
    # the change touches counts as one the test command runs
    found = await asyncio.to_thread(command_files, test_argv, worktree)
    checks = found if found is not None else diff_files(diff)
    hr = classify_diff(diff, ctx.policy.high_risk, spec_hr=spec_hr, checks=checks)
    ctx.bundle.write_json(HIGHRISK, hr.model_dump())
    await critique(ctx, plan, diff)
    asked = ctx.wants_escalation("second_opinion")
    if hr.high_risk or asked:
        reasons = "\n".join(f"- {r.rule_id}: {r.path}" for r in hr.reasons)
        await advise(
            ctx,
            "high_risk" if hr.high_risk else "user_request",
            f"High-Risk reasons:\n{reasons or '(none)'}\n\nDiff:\n" + prompts.clip(diff, 6000),
        )
    await ctx.stage(
        ROLE,
        "started",
        role=ROLE,
        detail="High-Risk: cloud Judge required" if hr.high_risk else "",
    )
    if not ctx.exercised(ROLE):
        if not hr.high_risk:
            await ctx.audit(
                "verdict",
                reason_codes=["SPEC_JUDGE_NOT_EXERCISED"],
                detail="the spec marks 'Auditor/Judge: NO' and the change is not High-Risk: "
                "no Judge is asked",
            )
            ctx.bundle.write_verdicts([])
            await ctx.stage(ROLE, "finished", role=ROLE, detail="not exercised (spec §8)")
            return Judgement(gate=_gate(ctx, hr, [], tests_green), high_risk=hr, verdicts=[])
        await ctx.audit(
            "verdict",
            reason_codes=["GR002_JUDGE_REQUIRED"],
            detail="the spec marks 'Auditor/Judge: NO', but the change is High-Risk: "
            "GR-002 requires the cloud Judge all the same",
        )
    lines = await ctx.session.audit.lines(session=ctx.session.id, run=ctx.run_id)
    answer = await ask_model(
        ctx.router,
        ROLE,
        Verdict,
        prompts.judge(
            ctx.task,
            prompts.clip(diff, 6000),
            prompts.clip(test_logs[-1] if test_logs else "", 2000),
            [f"{r.rule_id}: {r.path}" for r in hr.reasons],
            prompts.clip(constitution, 3000),
        ),
        Signals(high_risk=hr.high_risk, user_request=ctx.wants_escalation(ROLE)),
        run=ctx.run_id,
        max_tokens=ctx.policy.generation.verdict_tokens,
    )
    verdicts: list[VerdictRecord] = []
    records: list[dict[str, Any]] = []
    if answer.value is not None and answer.result is not None:
        ev = EvidenceIndex(
            root=worktree,
            changed=frozenset(diff_files(diff)),
            tests="\n".join(test_logs),
            audit_seqs=frozenset(line.seq for line in lines),
        )
        problems = check_verdict(answer.value, ev)
        r = answer.result
        record = VerdictRecord(
            model=r.model,
            provider=r.provider,
            local=not r.escalated,
            verdict=answer.value.verdict,
            citations_resolved=not problems,
        )
        verdicts.append(record)
        records.append(
            {
                **record.model_dump(),
                **answer.value.model_dump(),
                "citation_problems": problems,
                "advisory": not r.escalated,
            }
        )
        await ctx.audit(
            "verdict",
            to=r.model,
            reason_codes=["GR003_LOCAL_ADVISORY"] if not r.escalated else [],
            values={
                "verdict": answer.value.verdict,
                "citations_resolved": not problems,
                "problems": problems[:5],
            },
            detail=f"{r.model}: {answer.value.verdict}"
            + (" (local: advisory only, GR-003)" if not r.escalated else "")
            + (f"; rejected: {problems[0]}" if problems else ""),
        )
    else:
        await ctx.audit(
            "verdict", reason_codes=["JUDGE_NO_VERDICT"], detail=f"no valid verdict: {answer.error}"
        )
    ctx.bundle.write_verdicts(records)
    await ctx.stage(ROLE, "finished", role=ROLE)
    return Judgement(gate=_gate(ctx, hr, verdicts, tests_green), high_risk=hr, verdicts=verdicts)


def _gate(
    ctx: RunContext, hr: HighRiskResult, verdicts: list[VerdictRecord], tests_green: bool
) -> GateResult:
    # merge-ready means: everything holds except the human's confirmation at merge time
    return merge_gate(
        GateInput(
            tests_green=tests_green,
            high_risk=hr.high_risk,
            verdicts=verdicts,
            human_approved=True,
            local_only=ctx.session.local_only,
        )
    )
