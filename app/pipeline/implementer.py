"""The Implementer (§1): follow the plan, write a change, run the project's tests.

Each attempt asks for a change, applies it in the run's worktree and runs the tests in
the sandbox; a reply that does not fit, a change that does not apply and red tests are
each a failed loop, fed back to the next attempt. Two failed loops are the §3 trigger
for an escalation (to DeepSeek); the router reads them as signals. The user's checkout
is never touched.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from app.bus import DiffUpdated
from app.pipeline import prompts
from app.pipeline.ace import reflect
from app.pipeline.context import RunStopped
from app.pipeline.schemas import ImplementerOutput, Plan
from app.pipeline.second_opinion import advise
from app.pipeline.signals import diff_signals
from app.pipeline.structured import ask_model
from app.pipeline.testloop import TestLoop
from app.router.types import Signals
from app.workspace.testcmd import detect_test_command

if TYPE_CHECKING:
    from app.pipeline.context import RunContext
    from app.workspace.worktree import Worktree

ROLE = "implementer"
#: output room for one attempt's change
ATTEMPT_TOKENS = 700
#: characters of source shown to the Implementer (the embedded model's window is small)
FILE_CONTEXT_CHARS = 6000


@dataclass
class Implementation:
    """What the Implementer's loop came to (also on failure: :class:`RunStopped` carries
    nothing, so the runner reads this object as it was when the loop stopped)."""

    tests: TestLoop
    tests_green: bool = False
    #: the worktree's diff against its base once the tests are green
    final_diff: str = ""
    failures: list[str] = field(default_factory=list)


async def implement(ctx: RunContext, plan: Plan, worktree: Worktree, work: Implementation) -> None:
    """Attempt the change until the tests are green, or raise :class:`RunStopped`."""
    ctx.control.current_role = ROLE
    await ctx.stage(ROLE, "started", role=ROLE)
    baseline = await work.tests.run(attempt=None)
    if baseline.ok:
        await ctx.notice("the tests already pass before any change")
    failed = 0
    self_check: float | None = None
    feedback = ""
    modules = 0
    for attempt in range(1, ctx.options.max_attempts + 1):
        if ctx.control.stopping:
            raise RunStopped("stopped by the user")
        signals = Signals(
            failed_loops=failed,
            self_check_confidence=self_check,
            modules_touched=modules or None,
            user_request=ctx.wants_escalation(ROLE),
        )
        answer = await ask_model(
            ctx.router,
            ROLE,
            ImplementerOutput,
            prompts.implementer(ctx.task, plan, files_for(plan, worktree.path), feedback),
            signals,
            run=ctx.run_id,
            max_tokens=ATTEMPT_TOKENS,
        )
        await ctx.role_stage(ROLE, answer, f"attempt {attempt}")
        if answer.value is None:
            failed += 1
            feedback = answer.error or "no valid answer"
            work.failures.append(f"attempt {attempt}: {feedback}")
            ctx.bundle.write_diff(attempt, f"# no diff: {feedback}\n")
            continue
        out = answer.value
        self_check = out.self_check_confidence
        modules = diff_signals(out.diff)["modules_touched"]
        ctx.bundle.write_diff(attempt, out.diff)
        await ctx.emit(
            DiffUpdated(session=ctx.session.id, run=ctx.run_id, attempt=attempt, diff=out.diff)
        )
        applied = await asyncio.to_thread(worktree.apply_diff, out.diff)
        if not applied.ok:
            failed += 1
            feedback = f"the diff did not apply: {applied.reason}"
            work.failures.append(f"attempt {attempt}: {feedback}")
            await ctx.notice(f"attempt {attempt}: {feedback}", level="warning")
            continue
        result = await work.tests.run(attempt=attempt)
        if result.ok:
            work.tests_green = True
            work.final_diff = await asyncio.to_thread(worktree.diff)
            await ctx.stage(
                ROLE, "finished", role=ROLE, detail=f"tests green after attempt {attempt}"
            )
            # green after failed loops, or a large diff: still worth a reflection
            await reflect(ctx, work.failures, work.final_diff)
            return
        failed += 1
        tail = "\n".join(result.output.splitlines()[-30:])
        feedback = f"the tests failed (exit {result.exit_code}):\n{tail}"
        work.failures.append(f"attempt {attempt}: tests failed (exit {result.exit_code})")
        await asyncio.to_thread(worktree.reset)
    await advise(
        ctx,
        "failure",
        "\n".join(work.failures) + "\n\nLast feedback:\n" + prompts.clip(feedback, 3000),
        value=failed,
    )
    await reflect(ctx, work.failures, work.final_diff)
    raise RunStopped(
        f"implementer: {failed} failed loops in {ctx.options.max_attempts} attempts; "
        "no further progress is possible (see the audit for escalations)"
    )


def start(ctx: RunContext, worktree: Worktree) -> Implementation:
    """The loop's state before the first attempt (the test command found in the worktree)."""
    cmd = detect_test_command(worktree.path, repo=ctx.repo, configured=ctx.options.test_command)
    return Implementation(tests=TestLoop(ctx, worktree, cmd))


def files_for(plan: Plan, root: Path) -> dict[str, str]:
    """The files the plan names (or, when it names nothing real, the repo's small source
    files), up to :data:`FILE_CONTEXT_CHARS` characters in all."""
    wanted = [f for step in plan.steps for f in step.files]
    if not any((root / f).is_file() for f in wanted):
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
