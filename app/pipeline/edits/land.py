"""Land one edit in one file: exactly one place, or a reason. Pure.

The levels are tried strictest first (:mod:`.locate`); the first level that finds the
edit anywhere decides. Readings of one place (overlapping alignments) keep the one that
skips the fewest lines; of places apart, one that needs a whole line fewer skipped than
every other is the place, else they are all candidates. One place (or several that give
the same file) lands; two or more refuse with the candidates; a place where the change
would be a guess (:mod:`.compose`) refuses with why. A looser level is never asked to
break a stricter level's tie. When the literal reading does not land: elided lines ("..."
or "# ... existing code ...") as gaps between pieces that must each be found, in order;
then line numbers copied from the numbered listing. Else: not found, with the nearest
text and its line numbers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from difflib import SequenceMatcher, get_close_matches
from typing import cast

from app.pipeline.edits.compose import ComposeError, compose_any_pairing
from app.pipeline.edits.locate import (
    LINE_COST,
    Placement,
    aligned_placements,
    allowed_skips,
    exact_placements,
)
from app.pipeline.edits.model import How, LineSpan, RefusalReason
from app.pipeline.edits.text import (
    FileText,
    Op,
    is_marker,
    old_side,
    squash,
    strip_line_numbers,
    strip_numbers_loosely,
)

#: lines of the nearest text shown back to the model at most
NEAREST_LINES = 12


@dataclass(frozen=True)
class Landed:
    text: FileText
    how: How
    at: LineSpan
    #: the file lines the change replaces, half-open (equal ends: an insertion point)
    changed: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Missed:
    reason: RefusalReason
    detail: str
    candidates: list[LineSpan] = field(default_factory=list)
    nearest: LineSpan | None = None


def land(text: FileText, ops: Sequence[Op]) -> Landed | Missed:
    if not old_side(ops):
        return Missed("not_found", "the edit has no lines to find its place by")
    found = _literal(text, ops)
    if isinstance(found, Landed):
        return found
    if any(is_marker(op.text) for op in old_side(ops)):
        # the literal reading (a marker line the model invented) did not land: read the
        # markers as elided lines
        elided = _elided(text, ops)
        if isinstance(elided, Landed) or (elided is not None and found is None):
            return elided
    if found is not None:
        return found
    unnumbered = _unnumbered(ops)
    if unnumbered is not None:
        found = _literal(text, unnumbered)
        if isinstance(found, Landed):
            return replace(found, how="line_numbers")
        if found is not None:
            return found
    return not_found(text, ops)


def _levels(text: FileText, ops: Sequence[Op]) -> Iterator[list[Placement]]:
    """The places found at the strictest level that finds any (nothing when none does)."""
    exact = exact_placements(text, ops)
    if exact is not None:
        yield exact[1]
        return
    blank = aligned_placements(text, ops, 0)
    if blank:
        yield blank
        return
    skips = allowed_skips(ops)
    if skips:
        fuzzy = aligned_placements(text, ops, skips)
        if fuzzy:
            yield fuzzy


def _first_level(text: FileText, ops: Sequence[Op]) -> list[Placement]:
    return next(_levels(text, ops), [])


def _literal(text: FileText, ops: Sequence[Op]) -> Landed | Missed | None:
    places = clearly_best(cheapest(_first_level(text, ops)))
    if not places:
        return None
    results: _Results = {}
    errors: list[ComposeError] = []
    for place in places:
        try:
            out = compose_any_pairing(text, ops, place)
        except ComposeError as exc:
            errors.append(exc)
            continue
        results.setdefault(_change(text, place.span, out), (place.span, out))
    return _decide(text, results, errors, [p.span for p in places], places[0].level)


def cheapest(places: list[Placement]) -> list[Placement]:
    """Readings of one place (alignments whose spans overlap) keep only the cheapest:
    the one that skips the fewest lines. Places apart from each other all stay."""
    out: list[Placement] = []
    cluster: list[Placement] = []
    reach = -1
    for place in sorted(places, key=lambda p: p.span):
        if cluster and place.span[0] >= reach:
            out += _least(cluster)
            cluster = []
        cluster.append(place)
        reach = max(reach, place.span[1]) if len(cluster) > 1 else place.span[1]
    return out + _least(cluster)


def clearly_best(places: list[Placement]) -> list[Placement]:
    """Among places apart, one that needs at least a whole line fewer skipped than every
    other is the place the edit means (as an exact match elsewhere would be); places
    closer than that are all candidates, and so ambiguous."""
    if len({p.span for p in places}) < 2:
        return places
    low = min(p.cost for p in places)
    best = [p for p in places if p.cost == low]
    if all(p.cost >= low + LINE_COST for p in places if p.cost != low):
        return best
    return places


def _least(cluster: list[Placement]) -> list[Placement]:
    if not cluster:
        return []
    low = min(p.cost for p in cluster)
    return [p for p in cluster if p.cost == low]


#: a change in its canonical form (:func:`_change`) → the first place that made it: its
#: span and the lines that replace the span there. The new file is only made for the one
#: that lands: one per candidate place would copy the whole file for each of them.
_Results = dict[tuple[int, int, tuple[str, ...]], tuple[tuple[int, int], list[str]]]


def _decide(
    text: FileText,
    results: _Results,
    errors: list[ComposeError],
    spans: list[tuple[int, int]],
    level: str,
) -> Landed | Missed:
    if len(results) == 1 and not errors:
        (c0, c1, _), ((start, end), out) = next(iter(results.items()))
        new = text.replaced(start, end, out)
        lo, hi = min(s for s, _ in spans), max(e for _, e in spans)
        return Landed(new, cast(How, level), LineSpan(start=lo + 1, end=hi), (c0, c1))
    places = sorted(set(spans))
    if len(places) == 1:
        where = LineSpan(start=places[0][0] + 1, end=places[0][1])
        if errors:
            return Missed(cast(RefusalReason, errors[0].reason), errors[0].detail)
        return Missed("ambiguous", f"it can be read in more than one way at {where}", [where])
    candidates = [LineSpan(start=s + 1, end=e) for s, e in places]
    return Missed(
        "ambiguous",
        f"it matches {len(candidates)} places: "
        + ", ".join(str(c) for c in candidates[:6])
        + ("" if len(candidates) <= 6 else f" and {len(candidates) - 6} more"),
        candidates=candidates,
    )


def _change(
    text: FileText, span: tuple[int, int], out: list[str]
) -> tuple[int, int, tuple[str, ...]]:
    """``out`` in place of ``span``, as a change in a canonical (smallest) form, so that
    two places that make the same file count as one."""
    start, end = span
    lo, hi, body = start, end, list(out)
    while body and lo < hi and body[0] == text.lines[lo]:
        body.pop(0)
        lo += 1
    while body and lo < hi and body[-1] == text.lines[hi - 1]:
        body.pop()
        hi -= 1
    return lo, hi, tuple(body)


# ── elided lines ─────────────────────────────────────────────────────────────────────────


def _elided(text: FileText, ops: Sequence[Op]) -> Landed | Missed | None:
    """Pieces between elision markers, each found at its own strictest level, in order,
    each the nearest after the one before. A marker kept as context keeps the lines it
    stands for; one the edit removes removes them."""
    pieces: list[list[Op]] = [[]]
    gaps: list[str] = []
    for op in ops:
        if op.tag != "+" and is_marker(op.text):
            pieces.append([])
            gaps.append(op.tag)
        else:
            pieces[-1].append(op)
    # a marker first or last, or with only blank lines beyond it, anchors nothing
    if len(pieces) > 1 and not any(op.tag != " " or op.text.strip() for op in pieces[0]):
        pieces.pop(0)
        gaps.pop(0)
    if len(pieces) > 1 and not any(op.tag != " " or op.text.strip() for op in pieces[-1]):
        pieces.pop()
        gaps.pop()
    if any(not any(op.text.strip() for op in old_side(p)) for p in pieces):
        return Missed(
            "bad_elision",
            "lines are added next to an elision marker with nothing to anchor them; put "
            '"# ... existing code ..." only between lines copied from the file',
        )
    found = [sorted(_first_level(text, p), key=lambda pl: pl.span) for p in pieces]
    if any(not f for f in found):
        return None
    chains: list[list[Placement]] = []
    for first in found[0]:
        chain = [first]
        for options in found[1:]:
            after = [pl for pl in options if pl.span[0] >= chain[-1].span[1]]
            if not after:
                break
            chain.append(after[0])
        if len(chain) == len(pieces):
            chains.append(chain)
    if not chains:
        return None
    results: _Results = {}
    errors: list[ComposeError] = []
    for chain in chains:
        try:
            out = _compose_chain(text, pieces, gaps, chain)
        except ComposeError as exc:
            errors.append(exc)
            continue
        span = (chain[0].span[0], chain[-1].span[1])
        results.setdefault(_change(text, span, out), (span, out))
    spans = [(c[0].span[0], c[-1].span[1]) for c in chains]
    return _decide(text, results, errors, spans, "elided")


def _compose_chain(
    text: FileText, pieces: list[list[Op]], gaps: list[str], chain: list[Placement]
) -> list[str]:
    out: list[str] = []
    for i, (piece, place) in enumerate(zip(pieces, chain, strict=True)):
        out += compose_any_pairing(text, piece, place)
        if i + 1 < len(chain) and gaps[i] == " ":
            out += text.lines[place.span[1] : chain[i + 1].span[0]]
    return out


# ── copied line numbers ──────────────────────────────────────────────────────────────────


def _unnumbered(ops: Sequence[Op]) -> list[Op] | None:
    old = old_side(ops)
    stripped = strip_line_numbers([op.text for op in old])
    if stripped is None:
        return None
    it = iter(stripped)
    added = iter(
        strip_numbers_loosely([op.text for op in ops if op.tag == "+"], [o.text for o in old])
    )
    out: list[Op] = []
    for op in ops:
        if op.tag == "+":
            out.append(Op("+", next(added)))
        else:
            out.append(Op(op.tag, next(it)))
    return out


# ── not found: the nearest text ──────────────────────────────────────────────────────────


def not_found(text: FileText, ops: Sequence[Op]) -> Missed:
    old = [op.text for op in old_side(ops)]
    keys = [squash(line) for line in old]
    have = text.keys("whitespace")
    present = set(have)
    absent = [line.strip() for line, k in zip(old, keys, strict=True) if k and k not in present]
    span = nearest(have, keys)
    detail = "it is not in the file"
    if span is not None:
        end = min(span.end, span.start + NEAREST_LINES - 1)
        shown = "\n".join(
            f"{i:4}| {text.lines[i - 1].rstrip(chr(13))}" for i in range(span.start, end + 1)
        )
        detail += f"; the nearest text is at {span}:\n{shown}"
    if absent:
        listed = "\n".join(f"    {line}" for line in absent[:3])
        detail += f"\nthese lines of it are nowhere in the file:\n{listed}"
    return Missed("not_found", detail, nearest=span)


def nearest(have: Sequence[str], keys: Sequence[str]) -> LineSpan | None:
    """The window of the file (as long as the edit's old lines) most like them: among
    the windows sharing the most lines, the most similar one; when no line is shared,
    the window around the line most like one of theirs. None when nothing is alike."""
    n = max(1, len(keys))
    want = Counter(k for k in keys if k)
    if not want or not have:
        return None
    scores = _shared(have, want, n)
    best = max(scores)
    if best > 0:
        starts = [i for i, s in enumerate(scores) if s == best][:50]
        target = "\n".join(keys)
        start = max(
            starts,
            key=lambda i: (SequenceMatcher(None, "\n".join(have[i : i + n]), target).ratio(), -i),
        )
        return LineSpan(start=start + 1, end=min(len(have), start + n))
    for offset, k in enumerate(keys):
        if not k:
            continue
        close = get_close_matches(k, list(dict.fromkeys(have)), n=1, cutoff=0.6)
        if close:
            at = max(0, have.index(close[0]) - offset)
            return LineSpan(start=at + 1, end=min(len(have), at + n))
        if offset >= 2:
            break
    return None


def _shared(have: Sequence[str], want: Counter[str], n: int) -> list[int]:
    """For each window start, how many of the wanted lines the window holds."""
    counts: Counter[str] = Counter()
    score = 0
    out = [0] * max(1, len(have) - n + 1)
    for i, k in enumerate(have):
        if k in want:
            counts[k] += 1
            if counts[k] <= want[k]:
                score += 1
        if i >= n:
            gone = have[i - n]
            if gone in want:
                if counts[gone] <= want[gone]:
                    score -= 1
                counts[gone] -= 1
        if i >= n - 1:
            out[i - n + 1] = score
    if len(have) < n:
        out[0] = score
    return out
