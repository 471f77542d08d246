"""The merge as a final permission: "merge run R into <branch>?".

Asked only when the run is merge-ready and nothing but the human's answer blocks the
gate (the same rule as ``switchyard merge``: :func:`app.workspace.merge.merge_run`). The
gate reads the sealed evidence, never a model's say-so: a local verdict cannot make it
pass (GR-003). Only an allowed answer runs the gated, atomic merge; a refusal, a cancelled
outcome or no answer within the approval timeout changes nothing in the checkout, and the
refusal is audited as the merge line (HUMAN).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from acp import start_tool_call, text_block, tool_content, update_tool_call
from acp.schema import AllowedOutcome, ToolCallLocation, ToolCallUpdate

from app.acp.permissions import MERGE_OPTIONS, client_failure
from app.audit.types import AuditSink
from app.commit_point import finish_then_cancel
from app.evidence.seal import sealed_hash
from app.policy.schema import Policy
from app.workspace.merge import GIT, LockedPlan, MergeOutcome, MergePlan, locked_plan

log = logging.getLogger("app.acp")

Send = Callable[[Any], Awaitable[None]]
Ask = Callable[..., Awaitable[Any]]


async def offer_merge(
    repo: Path,
    run_id: str,
    *,
    audit: AuditSink,
    lines: list[Any],
    send: Send,
    ask: Ask,
    approver: str,
    timeout_s: float,
    policy: Policy,
    settled: list[MergeOutcome] | None = None,
    within: str = "",
) -> MergeOutcome:
    """Offer the merge of a merge-ready run; ``settled`` receives each outcome once the
    merge ran, even when the turn is cancelled while it runs. ``within``: the folder of
    the repository the session is kept to; a merge that would change a file outside it is
    refused without asking (and audited so).

    A merge the human allowed that found the checkout moved since it was prepared (another
    session's merge landed while the question was on screen) is prepared and offered again
    on the new head, up to :data:`REOFFERS` times: the gate's "try again" had no way to be
    tried from an editor (an ACP audit)."""
    seal = sealed_hash(lines, run_id)
    for offer in range(REOFFERS + 1):
        again = offer < REOFFERS
        outcome = await _offer(
            repo,
            run_id,
            seal=seal[0] if seal else None,
            tid=f"{run_id}:merge" + (f"-{offer + 1}" if offer else ""),
            audit=audit,
            send=send,
            ask=ask,
            approver=approver,
            timeout_s=timeout_s,
            policy=policy,
            settled=settled,
            within=within,
            again=again,
        )
        if not (again and moved(outcome)):
            break
    return outcome


#: how many times a merge is offered again after the checkout moved under it
REOFFERS = 2
#: the reason a merge allowed did not run: HEAD (or the branch) moved since it was prepared
MOVED = f"{GIT}: the checkout moved since the merge was prepared"


def moved(outcome: MergeOutcome) -> bool:
    """Whether a merge the human allowed found the checkout moved (the gate's reasons, a
    decline among them, are given before the checkout is looked at again)."""
    return not outcome.merged and any(r.startswith(MOVED) for r in outcome.reasons)


async def _offer(
    repo: Path,
    run_id: str,
    *,
    seal: str | None,
    tid: str,
    audit: AuditSink,
    send: Send,
    ask: Ask,
    approver: str,
    timeout_s: float,
    policy: Policy,
    settled: list[MergeOutcome] | None,
    within: str,
    again: bool,
) -> MergeOutcome:
    """One offer: prepared on the checkout as it is now, asked, carried out, reported
    (``again``: a moved checkout is reported as offered again, not as "try again").

    The plan is read under the repository's merge lock, as ``switchyard merge`` reads it
    (beside another merge it described that merge half way); the human is asked with the
    lock let go. A lock not had within its wait is refused and audited, never asked."""

    async def carry_out(locked: LockedPlan, human: bool, answer: str | None) -> MergeOutcome:
        plan = locked.plan
        outcome = await locked.execute(
            human_approved=human,
            audit=audit,
            approver=approver,
            answer=None if answer is None else f"{approver}: {answer}",
        )
        if settled is not None and not (again and moved(outcome)):
            # (one offered again is not the turn's outcome: a cancel at the next question
            # read it, and said "not merged: … try again" for a merge withdrawn, a review)
            settled.append(outcome)
        await _report(plan, outcome, tid, target, asked=asked, send=send, again=again)
        return outcome

    async with locked_plan(
        repo, run_id, sealed_sha256=seal, policy=policy, within=within
    ) as locked:
        plan = locked.plan
        target = _short(plan.target_ref)
        # ask only when nothing but the human's answer blocks (as `switchyard merge` does)
        asked = locked.held and not plan.already_merged and not plan.blockers()
    if not asked:
        # refused or already merged: nothing lands, so it is audited and told with the
        # lock let go (told under it, an editor that stopped reading held every other
        # merge of the repository up for the lock's wait: a review)
        return await finish_then_cancel(carry_out(locked, False, None))
    try:
        human, answer = await _ask(plan, tid, target, send=send, ask=ask, timeout_s=timeout_s)
    except asyncio.CancelledError:
        # withdrawn (session/cancel, the editor gone): refused and audited as every
        # other unanswered merge is, the turn's cancel raised once the line stands (it
        # left no merge line at all: an ACP audit)
        try:
            await finish_then_cancel(
                locked.execute(
                    human_approved=False,
                    audit=audit,
                    approver=approver,
                    answer=f"{approver}: withdrawn (the turn was cancelled)",
                )
            )
        except Exception as exc:  # (the cancel is what the turn ends with)
            log.error("the withdrawn merge of %s was not audited: %r", plan.run_id, exc)
        raise
    # once answered, the merge and its report run to their end: a cancel that came with
    # the "merge" answer had the merge done in git and the user told nothing was merged
    # (a session/cancel, then the hang-up's stop: a bare await after the first cancel let
    # the second one cancel the merge's audit line and report)
    return await finish_then_cancel(carry_out(locked, human, answer))


async def _ask(
    plan: MergePlan, tid: str, target: str, *, send: Send, ask: Ask, timeout_s: float
) -> tuple[bool, str]:
    """Whether the editor's human allowed the merge, and their answer in words (a
    decline, no answer and a failed request are not the same thing in the audit)."""
    title = f"Merge run {plan.run_id} into {target}?"
    body = describe(plan, target)
    locations = [ToolCallLocation(path=str(Path(plan.repo) / f)) for f in plan.files]
    await send(
        start_tool_call(
            tid,
            title,
            kind="edit",
            status="pending",
            content=[tool_content(text_block(body))],
            locations=locations,
            raw_input={"run": plan.run_id, "branch": plan.branch, "into": target},
        )
    )
    call = ToolCallUpdate(tool_call_id=tid, title=title, kind="edit", status="pending")
    try:
        async with asyncio.timeout(timeout_s):
            response = await ask(tool_call=call, options=MERGE_OPTIONS)
    except TimeoutError:
        log.info("merge permission for %s: no answer within %ss", plan.run_id, timeout_s)
        return False, f"no answer within {timeout_s:g}s"
    except asyncio.CancelledError:
        note = tool_content(text_block("withdrawn: the turn was cancelled; nothing merged"))
        await asyncio.shield(send(update_tool_call(tid, status="failed", content=[note])))
        raise
    except Exception as exc:
        log.warning("merge permission for %s failed: %r", plan.run_id, exc)
        return False, f"the permission request failed: {client_failure(exc)}"
    outcome = response.outcome
    if not isinstance(outcome, AllowedOutcome):
        return False, "dismissed (cancelled outcome)"
    if outcome.option_id == "merge":
        return True, "merge"
    return False, f"declined ({outcome.option_id})"


async def _report(
    plan: MergePlan,
    outcome: MergeOutcome,
    tid: str,
    target: str,
    *,
    asked: bool,
    send: Send,
    again: bool = False,
) -> None:
    from acp import update_agent_message_text

    if again and moved(outcome):
        text = (
            f"Not merged yet: {target} moved while the merge waited (another merge landed "
            "there?); nothing in the checkout changed, and the merge is offered again on "
            "the new head."
        )
    elif outcome.merged:
        text = (
            f"Merged run {plan.run_id} into {target}: "
            f"{(outcome.before_head or '')[:12]} → {(outcome.after_head or '')[:12]}"
        )
    elif outcome.already_merged:
        text = f"Run {plan.run_id} is already merged into {target}."
    else:
        reasons = "; ".join(outcome.reasons) or "refused"
        text = f"Not merged (nothing in the checkout changed): {reasons}"
    if asked:
        await send(
            update_tool_call(
                tid,
                status="completed" if outcome.merged else "failed",
                content=[
                    tool_content(text_block(describe(plan, target))),
                    tool_content(text_block(text)),
                ],
            )
        )
    await send(update_agent_message_text(f"\n{text}\n"))


def describe(plan: MergePlan, target: str) -> str:
    lines = [f"merge run {plan.run_id} into {target}"]
    if plan.task:
        lines.append(f"- task: {plan.task}")
    lines.append(
        f"- branch {plan.branch} @ {(plan.tip or '?')[:12]} → {target}"
        f" @ {(plan.before_head or '?')[:12]}"
    )
    more = len(plan.files) - 8
    shown = ", ".join(plan.files[:8]) + (f" and {more} more" if more > 0 else "")
    lines.append(f"- files: {shown or '—'}")
    if plan.facts is not None:
        lines.append(f"- risk: {'High-Risk' if plan.facts.high_risk else 'not High-Risk'}")
        for v in plan.facts.verdicts:
            local = " (local: advice only)" if v.is_local else ""
            lines.append(f"- verdict: {v.verdict} by {v.who}{local}")
    lines += [f"- note: {n}" for n in plan.notes]
    return "\n".join(lines)


def _short(ref: str | None) -> str:
    return (ref or "HEAD").removeprefix("refs/heads/")
