"""What the job did and what it hands back: the tally every step adds to, then the
:class:`Condensed` result (clipped as the last resort) and its one ``condense`` audit line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from app.audit.types import AuditSink
from app.counted import counted
from app.pipeline.librarian.notes import ROLE, Condensed, NotePoint, NoteSet, Source
from app.pipeline.librarian.packing import (
    _clip,
    _point_line,
    _source_block,
    _unique,
    render_notes,
)
from app.router.types import Decision
from app.tokens import count_text


@dataclass
class Tally:
    """The evidence of one job: counts, the models whose answers were used, and what
    happened in words (``notes``) and codes (``codes``)."""

    calls: int = 0
    map_calls: int = 0
    groups: int = 0
    reduce_rounds: int = 0
    models: list[str] = field(default_factory=list)
    #: the model of the last usable answer
    model: str | None = None
    escalated: bool = False
    #: an escalation was asked for and not served: no second one on low confidence
    declined: bool = False
    notes: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)

    def used(self, model: str, escalated: bool) -> None:
        """A model's answer goes into the result."""
        self.model = model
        if model not in self.models:
            self.models.append(model)
        self.escalated = self.escalated or escalated

    def declined_escalation(self, decision: Decision, then: str = "condensing locally") -> None:
        self.declined = True
        self.codes.append("LIBRARIAN_ESCALATION_DECLINED")
        denied = [s.model for s in decision.skipped if s.reason == "denied"]
        why = f"denied ({', '.join(denied)})" if denied else "; ".join(decision.notes)
        self.notes.append(f"the escalation was not served: {why or 'not served'}; {then}")


async def conclude(
    tally: Tally,
    *,
    sink: AuditSink,
    session: str,
    run: str | None,
    sources: Sequence[Source],
    tokens_in: int,
    budget: int,
    result: NoteSet | None,
    local_window: int | None,
) -> Condensed:
    """The result of a job that called models: its notes as text, clipped to ``budget``
    when they still exceed it (the sources themselves when no model could condense),
    and the audit line that records it."""
    clipped = False
    points: list[NotePoint] = []
    contradictions: list[str] = []
    if result is not None:
        points, contradictions = result.points, result.contradictions
        text = render_notes(points, contradictions)
        if count_text(text) > budget:
            lines = [_point_line(p) for p in points]
            lines += [f"- contradiction: {c}" for c in contradictions]
            text, kept = _clip(lines, budget, "points")
            clipped = True
            tally.notes.append(f"clipped to {kept} of {len(lines)} points")
            points = points[:kept]
            contradictions = contradictions[: max(0, kept - len(result.points))]
    else:
        blocks = [_source_block(sid, text) for sid, text in sources]
        text, kept = _clip(blocks, budget, "sources")
        clipped = True
        tally.notes.append(f"clipped to {kept} of {len(blocks)} sources")
    if clipped:
        tally.codes.append("LIBRARIAN_CLIPPED")
    tokens_out = count_text(text)
    codes = _unique(tally.codes)
    condensed = Condensed(
        text=text,
        condensed=True,
        model=tally.model,
        models=tally.models,
        escalated=tally.escalated,
        calls=tally.calls,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        budget=budget,
        confidence=result.confidence if result is not None else None,
        points=points,
        contradictions=contradictions,
        notes=tally.notes,
        reason_codes=codes,
        groups=tally.groups,
        map_calls=tally.map_calls,
        reduce_rounds=tally.reduce_rounds,
        clipped=clipped,
    )
    how = f"{counted(tally.map_calls, 'map call')}, {counted(tally.reduce_rounds, 'reduce round')}"
    await sink.append(
        "condense",
        session=session,
        run=run,
        role=ROLE,
        to=tally.model,
        reason_codes=codes,
        values={
            "sources": len(sources),
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "budget": budget,
            "groups": tally.groups,
            "map_calls": tally.map_calls,
            "reduce_rounds": tally.reduce_rounds,
            "calls": tally.calls,
            "model": tally.model,
            "models": tally.models,
            "escalated": tally.escalated,
            "confidence": condensed.confidence,
            "local_window": local_window,
            "clipped": clipped,
        },
        detail=f"{counted(len(sources), 'source')}, ~{tokens_in} → ~{tokens_out} tokens "
        f"(budget {budget}): "
        + how
        + (f", by {', '.join(tally.models)}" if tally.models else "")
        + (" [escalated]" if tally.escalated else "")
        + (" [clipped]" if clipped else ""),
    )
    return condensed
