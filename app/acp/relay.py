"""The pipeline's bus events as ``session/update`` notifications, in order.

* Stage0 (and the Librarian's or Tier2's work on the brief): a tool call of kind search
  (read, fetch), with its status.
* The Architect's plan: a plan update, one entry per step; the steps go in progress when
  the Implementer starts and complete when its tests are green.
* Each Implementer attempt: a tool call of kind edit whose content is the diff (path, old
  text, new text); completed once the change applied and its tests started, failed when
  the model gave no usable change or it did not apply.
* Each test loop: a tool call of kind execute with the output and pass/fail.
* Audit lines: thoughts and message chunks (:mod:`.auditview`); ``call`` lines: usage.

The relay only reads events; what it sends is all it does. Tool call ids are the run id
and a step, so two runs in one session never share one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acp import (
    plan_entry,
    start_tool_call,
    text_block,
    tool_content,
    update_agent_message_text,
    update_agent_thought_text,
    update_plan,
    update_tool_call,
)
from acp.schema import PlanEntry, ToolKind

from app.acp.auditview import UsageMeter, audit_chunk, quoted
from app.acp.diffs import attempt_contents
from app.bus import (
    AuditAppended,
    DiffUpdated,
    Event,
    Notice,
    PlanUpdated,
    RunFinished,
    StageChanged,
    TestLoopFinished,
    TestOutput,
)

Send = Callable[[Any], Awaitable[None]]


class Flush(Event):
    """A marker a face publishes on the bus to learn when the relay has sent everything
    published before it (see :func:`app.acp.turns.relaying`)."""

    token: str


#: the bus events a run's relay reads
RUN_EVENTS = (
    AuditAppended,
    DiffUpdated,
    Notice,
    PlanUpdated,
    RunFinished,
    StageChanged,
    TestLoopFinished,
    TestOutput,
)
#: stages that work on the brief, and how they show
BRIEF_STAGES: dict[str, tuple[ToolKind, str]] = {
    "stage0": ("search", "Stage0: retrieval over the repository and the task brief (no LLM)"),
    "librarian": ("read", "Librarian: condensing the brief to the planner's window"),
    "tier2": ("fetch", "Tier2: citation-grounded synthesis of the brief"),
}
#: test output kept for the client per loop (its tail)
OUTPUT_CHARS = 6000
_ATTEMPT = re.compile(r"^attempt (\d+)(?::\s*(.*))?$", re.S)


@dataclass
class RunRelay:
    send: Send
    repo: Path
    #: the commit the run's worktree starts from (the diffs' old text)
    base: str | None
    usage: UsageMeter
    run: str = ""
    outcome: str | None = None
    reason: str = ""
    plan: list[PlanEntry] = field(default_factory=list)
    #: attempt → tool call id, for attempts whose change has not yet applied or failed
    _open_attempts: dict[int, str] = field(default_factory=dict)
    _started: set[str] = field(default_factory=set)
    _closed: set[str] = field(default_factory=set)
    _loops: int = 0
    _output: dict[int, str] = field(default_factory=dict)
    #: the skips said as messages in this turn (:func:`audit_chunk`)
    _told: set[tuple[str, str]] = field(default_factory=set)
    #: the ACP session's id: audit lines of other sessions are not shown ("": every line)
    session: str = ""

    async def handle(self, event: Event) -> None:
        if isinstance(event, AuditAppended):
            await self._audit(event.line)
        elif isinstance(event, StageChanged):
            self.run = self.run or event.run
            await self._stage(event)
        elif isinstance(event, PlanUpdated):
            await self._plan(event.plan)
        elif isinstance(event, DiffUpdated):
            await self._diff(event.attempt, event.diff, event.commit)
        elif isinstance(event, TestOutput):
            text = self._output.get(event.loop, "") + event.text
            self._output[event.loop] = text[-OUTPUT_CHARS:]
        elif isinstance(event, TestLoopFinished):
            await self._loop_done(event)
        elif isinstance(event, Notice):
            await self._notice(event)
        elif isinstance(event, RunFinished):
            self.run, self.outcome, self.reason = event.run, event.outcome, event.reason
            await self._close_all("the run ended before this step finished")
            if event.outcome != "merge_ready" and any(e.status == "in_progress" for e in self.plan):
                # the work stopped: an entry left "in progress" read as still under way
                # (ACP's plan has no "failed"; "pending" is "not done")
                await self._plan_status("pending")

    # ── stages ──────────────────────────────────────────────────────────────────────

    async def _stage(self, ev: StageChanged) -> None:
        if ev.stage in BRIEF_STAGES:
            kind, title = BRIEF_STAGES[ev.stage]
            tid = self._id(ev.stage)
            if ev.status == "started":
                await self._start(tid, title, kind, detail=ev.detail)
            else:
                await self._finish(tid, ok=ev.status != "failed", detail=ev.detail)
        elif ev.stage == "implementer":
            await self._implementer(ev)
        elif ev.stage == "tests":
            await self._tests(ev)
        else:
            where = f" · {ev.model} @ {ev.runtime}" if ev.model else ""
            detail = f": {ev.detail}" if ev.detail else ""
            await self.send(update_agent_thought_text(f"{ev.stage} {ev.status}{where}{detail}\n"))

    async def _implementer(self, ev: StageChanged) -> None:
        found = _ATTEMPT.match(ev.detail or "")
        if ev.status == "started" and found is None:
            await self._plan_status("in_progress")
        elif ev.status in ("started", "failed") and found is not None:
            n, error = int(found[1]), found[2]
            # a new attempt means the earlier ones ended without reaching the tests
            for m, older in list(self._open_attempts.items()):
                if m < n:
                    await self._finish(older, ok=False)
                    del self._open_attempts[m]
            tid = self._id(f"attempt-{n}")
            where = f" · {ev.model} @ {ev.runtime}" if ev.model else ""
            await self._start(tid, f"Implementer attempt {n}{where}", "edit")
            if error:
                await self._finish(tid, ok=False, detail=f"no usable change: {error}")
            else:
                self._open_attempts[n] = tid
        elif ev.status == "finished":
            await self._plan_status("completed")
            await self.send(update_agent_thought_text(f"implementer: {ev.detail}\n"))

    async def _tests(self, ev: StageChanged) -> None:
        if ev.status == "started":
            # tests run only on a change that applied: the open attempt succeeded in that
            for n, tid in list(self._open_attempts.items()):
                await self._finish(tid, ok=True)  # the diff stays the content
                del self._open_attempts[n]
            loop = self._loops
            self._loops += 1
            label = "baseline, before any change" if loop == 0 else f"loop {loop}"
            await self._start(
                self._id(f"tests-{loop}"),
                f"Tests ({label}): {ev.detail}",
                "execute",
                raw_input={"command": ev.detail},
            )
        elif ev.status == "failed":
            tid = self._id(f"tests-{self._loops}")
            await self._start(tid, "Tests: not run", "execute")
            await self._finish(tid, ok=False, detail=ev.detail)

    async def _loop_done(self, ev: TestLoopFinished) -> None:
        tid = self._id(f"tests-{ev.loop}")
        mark = "PASS" if ev.passed else "FAIL"
        output = self._output.pop(ev.loop, "").rstrip() or "(no output)"
        await self.send(
            update_tool_call(
                tid,
                status="completed" if ev.passed else "failed",
                content=[
                    tool_content(text_block(f"{mark} (exit {ev.exit_code}, {ev.runner})")),
                    tool_content(text_block(f"```\n{output}\n```")),
                ],
                raw_output={"passed": ev.passed, "exit_code": ev.exit_code, "runner": ev.runner},
            )
        )
        self._closed.add(tid)

    # ── plan and diffs ──────────────────────────────────────────────────────────────

    async def _plan(self, plan: dict[str, Any]) -> None:
        steps = plan.get("steps") or []
        self.plan = [
            plan_entry(_step_text(step), priority="high" if i == 0 else "medium")
            for i, step in enumerate(steps)
            if isinstance(step, dict)
        ]
        await self.send(update_plan(self.plan))
        goal = str(plan.get("goal") or "").strip()
        confidence = plan.get("confidence")
        head = f"plan: {goal}" if goal else "plan ready"
        if isinstance(confidence, int | float):
            head += f" (confidence {confidence:.2f})"
        await self.send(update_agent_thought_text(head + "\n"))

    async def _plan_status(self, status: str) -> None:
        if not self.plan:
            return
        self.plan = [e.model_copy(update={"status": status}) for e in self.plan]
        await self.send(update_plan(self.plan))

    async def _diff(self, attempt: int, diff: str, commit: str | None) -> None:
        tid = self._id(f"attempt-{attempt}")
        if tid not in self._started:
            await self._start(tid, f"Implementer attempt {attempt}", "edit")
            self._open_attempts[attempt] = tid
        # the texts are the files at the base and at the attempt's commit, as they land
        contents, locations = await asyncio.to_thread(
            attempt_contents, diff, self.repo, self.base, commit
        )
        await self.send(
            update_tool_call(tid, status="in_progress", content=contents, locations=locations)
        )

    async def _notice(self, ev: Notice) -> None:
        for n, tid in list(self._open_attempts.items()):
            if ev.text.startswith(f"attempt {n}:"):
                await self._finish(tid, ok=False)
                del self._open_attempts[n]
        await self.send(update_agent_message_text(quoted(f"**note** · {ev.text}")))

    async def _audit(self, line: dict[str, Any]) -> None:
        if self.session and line.get("session") != self.session:
            # a line this session's stores wrote for another (a reservation of another
            # session found expired here): not this conversation's (a review)
            return
        chunk = audit_chunk(line, self._told)
        if chunk is not None:
            await self.send(chunk)
        usage = self.usage.take(line)
        if usage is not None:
            await self.send(usage)

    # ── tool calls ──────────────────────────────────────────────────────────────────

    def _id(self, step: str) -> str:
        return f"{self.run or 'run'}:{step}"

    async def _start(
        self, tid: str, title: str, kind: ToolKind, detail: str = "", raw_input: Any = None
    ) -> None:
        content = [tool_content(text_block(detail))] if detail else None
        if tid in self._started:  # the same step again (a repair turn): a new title only
            await self.send(update_tool_call(tid, title=title, status="in_progress"))
            return
        self._started.add(tid)
        await self.send(
            start_tool_call(
                tid, title, kind=kind, status="in_progress", content=content, raw_input=raw_input
            )
        )

    async def _finish(self, tid: str, *, ok: bool, detail: str = "") -> None:
        """Close a tool call; ``detail`` replaces its content (none: the content stays)."""
        if tid in self._closed:
            return
        self._closed.add(tid)
        content = [tool_content(text_block(detail))] if detail else None
        await self.send(
            update_tool_call(tid, status="completed" if ok else "failed", content=content)
        )

    async def _close_all(self, why: str) -> None:
        for tid in self._open_attempts.values():
            await self._finish(tid, ok=False)  # its diff stays the content
        self._open_attempts.clear()
        for tid in sorted(self._started - self._closed):
            await self._finish(tid, ok=False, detail=why)


def _step_text(step: dict[str, Any]) -> str:
    title = str(step.get("title") or "step").strip()
    files = [str(f) for f in step.get("files") or []]
    return f"{title} ({', '.join(files)})" if files else title
