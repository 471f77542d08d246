"""MAP: the sources, in order, in groups that fit a window, each turned into notes.

Locally, groups are cut to the role's own local model; a group whose notes are unusable
keeps a raw excerpt of each source, so nothing it held is lost without a trace.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.pipeline.librarian.calls import Caller
from app.pipeline.librarian.notes import EXCERPT_CHARS, ROLE, NotePoint, NoteSet, Source
from app.pipeline.librarian.packing import _Piece, _pieces, _unique, pack
from app.pipeline.librarian.prompts import map_prompt
from app.router.service import RouteFailed
from app.router.types import Signals


async def map_local(job: Caller, sources: Sequence[Source]) -> list[NoteSet]:
    """Notes on every local group, in order."""
    if job.local_window is None:
        raise RouteFailed(f"{ROLE}: no local runtime can serve the map step")
    window = job.local_window
    out_room = job.out_room(window)
    overhead = job.overhead(*map_prompt(job.task, [], max(64, job.budget), False))
    capacity = job.capacity(window, out_room, overhead)
    pieces = _pieces(sources, capacity)
    groups = pack([p.cost for p in pieces], capacity)
    job.tally.groups += len(groups)
    job.tally.codes.append("LIBRARIAN_MAP_REDUCE")
    out: list[NoteSet] = []
    for n, group in enumerate(groups, start=1):
        chosen = [pieces[i] for i in group]
        notes, why = await map_group(job, False, chosen, Signals(), out_room, False)
        if notes is None:
            job.tally.codes.append("LIBRARIAN_MAP_UNUSABLE")
            job.tally.notes.append(
                f"map group {n}/{len(groups)} ({chosen[0].id} …): {why}; kept a raw excerpt"
            )
            notes = _excerpt(chosen)
        out.append(notes)
    return out


async def map_group(
    job: Caller,
    cloud_only: bool,
    pieces: Sequence[_Piece],
    extra: Signals,
    max_tokens: int,
    whole: bool,
) -> tuple[NoteSet | None, str | None]:
    """Notes on one group (local, or on the escalation target with ``cloud_only``);
    (None, why) when unusable or when no step could serve."""
    system, user = map_prompt(job.task, pieces, max(64, job.budget), whole)
    known = _unique(p.id for p in pieces)
    before = job.tally.calls
    try:
        return await job.ask(cloud_only, system, user, extra, max_tokens, known)
    except RouteFailed as exc:
        return None, str(exc)
    finally:
        job.tally.map_calls += job.tally.calls - before


def _excerpt(pieces: Sequence[_Piece]) -> NoteSet:
    points = []
    for piece in pieces:
        flat = " ".join(piece.text.split())
        cut = flat[:EXCERPT_CHARS] + ("…" if len(flat) > EXCERPT_CHARS else "")
        points.append(NotePoint(text=f"(raw excerpt) {cut}"[:600], sources=[piece.id]))
    return NoteSet(points, [], 0.0)
