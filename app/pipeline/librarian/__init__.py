"""The Librarian: condense long context to a token budget, keeping what it cites.

``await condense(router, task, sources, budget)`` takes ordered ``(id, text)`` sources
(brief sections, Stage0 chunks named ``path:start-end``) and returns a text that fits
``budget`` tokens:

* everything fits already → the sources, unchanged, and no model call;
* a librarian trigger fires (§3: ``context_estimate > 100k``, a full sweep,
  contradictions, tool-heavy) → the router escalates to Kimi, with the human's approval,
  within the budget caps and never under local_only (the router decides, asks and
  audits): Kimi's window takes the whole job in one call (or in a few big groups);
* otherwise, or when that escalation is denied or unavailable → locally: MAP packs the
  sources, in order, into groups that fit the local model's window and asks for notes
  on each; REDUCE merges the notes, again while they exceed the budget (bounded); a last
  resort clips with an explicit marker;
* a local synthesis whose confidence is below the policy's threshold makes one more
  request with ``local_synth_confidence`` so the router may escalate (approval again);
  denied or unavailable, the local result stands.

Every note point keeps the ids of the sources it comes from, so a reader can cite them.
One ``condense`` audit line records what happened (the router audits every call itself).
Grouping is deterministic: the same sources and budget give the same groups.
"""

from __future__ import annotations

from app.pipeline.librarian.job import condense
from app.pipeline.librarian.notes import (
    MAX_REDUCE_ROUNDS,
    ROLE,
    Condensed,
    LibrarianNotes,
    NotePoint,
    Source,
)
from app.pipeline.librarian.packing import pack, render_notes, render_sources
from app.pipeline.librarian.prompts import MAP_SYSTEM, REDUCE_SYSTEM

__all__ = [
    "MAP_SYSTEM",
    "MAX_REDUCE_ROUNDS",
    "REDUCE_SYSTEM",
    "ROLE",
    "Condensed",
    "LibrarianNotes",
    "NotePoint",
    "Source",
    "condense",
    "pack",
    "render_notes",
    "render_sources",
]
