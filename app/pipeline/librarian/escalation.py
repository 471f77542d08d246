"""The escalation to Kimi: on the Librarian's §3 triggers (the job on the target's big
window, in one call or a few big groups), and once more on a low local confidence.

The router decides, asks the human and audits; here a refusal or a denial only moves
the work (or the rest of it) back to the local map, with a note saying why. A decision
that keeps the work local before anyone is asked (a trigger fired and local_only or the
budget left no cloud step; a part no trigger fires for) is a ``check`` line
(:mod:`app.pipeline.checked`), so ``policy simulate`` replays it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.counted import counted
from app.pipeline.checked import record_check
from app.pipeline.librarian.calls import Caller
from app.pipeline.librarian.mapping import map_group, map_local
from app.pipeline.librarian.notes import MIN_CAPACITY, ROLE, WINDOW_SHARE, NoteSet, Source
from app.pipeline.librarian.packing import _Piece, _pieces, _unique, pack
from app.pipeline.librarian.prompts import REDUCE_SYSTEM, _reduce_user, map_prompt
from app.router.decide import fired_triggers
from app.router.routed import skip_text
from app.router.service import RouteFailed, RouteRefused, RouteStaysLocal
from app.router.types import Decision


async def on_triggers(
    job: Caller, sources: Sequence[Source], tokens_in: int
) -> list[NoteSet] | None:
    """Notes from the escalation target when a trigger fires and the router escalates;
    None: no trigger, or the escalation is unavailable (the caller maps locally)."""
    router = job.router
    signals = job.flags.model_copy(update={"context_estimate": tokens_in})
    fired = fired_triggers(job.policy, ROLE, signals)
    if not fired:
        return None
    job.tally.codes += [reason.code for _, reason in fired]
    decision, inputs = await router.decide_recorded(ROLE, signals)
    too_big = any(
        s.runtime == "cloud" and s.reason == "context_too_small" for s in decision.skipped
    )
    entry = fired[0][0].target
    if decision.action != "escalate" and too_big and entry:
        # the whole job does not fit one call: the target's window, in big groups
        room = job.window(job.policy.resolve(entry)) - job.max_output
        probe = await router.decide(ROLE, signals.model_copy(update={"context_estimate": room}))
        decision = probe if probe.action == "escalate" else decision
    if decision.action == "escalate" and decision.target is not None:
        return await _map_cloud(job, sources, decision.target)
    req = await _say_skips(job, decision)
    await _record(job, decision, inputs, f"the job (~{tokens_in} tokens)", req)
    job.tally.codes.append("LIBRARIAN_ESCALATION_UNAVAILABLE")
    why = "; ".join(decision.notes) or "no cloud step can serve"
    job.tally.notes.append(f"the escalation is unavailable ({why}); condensing locally")
    return None


async def _map_cloud(job: Caller, sources: Sequence[Source], target: str) -> list[NoteSet]:
    """The job on the escalation target's window; what it does not serve goes local."""
    tally = job.tally
    window = job.window(target)
    out_room = min(job.max_output, max(1024, job.budget * 2))
    system, user = map_prompt(job.task, [], max(64, job.budget), True)
    overhead = job.overhead(system, user)
    capacity = max(MIN_CAPACITY, int((window - job.max_output) * WINDOW_SHARE) - overhead)
    pieces = _pieces(sources, capacity)
    costs = [p.cost for p in pieces]
    groups = [[pieces[i] for i in g] for g in pack(costs, capacity, balanced=True)]
    if len(groups) > 1:
        tally.codes.append("LIBRARIAN_MAP_REDUCE")
    out: list[NoteSet] = []
    for n, group in enumerate(groups):
        try:
            notes, why = await map_group(
                job, True, group, job.flags, out_room, whole=len(groups) == 1
            )
        except (RouteStaysLocal, RouteRefused) as exc:
            decision = exc.decision
            if isinstance(exc, RouteStaysLocal) and exc.inputs is not None:
                part = f"map group {n + 1}/{len(groups)} ({counted(len(group), 'source')})"
                await _record(job, decision, exc.inputs, part, exc.req)
            if isinstance(exc, RouteStaysLocal) and not decision.reasons:
                # no trigger fires for this part on its own: it is mapped locally
                out += await map_local(job, [(p.id, p.text) for p in group])
                continue
            tally.declined_escalation(decision)
            rest = [(p.id, p.text) for g in groups[n:] for p in g]
            return out + await map_local(job, rest)
        tally.groups += 1
        if notes is None:
            tally.codes.append("LIBRARIAN_ESCALATED_REPLY_UNUSABLE")
            tally.notes.append(f"{target}: {why}; that part is condensed locally")
            out += await map_local(job, [(p.id, p.text) for p in group])
            continue
        out.append(notes)
    return out


async def on_low_confidence(
    job: Caller,
    sources: Sequence[Source],
    local: NoteSet,
    found: dict[str, bool] | None = None,
) -> NoteSet | None:
    """One request with ``local_synth_confidence`` (and what the local notes ``found``,
    e.g. ``contradictions_detected``) so the router may escalate; None: not served (the
    local result stands). It carries the whole sources when they fit the escalation
    target's window, else the local notes to improve."""
    tally = job.tally
    signals = job.flags.model_copy(
        update={"local_synth_confidence": local.confidence, **(found or {})}
    )
    pieces = [_Piece(sid, text) for sid, text in sources]
    system, user = map_prompt(job.task, pieces, max(64, job.budget), True)
    known = _unique(sid for sid, _ in sources)
    fired = fired_triggers(job.policy, ROLE, signals)
    entry = fired[0][0].target if fired else None
    entry = job.policy.resolve(entry) if entry else ""
    room = job.window(entry) if entry in job.policy.models else None
    if room is not None and job.overhead(system, user) + job.max_output > room:
        # too big for the escalation target in one call: it improves the local notes
        system = REDUCE_SYSTEM
        user = _reduce_user(job.task, local.points, job.budget)
        known = _unique(s for p in local.points for s in p.sources)
    probe = signals.model_copy(update={"context_estimate": job.overhead(system, user)})
    decision, inputs = await job.router.decide_recorded(ROLE, probe)
    notes = f"the local notes (confidence {local.confidence:g})"
    if decision.action != "escalate":
        req = await _say_skips(job, decision)
        await _record(job, decision, inputs, notes, req)
        tally.codes.append("LIBRARIAN_ESCALATION_UNAVAILABLE")
        why = "; ".join(decision.notes) or "no cloud step can serve"
        tally.notes.append(
            f"local confidence {local.confidence:g}: no escalation ({why}); kept the local result"
        )
        return None
    out_room = min(job.max_output, max(1024, job.budget * 2))
    try:
        got, problem = await job.ask(True, system, user, signals, out_room, known)
    except (RouteStaysLocal, RouteRefused) as exc:
        if isinstance(exc, RouteStaysLocal) and exc.inputs is not None:
            await _record(job, exc.decision, exc.inputs, notes, exc.req)
        tally.declined_escalation(exc.decision, "kept the local result")
        return None
    except RouteFailed as exc:
        got, problem = None, str(exc)
    if got is None:
        tally.codes.append("LIBRARIAN_ESCALATED_REPLY_UNUSABLE")
        tally.notes.append(f"the escalated reply was unusable ({problem}); kept the local result")
        return None
    return got


async def _say_skips(job: Caller, decision: Decision) -> int | None:
    """A trigger fired and the router's decision keeps the job local (local_only, no
    step left): each cloud step it skipped is an audit line, with the triggers that
    wanted it, as the router writes them for a request it serves (GR-005). The seq of
    the first (the later ones, and the decision's check, name it as their ``req``), or
    None when none was written."""
    req: int | None = None
    for skip in decision.skipped:
        if skip.runtime != "cloud":
            continue
        values: dict[str, Any] = {"reason": skip.reason, "detail": skip.detail}
        if req is not None:
            values["req"] = req
        line = await job.router.audit.append(
            "skip",
            session=job.router.session,
            run=job.run,
            role=ROLE,
            to=skip.model,
            reason_codes=[f"SKIP_{skip.reason.upper()}", *decision.reason_codes],
            values=values,
            detail=skip_text(skip),
        )
        req = line.seq if req is None else req
    return req


async def _record(
    job: Caller, decision: Decision, inputs: dict[str, Any], subject: str, req: int | None
) -> None:
    """A decision that kept the work local (no trigger for it, or none could leave the
    machine), as a ``check`` line (:mod:`app.pipeline.checked`): what ``policy
    simulate`` replays."""
    await record_check(job.router, ROLE, decision, inputs, run=job.run, subject=subject, req=req)
