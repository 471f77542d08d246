"""What the Librarian works with: its limits, the notes a model fills (GR-012), and
the result a caller gets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from app.pipeline.schemas import Strict

ROLE = "librarian"
#: reduce rounds after the map step before the last resort (clipping)
MAX_REDUCE_ROUNDS = 3
#: share of a window a prompt may fill: room for the estimate's error (no tokenizer here)
WINDOW_SHARE = 0.9
#: a group never holds less than this many tokens of sources (tiny windows still progress)
MIN_CAPACITY = 128
#: characters of a source kept when its group's notes are unusable
EXCERPT_CHARS = 240
CLIP_MARKER = "[… clipped by the Librarian to fit {budget} tokens: kept {kept} of {total} {what} …]"

#: an ``(id, text)`` pair: ``id`` is what a reader cites (``path:start-end``, a section name)
Source = tuple[str, str]


# ── What the model answers (GR-012) ─────────────────────────────────────────────────────


class NotePoint(Strict):
    """One fact, decision or constraint, with the ids of the sources it comes from."""

    text: str = Field(min_length=1, max_length=600)
    sources: list[str] = Field(default_factory=list, max_length=12)


class LibrarianNotes(Strict):
    """The Librarian's notes on one group of sources (map) or on notes (reduce)."""

    points: list[NotePoint] = Field(default_factory=list, max_length=40)
    contradictions: list[str] = Field(default_factory=list, max_length=8)
    confidence: float = Field(ge=0, le=1)


# ── What the job carries between its steps ──────────────────────────────────────────────


@dataclass
class NoteSet:
    """Notes the job holds between steps: cleaned points (known source ids only), the
    contradictions seen, and the lowest confidence behind them."""

    points: list[NotePoint]
    contradictions: list[str]
    confidence: float

    @classmethod
    def merge(cls, parts: Sequence[NoteSet]) -> NoteSet:
        """The map groups' notes as one set, in order (the reduce step merges them)."""
        return cls(
            [p for n in parts for p in n.points],
            list(dict.fromkeys(c for n in parts for c in n.contradictions))[:8],
            min((n.confidence for n in parts), default=0.0),
        )


# ── What a caller gets ──────────────────────────────────────────────────────────────────


class Condensed(BaseModel):
    """What :func:`condense` returns; ``text`` is what the reader gets."""

    model_config = ConfigDict(frozen=True)

    text: str
    #: False: the sources fitted the budget and ``text`` is them, unchanged
    condensed: bool
    #: the model whose answer the final text comes from (None: no usable model answer)
    model: str | None
    #: every model whose answer was used, in order
    models: list[str] = Field(default_factory=list)
    #: a cloud model's answer is in the result
    escalated: bool = False
    #: model calls made (repairs included)
    calls: int = 0
    tokens_in: int
    tokens_out: int
    budget: int
    confidence: float | None = None
    points: list[NotePoint] = Field(default_factory=list)
    contradictions: list[str] = Field(default_factory=list)
    #: what happened, in words (denials, unusable replies, clipping)
    notes: list[str] = Field(default_factory=list)
    reason_codes: list[str] = Field(default_factory=list)
    groups: int = 0
    map_calls: int = 0
    reduce_rounds: int = 0
    clipped: bool = False
