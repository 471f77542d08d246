"""A prompt in the pipeline mode: the prompt's text is the task of one pipeline run.

The run is :func:`app.pipeline.runner.run_pipeline`, exactly as headless; the relay turns
its bus events into updates while it goes. After it: the final message (the Judge's
verdict, the evidence bundle), then the merge permission when the run is merge-ready.
``session/cancel`` cancels the turn: the runner seals the evidence (status stopped,
"cancelled by the user"), the user's checkout was never touched, and the stop reason is
``cancelled``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from acp import update_agent_message_text
from acp.schema import StopReason

from app.acp.merging import offer_merge
from app.acp.relay import RUN_EVENTS, Flush, RunRelay
from app.acp.sessions import AcpSession
from app.acp.summary import run_summary
from app.bus import Event
from app.pipeline.control import RunControl
from app.pipeline.runner import RunOptions, run_pipeline
from app.workspace.git import rev_parse
from app.workspace.merge import MergeOutcome

log = logging.getLogger("app.acp")

Send = Callable[[Any], Awaitable[None]]


@asynccontextmanager
async def relaying(
    s: AcpSession, relay: RunRelay, kinds: tuple[type[Event], ...]
) -> AsyncIterator[None]:
    """Relay ``kinds`` from the session's bus while the body runs; every event queued by
    its end is sent before this returns (a prompt's response follows all its updates).

    Meanwhile ``s.flush()`` waits until everything published before it has been sent: a
    permission request goes out after the audit lines that led to it.
    """
    marks: dict[str, asyncio.Event] = {}
    with s.bus.subscribe(maxsize=1024, kinds=(Flush, *kinds), name="acp") as sub:

        async def pump() -> None:
            async for event in sub:
                if isinstance(event, Flush):
                    marks.pop(event.token, asyncio.Event()).set()
                    continue
                try:
                    await relay.handle(event)
                except Exception as exc:  # a gone client must not stop the run
                    log.warning("update not sent (%s): %r", type(event).__name__, exc)

        async def flush() -> None:
            token = uuid.uuid4().hex
            marks[token] = done = asyncio.Event()
            s.bus.publish_nowait(Flush(session=s.id, token=token))
            await done.wait()

        task = asyncio.create_task(pump(), name="acp.relay")
        s.flush = flush
        try:
            yield
        finally:
            s.flush = None
            sub.close()
            await task
            for done in marks.values():
                done.set()


async def run_turn(
    s: AcpSession,
    task: str,
    editor: str,
    *,
    send: Send,
    ask: Callable[..., Awaitable[Any]],
    approver: str,
    timeout_s: float,
) -> StopReason:
    base = await asyncio.to_thread(rev_parse, s.repo, "HEAD")
    relay = RunRelay(send, s.repo, base, s.usage, session=s.id)
    s.control = RunControl()
    merged: list[MergeOutcome] = []  # the merge's outcome, once it ran
    try:
        async with relaying(s, relay, RUN_EVENTS):
            outcome = await run_pipeline(
                s.core,
                task,
                RunOptions(repo=s.repo, editor_context=editor, within=s.within),
                s.control,
            )
        await send(
            update_agent_message_text(
                "\n" + run_summary(s.repo, outcome.run_id, outcome.outcome, outcome.reason)
            )
        )
        if outcome.outcome == "merge_ready":
            await offer_merge(
                s.repo,
                outcome.run_id,
                settled=merged,
                audit=s.core.audit,
                lines=await s.core.audit.run_lines(outcome.run_id),
                send=send,
                ask=ask,
                approver=approver,
                timeout_s=timeout_s,
                policy=s.core.policy,
                within=s.within,
            )
        return "end_turn"
    except asyncio.CancelledError:
        if not s.cancel_requested:
            raise  # the agent is shutting down: the runner sealed what it had
        if merged:  # the human's answer came first: the merge ran and was reported
            done = merged[0]
            note = f"Cancelled after the merge of run {relay.run}: " + (
                "merged." if done.merged else "not merged: " + "; ".join(done.reasons)
            )
        elif relay.outcome == "merge_ready":  # cancelled at the merge permission
            note = f"The merge of run {relay.run} was withdrawn; nothing was merged."
        elif relay.run:
            note = run_summary(s.repo, relay.run, relay.outcome, relay.reason or "cancelled")
        else:
            note = "Cancelled before the run started."
        await send(update_agent_message_text("\n" + note))
        return "cancelled"
