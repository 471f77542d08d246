"""Where an edit's old lines (context and removed lines) are in a file, at each level of
tolerance. Pure; every function returns every place it found, never picks one: deciding
(exactly one place, or a refusal) is :mod:`.land`'s.

1. exact, trailing whitespace ignored, all whitespace runs ignored: a window of the file
   whose lines equal the old lines under that level's key;
2. blank lines: an alignment that may skip blank lines on either side;
3. fuzzy context: an alignment that may also skip a few non-blank *context* lines, the
   model's (a line it invented) or the file's (a line it left out). Removed lines are
   never skipped: the lines an edit changes must all be found.

Line numbers play no part anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.pipeline.edits.text import KEYS, FileText, Op, is_marker, old_side

EXACT_LEVELS = ("exact", "trailing_whitespace", "whitespace")
#: alignment costs: a skipped blank line is cheap, a skipped line of text is not; one of
#: the model's lines costs a little more than one of the file's, so that of two readings
#: the one that matches more of what the model wrote wins
BLANK_COST = 1
LINE_COST = 1000
MODEL_LINE_COST = LINE_COST + 1
#: blank lines an alignment may skip in all
MAX_BLANK_SKIPS = 99
_INF = 1 << 40


@dataclass(frozen=True)
class Placement:
    level: str
    #: per old line (context or removed, in order): the file line it matched, or None
    align: tuple[int | None, ...]
    #: the file lines from the first matched to the last matched, half-open
    span: tuple[int, int]
    cost: int = 0


def exact_placements(text: FileText, ops: Sequence[Op]) -> tuple[str, list[Placement]] | None:
    """Windows matching the old lines at the strictest level that finds any."""
    old = old_side(ops)
    if not old:
        return None
    n = len(old)
    for level in EXACT_LEVELS:
        key = KEYS[level]
        want = [key(op.text) for op in old]
        have = text.keys(level)
        first = want[0]
        starts = [
            i for i in range(len(have) - n + 1) if have[i] == first and have[i : i + n] == want
        ]
        if starts:
            return level, [Placement(level, tuple(range(s, s + n)), (s, s + n)) for s in starts]
    return None


def allowed_skips(ops: Sequence[Op]) -> int:
    """Non-blank context lines the fuzzy level may skip: "a few", by the edit's size."""
    lines = sum(1 for op in old_side(ops) if op.text.strip())
    if lines <= 1:
        return 0
    if lines <= 5:
        return 1  # with two lines, both must still match: only a line between them goes
    return 2 if lines <= 10 else 3


def aligned_placements(text: FileText, ops: Sequence[Op], skips: int) -> list[Placement]:
    """Alignments costing at most ``skips`` non-blank lines (and some blank ones)."""
    old = old_side(ops)
    if not old:
        return []
    have = text.keys("whitespace")
    want = [_key(op) for op in old]
    nonblank = sum(1 for k in want if k)
    need = max(min(nonblank, 2), (nonblank + 1) // 2)
    max_cost = MODEL_LINE_COST * skips + MAX_BLANK_SKIPS
    found: list[Placement] = []
    level = "fuzzy_context" if skips else "blank_lines"
    for w0, w1 in _windows(have, old, want, skips):
        for align in _align(have, w0, w1, old, want, max_cost):
            matched = [t for t, k in zip(align[0], want, strict=True) if t is not None and k]
            if len(matched) < need:
                continue
            hits = [t for t in align[0] if t is not None]
            found.append(Placement(level, align[0], (hits[0], hits[-1] + 1), align[1]))
    return found


def _key(op: Op) -> str:
    return " ".join(op.text.split())


def _windows(have: list[str], old: list[Op], want: list[str], skips: int) -> list[tuple[int, int]]:
    """Stretches of the file any acceptable alignment lies in: around each occurrence of
    the rarest removed line (it must be matched), or, with no removed line, of the
    ``skips + 1`` rarest context lines (one of them must be)."""
    where: dict[str, list[int]] = {}
    for i, k in enumerate(have):
        if k:
            where.setdefault(k, []).append(i)
    removed = {k for k, op in zip(want, old, strict=True) if op.tag == "-" and k}
    if removed:
        if any(k not in where for k in removed):
            return []  # a removed line that is nowhere in the file
        anchors = [min(removed, key=lambda k: len(where[k]))]
    else:
        present = sorted({k for k in want if k and k in where}, key=lambda k: len(where[k]))
        anchors = present[: skips + 1]
    spots = sorted({i for k in anchors for i in where.get(k, [])})
    reach = len(old) + skips + 40
    spans: list[tuple[int, int]] = []
    for p in spots:
        lo, hi = max(0, p - reach), min(len(have), p + reach + 1)
        if spans and lo <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], hi))
        else:
            spans.append((lo, hi))
    return spans


def _align(
    have: list[str], w0: int, w1: int, old: list[Op], want: list[str], max_cost: int
) -> list[tuple[tuple[int | None, ...], int]]:
    """Every end of an alignment within ``have[w0:w1]`` costing at most ``max_cost``.

    A semi-global edit distance: the alignment starts anywhere; skipping a line of the
    file costs :data:`LINE_COST`, a context line of the edit :data:`MODEL_LINE_COST`
    (:data:`BLANK_COST` for a blank one); a removed line cannot be skipped, nor an
    elision marker (skipped, it would be read as a line the model made up). Ties prefer
    a match.
    """
    n, m = len(want), w1 - w0
    prev = [0] * (m + 1)
    backs: list[list[int]] = [[0] * (m + 1)]
    rows = [prev]
    for i in range(1, n + 1):
        op, key = old[i - 1], want[i - 1]
        # a marker ("# ... existing code ...") is matched or the reading is not literal
        fixed = op.tag == "-" or is_marker(op.text)
        skip_old = _INF if fixed else (MODEL_LINE_COST if key else BLANK_COST)
        cur = [0] * (m + 1)
        back = [1] * (m + 1)
        cur[0] = prev[0] + skip_old
        for j in range(1, m + 1):
            line = have[w0 + j - 1]
            best, how = _INF, 1
            if key == line:
                best, how = prev[j - 1], 0
            cost = prev[j] + skip_old
            if cost < best:
                best, how = cost, 1
            cost = cur[j - 1] + (LINE_COST if line else BLANK_COST)
            if cost < best:
                best, how = cost, 2
            cur[j] = best
            back[j] = how
        rows.append(cur)
        backs.append(back)
        prev = cur
        if min(cur) > max_cost:
            return []
    out: list[tuple[tuple[int | None, ...], int]] = []
    for j in range(1, m + 1):
        cost = rows[n][j]
        if cost > max_cost or backs[n][j] == 2:
            continue
        align: list[int | None] = [None] * n
        i, jj = n, j
        while i > 0:
            how = backs[i][jj]
            if how == 0:
                align[i - 1] = w0 + jj - 1
                i, jj = i - 1, jj - 1
            elif how == 1:
                i -= 1
            else:
                jj -= 1
        hits = [t for t in align if t is not None]
        # an alignment that does not end on its last match is a costlier copy of one that does
        if hits and hits[-1] == w0 + j - 1:
            out.append((tuple(align), cost))
    return out
