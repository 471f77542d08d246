"""REDUCE: merge notes locally, in rounds, until they fit the budget (bounded)."""

from __future__ import annotations

from app.pipeline.librarian.calls import Caller
from app.pipeline.librarian.notes import MAX_REDUCE_ROUNDS, NotePoint, NoteSet
from app.pipeline.librarian.packing import _point_line, _unique, pack, render_notes
from app.pipeline.librarian.prompts import REDUCE_SYSTEM, _reduce_user
from app.router.service import RouteFailed, RouteRefused
from app.router.types import Signals
from app.tokens import count_text


async def reduce(job: Caller, notes: NoteSet, force: bool) -> NoteSet:
    """Merge ``notes`` locally until they fit the budget (at most MAX_REDUCE_ROUNDS
    rounds in all); ``force``: one round even if they fit (several map groups)."""
    current = notes
    tally = job.tally
    while tally.reduce_rounds < MAX_REDUCE_ROUNDS and job.local_window is not None:
        if not force and _tokens(current) <= job.budget:
            break
        force = False
        tally.reduce_rounds += 1
        new, stop = await _round(job, current, job.local_window)
        better = _tokens(new) <= job.budget or _tokens(new) < _tokens(current)
        if better:
            current = new
        if stop or not better:
            break
    return current


async def _round(job: Caller, current: NoteSet, window: int) -> tuple[NoteSet, bool]:
    """One round over groups that fit ``window``; True: stop (no step could serve). A
    group whose merge is unusable keeps its notes as they were."""
    out_room = job.out_room(window)
    overhead = job.overhead(REDUCE_SYSTEM, _reduce_user(job.task, [], job.budget))
    capacity = job.capacity(window, out_room, overhead)
    groups = pack([count_text(_point_line(p)) + 1 for p in current.points], capacity)
    target = max(64, job.budget // max(1, len(groups)))
    merged: list[NotePoint] = []
    contradictions = list(current.contradictions)
    confidences: list[float] = []
    stop = False
    for n, group in enumerate(groups, start=1):
        points = [current.points[i] for i in group]
        known = _unique(s for p in points for s in p.sources)
        try:
            got, why = await job.ask(
                False,
                REDUCE_SYSTEM,
                _reduce_user(job.task, points, target),
                Signals(),
                out_room,
                known,
            )
        except (RouteRefused, RouteFailed) as exc:
            got, why, stop = None, str(exc), True
        if got is None:
            job.tally.codes.append("LIBRARIAN_REDUCE_UNUSABLE")
            job.tally.notes.append(
                f"reduce round {job.tally.reduce_rounds}, group {n}/{len(groups)}: {why}; "
                "kept its notes as they were"
            )
            merged += points
            confidences.append(current.confidence)
            continue
        merged += got.points
        contradictions += got.contradictions
        confidences.append(got.confidence)
    conf = min(confidences, default=current.confidence)
    return NoteSet(merged, _unique(contradictions)[:8], conf), stop


def _tokens(notes: NoteSet) -> int:
    return count_text(render_notes(notes.points, notes.contradictions))
