"""What the roles of one run share: the session, the task, the options, the evidence
bundle, and the ways to speak (bus events, audit lines, stage changes).

A role is a module with a small async function that takes a :class:`RunContext` and
returns a typed result; it keeps nothing of its own between calls. The runner (headless,
the TUI) and the ACP agent build a context and call the same roles; what differs between
them is only who listens on the bus and who decides approvals.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from app.bus import Event, Notice, StageChanged
from app.pipeline.stages import StageClock

if TYPE_CHECKING:
    from app.audit.types import AuditLine
    from app.evidence.bundle import EvidenceBundle
    from app.pipeline.control import RunControl
    from app.pipeline.second_opinion import AdviceRecord
    from app.policy.schema import Policy
    from app.policy.spec_overrides import SpecOverrides
    from app.router.service import Router
    from app.router.session import Session
    from app.router.structured import Answer

#: implementation attempts at most: the policy's 2 failed loops, the escalation, one more
MAX_ATTEMPTS = 4


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
    #: what the spec's §8 block changes for this run (roles, HR, …; linted before)
    overrides: SpecOverrides | None = None
    #: the user's explicit opt-in to running the test command with no sandbox (network
    #: on) where neither bwrap nor unshare works; audited, refused under local_only
    allow_unsandboxed: bool = False
    #: what the user's editor holds for the files the request names (the ACP face reads
    #: them, unsaved buffers included); the planner reads it after the Stage0 brief
    editor_context: str = ""
    #: the Librarian sweeps the whole repository for the brief (§3 full_sweep: Kimi on
    #: approval); ``run --full-sweep`` or the spec's ``Librarian full sweep: YES``
    full_sweep: bool = False
    #: the folder of the repository (POSIX; "" for all of it) the change is kept to: the
    #: working directory an ACP editor gave its session. An edit outside it is refused
    #: whole (:meth:`app.workspace.worktree.Worktree.apply_files`), and so is a merge
    within: str = ""


class RunStopped(Exception):
    """No progress is possible: the run stops with this audited reason."""


#: the reason of a run the user stopped (x in the workbench, a cancel from an editor)
STOPPED_BY_USER = "stopped by the user"


@dataclass
class RunContext:
    session: Session
    task: str
    options: RunOptions
    control: RunControl
    run_id: str
    bundle: EvidenceBundle
    #: second opinions recorded so far (all of them go to second_opinion.json)
    advice: list[AdviceRecord] = field(default_factory=list)
    #: model calls made so far, per role (repairs included; capped per stage)
    calls: Counter[str] = field(default_factory=Counter)
    #: each stage's time at work (stages.json)
    stage_clock: StageClock = field(default_factory=StageClock)
    #: the commit the run works on, pinned before anything reads the repository: the
    #: brief (Stage0, a full sweep) reads its tree and the worktree branches from it (the
    #: brief read the working tree, uncommitted and untracked files with it, and sent
    #: them to the models while the run worked on the last commit: a user audit)
    base: str | None = None

    @property
    def policy(self) -> Policy:
        return self.session.policy

    @property
    def router(self) -> Router:
        return self.session.router

    @property
    def repo(self) -> Path:
        return self.options.repo

    async def emit(self, event: Event) -> None:
        if self.session.bus is not None:
            await self.session.bus.publish(event)

    async def notice(self, text: str, level: Literal["info", "warning", "error"] = "info") -> None:
        await self.emit(Notice(session=self.session.id, level=level, text=text))

    async def audit(self, kind: str, **kw: Any) -> AuditLine:
        return await self.session.audit.append(kind, session=self.session.id, run=self.run_id, **kw)

    async def stage(self, stage: str, status: str, **kw: Any) -> None:
        if status == "started":
            self.stage_clock.started(stage, time.monotonic())
        else:
            self.stage_clock.ended(stage, time.monotonic())
        await self.emit(
            StageChanged(session=self.session.id, run=self.run_id, stage=stage, status=status, **kw)
        )

    def stage_ended(self, stage: str) -> None:
        """``stage`` ended now, told to the UIs otherwise (a test loop's end is its
        TestLoopFinished, not a StageChanged)."""
        if stage in self.stage_clock.open:
            self.stage_clock.ended(stage, time.monotonic())

    def guard_calls(self, role: str) -> None:
        """Stop the run before ``role`` makes a call past the policy's per-stage cap."""
        cap = self.policy.generation.max_calls_per_stage
        if self.calls[role] >= cap:
            raise RunStopped(
                f"{role}: {self.calls[role]} model calls made, the stage's cap is {cap} "
                "([generation] max_calls_per_stage)"
            )

    def charge(self, role: str, calls: int) -> None:
        """Count ``calls`` model calls (generations, repairs included) for ``role``."""
        self.calls[role] += calls

    def exercised(self, role: str) -> bool:
        """False only when the run's spec marks ``role`` NO (§8)."""
        overrides = self.options.overrides
        return overrides is None or overrides.exercised(role)

    def wants_escalation(self, role: str) -> bool:
        """The user asked to escalate ``role`` (a run flag, or a key pressed; §3)."""
        return role in self.options.escalate or self.control.user_requested(role)

    async def role_stage(self, role: str, answer: Answer[Any], what: str) -> None:
        """Say which model is at work for ``role`` (and why its answer failed, if it did)."""
        r = answer.result
        if r is None:
            return
        if answer.ok:
            await self.stage(
                role, "started", role=role, model=r.model, runtime=r.runtime, detail=what
            )
            return
        # "failed", not "started": the line reported an answer that did not serve. The stage
        # itself goes on (a repair, another attempt, an escalation), so its clock runs on.
        await self.emit(
            StageChanged(
                session=self.session.id,
                run=self.run_id,
                stage=role,
                status="failed",
                role=role,
                model=r.model,
                runtime=r.runtime,
                detail=f"{what}: {gist(answer.error or '')}",
            )
        )


def gist(text: str, limit: int = 160) -> str:
    """What a person reads of a failure in a notice or a stage line: its first line, cut
    at ``limit``, and how many lines follow. The whole is told to the model and kept in
    the audit and the evidence; shown whole, a refused edit's 13-line excerpt ran off the
    workbench's screen and was printed twice by ``run``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    first = lines[0] if len(lines[0]) <= limit else lines[0][: limit - 1] + "…"
    more = len(lines) - 1
    return first + (
        f" (+{more} more line{'s' if more > 1 else ''} in the evidence)" if more else ""
    )
