"""The canonical single-owner pipeline (§2): Stage0 → Architect → Implementer → Judge.

The Implementer's baseline test run (loop 0, the tests on the run's base) comes first,
before any model call: a test command that cannot run at all stops the run there.

This module only sequences the roles, each a module of its own (:mod:`.brief`,
:mod:`.architect`, :mod:`.implementer`, :mod:`.judge`, with the sidecars :mod:`.critic`,
:mod:`.second_opinion` and :mod:`.ace`), and seals the evidence however the run ends.
Every step is published on the bus, written as an audit line where it routes or
degrades, and recorded in the run's evidence bundle. The user's checkout is never
touched: attempts live in a git worktree on their own branch; the merge is a separate,
gated command.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.bus import RunFinished
from app.evidence.bundle import SPEC_OVERRIDES, EvidenceBundle, bundle_seal_line
from app.evidence.layout import AUDIT
from app.evidence.runid import new_run_id
from app.pipeline import architect, implementer
from app.pipeline.brief import prepare_brief
from app.pipeline.context import (
    MAX_ATTEMPTS,
    STOPPED_BY_USER,
    RunContext,
    RunOptions,
    RunStopped,
)
from app.pipeline.control import RunControl
from app.pipeline.implementer import Implementation
from app.pipeline.judge import Judgement, judge
from app.pipeline.plan_status import finished_statuses, publish_steps
from app.pipeline.recall import remember_outcome
from app.pipeline.schemas import Plan
from app.pipeline.stages import STAGES, read_audit, stage_report
from app.pipeline.testloop import preflight_test_command, sandbox_preflight
from app.policy.consensus import run_spec_consensus
from app.policy.gate import GateResult
from app.router.service import RouteFailed, RouteRefused
from app.router.session import Session
from app.workspace.git import GitError
from app.workspace.worktree import Worktree, prune_dead

__all__ = ["MAX_ATTEMPTS", "Outcome", "RunOptions", "RunOutcome", "run_pipeline"]

Outcome = Literal["merge_ready", "stopped", "failed"]


@dataclass
class RunOutcome:
    run_id: str
    outcome: Outcome
    reason: str
    bundle: Path | None
    tests_green: bool = False
    #: None when the run ended before the Judge step classified the change
    high_risk: bool | None = None
    gate: GateResult | None = None


@dataclass
class _Progress:
    """What the sequence has reached so far (read when the run ends, however it ends)."""

    worktree: Worktree | None = None
    plan: Plan | None = None
    work: Implementation | None = None
    judgement: Judgement | None = None


async def _preflight_repo(ctx: RunContext) -> None:
    """Before anything else: a run works on a branch of its own, so the folder must be a
    git repository (the TUI opens on any folder; its run ended 'internal error:
    NotAGitRepo' in Stage0)."""
    from app.git_says import OWNED_BY_ANOTHER
    from app.workspace.git import NotAGitRepo, repo_root, rev_parse

    try:
        top = await asyncio.to_thread(repo_root, ctx.repo)
    except NotAGitRepo as exc:
        if OWNED_BY_ANOTHER in str(exc):  # a repository git refuses: not one to git init
            raise RunStopped(str(exc)) from None
        raise RunStopped(
            f"{ctx.repo} is not a git repository: a run works on a branch of its own "
            "(git init, commit, and start again)"
        ) from None
    head = await asyncio.to_thread(rev_parse, top, "HEAD")
    if head is None:
        # found only when the worktree was made, after Stage0 and the Architect's calls
        raise RunStopped(
            f"{top} has no commit yet: a run branches from one (commit, and start again)"
        )
    ctx.base = head


def _checkpoint(ctx: RunContext) -> None:
    """Between the stages: a stop the user asked for takes effect here (only the
    Implementer's loop read it, so an x pressed while the Architect worked went unheard)."""
    if ctx.control.stopping:
        raise RunStopped(STOPPED_BY_USER)


async def _sequence(ctx: RunContext, progress: _Progress) -> tuple[Outcome, str]:
    await _preflight_repo(ctx)
    await preflight_test_command(ctx)
    await sandbox_preflight(ctx)
    _checkpoint(ctx)
    # the baseline (loop 0) before any model call: a test command that cannot run at all
    # stops the run here; it was run after the brief and the Architect's calls (paid
    # ones, on an escalation), and its failure read as the bug (a user audit)
    wt = await _worktree(ctx, progress)
    work = progress.work = implementer.start(ctx, wt)
    await implementer.baseline(ctx, work)
    _checkpoint(ctx)
    briefing = await prepare_brief(ctx)
    _checkpoint(ctx)
    plan = progress.plan = await architect.plan(ctx, briefing.text)
    _checkpoint(ctx)
    steps = len(plan.steps)
    await publish_steps(ctx, ["pending"] * steps, "planned")
    await publish_steps(ctx, ["active"] * steps, "the Implementer is at work")
    await implementer.implement(ctx, plan, wt, work)
    await publish_steps(ctx, finished_statuses(plan, work.final_diff), "tests green")
    _checkpoint(ctx)
    verdict = progress.judgement = await judge(
        ctx,
        plan,
        diff=work.final_diff,
        test_logs=work.tests.logs,
        tests_green=work.tests_green,
        worktree=wt.path,
        constitution=briefing.constitution,
        test_argv=work.tests.command.argv,
    )
    if verdict.gate.ok:
        return "merge_ready", (
            "tests green; the gate holds but for the human's confirmation (switchyard merge)"
        )
    return "stopped", "; ".join(verdict.gate.reasons)


async def _worktree(ctx: RunContext, progress: _Progress) -> Worktree:
    """The run's worktree, on a branch of its own from the run's base (the user's checkout
    is never touched), kept in ``progress`` at once so the finish removes it."""
    # a cancel during the creation left its thread making a whole worktree and branch
    # that nothing removed: the run waits for it, so the finish removes what it made
    # the worktrees of runs killed before their end go first (they stayed for good)
    await asyncio.to_thread(prune_dead, ctx.repo)
    making = asyncio.ensure_future(
        asyncio.to_thread(Worktree.create, ctx.repo, ctx.run_id, base=ctx.base or "HEAD")
    )
    try:
        wt = await asyncio.shield(making)
    except asyncio.CancelledError:
        while not making.done():  # a second cancel must not leave it behind either
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(making)
        with contextlib.suppress(Exception):
            progress.worktree = making.result()
        raise
    progress.worktree = wt
    for note in wt.notes:
        # in the evidence too: a reviewer reads what the run did not start from
        await ctx.audit("run", reason_codes=["WORKTREE_NOTE"], detail=note)
        await ctx.notice(note, level="warning")
    return wt


async def _finish(
    ctx: RunContext, progress: _Progress, outcome: Outcome, reason: str
) -> tuple[Outcome, str]:
    """Seal the evidence (audit export, manifest, seal line), drop the worktree (the
    branch stays for the merge when the run committed something; else it goes too),
    remember the outcome, and say the run is over. Returns the outcome and reason as
    sealed: a run whose own evidence or worktree went away while it ran is not
    merge-ready, whatever its stages said."""
    wt = progress.worktree
    head: str | None = None
    if wt is not None:
        try:
            head = await asyncio.to_thread(wt.head)
        except (GitError, OSError) as exc:
            # its worktree went away (a hand, a clean-up): sealed failed, not left unsealed
            outcome, reason = "failed", _also(reason, f"the run's worktree is gone: {exc}")
            wt = None
    changed = ctx.bundle.changed_meanwhile()
    if changed:
        outcome = "failed"
        reason = _also(
            reason,
            "the evidence's own files changed while the run went on"
            f" ({', '.join(changed[:6])}): this bundle cannot stand for the run",
        )
    loops = progress.work.tests.loops if progress.work else 0
    # a stage the stop cut short ends failed (the panes would show it still running, and
    # stages.json would have no end for it)
    for stage in list(ctx.stage_clock.open):
        if outcome != "merge_ready":
            await ctx.stage(stage, "failed", detail=reason)
    if progress.plan is not None and progress.work is not None and not progress.work.tests_green:
        # the Implementer stopped without a passing change: its steps failed
        await publish_steps(ctx, ["failed"] * len(progress.plan.steps), reason)
    await ctx.audit(
        "run",
        reason_codes=[f"RUN_{outcome.upper()}"],
        detail=reason,
        values={"outcome": outcome, "loops": loops},
    )
    session = ctx.session
    ctx.bundle.write_json("cost.json", (await session.ledger.snapshot(session.id)).model_dump())
    await ctx.bundle.export_audit(session.audit)
    # what each stage cost (calls, tokens, seconds), from the audit lines just exported
    lines = read_audit(ctx.bundle.path / AUDIT)
    ctx.bundle.write_json(STAGES, stage_report(lines, ctx.stage_clock))
    # a run that committed nothing leaves no branch behind: there is nothing on it to
    # review or merge, and each stopped run left a switchyard/<run> branch (a user-audit)
    empty = wt is not None and head == wt.base
    manifest = ctx.bundle.finalize(
        status=outcome,
        task=ctx.task,
        base=wt.base if wt else None,
        branch=wt.branch if wt and not empty else None,
        head=head,
        policy_version=ctx.policy.version,
        session=session.id,
        local_only=session.local_only,
        reason=reason,
        # the folder the run was kept to ("" the top; an editor's cwd below it, over ACP):
        # the ACP session list names it
        extra={"within": ctx.options.within},
    )
    seal = bundle_seal_line(manifest, ctx.bundle.manifest_sha256)
    seal.pop("run", None)
    await ctx.audit(seal.pop("kind"), **seal)
    if wt is not None:
        await asyncio.to_thread(wt.remove, delete_branch=empty)
    await remember_outcome(session, ctx.run_id, ctx.task, outcome, reason)
    await ctx.emit(RunFinished(session=session.id, run=ctx.run_id, outcome=outcome, reason=reason))
    return outcome, reason


def _also(reason: str, more: str) -> str:
    return f"{reason}; {more}" if reason else more


async def run_pipeline(
    session: Session, task: str, options: RunOptions, control: RunControl | None = None
) -> RunOutcome:
    """Run the whole pipeline; events go to ``session.bus``. A cancellation (the user
    stopped the run) seals what exists, then goes through."""
    run_id = new_run_id(session.router.clock.now())
    bundle = EvidenceBundle.create(options.repo, run_id, task=task, session=session.id)
    try:
        return await _run(session, task, options, control, run_id, bundle)
    finally:
        if not bundle.sealed:
            # given up unsealed (a failure before its seal): no longer live to anyone, now
            # (left to the collector, a failed run read as running, its merge refused)
            bundle.release()


async def _run(
    session: Session,
    task: str,
    options: RunOptions,
    control: RunControl | None,
    run_id: str,
    bundle: EvidenceBundle,
) -> RunOutcome:
    ctx = RunContext(session, task, options, control or RunControl(), run_id, bundle)
    await ctx.audit("run", detail=f"run started: {task}", values={"repo": str(options.repo)})
    if options.overrides is not None:
        # §8: what the spec changes for this run is in the evidence and the audit
        changes = options.overrides.describe()
        bundle.write_json(SPEC_OVERRIDES, options.overrides.model_dump(mode="json"))
        await ctx.audit(
            "run",
            reason_codes=["SPEC_OVERRIDES_APPLIED"],
            values={"spec": options.overrides.path, "changes": changes},
            detail=f"spec {options.overrides.path}: " + ("; ".join(changes) or "no change"),
        )
    await run_spec_consensus(
        ctx.policy,
        "architect",
        enabled=session.settings.consensus,
        audit=session.audit,
        session=session.id,
        run=run_id,
    )
    progress = _Progress()
    # a stop asked for is heard before the run's next model call or approval, not only
    # between its stages
    session.router.run_gates[run_id] = lambda: _checkpoint(ctx)
    try:
        outcome, reason = await _sequence(ctx, progress)
    except (RunStopped, RouteRefused, RouteFailed) as stop:
        outcome, reason = "stopped", str(stop)
        if ctx.control.stopping and reason != STOPPED_BY_USER:
            # the step at work ended otherwise, after the user had asked to stop: say both
            reason = f"{STOPPED_BY_USER}; {reason}"
    except asyncio.CancelledError:
        ended = await asyncio.shield(_finish(ctx, progress, "stopped", ctx.control.cancel_reason))
        ctx.control.ended = _outcome(ctx, progress, *ended)
        raise
    except Exception as exc:
        # a bug must not leave an unsealed bundle behind; it still surfaces
        ended = await _finish(ctx, progress, "failed", f"internal error: {exc!r}")
        ctx.control.ended = _outcome(ctx, progress, *ended)
        raise
    finally:
        session.router.run_gates.pop(run_id, None)
    outcome, reason = await _finish(ctx, progress, outcome, reason)
    return _outcome(ctx, progress, outcome, reason)


def _outcome(ctx: RunContext, progress: _Progress, outcome: Outcome, reason: str) -> RunOutcome:
    work, verdict = progress.work, progress.judgement
    return RunOutcome(
        run_id=ctx.run_id,
        outcome=outcome,
        reason=reason,
        bundle=ctx.bundle.path,
        tests_green=bool(work and work.tests_green),
        high_risk=verdict.high_risk.high_risk if verdict else None,
        gate=verdict.gate if verdict else None,
    )
