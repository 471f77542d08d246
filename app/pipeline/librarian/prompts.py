"""What the Librarian asks a model (map, reduce, whole)."""

from __future__ import annotations

from collections.abc import Sequence

from app.pipeline.librarian.notes import (
    NotePoint,
)
from app.pipeline.librarian.packing import (
    _Piece,
    render_notes,
)

MAP_SYSTEM = (
    "You are the Librarian. You condense long context for another model that has a small "
    "window. Read the sources and write short notes that keep what the task needs: facts, "
    "names, signatures, decisions, constraints, numbers. Each point says one thing and lists "
    "in `sources` the exact `id` of every source it comes from (copy the id attribute, never "
    "invent one). Put statements that contradict each other in `contradictions`. Set "
    "`confidence` (0 to 1) to how well the notes cover what the task needs from these "
    "sources. Reply with JSON only, matching the schema."
)
REDUCE_SYSTEM = (
    "You are the Librarian. Merge the notes below into one shorter set for the task: drop "
    "repeats and what the task does not need, merge points that say the same thing, and "
    "keep every point's source ids in brackets as its `sources` (never invent one). Set "
    "`confidence` (0 to 1) to how well the merged notes serve the task. Reply with JSON "
    "only, matching the schema."
)
WHOLE_SYSTEM = MAP_SYSTEM + " The sources are the whole context: be complete but brief."


def map_prompt(task: str, pieces: Sequence[_Piece], target: int, whole: bool) -> tuple[str, str]:
    """(system, user) of a map request; ``whole``: the pieces are the entire context."""
    return (WHOLE_SYSTEM if whole else MAP_SYSTEM), _map_user(task, pieces, target)


def _map_user(task: str, pieces: Sequence[_Piece], target: int) -> str:
    body = "\n".join(p.render() for p in pieces)
    return f"Task: {task}\n\nWrite at most about {target} tokens of notes.\n\nSources:\n{body}"


def _reduce_user(task: str, points: Sequence[NotePoint], target: int) -> str:
    return (
        f"Task: {task}\n\nMerge into at most about {target} tokens of notes.\n\n"
        f"Notes:\n{render_notes(points)}"
    )
