"""The project's own test command, run in the sandbox inside the run's worktree (GR-006,
GR-010): its exit code is the truth the Implementer's loop is judged by."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.bus import TestLoopFinished, TestOutput
from app.workspace.sandbox import (
    DEFAULT_MEMORY_MB,
    SandboxResult,
    probe_sandbox,
    run_sandboxed,
    sandbox_degradation_line,
)
from app.workspace.testcmd import load_repo_config

if TYPE_CHECKING:
    from app.pipeline.context import RunContext
    from app.workspace.testcmd import TestCommand
    from app.workspace.worktree import Worktree


@dataclass
class TestLoop:
    """Runs one test loop after another; loop numbers count from 0 (the baseline)."""

    __test__ = False  # not a pytest class

    ctx: RunContext
    worktree: Worktree
    command: TestCommand
    loops: int = 0
    logs: list[str] = field(default_factory=list)
    _said_degraded: bool = False

    async def run(self, attempt: int | None) -> SandboxResult:
        ctx = self.ctx
        loop = self.loops
        self.loops += 1
        await ctx.stage("tests", "started", detail=" ".join(self.command.argv))

        async def on_line(line: str) -> None:
            await ctx.emit(
                TestOutput(session=ctx.session.id, run=ctx.run_id, loop=loop, text=line + "\n")
            )

        if not self._said_degraded:
            # GR-005: a weaker sandbox is audited before it runs anything
            self._said_degraded = True
            probe = await asyncio.to_thread(probe_sandbox)
            if probe.degraded:
                line = sandbox_degradation_line(probe)
                await ctx.audit(line.pop("kind"), role="implementer", **line)
        config = load_repo_config(ctx.repo)
        result = await run_sandboxed(
            self.command.argv,
            cwd=self.worktree.path,
            timeout_s=config.test_timeout_s or ctx.options.test_timeout_s,
            memory_mb=config.test_memory_mb or DEFAULT_MEMORY_MB,
            on_line=on_line,
            # the project's own interpreter may live under a /tmp the sandbox makes private
            readonly_paths=(ctx.repo,),
        )
        ctx.bundle.write_test_loop(
            loop, result, attempt=attempt, commit=await asyncio.to_thread(self.worktree.head)
        )
        self.logs.append(result.output)
        await ctx.emit(
            TestLoopFinished(
                session=ctx.session.id,
                run=ctx.run_id,
                loop=loop,
                passed=result.ok,
                exit_code=result.exit_code,
                runner=result.runner,
            )
        )
        return result
