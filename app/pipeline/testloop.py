"""The project's own test command, run in the sandbox inside the run's worktree (GR-006,
GR-010): its exit code is the truth the Implementer's loop is judged by.

The sandbox fails closed. Before the first loop the runner is decided once for the run
(:func:`~app.workspace.sandbox.decide_sandbox`): bwrap; else user namespaces through
``unshare`` (the same read-only filesystem, built by app/workspace/unshare_shim.py, no
network), audited as a downgrade; else nothing, and the run stops with an audited refusal before
any test runs, unless the user opted in to a run with no sandbox (``--allow-unsandboxed``
or the policy's ``[sandbox] allow_unsandboxed``), which local_only refuses regardless.
The command's environment is built from an allowlist without the provider keys (nor any
variable the policy's providers name), with the hub-offline variables under local_only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.bus import TestLoopFinished, TestOutput
from app.errors import ConfigError
from app.pipeline.context import RunStopped
from app.workspace.git_config_guard import Snapshot
from app.workspace.pytest_summary import nothing_passed, summary_of
from app.workspace.sandbox import (
    DEFAULT_MEMORY_MB,
    SandboxDecision,
    SandboxResult,
    decide_sandbox,
    probe_sandbox,
    run_sandboxed,
    sandbox_decision_line,
)
from app.workspace.testcmd import (
    NoTestCommand,
    cannot_start,
    detect_test_command,
    load_repo_config,
)

if TYPE_CHECKING:
    from pathlib import Path

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
    #: where the command runs, decided (and audited) before the first loop
    sandbox: SandboxDecision | None = None
    #: the first loop's output held a pytest summary line (later ones must, to pass)
    first_had_summary: bool = False

    async def run(self, attempt: int | None) -> SandboxResult:
        """One loop; :class:`RunStopped` before any test runs when no sandbox may run it."""
        ctx = self.ctx
        decision = self.sandbox
        if decision is None or (decision.runner == "rlimit" and ctx.session.local_only):
            # decided once, again only if local_only came on after a run with no sandbox
            decision = await self._decide()
        assert decision.runner is not None
        loop = self.loops
        self.loops += 1
        await ctx.stage("tests", "started", detail=" ".join(self.command.argv))

        async def on_line(line: str) -> None:
            await ctx.emit(
                TestOutput(session=ctx.session.id, run=ctx.run_id, loop=loop, text=line + "\n")
            )

        config = load_repo_config(ctx.repo)
        await self._pointers_intact(loop, decision.runner, "before the tests ran")
        await self._submodules_as_recorded(loop)
        # what git reads as configuration, as it is before the tests run (read before the
        # run, so the tests cannot plant a filter or driver git would run for us after it)
        held = await asyncio.to_thread(Snapshot.take, self.worktree.config_files())
        result = await run_sandboxed(
            self.command.argv,
            cwd=self.worktree.path,
            timeout_s=config.test_timeout_s or ctx.options.test_timeout_s,
            memory_mb=config.test_memory_mb or DEFAULT_MEMORY_MB,
            on_line=on_line,
            # the project's own interpreter may live under a /tmp the sandbox makes private
            readonly_paths=(ctx.repo,),
            runner=decision.runner,
            local_only=ctx.session.local_only,
            secrets=provider_key_names(ctx),
            # the submodules' .git files: read-only under bwrap and unshare; checked below
            pinned=self.worktree.pinned(),
        )
        if loop == 0:  # (what pytest prints, known from the first loop)
            self.first_had_summary = summary_of(result.output) is not None
        summed = self.first_had_summary
        if result.ok and (
            why := nothing_passed(self.command.argv, result.output, first_had_summary=summed)
        ):
            result = result.model_copy(update={"vacuous": why})
        planted = await asyncio.to_thread(held.put_back)
        if planted:
            # only a runner that does not confine writes lets this happen: put back before
            # any git call (a filter there would run outside the sandbox), and stop
            shown = ", ".join(str(p) for p in planted)
            await ctx.audit(
                "run",
                role="implementer",
                reason_codes=["SANDBOX_GIT_CONFIG_CHANGED"],
                values={"loop": loop, "runner": result.runner, "files": [str(p) for p in planted]},
                detail=f"the tests changed git's configuration (under {result.runner}): {shown}; "
                "put back, and the run stops",
            )
            await asyncio.to_thread(self.worktree.restore_dotgit)
            raise RunStopped(
                f"the test command changed git's configuration outside the worktree ({shown}) "
                f"under the {result.runner} runner: put back, and the run stopped (GR-010)"
            )
        # under every runner, before any git call: rlimit cannot pin them at all
        await self._pointers_intact(loop, result.runner, "under the test command")
        if await asyncio.to_thread(self.worktree.restore_dotgit):
            # only a runner that does not confine writes lets this happen (bwrap mounts it
            # read-only); git never read it, as every call names the git dir
            await ctx.audit(
                "run",
                role="implementer",
                reason_codes=["SANDBOX_DOTGIT_RESTORED"],
                values={"loop": loop, "runner": result.runner},
                detail=f"the tests rewrote the worktree's .git (under {result.runner}): restored",
            )
        ctx.bundle.write_test_loop(
            loop, result, attempt=attempt, commit=await asyncio.to_thread(self.worktree.head)
        )
        self.logs.append(result.output)
        ctx.stage_ended("tests")
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

    async def _pointers_intact(self, loop: int, runner: str, when: str) -> None:
        """:class:`RunStopped` (audited) when a submodule's ``.git`` file is not the one
        written for it: a git that followed it would obey a git dir of the tests' making,
        outside the sandbox (GR-010). Not put back: the run stops, and its worktree goes."""
        broken = await asyncio.to_thread(self.worktree.broken_pointers)
        if not broken:
            return
        shown = ", ".join(broken)
        await self.ctx.audit(
            "run",
            role="implementer",
            reason_codes=["SANDBOX_SUBMODULE_POINTER_CHANGED"],
            values={"loop": loop, "runner": runner, "submodules": broken},
            detail=f"the .git file of submodule {shown} changed {when} (under {runner})",
        )
        raise RunStopped(
            f"the .git file of submodule {shown} in the run's worktree changed {when} "
            f"(under the {runner} runner); git outside the sandbox would follow it, so the "
            "run stopped (GR-010)"
        )

    async def _submodules_as_recorded(self, loop: int) -> None:
        """Every submodule exactly as the commit under test records it, before the tests
        run: what a test writes inside one never shows in the run's change, so a loop
        that ran on one a test had patched could pass where a clean checkout of the
        sealed commit fails (a review). The worktree's reset puts them back between
        loops; found otherwise here, each is put back and said in the evidence (audited,
        with what was found), and one that cannot be stops the run (:class:`RunStopped`)
        before the tests run: no loop, the green one least of all, runs on anything else."""
        worktree = self.worktree
        found = await asyncio.to_thread(worktree.submodule_drift)
        if not found:
            return
        await asyncio.to_thread(worktree.restore_submodules)
        left = await asyncio.to_thread(worktree.submodule_drift)
        shown = _drift_shown(found)
        await self.ctx.audit(
            "run",
            role="implementer",
            reason_codes=["SUBMODULE_NOT_RESTORED" if left else "SUBMODULE_RESTORED"],
            values={
                "loop": loop,
                "found": {path: said[:DRIFT_KEPT] for path, said in found.items()},
                "left": {path: said[:DRIFT_KEPT] for path, said in left.items()},
            },
            detail=f"before test loop {loop}, not as the commit records: {shown}; "
            + (f"still not after restoring: {_drift_shown(left)}" if left else "restored"),
        )
        if left:
            raise RunStopped(
                f"submodule {', '.join(left)} in the run's worktree is not as the commit "
                f"under test records it ({_drift_shown(left)}) and could not be put back: "
                "the tests would not test what the run commits, so the run stopped (GR-010)"
            )

    async def _decide(self) -> SandboxDecision:
        """Decide the runner for the run and audit it (GR-005: before anything runs); a
        refusal stops the run here, with the tests not run and the checkout untouched."""
        ctx = self.ctx
        decision = await _decision(ctx)
        line = sandbox_decision_line(decision)
        if line is not None:
            await ctx.audit(line.pop("kind"), role="implementer", **line)
        if decision.runner is None:
            await ctx.stage("tests", "failed", detail="not run: no sandbox (GR-010)")
            raise RunStopped(decision.reason)
        self.sandbox = decision
        return decision


async def _decision(ctx: RunContext) -> SandboxDecision:
    probe = await asyncio.to_thread(probe_sandbox)
    if ctx.options.allow_unsandboxed:
        opt_in: str | None = "--allow-unsandboxed"
    elif ctx.policy.sandbox.allow_unsandboxed:
        opt_in = "the policy's [sandbox] allow_unsandboxed"
    else:
        opt_in = None
    return decide_sandbox(probe, local_only=ctx.session.local_only, opt_in=opt_in)


async def sandbox_preflight(ctx: RunContext) -> None:
    """Before any model call: a run whose tests could not run at all stops now, audited,
    rather than after it has spent model calls (or an approved cloud escalation)."""
    decision = await _decision(ctx)
    if decision.runner is None:
        line = sandbox_decision_line(decision)
        if line is not None:
            await ctx.audit(line.pop("kind"), role="implementer", **line)
        raise RunStopped(decision.reason)


def find_test_command(
    ctx: RunContext, root: Path | None = None, *, configured: str | None = None
) -> TestCommand:
    """The run's test command, found in ``root`` (the worktree; by default the repo, for
    the preflight). None found, or a bad ``.switchyard/config.toml``, stops the run with
    the reason (what to set, and where): GR-006 makes the tests' exit code the truth, so
    a run with no tests to run has nothing to go on."""
    try:
        return detect_test_command(root or ctx.repo, repo=ctx.repo, configured=configured)
    except (NoTestCommand, ConfigError) as exc:
        raise RunStopped(str(exc)) from None


async def preflight_test_command(ctx: RunContext) -> None:
    """Before any model call, as the sandbox's: the repo has a test command. The worktree
    is the repo's HEAD, so what is found here is found there (it is looked up again there:
    an untracked test file would only be here, and then the run stops at that point)."""
    command = await asyncio.to_thread(find_test_command, ctx, configured=ctx.options.test_command)
    why = await asyncio.to_thread(cannot_start, command, ctx.repo)
    if why is not None:
        raise RunStopped(why)


#: paths kept per submodule in the audit line of one not as recorded
DRIFT_KEPT = 20


def _drift_shown(found: dict[str, list[str]]) -> str:
    """Per submodule, the first few of what differs (the audit line's values keep more)."""
    parts = []
    for path, said in found.items():
        more = f" and {len(said) - 3} more" if len(said) > 3 else ""
        parts.append(f"{path}: {', '.join(said[:3])}{more}")
    return "; ".join(parts)


def provider_key_names(ctx: RunContext) -> list[str]:
    """The variables the policy's providers read their keys from (never passed on)."""
    return sorted({p.api_key_env for p in ctx.policy.providers.values() if p.api_key_env})
