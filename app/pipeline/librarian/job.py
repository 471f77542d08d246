"""The condensation job, in order: the Kimi escalation on its triggers, else the local
map; the reduce rounds; one more escalation on a low confidence; the result and its
audit line. The entry point is :func:`condense`."""

from __future__ import annotations

from collections.abc import Sequence

from app.audit.types import AuditSink
from app.counted import counted
from app.pipeline.librarian import escalation
from app.pipeline.librarian.calls import Caller
from app.pipeline.librarian.mapping import map_local
from app.pipeline.librarian.notes import ROLE, Condensed, NoteSet, Source
from app.pipeline.librarian.packing import render_sources
from app.pipeline.librarian.reducing import reduce
from app.pipeline.librarian.result import conclude
from app.router.service import RouteFailed, Router, RouteRefused
from app.router.types import Signals
from app.stage0.context import context_estimate


async def condense(
    router: Router,
    task: str,
    sources: Sequence[Source],
    budget: int,
    *,
    run: str | None = None,
    full_sweep: bool = False,
    contradictions_detected: bool = False,
    tool_heavy: bool = False,
    audit: AuditSink | None = None,
) -> Condensed:
    """Condense ``sources`` (ordered ``(id, text)`` pairs) for ``task`` into ``budget``
    tokens. See the package docstring for the steps.

    ``full_sweep`` / ``contradictions_detected`` / ``tool_heavy`` are the Librarian's
    §3 signals; ``context_estimate`` is computed here over the sources. ``audit``
    defaults to the router's audit log. Never raises for a refused or failed route: the
    result is then the sources clipped to the budget, with ``LIBRARIAN_ROUTE_FAILED``.
    """
    if budget < 1:
        raise ValueError("budget must be at least 1 token")
    sink = audit if audit is not None else router.audit
    sources = [(str(sid), str(text)) for sid, text in sources]
    whole = render_sources(sources)
    tokens_in = context_estimate([whole])
    # a full sweep is asked for by name: the Librarian reads it even when it would fit
    if tokens_in <= budget and not full_sweep:
        return Condensed(
            text=whole,
            condensed=False,
            model=None,
            tokens_in=tokens_in,
            tokens_out=tokens_in,
            budget=budget,
        )

    flags = Signals(
        full_sweep=full_sweep,
        contradictions_detected=contradictions_detected,
        tool_heavy=tool_heavy,
    )
    job = Caller(router, task, budget, run, flags)
    result: NoteSet | None = None
    try:
        # the role's own model on the first healthy runtime (not whichever runtime happens
        # to fit the whole job, e.g. a tiny embedded model): the groups are cut to its window
        local = await router.decide(ROLE, Signals())
        job.local_window = local.local.context_window if local.local else None
        result = await _run(job, sources, tokens_in)
    except (RouteRefused, RouteFailed) as exc:
        job.tally.codes.append("LIBRARIAN_ROUTE_FAILED")
        job.tally.notes.append(f"no model could condense: {exc}")
    return await conclude(
        job.tally,
        sink=sink,
        session=router.session,
        run=run,
        sources=sources,
        tokens_in=tokens_in,
        budget=budget,
        result=result,
        local_window=job.local_window,
    )


async def _run(job: Caller, sources: Sequence[Source], tokens_in: int) -> NoteSet:
    tally = job.tally
    notes = await escalation.on_triggers(job, sources, tokens_in)
    if notes is None:
        notes = await map_local(job, sources)
    if tally.escalated:
        tally.codes.append("LIBRARIAN_ESCALATED")
    result = await reduce(job, NoteSet.merge(notes), force=len(notes) > 1)
    threshold = job.confidence_threshold()
    if result.contradictions and not job.flags.contradictions_detected:
        # the Librarian's own notes found sources that disagree: its §3 trigger
        tally.codes.append("LIBRARIAN_CONTRADICTIONS")
        tally.notes.append(
            f"the notes report {counted(len(result.contradictions), 'contradiction')}: "
            + "; ".join(c[:120] for c in result.contradictions[:3])
        )
        if not tally.escalated and not tally.declined:
            better = await escalation.on_low_confidence(
                job, sources, result, {"contradictions_detected": True}
            )
            if better is not None:
                tally.codes.append("LIBRARIAN_ESCALATED")
                return await reduce(job, better, force=False)
    if (
        threshold is not None
        and result.confidence < threshold
        and not tally.escalated
        and not tally.declined
    ):
        tally.codes.append("LIBRARIAN_LOW_SYNTH_CONFIDENCE")
        better = await escalation.on_low_confidence(job, sources, result)
        if better is not None:
            tally.codes.append("LIBRARIAN_ESCALATED")
            result = await reduce(job, better, force=False)
    return result
