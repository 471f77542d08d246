"""The Implementer (§1): follow the plan, write a change, run the project's tests.

Each attempt asks for edits in the format models write well (SEARCH/REPLACE blocks, a
whole small file, or a unified diff; :mod:`app.pipeline.edits`), lands them with the
tolerant applier against the base, writes the new files in the run's worktree, commits
them, and runs the tests in the sandbox. A reply that does not parse, or whose edits do
not land, gets the structured-output owner's one repair turn with exactly what was wrong
(the applier's refusal: the nearest text with its line numbers, or the candidates);
only after that does it count. A failed loop is then one of: the tests failed (a real
compile/test failure), the edits did not land, the reply did not fit the format, or no
model answered; each is audited with its own reason code. Two failed loops are the §3
trigger for an escalation (to DeepSeek); the router reads them as signals. The user's
checkout is never touched.

The evidence keeps, per attempt, the edit list of each reply with the applier's notes and
refusals (``edits/attempt-N.json``) and the unified diff Switchyard made from the
worktree once the edits landed (``diffs/attempt-N.diff``), never the model's own text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from app.bus import DiffUpdated
from app.counted import counted
from app.evidence.layout import diff_name, edits_name, loop_log_name
from app.paths import STATE_DIR_NAME
from app.pipeline import prompts
from app.pipeline.ace import reflect
from app.pipeline.context import STOPPED_BY_USER, RunStopped, gist
from app.pipeline.edits.grammar import edit_grammar
from app.pipeline.edits.reply import Change, EditReplyParser, UnreadableFile
from app.pipeline.grounding import ChangeFacts, Grounded, diff_size, ground_change
from app.pipeline.schemas import Plan
from app.pipeline.second_opinion import advise
from app.pipeline.signals import diff_files, diff_signals
from app.pipeline.structured import Answer, ask_parsed
from app.pipeline.testloop import TestLoop, find_test_command
from app.router.types import Signals
from app.tokens import count_text
from app.workspace.broken_command import broken_command

if TYPE_CHECKING:
    from app.pipeline.context import RunContext
    from app.workspace.worktree import ApplyResult, Worktree

ROLE = "implementer"
#: characters of source shown to the Implementer (the embedded model's window is small)
FILE_CONTEXT_CHARS = 6000
#: said in the repair turn after the problems, so the model rewrites every block
REPAIR_HINT = (
    "Write every block again (the path, <<<<<<< SEARCH, lines copied exactly from the "
    "file, =======, the new lines, >>>>>>> REPLACE), then the JSON trailer."
)

#: lines of a broken test command's output kept in its audit line (all of it: the loop's log)
BROKEN_TAIL_LINES = 20
#: the reason code of the refusal of edits outside the folder the run is kept to (an ACP
#: session's working directory)
EDIT_OUTSIDE_CWD = "EDIT_OUTSIDE_CWD"
#: why a loop failed, as audited (reason code IMPLEMENTER_<KIND>)
Failure = Literal["tests_failed", "edits_refused", "format_failed", "no_reply"]


@dataclass
class Implementation:
    """What the Implementer's loop came to (also on failure: :class:`RunStopped` carries
    nothing, so the runner reads this object as it was when the loop stopped)."""

    tests: TestLoop
    tests_green: bool = False
    #: the worktree's diff against its base once the tests are green
    final_diff: str = ""
    failures: list[str] = field(default_factory=list)
    #: the real tool actions of the work so far: files read for the model, files its
    #: edits wrote, sandboxed test runs (the §3 ``tool_calls`` signal)
    tool_actions: int = 0
    #: each attempt's grounded self-check (evidence: implementer_grounding.json)
    grounding: list[dict[str, object]] = field(default_factory=list)


async def baseline(ctx: RunContext, work: Implementation) -> None:
    """Loop 0: the tests as the run's base has them, before any model is asked (the
    runner runs it before the brief). A command that cannot run at all stops the run
    here (:func:`~app.workspace.broken_command.broken_command`): it failed every loop,
    and the run spent its attempts, escalations and second opinions on it (a user
    audit). Tests that fail are the bug, and the loops go on."""
    result = await work.tests.run(attempt=None)
    work.tool_actions += 1
    command = work.tests.command
    broken = broken_command(command.argv, result)
    if broken is not None:
        reason = (
            f"the test command cannot run on the base, before any change ({command.why}): "
            f"{broken}; nothing was asked of any model (its output: {loop_log_name(0)})"
        )
        await ctx.audit(
            "run",
            role=ROLE,
            reason_codes=["TEST_COMMAND_BROKEN"],
            values={
                "loop": 0,
                "argv": command.argv,
                "exit_code": result.exit_code,
                "runner": result.runner,
                "output_tail": result.output.splitlines()[-BROKEN_TAIL_LINES:],
            },
            detail=reason,
        )
        raise RunStopped(reason)
    if result.ok:
        await ctx.notice("the tests already pass before any change")


async def implement(ctx: RunContext, plan: Plan, worktree: Worktree, work: Implementation) -> None:
    """Attempt the change until the tests are green, or raise :class:`RunStopped`."""
    ctx.control.current_role = ROLE
    await ctx.stage(ROLE, "started", role=ROLE)
    if work.tests.loops == 0:  # (the runner ran it before the brief)
        await baseline(ctx, work)
    failed = 0
    self_check: Grounded | None = None
    feedback = ""
    modules = 0
    plan_files = _plan_files(plan, worktree.path)
    for attempt in range(1, ctx.options.max_attempts + 1):
        if ctx.control.stopping:
            raise RunStopped(STOPPED_BY_USER)
        await asyncio.to_thread(worktree.reset)  # edits are read against the base
        parser = EditReplyParser(_reader(worktree))
        shown = files_for(plan, worktree.path)
        work.tool_actions += len(shown)  # each file read for the model
        signals = Signals(
            failed_loops=failed,
            self_check_confidence=self_check.value if self_check else None,
            modules_touched=modules or None,
            tool_calls=work.tool_actions,
            user_request=ctx.wants_escalation(ROLE),
            grounds=(("self_check_confidence", self_check.basis),) if self_check else (),
        )
        ctx.guard_calls(ROLE)
        answer = await ask_parsed(
            ctx.router,
            ROLE,
            parser,
            prompts.implementer(ctx.task, plan, shown, feedback, ctx.options.within),
            signals,
            expected="the edit format",
            grammar=edit_grammar(shown),
            repair_hint=REPAIR_HINT,
            run=ctx.run_id,
            max_tokens=edit_tokens(ctx, shown),
        )
        ctx.charge(ROLE, answer.calls)
        await ctx.role_stage(ROLE, answer, f"attempt {attempt}")
        change = answer.value
        if change is None:
            kind, feedback = _not_landed(answer, parser)
            failed += 1
            await _failed_loop(ctx, work, attempt, kind, failed, feedback)
            _record(ctx, attempt, parser, None, f"# no diff: {kind.replace('_', ' ')}\n")
            continue
        said = change.edits.self_check_confidence
        written = await asyncio.to_thread(
            worktree.apply_files, change.files, within=ctx.options.within, attempt=attempt
        )
        work.tool_actions += len(change.files)  # each file the edits wrote
        if written.outside:
            await _refused_outside(ctx, attempt, written)
        if not written.ok:
            self_check = _ground(ctx, work, attempt, said, ChangeFacts(applied=False))
            failed += 1
            feedback = f"the edits could not be written: {written.reason}"
            await _failed_loop(ctx, work, attempt, "edits_refused", failed, feedback)
            _record(ctx, attempt, parser, change, f"# no diff: {written.reason}\n")
            continue
        diff = await asyncio.to_thread(worktree.diff)
        modules = diff_signals(diff)["modules_touched"]
        facts = ChangeFacts(
            applied=True,
            touched=frozenset(diff_files(diff)),
            plan_files=plan_files,
            changed_lines=diff_size(diff),
            plan_steps=len(plan.steps),
        )
        self_check = _ground(ctx, work, attempt, said, facts)
        _record(ctx, attempt, parser, change, diff)
        await ctx.emit(
            DiffUpdated(
                session=ctx.session.id,
                run=ctx.run_id,
                attempt=attempt,
                diff=diff,
                commit=written.commit,
            )
        )
        result = await work.tests.run(attempt=attempt)
        work.tool_actions += 1
        if result.ok:
            work.tests_green = True
            work.final_diff = diff
            await ctx.stage(
                ROLE, "finished", role=ROLE, detail=f"tests green after attempt {attempt}"
            )
            # green after failed loops, or a large diff: still worth a reflection
            await reflect(ctx, work.failures, work.final_diff)
            return
        failed += 1
        tail = "\n".join(result.output.splitlines()[-30:])
        feedback = f"the tests failed (exit {result.exit_code}):\n{tail}"
        await _failed_loop(
            ctx, work, attempt, "tests_failed", failed, f"tests failed (exit {result.exit_code})"
        )
        await asyncio.to_thread(worktree.reset)
    await advise(
        ctx,
        "failure",
        "\n".join(work.failures) + "\n\nLast feedback:\n" + prompts.clip(feedback, 3000),
        value=failed,
    )
    await reflect(ctx, work.failures, work.final_diff)
    raise RunStopped(
        f"implementer: {counted(failed, 'failed loop')} in "
        f"{counted(ctx.options.max_attempts, 'attempt')}; "
        "no further progress is possible (see the audit for escalations)"
    )


def edit_tokens(ctx: RunContext, shown: dict[str, str]) -> int:
    """An edit reply's room: sized to the files it may touch, plus a margin, capped
    (the policy's [generation]); a reply cut off there gets the owner's one repair."""
    gen = ctx.policy.generation
    sized = int(count_text("".join(shown.values())) * gen.edit_tokens_per_file_token)
    return max(64, min(gen.edit_max_tokens, sized + gen.edit_margin_tokens))


def _plan_files(plan: Plan, root: Path) -> frozenset[str]:
    """The files the plan names that exist in the worktree."""
    return frozenset(f for s in plan.steps for f in s.files if (root / f).is_file())


def _ground(
    ctx: RunContext, work: Implementation, attempt: int, said: float, facts: ChangeFacts
) -> Grounded:
    """The attempt's self-check, grounded in what Switchyard saw of the change."""
    grounded = ground_change(said, facts, ctx.policy.grounding)
    work.grounding.append({"attempt": attempt, **grounded.as_json()})
    ctx.bundle.write_json(GROUNDING, {"attempts": work.grounding})
    return grounded


#: the evidence file with each attempt's grounded self-check
GROUNDING = "implementer_grounding.json"


def _reader(worktree: Worktree) -> Callable[[str], str | None]:
    def read(path: str) -> str | None:
        try:
            return worktree.read_file(path)
        except ValueError as exc:
            raise UnreadableFile(str(exc)) from None

    return read


def _not_landed(answer: Answer[Change], parser: EditReplyParser) -> tuple[Failure, str]:
    """Why no change came back (after the owner's one repair), and what to tell the
    model next time."""
    last = parser.last
    if answer.route_failed or last is None:
        return "no_reply", answer.error or "no model answered"
    problems = "\n".join(last.problems)
    if last.outcome == "refused":
        return "edits_refused", f"your edits did not land:\n{problems}"
    return "format_failed", f"the reply did not fit the edit format:\n{problems}"


async def _refused_outside(ctx: RunContext, attempt: int, written: ApplyResult) -> None:
    """The attempt's edits reach outside the folder the run is kept to (``within``: the
    ACP editor's working directory): refused whole, nothing written. A refusal line, which
    an editor shows as it comes; the failed loop's own line follows."""
    await ctx.audit(
        "refusal",
        role=ROLE,
        reason_codes=[EDIT_OUTSIDE_CWD],
        values={
            "attempt": attempt,
            "within": ctx.options.within,
            "outside": written.outside,
            "files": written.files,
        },
        detail=f"attempt {attempt}: the edits were not applied: {written.reason}",
    )


async def _failed_loop(
    ctx: RunContext, work: Implementation, attempt: int, kind: Failure, failed: int, detail: str
) -> None:
    """One failed loop, audited with its kind: a real test failure is told apart from
    edits that never landed (GR-005)."""
    work.failures.append(f"attempt {attempt}: {kind.replace('_', ' ')}: {detail[:300]}")
    await ctx.audit(
        "run",
        role=ROLE,
        reason_codes=[f"IMPLEMENTER_{kind.upper()}"],
        values={"attempt": attempt, "failed_loops": failed, "failure": kind},
        detail=f"attempt {attempt}: {detail[:300]}",
    )
    if kind != "tests_failed":
        # for the person: what failed, and the first problem (the model is told them all)
        head, _, problems = detail.partition("\n")
        said = _SAID.get(kind, head.rstrip(":"))
        await ctx.notice(
            f"attempt {attempt}: {said}" + (f": {gist(problems)}" if problems.strip() else ""),
            level="warning",
        )


#: a failed attempt's kind, as the person is told it (the model's wording says "your")
_SAID: dict[str, str] = {
    "edits_refused": "the model's edits did not land",
    "format_failed": "the reply did not fit the edit format",
}


def _record(
    ctx: RunContext, attempt: int, parser: EditReplyParser, change: Change | None, diff: str
) -> None:
    """The attempt's evidence: every reply as judged, and the diff Switchyard made."""
    ctx.bundle.write_diff(attempt, diff)
    ctx.bundle.write_json(
        edits_name(attempt),
        {
            "attempt": attempt,
            "landed": change is not None,
            "edits": change.edits.model_dump(mode="json") if change else None,
            "notes": [n.model_dump(mode="json") for n in change.notes] if change else [],
            "diff": diff_name(attempt),
            "replies": [r.model_dump(mode="json") for r in parser.records],
        },
    )


def start(ctx: RunContext, worktree: Worktree) -> Implementation:
    """The loop's state before the first attempt (the test command found in the worktree)."""
    cmd = find_test_command(ctx, worktree.path, configured=ctx.options.test_command)
    return Implementation(tests=TestLoop(ctx, worktree, cmd))


def files_for(plan: Plan, root: Path) -> dict[str, str]:
    """The files the plan names (or, when it names nothing real, the repo's small source
    files), up to :data:`FILE_CONTEXT_CHARS` characters in all."""
    wanted = [f for step in plan.steps for f in step.files]
    if not any((root / f).is_file() for f in wanted):
        # (relative parts: the run's worktree itself lives under the state dir)
        wanted = sorted(
            str(p.relative_to(root))
            for p in root.rglob("*.py")
            if STATE_DIR_NAME not in p.relative_to(root).parts and p.stat().st_size < 4000
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
