"""Tier2 citation check (GR-008): every claim cites the brief, every quote is real.

A synthesis over a brief is a list of claims. Each claim cites one or more source ids
from the brief (chunk ids, or ``memory:N`` for the N-th memory, 1-based) and may quote
a span. The validator rejects:

- a claim that cites nothing;
- a citation of an id that is not in the brief (a hallucinated citation);
- a quote that is empty, or not found verbatim in any of the sources the claim cites
  (whitespace runs count as one space on both sides).

It also checks the ids of the contradictions a synthesis reports, which feed the
librarian's ``contradictions_detected`` trigger. Pure: no I/O, no model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.stage0.brief import Brief

QUOTE_SHOWN = 60


class Claim(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str = ""
    cites: list[str] = Field(default_factory=list)
    quote: str | None = None


class Contradiction(BaseModel):
    """Two sources of the brief that the synthesis says disagree."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    a: str
    b: str
    note: str = ""


class Synthesis(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    claims: list[Claim]
    contradictions: list[Contradiction] = Field(default_factory=list)


class CitationReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    ok: bool
    problems: list[str]


SynthesisInput = Synthesis | str | Sequence[Claim | Mapping[str, Any]]


def sources(brief: Brief) -> dict[str, str]:
    """Every id a claim may cite, with its text."""
    out = {c.id: c.text for c in brief.chunks}
    for i, memory in enumerate(brief.memories, start=1):
        out[f"memory:{i}"] = memory
    return out


def _norm(text: str) -> str:
    return " ".join(text.split())


def _short(text: str) -> str:
    text = _norm(text)
    return text if len(text) <= QUOTE_SHOWN else text[: QUOTE_SHOWN - 1] + "…"


def parse_synthesis(value: SynthesisInput) -> Synthesis:
    """A synthesis from a model, JSON text, or a list of claims (ValueError if none)."""
    if isinstance(value, Synthesis):
        return value
    data: Any = value
    if isinstance(value, str):
        try:
            data = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        data = {"claims": [c.model_dump() if isinstance(c, Claim) else c for c in data]}
    try:
        return Synthesis.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "synthesis"
        raise ValueError(f"does not match the schema: {where}: {first['msg']}") from None


def validate_synthesis(text_or_claims: SynthesisInput, brief: Brief) -> CitationReport:
    try:
        synthesis = parse_synthesis(text_or_claims)
    except ValueError as exc:
        return CitationReport(ok=False, problems=[f"synthesis: {exc}"])
    known = sources(brief)
    problems: list[str] = []
    if not synthesis.claims:
        problems.append("synthesis: no claims")
    for n, claim in enumerate(synthesis.claims, start=1):
        if not claim.cites:
            problems.append(f"claim {n}: cites nothing")
            continue
        unknown = [c for c in claim.cites if c not in known]
        for cid in unknown:
            problems.append(f"claim {n}: cites {cid!r}, which is not in the brief")
        if claim.quote is None:
            continue
        quote = _norm(claim.quote)
        if not quote:
            problems.append(f"claim {n}: empty quote")
            continue
        cited = [c for c in claim.cites if c in known]
        if cited and not any(quote in _norm(known[c]) for c in cited):
            problems.append(
                f"claim {n}: quote {_short(claim.quote)!r} is not found verbatim in "
                + ", ".join(cited)
            )
    for n, pair in enumerate(synthesis.contradictions, start=1):
        for cid in (pair.a, pair.b):
            if cid not in known:
                problems.append(f"contradiction {n}: {cid!r} is not in the brief")
        if pair.a == pair.b:
            problems.append(f"contradiction {n}: a source cannot contradict itself")
    return CitationReport(ok=not problems, problems=problems)


def contradictions_detected(text_or_claims: SynthesisInput, brief: Brief) -> bool:
    """True when a synthesis that passes validation reports at least one contradiction."""
    if not validate_synthesis(text_or_claims, brief).ok:
        return False
    return bool(parse_synthesis(text_or_claims).contradictions)
