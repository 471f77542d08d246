"""The new text of a located edit: context lines come from the file itself (so drift in
the model's copy never reaches the file), removed lines go, and added lines are
re-indented to the block they land in. Pure.

Composition refuses rather than guess: added lines between two context lines that are
not next to each other in the file (the model left out a line there: before it or after
it?), or a file line between two removed lines that the edit does not mention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from itertools import pairwise

from app.pipeline.edits.locate import Placement
from app.pipeline.edits.text import FileText, LineStats, Op, leading, squash, strip_cr

TAB = 4


class ComposeError(Exception):
    """A located edit that cannot be written without guessing."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class _Fit:
    tab: int
    scale: float
    offset: float


class Reindent:
    """Maps the model's indentation to the file's, learnt from the lines it matched (and
    from the file's :class:`~.text.LineStats`, counted once per file, not per place)."""

    def __init__(self, pairs: Sequence[tuple[str, str]], file: LineStats) -> None:
        pairs = [(a, strip_cr(t)) for a, t in pairs if a.strip() and t.strip()]
        self.identity = all(leading(a) == leading(t) for a, t in pairs)
        table: dict[str, str] = {}
        clash: set[str] = set()
        for a, t in pairs:
            wa, wt = leading(a), leading(t)
            if table.get(wa, wt) != wt:
                clash.add(wa)
            table[wa] = wt
        self.table = {k: v for k, v in table.items() if k not in clash}
        self.fit = _fit([(leading(a), leading(t)) for a, t in pairs])
        self.tabs = _uses_tabs([leading(t) for _, t in pairs], file)
        self.style = _style(file)

    def _house_style(self, line: str) -> str:
        """A line whose indentation mixes in the other character than the file's own
        (tabs in a file indented with spaces, or spaces in one indented with tabs)."""
        ws = leading(line)
        if self.style == " " and "\t" in ws:
            return " " * len(ws.expandtabs(TAB)) + line[len(ws) :]
        if self.style == "\t" and " " * TAB in ws:
            w = len(ws.expandtabs(TAB))
            return "\t" * (w // TAB) + " " * (w % TAB) + line[len(ws) :]
        return line

    def __call__(self, line: str) -> str:
        if self.identity:
            return self._house_style(line)
        if not line:
            return line
        ws, rest = leading(line), line.lstrip(" \t")
        if ws in self.table:
            return self.table[ws] + rest
        if self.fit is None and not rest:
            return line  # whitespace only, in a width nothing maps: left as written
        if self.fit is None:
            raise ComposeError(
                "reindent", "the added lines' indentation does not follow the file's"
            )
        width = len(ws.expandtabs(self.fit.tab)) * self.fit.scale + self.fit.offset
        w = round(width)
        if w < 0 or abs(width - w) > 1e-9:
            raise ComposeError(
                "reindent", "the added lines' indentation does not follow the file's"
            )
        return ("\t" * (w // TAB) + " " * (w % TAB) if self.tabs else " " * w) + rest


def _fit(pairs: list[tuple[str, str]]) -> _Fit | None:
    """file width = scale × model width + offset, for every matched line."""
    if not pairs:
        return _Fit(TAB, 1, 0)
    for tab in (TAB, 8):
        points = sorted({(len(a.expandtabs(tab)), len(t.expandtabs(TAB))) for a, t in pairs})
        (a0, t0), (a1, t1) = points[0], points[-1]
        scale = 1.0 if a1 == a0 else (t1 - t0) / (a1 - a0)
        if scale <= 0:
            continue
        offset = t0 - scale * a0
        if all(abs(scale * a + offset - t) < 1e-9 for a, t in points):
            return _Fit(tab, scale, offset)
    return None


def _uses_tabs(matched: Sequence[str], file: LineStats) -> bool:
    if any(ws for ws in matched):
        return any("\t" in ws for ws in matched)
    return file.tabs > file.spaces


def _style(file: LineStats) -> str | None:
    """The file's indentation character, when nine in ten indented lines agree."""
    tabs, spaces = file.text_tabs, file.text_spaces
    if tabs + spaces < 3:
        return None
    if spaces >= 9 * tabs:
        return " "
    return "\t" if tabs >= 9 * spaces else None


def compose(text: FileText, ops: Sequence[Op], place: Placement) -> list[str]:
    """The file's lines ``place.span`` once the edit is made; :class:`ComposeError`
    where that would be a guess."""
    where: dict[int, int] = {}
    i = 0
    for k, op in enumerate(ops):
        if op.tag != "+":
            t = place.align[i]
            i += 1
            if t is not None:
                where[k] = t
    fix = Reindent([(ops[k].text, text.lines[t]) for k, t in where.items()], text.stats)
    eol = "\r" if text.crlf else ""
    inserts: dict[int, list[str]] = {}
    removed: set[int] = set()
    for start, end in _regions(ops):
        at = _region_at(ops, where, start, end)
        removed.update(where[k] for k in range(start, end) if ops[k].tag == "-")
        added = [fix(ops[k].text) + eol for k in range(start, end) if ops[k].tag == "+"]
        inserts.setdefault(at, []).extend(added)
    t0, t1 = place.span
    out: list[str] = []
    for t in range(t0, t1):
        out += inserts.get(t, [])
        if t not in removed:
            out.append(text.lines[t])
    out += inserts.get(t1, [])
    at_end = t1 == len(text.lines) and not text.final_newline and out and eol
    if at_end and out[-1] != text.lines[-1] and out[-1].endswith(eol):
        out[-1] = out[-1][: -len(eol)]  # the file still ends without a line break
    return out


def _regions(ops: Sequence[Op]) -> list[tuple[int, int]]:
    """The changes: maximal runs of removed and added lines, as op index ranges."""
    out: list[tuple[int, int]] = []
    k = 0
    while k < len(ops):
        if ops[k].tag == " ":
            k += 1
            continue
        end = k
        while end < len(ops) and ops[end].tag != " ":
            end += 1
        out.append((k, end))
        k = end
    return out


@dataclass(frozen=True)
class _Side:
    """What lies beside a change, one way, in the edit: the file line of the nearest
    line the alignment matched (None: none), and the model's unmatched lines before it."""

    at: int | None
    unmatched: int
    blank: bool


def _side(ops: Sequence[Op], where: dict[int, int], k: int, step: int) -> _Side:
    unmatched, blank = 0, False
    while 0 <= k < len(ops) and k not in where:
        if ops[k].tag != "+":
            unmatched += 1
            blank = blank or not ops[k].text.strip()
        k += step
    return _Side(where.get(k), unmatched, blank)


def _settled(side: _Side, edge: int, step: int) -> bool:
    """Nothing left out between a change's edge (a file index) and that side: the lines
    in between, if any, are exactly the model's unmatched lines there (its own mangled
    copies, one for one), and none of those is a blank line out of place."""
    if side.blank:
        return False
    if side.at is None:
        return side.unmatched == 0
    between = (side.at - edge) * step - 1
    return between in (0, side.unmatched)


def _region_at(ops: Sequence[Op], where: dict[int, int], start: int, end: int) -> int:
    """The file index a change's added lines go before.

    A change whose removed lines are found lands where they were; if something was left
    out beside it, that is only safe when the change only removes lines, none of which
    the edit writes again elsewhere (a moved line may take the left-out one with it), or
    rewrites them one for one, each added line an edit of its removed one
    (:func:`_pinned`); any other replacement may be an insertion on the other side of the
    left-out line, paired with a removal. A pure insertion lands between the file lines
    its neighbours matched, which must be next to each other (or apart by exactly the
    model's own unmatched lines).
    """
    before, after = _side(ops, where, start - 1, -1), _side(ops, where, end, +1)
    gone = [where[k] for k in range(start, end) if ops[k].tag == "-"]
    added = sum(1 for k in range(start, end) if ops[k].tag == "+")
    for a, b in pairwise(gone):
        if b != a + 1:
            raise ComposeError(
                "ambiguous",
                f"lines {a + 2}-{b} sit between lines the edit removes ({a + 1} and {b + 1}) "
                "but are not in it",
            )
    if gone:
        first, last = _settled(before, gone[0], -1), _settled(after, gone[-1], +1)
        # a removed line written again elsewhere is a move: a line left out beside it may
        # have moved with it
        new = {op.text.strip() for op in ops if op.tag == "+"}
        moved = any(
            ops[k].text.strip() in new
            for k in range(start, end)
            if ops[k].tag == "-" and ops[k].text.strip()
        )
        pinned = not moved and _pinned(ops, start, end)
        if not (first and last) and (added or moved) and not pinned:
            raise ComposeError(
                "ambiguous",
                f"a line next to the change at line {gone[0] + 1} is missing from the edit, so "
                "where its new lines go is a guess",
            )
        return gone[0]
    between = after.at - before.at - 1 if before.at is not None and after.at is not None else None
    if not (before.blank or after.blank):
        # right beside a matched line, with the other side's unmatched lines accounting for
        # every file line up to its match (invented ones: none; mangled copies: one each)
        if before.at is not None and not before.unmatched and between in (None, 0, after.unmatched):
            return before.at + 1
        if after.at is not None and not after.unmatched and between in (None, 0, before.unmatched):
            return after.at
        if before.at is not None and between in (0, before.unmatched + after.unmatched):
            return before.at + 1 + (before.unmatched if between else 0)
    raise ComposeError(
        "ambiguous",
        "the lines beside the added lines are not next to each other in the file (a line "
        "there is missing from the edit, or is not the file's), so where they go is a guess",
    )


#: how alike (difflib's ratio, whitespace squashed) a removed line and the added line
#: written for it must be to count as that line, edited
ALIKE = 0.6


def _pinned(ops: Sequence[Op], start: int, end: int) -> bool:
    """The change rewrites its removed lines one for one: as many added lines as removed
    ones, each added line an edit of the removed line in its position (alike, neither
    blank). Each then takes its removed line's place, even beside a left-out line.

    Any other reading has the model move edited lines across the line it left out,
    which the edit's text says nothing of. More or fewer added lines than removed ones
    (a line added, split or joined) could go on either side of the left-out line: a
    guess (one such change was placed wrongly on the bench: an attribute moved out of
    ``__init__`` into the class, its first new line alike to the removed one).
    """
    gone = [ops[k].text for k in range(start, end) if ops[k].tag == "-"]
    new = [ops[k].text for k in range(start, end) if ops[k].tag == "+"]
    if not gone or len(gone) != len(new):
        return False
    return all(_alike(a, b) for a, b in zip(gone, new, strict=True))


def _alike(a: str, b: str) -> bool:
    x, y = squash(a), squash(b)
    return bool(x and y) and SequenceMatcher(None, x, y, autojunk=False).ratio() >= ALIKE


def compose_any_pairing(text: FileText, ops: Sequence[Op], place: Placement) -> list[str]:
    """:func:`compose`, checked against every other way the edit's lines could pair up.

    An insertion next to a context line equal to its own first (or last) line can slide
    past it: the same edit, read another way. With every line of the place found, every
    reading gives the same text; with a line left out there, they may not, and then the
    place of the insertion is a guess.
    """
    out = compose(text, ops, place)
    for variant in _slides(ops):
        if compose(text, variant, place) != out:
            raise ComposeError(
                "ambiguous",
                "a line the edit leaves out sits next to added lines that repeat the line "
                "beside them, so where they go is a guess",
            )
    return out


def _slides(ops: Sequence[Op]) -> list[list[Op]]:
    """Each pure insertion slid past equal context lines, one step at a time; and each
    change's added lines re-paired with an equal context line beside it."""
    out: list[list[Op]] = []
    for start, end in _regions(ops):
        if any(ops[k].tag == "-" for k in range(start, end)):
            out += _repairings(ops, start, end)
            continue
        cur, lo, hi = list(ops), start, end
        while lo > 0 and cur[lo - 1].tag == " " and _same(cur[hi - 1], cur[lo - 1]):
            cur = [
                *cur[: lo - 1],
                Op("+", cur[hi - 1].text),
                *cur[lo : hi - 1],
                cur[lo - 1],
                *cur[hi:],
            ]
            lo, hi = lo - 1, hi - 1
            out.append(cur)
        cur, lo, hi = list(ops), start, end
        while hi < len(cur) and cur[hi].tag == " " and _same(cur[lo], cur[hi]):
            cur = [*cur[:lo], cur[hi], *cur[lo + 1 : hi], Op("+", cur[lo].text), *cur[hi + 1 :]]
            lo, hi = lo + 1, hi + 1
            out.append(cur)
    return out


def _repairings(ops: Sequence[Op], start: int, end: int) -> list[list[Op]]:
    """A change that removes lines, read with one of its added lines as the context line
    beside it (and that context line as added): the same SEARCH and REPLACE, paired
    another way. A blank line added after the removed ones next to a blank context line
    is the usual case: the added lines after it may belong on the other side of it."""
    out: list[list[Op]] = []
    removed = [k for k in range(start, end) if ops[k].tag == "-"]
    if end < len(ops) and ops[end].tag == " ":
        for p in range(removed[-1] + 1, end):  # the removed lines stay before the context
            if ops[p].tag == "+" and p < end - 1 and _same(ops[p], ops[end]):
                out.append(
                    [
                        *ops[:p],
                        Op(" ", ops[end].text),
                        *ops[p + 1 : end],
                        Op("+", ops[p].text),
                        *ops[end + 1 :],
                    ]
                )
    if start > 0 and ops[start - 1].tag == " ":
        for p in range(start, removed[0]):
            if ops[p].tag == "+" and p > start and _same(ops[p], ops[start - 1]):
                out.append(
                    [
                        *ops[: start - 1],
                        Op("+", ops[p].text),
                        *ops[start:p],
                        Op(" ", ops[start - 1].text),
                        *ops[p + 1 :],
                    ]
                )
    return out


def _same(a: Op, b: Op) -> bool:
    return a.text.rstrip() == b.text.rstrip()
