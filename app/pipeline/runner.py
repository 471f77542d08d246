"""The canonical single-owner pipeline (§2): Stage0 → Architect → Implementer → Judge.

Every step is published on the bus, written as an audit line where it routes or
degrades, and recorded in the run's evidence bundle. The user's checkout is never
touched: attempts live in a git worktree on their own branch; the merge is a separate,
gated command.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from app.audit.types import AuditLine
from app.bus import (
    DiffUpdated,
    Event,
    Notice,
    PlanUpdated,
    RunFinished,
    StageChanged,
    TestLoopFinished,
    TestOutput,
)
from app.evidence.bundle import (
    CONDENSED,
    CRITIQUE,
    HIGHRISK,
    PLAN,
    SECOND_OPINION,
    SYNTHESIS,
    EvidenceBundle,
    bundle_seal_line,
)
from app.evidence.runid import new_run_id
from app.pipeline import prompts
from app.pipeline.briefing import brief_sources, synthesis_markdown
from app.pipeline.control import RunControl
from app.pipeline.judge import EvidenceIndex, check_verdict
from app.pipeline.recall import curate, playbook_bullets, recall_memories, remember_outcome
from app.pipeline.schemas import CritiqueReport, ImplementerOutput, Plan, Reflection, Verdict
from app.pipeline.second_opinion import AdviceRecord, Occasion, ask_second_opinion, triggered
from app.pipeline.signals import diff_files, diff_signals, interesting_failure, plan_signals
from app.pipeline.structured import Answer, ask_model
from app.policy.consensus import critic_enabled, run_spec_consensus
from app.policy.gate import GateInput, GateResult, VerdictRecord, merge_gate
from app.policy.highrisk import HighRiskResult, classify_diff
from app.router.cost import estimate_tokens
from app.router.service import RouteFailed, RouteRefused
from app.router.session import Session
from app.router.types import Signals
from app.workspace.sandbox import (
    DEFAULT_MEMORY_MB,
    SandboxResult,
    probe_sandbox,
    run_sandboxed,
    sandbox_degradation_line,
)
from app.workspace.testcmd import TestCommand, detect_test_command, load_repo_config
from app.workspace.worktree import Worktree

if TYPE_CHECKING:
    from app.stage0.brief import Brief

Outcome = Literal["merge_ready", "stopped", "failed"]
#: implementation attempts at most: the policy's 2 failed loops, the escalation, one more
MAX_ATTEMPTS = 4
#: the planner's brief must leave this much of its window for the plan
PLANNER_ANSWER_TOKENS = 1200
PLANNER_MIN_TOKENS = 600
#: characters of source shown to the Implementer (the embedded model's window is small)
FILE_CONTEXT_CHARS = 6000


@dataclass(frozen=True)
class RunOptions:
    repo: Path
    spec: Path | None = None
    escalate: frozenset[str] = frozenset()
    #: the session opted in to the Tier2 synthesis of the brief (§1; cloud after approval)
    tier2: bool = False
    test_command: str | None = None
    max_attempts: int = MAX_ATTEMPTS
    test_timeout_s: float = 300.0
    #: spec overrides (§8): HR = YES makes the change High-Risk on its own
    spec_high_risk: bool | None = None


@dataclass
class RunOutcome:
    run_id: str
    outcome: Outcome
    reason: str
    bundle: Path | None
    tests_green: bool = False
    high_risk: bool = False
    gate: GateResult | None = None


class _Stop(Exception):
    """No progress is possible: the run stops with this audited reason."""


class PipelineRun:
    def __init__(
        self, session: Session, task: str, options: RunOptions, control: RunControl
    ) -> None:
        self.s = session
        self.task = task
        self.opt = options
        self.control = control
        self.policy = session.policy
        self.run_id = new_run_id(session.router.clock.now())
        self.bundle: EvidenceBundle | None = None
        self.worktree: Worktree | None = None
        self.plan: Plan | None = None
        self.final_diff = ""
        self.loops = 0
        self.test_logs: list[str] = []
        self.failures: list[str] = []
        self.tests_green = False
        self.high_risk: HighRiskResult | None = None
        self.verdicts: list[VerdictRecord] = []
        self.said_degraded = False
        self.constitution = ""
        self.advice: list[AdviceRecord] = []
        #: the Tier2 synthesis marked two sources as contradicting (a Librarian trigger)
        self.contradictions = False

    # ── plumbing ─────────────────────────────────────────────────────────────────────

    async def emit(self, event: Event) -> None:
        if self.s.bus is not None:
            await self.s.bus.publish(event)

    async def audit(self, kind: str, **kw: Any) -> AuditLine:
        return await self.s.audit.append(kind, session=self.s.id, run=self.run_id, **kw)

    async def stage(self, stage: str, status: str, **kw: Any) -> None:
        await self.emit(
            StageChanged(session=self.s.id, run=self.run_id, stage=stage, status=status, **kw)
        )

    def wants_escalation(self, role: str) -> bool:
        return role in self.opt.escalate or self.control.user_requested(role)

    # ── the run ──────────────────────────────────────────────────────────────────────

    async def run(self) -> RunOutcome:
        repo = self.opt.repo
        self.bundle = EvidenceBundle.create(repo, self.run_id, task=self.task, session=self.s.id)
        await self.audit("run", detail=f"run started: {self.task}", values={"repo": str(repo)})
        await run_spec_consensus(
            self.policy,
            "architect",
            enabled=self.s.settings.consensus,
            audit=self.s.audit,
            session=self.s.id,
            run=self.run_id,
        )
        outcome: Outcome = "failed"
        reason = ""
        gate: GateResult | None = None
        try:
            brief_text = await self.stage0()
            await self.architect(brief_text)
            await self.implement()
            gate = await self.judge()
            outcome = "merge_ready" if gate.ok else "stopped"
            reason = (
                "tests green; the gate holds but for the human's confirmation (switchyard merge)"
                if gate.ok
                else "; ".join(gate.reasons)
            )
        except _Stop as stop:
            outcome, reason = "stopped", str(stop)
        except (RouteRefused, RouteFailed) as exc:
            outcome, reason = "stopped", str(exc)
        except asyncio.CancelledError:
            # the user stopped the run: seal what exists, then let the cancellation through
            await asyncio.shield(self.finish("stopped", "cancelled by the user"))
            raise
        except Exception as exc:
            # a bug must not leave an unsealed bundle behind; it still surfaces
            await self.finish("failed", f"internal error: {exc!r}")
            raise
        await self.finish(outcome, reason)
        return RunOutcome(
            run_id=self.run_id,
            outcome=outcome,
            reason=reason,
            bundle=self.bundle.path if self.bundle else None,
            tests_green=self.tests_green,
            high_risk=bool(self.high_risk and self.high_risk.high_risk),
            gate=gate,
        )

    async def stage0(self) -> str:
        assert self.bundle is not None
        await self.stage("stage0", "started", role="stage0", detail="TF-IDF + MMR, no LLM")
        decision = await self.s.router.decide("architect", Signals())
        window = decision.local.context_window if decision.local else None
        playbook = await playbook_bullets(self.s)
        memories = await recall_memories(self.s, self.task)

        def build() -> Brief:
            from app.stage0.engine import Stage0

            with Stage0(self.opt.repo, self.policy) as engine:
                brief = engine.brief(
                    self.task,
                    self.bundle.path if self.bundle else None,
                    spec=self.opt.spec,
                    memories=memories,
                    approach=playbook,
                    context_window=window,
                )
            # the constitution gate: the Judge checks the diff against these rules
            if brief.constitution is not None:
                self.constitution = f"{brief.constitution.path}:\n{brief.constitution.text}"
            return brief

        brief = await asyncio.to_thread(build)
        await self.stage("stage0", "finished", role="stage0", detail="TASK_BRIEF.md written")
        text = brief.to_markdown()
        synthesis = await self.tier2(brief) if self.opt.tier2 else ""
        text += synthesis
        # what the planner reads must fit its window with room for its answer
        budget_tokens = max(PLANNER_MIN_TOKENS, (window or 8192) - PLANNER_ANSWER_TOKENS)
        if estimate_tokens(text) > budget_tokens:
            text = await self.librarian(brief, synthesis, budget_tokens)
        return prompts.clip(text, budget_tokens * 3)

    async def librarian(self, brief: Brief, synthesis: str, budget_tokens: int) -> str:
        """The brief does not fit the planner's window: the Librarian condenses it (map,
        then reduce; Kimi only on its triggers). The full brief stays in the evidence."""
        assert self.bundle is not None
        from app.pipeline.librarian import condense

        await self.stage(
            "librarian", "started", role="librarian", detail="the brief exceeds the window"
        )
        result = await condense(
            self.s.router,
            self.task,
            brief_sources(brief, synthesis),
            budget_tokens,
            run=self.run_id,
            contradictions_detected=self.contradictions,
        )
        self.bundle.write_json(CONDENSED, result.model_dump(mode="json"))
        await self.stage(
            "librarian",
            "finished",
            role="librarian",
            model=result.model,
            detail=f"{result.tokens_in} → {result.tokens_out} tokens",
        )
        return f"# Task brief (condensed by the Librarian)\n\n**Task:** {self.task}\n\n" + (
            result.text
        )

    async def tier2(self, brief: Brief) -> str:
        """The opted-in Tier2 synthesis (GR-008): checked claims for the planner, or nothing.

        A dropped synthesis costs the run nothing: the brief stands on its own. Either way
        the result (with its problems) goes into the evidence.
        """
        assert self.bundle is not None
        from app.paths import repo_state_dir
        from app.stage0.tier2 import synthesize

        await self.stage("tier2", "started", role="tier2", detail="citation-grounded synthesis")
        result = await synthesize(
            self.s,
            brief,
            session=self.s.id,
            run=self.run_id,
            opt_in=True,
            cache_dir=repo_state_dir(self.opt.repo) / "tier2",
        )
        self.contradictions = result.contradictions_detected
        self.bundle.write_json(SYNTHESIS, result.model_dump(mode="json"))
        await self.stage(
            "tier2",
            "finished",
            role="tier2",
            model=result.model,
            detail=f"{result.status}: {result.reason}" if result.reason else result.status,
        )
        return synthesis_markdown(result.synthesis)

    async def architect(self, brief: str) -> None:
        assert self.bundle is not None
        router = self.s.router
        self.control.current_role = "architect"
        await self.stage("architect", "started", role="architect", detail="draft")
        first = Signals(user_request=self.wants_escalation("architect"))
        draft = await ask_model(
            router,
            "architect",
            Plan,
            prompts.architect_draft(self.task, brief),
            first,
            run=self.run_id,
            max_tokens=400,
        )
        await self._role_stage("architect", draft, "draft")
        plan = draft.value
        if plan is not None:
            await self._publish_plan(plan)
            questions = await router.complete(
                "architect",
                _chat(prompts.architect_interrogate(self.task, plan), 160),
                Signals(),
                run=self.run_id,
            )
            signals = Signals(**plan_signals(plan), user_request=self.wants_escalation("architect"))
            final = await ask_model(
                router,
                "architect",
                Plan,
                prompts.architect_final(self.task, brief, plan, questions.text),
                signals,
                run=self.run_id,
                max_tokens=400,
            )
            await self._role_stage("architect", final, "final")
            if final.value is not None:
                plan = final.value
            escalation_lost = (
                final.result is not None
                and bool(final.result.decision.reasons)
                and not final.result.escalated
            )
            if escalation_lost:
                await self.emit(
                    Notice(
                        session=self.s.id,
                        level="warning",
                        text="the escalation was denied or unavailable: going on with the "
                        "local plan, marked low-confidence",
                    )
                )
                await self.advise(
                    "low_confidence",
                    "Plan:\n" + plan.model_dump_json(indent=1),
                    value=plan.confidence,
                )
        if plan is None:
            raise _Stop(f"architect: no valid plan ({draft.error})")
        self.plan = plan
        self.bundle.write_json(PLAN, plan.model_dump())
        await self._publish_plan(plan)
        await self.stage(
            "architect",
            "finished",
            role="architect",
            detail=f"{len(plan.steps)} steps, confidence {plan.confidence:.2f}",
        )

    async def _publish_plan(self, plan: Plan) -> None:
        await self.emit(PlanUpdated(session=self.s.id, run=self.run_id, plan=plan.model_dump()))

    async def _role_stage(self, role: str, answer: Answer[Any], what: str) -> None:
        r = answer.result
        if r is not None:
            await self.stage(
                role,
                "started",
                role=role,
                model=r.model,
                runtime=r.runtime,
                detail=what + ("" if answer.ok else f": {answer.error}"),
            )

    # ── implementer ──────────────────────────────────────────────────────────────────

    async def implement(self) -> None:
        assert self.bundle is not None and self.plan is not None
        self.control.current_role = "implementer"
        await self.stage("implementer", "started", role="implementer")
        wt = await asyncio.to_thread(Worktree.create, self.opt.repo, self.run_id)
        self.worktree = wt
        for note in wt.notes:
            await self.emit(Notice(session=self.s.id, level="warning", text=note))
        cmd = detect_test_command(wt.path, repo=self.opt.repo, configured=self.opt.test_command)
        baseline = await self.test_loop(cmd, attempt=None)
        if baseline.ok:
            await self.emit(
                Notice(session=self.s.id, text="the tests already pass before any change")
            )
        failed = 0
        self_check: float | None = None
        feedback = ""
        modules = 0
        for attempt in range(1, self.opt.max_attempts + 1):
            if self.control.stopping:
                raise _Stop("stopped by the user")
            signals = Signals(
                failed_loops=failed,
                self_check_confidence=self_check,
                modules_touched=modules or None,
                user_request=self.wants_escalation("implementer"),
            )
            answer = await ask_model(
                self.s.router,
                "implementer",
                ImplementerOutput,
                prompts.implementer(self.task, self.plan, self._files(wt.path), feedback),
                signals,
                run=self.run_id,
                max_tokens=700,
            )
            await self._role_stage("implementer", answer, f"attempt {attempt}")
            if answer.value is None:
                failed += 1
                feedback = answer.error or "no valid answer"
                self.failures.append(f"attempt {attempt}: {feedback}")
                self.bundle.write_diff(attempt, f"# no diff: {feedback}\n")
                continue
            out = answer.value
            self_check = out.self_check_confidence
            modules = diff_signals(out.diff)["modules_touched"]
            self.bundle.write_diff(attempt, out.diff)
            await self.emit(
                DiffUpdated(session=self.s.id, run=self.run_id, attempt=attempt, diff=out.diff)
            )
            applied = await asyncio.to_thread(wt.apply_diff, out.diff)
            if not applied.ok:
                failed += 1
                feedback = f"the diff did not apply: {applied.reason}"
                self.failures.append(f"attempt {attempt}: {feedback}")
                await self.emit(
                    Notice(
                        session=self.s.id, level="warning", text=f"attempt {attempt}: {feedback}"
                    )
                )
                continue
            result = await self.test_loop(cmd, attempt=attempt)
            if result.ok:
                self.tests_green = True
                self.final_diff = await asyncio.to_thread(wt.diff)
                await self.stage(
                    "implementer",
                    "finished",
                    role="implementer",
                    detail=f"tests green after attempt {attempt}",
                )
                # green after failed loops, or a large diff: still worth a reflection
                await self.reflect()
                return
            failed += 1
            tail = "\n".join(result.output.splitlines()[-30:])
            feedback = f"the tests failed (exit {result.exit_code}):\n{tail}"
            self.failures.append(f"attempt {attempt}: tests failed (exit {result.exit_code})")
            await asyncio.to_thread(wt.reset)
        await self.advise(
            "failure",
            "\n".join(self.failures) + "\n\nLast feedback:\n" + prompts.clip(feedback, 3000),
            value=failed,
        )
        await self.reflect()
        raise _Stop(
            f"implementer: {failed} failed loops in {self.opt.max_attempts} attempts; "
            "no further progress is possible (see the audit for escalations)"
        )

    def _files(self, root: Path) -> dict[str, str]:
        assert self.plan is not None
        wanted = [f for step in self.plan.steps for f in step.files]
        if not any((root / f).is_file() for f in wanted):
            # the plan named nothing real: show the repo's small source files instead
            wanted = sorted(
                str(p.relative_to(root))
                for p in root.rglob("*.py")
                if ".switchyard" not in p.parts and p.stat().st_size < 4000
            )
        files: dict[str, str] = {}
        budget = FILE_CONTEXT_CHARS
        for rel in dict.fromkeys(wanted):
            path = root / rel
            if not path.is_file() or budget <= 0:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")[:budget]
            files[rel] = text
            budget -= len(text)
        return files

    async def test_loop(self, cmd: TestCommand, attempt: int | None) -> SandboxResult:
        assert self.bundle is not None and self.worktree is not None
        loop = self.loops
        self.loops += 1
        await self.stage("tests", "started", detail=" ".join(cmd.argv))

        async def on_line(line: str) -> None:
            await self.emit(
                TestOutput(session=self.s.id, run=self.run_id, loop=loop, text=line + "\n")
            )

        if not self.said_degraded:
            # GR-005: a weaker sandbox is audited before it runs anything
            self.said_degraded = True
            probe = await asyncio.to_thread(probe_sandbox)
            if probe.degraded:
                line = sandbox_degradation_line(probe)
                await self.audit(line.pop("kind"), role="implementer", **line)
        config = load_repo_config(self.opt.repo)
        result = await run_sandboxed(
            cmd.argv,
            cwd=self.worktree.path,
            timeout_s=config.test_timeout_s or self.opt.test_timeout_s,
            memory_mb=config.test_memory_mb or DEFAULT_MEMORY_MB,
            on_line=on_line,
            # the project's own interpreter may live under a /tmp the sandbox makes private
            readonly_paths=(self.opt.repo,),
        )
        self.bundle.write_test_loop(
            loop, result, attempt=attempt, commit=await asyncio.to_thread(self.worktree.head)
        )
        self.test_logs.append(result.output)
        await self.emit(
            TestLoopFinished(
                session=self.s.id,
                run=self.run_id,
                loop=loop,
                passed=result.ok,
                exit_code=result.exit_code,
                runner=result.runner,
            )
        )
        return result

    async def reflect(self) -> None:
        """ACE: after an interesting failure, learn patterns; the curator keeps the good ones."""
        why = interesting_failure(self.failures, self.final_diff, self.policy.ace)
        if not why:
            return
        try:
            answer = await ask_model(
                self.s.router,
                "ace",
                Reflection,
                prompts.reflector(self.task, [*self.failures, *why[len(self.failures) > 0 :]]),
                Signals(interesting_failure=True),
                run=self.run_id,
                max_tokens=400,
            )
        except RouteRefused:
            return  # audited by the router; a lesson not learned never stops a run
        if answer.value is not None:
            await curate(self.s, self.run_id, answer.value.patterns)

    async def advise(self, occasion: Occasion, subject: str, value: float | None = None) -> None:
        """The escalation-only second opinion (§2): into the evidence, never into a decision.

        Asked only when the sidecar's policy trigger fires for the occasion (or the user
        asked for it).
        """
        assert self.bundle is not None
        user = self.wants_escalation("second_opinion")
        if not triggered(self.policy, occasion, value=value, user=user):
            return
        record = await ask_second_opinion(
            self.s.router,
            occasion,
            self.task,
            subject,
            run=self.run_id,
            value=value,
            user_request=user,
        )
        self.advice.append(record)
        self.bundle.write_json(
            SECOND_OPINION, {"advisory": True, "opinions": [a.model_dump() for a in self.advice]}
        )
        if record.opinion is not None:
            await self.emit(
                Notice(
                    session=self.s.id,
                    text=f"second opinion from {record.model} (advice only, in the evidence): "
                    + prompts.clip(record.opinion.assessment, 200),
                )
            )

    # ── judge ────────────────────────────────────────────────────────────────────────

    async def judge(self) -> GateResult:
        assert self.bundle is not None and self.worktree is not None
        self.control.current_role = "judge"
        hr = classify_diff(self.final_diff, self.policy.high_risk, spec_hr=self.opt.spec_high_risk)
        self.high_risk = hr
        self.bundle.write_json(HIGHRISK, hr.model_dump())
        if critic_enabled(self.policy, self.s.settings.critic):
            critique = await ask_model(
                self.s.router,
                self.policy.consensus.critic_role,
                CritiqueReport,
                prompts.critic(self.task, self.plan, self.final_diff),
                Signals(),
                run=self.run_id,
                max_tokens=500,
            )
            self.bundle.write_json(
                CRITIQUE,
                critique.value.model_dump() if critique.value else {"error": critique.error},
            )
        asked = self.wants_escalation("second_opinion")
        if hr.high_risk or asked:
            reasons = "\n".join(f"- {r.rule_id}: {r.path}" for r in hr.reasons)
            await self.advise(
                "high_risk" if hr.high_risk else "user_request",
                f"High-Risk reasons:\n{reasons or '(none)'}\n\nDiff:\n"
                + prompts.clip(self.final_diff, 6000),
            )
        await self.stage(
            "judge",
            "started",
            role="judge",
            detail="High-Risk: cloud Judge required" if hr.high_risk else "",
        )
        lines = await self.s.audit.lines(session=self.s.id, run=self.run_id)
        answer = await ask_model(
            self.s.router,
            "judge",
            Verdict,
            prompts.judge(
                self.task,
                prompts.clip(self.final_diff, 6000),
                prompts.clip(self.test_logs[-1] if self.test_logs else "", 2000),
                [f"{r.rule_id}: {r.path}" for r in hr.reasons],
                prompts.clip(self.constitution, 3000),
            ),
            Signals(high_risk=hr.high_risk, user_request=self.wants_escalation("judge")),
            run=self.run_id,
            max_tokens=400,
        )
        records: list[dict[str, Any]] = []
        if answer.value is not None and answer.result is not None:
            ev = EvidenceIndex(
                root=self.worktree.path,
                changed=frozenset(diff_files(self.final_diff)),
                tests="\n".join(self.test_logs),
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
            self.verdicts.append(record)
            records.append(
                {
                    **record.model_dump(),
                    **answer.value.model_dump(),
                    "citation_problems": problems,
                    "advisory": not r.escalated,
                }
            )
            await self.audit(
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
            await self.audit(
                "verdict",
                reason_codes=["JUDGE_NO_VERDICT"],
                detail=f"no valid verdict: {answer.error}",
            )
        self.bundle.write_verdicts(records)
        await self.stage("judge", "finished", role="judge")
        # merge-ready means: everything holds except the human's confirmation at merge time
        return merge_gate(
            GateInput(
                tests_green=self.tests_green,
                high_risk=hr.high_risk,
                verdicts=self.verdicts,
                human_approved=True,
                local_only=self.s.local_only,
            )
        )

    # ── evidence ─────────────────────────────────────────────────────────────────────

    async def finish(self, outcome: Outcome, reason: str) -> None:
        assert self.bundle is not None
        wt = self.worktree
        await self.audit(
            "run",
            reason_codes=[f"RUN_{outcome.upper()}"],
            detail=reason,
            values={"outcome": outcome, "loops": self.loops},
        )
        self.bundle.write_json("cost.json", (await self.s.ledger.snapshot(self.s.id)).model_dump())
        await self.bundle.export_audit(self.s.audit)
        manifest = self.bundle.finalize(
            status=outcome,
            task=self.task,
            base=wt.base if wt else None,
            branch=wt.branch if wt else None,
            head=await asyncio.to_thread(wt.head) if wt else None,
            policy_version=self.policy.version,
            session=self.s.id,
            local_only=self.s.local_only,
            reason=reason,
        )
        seal = bundle_seal_line(manifest, self.bundle.manifest_sha256)
        seal.pop("run", None)
        await self.audit(seal.pop("kind"), **seal)
        if wt is not None:
            await asyncio.to_thread(wt.remove)  # the branch stays for the merge
        await remember_outcome(self.s, self.run_id, self.task, outcome, reason)
        await self.emit(
            RunFinished(session=self.s.id, run=self.run_id, outcome=outcome, reason=reason)
        )


def _chat(messages: list[Any], max_tokens: int) -> Any:
    from app.backends.base import ChatRequest

    return ChatRequest(messages=messages, max_tokens=max_tokens)


async def run_pipeline(
    session: Session, task: str, options: RunOptions, control: RunControl | None = None
) -> RunOutcome:
    """Run the whole pipeline headless; events go to ``session.bus``."""
    return await PipelineRun(session, task, options, control or RunControl()).run()
