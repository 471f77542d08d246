"""A secret value found in the other forms it takes on its way back to us.

The masker found each key of the environment only whole, in its own case: a provider's
error that echoed it upper-cased, percent- or ``\\u``-escaped, in base64 (alone, or in an
``Authorization: Basic`` of ``user:key``), or cut by a line break went into skip lines,
``--json`` errors, the audit, test logs and the next cloud prompt as it came (an audit
found each). So each key-like value (at least :data:`FORMS_MIN_LEN` characters) is also
looked for in part, in each of its spellings: its characters in any case, each of them
percent-escaped, each ``\\u``-escaped, and its base64 at each of the three alignments
a value can have inside a longer encoded text (standard and URL-safe alphabets). A key
escaped only in part (a URL escapes its ``/`` and ``+``) is found by the runs left
between the escapes, when they are long enough.

The automaton looks for windows of :data:`FRAGMENT` of the value's characters, one every
:data:`STRIDE`: any run of :data:`FOUND_FROM` or more holds a whole window, and a window
found is grown, character by character, to the whole run the text shares with that
spelling. What the runs cover is masked, runs that touch made one. A value shorter than
:data:`FORMS_MIN_LEN` is left to the masker's exact pattern, whole and in its own case: a
short password (``postgres``) in any case masked ordinary words (``PostgreSQL``).

A window that could be ordinary text is not looked for: fewer than :data:`MIN_DISTINCT`
different characters (``000000000000`` in a made-up test key).
"""

from __future__ import annotations

import base64
import re
from functools import lru_cache
from typing import NamedTuple

import ahocorasick_rs

#: a window holds this many of a value's characters (a provider's own 401 shows 12)
FRAGMENT = 12
#: a window starts every STRIDE characters of the value (its base64: every 3 bytes)
STRIDE = 4
#: a run of a value this long always holds a whole window, and so is always found
FOUND_FROM = FRAGMENT + STRIDE - 1
#: the shortest value looked for in part and in its other spellings
FORMS_MIN_LEN = 16
#: a window with fewer different characters than this is not looked for
MIN_DISTINCT = 5

#: a lone surrogate: shown as one replacement character, for one (the places stay)
_SURROGATE = re.compile("[\ud800-\udfff]")


def ascii_lower(text: str) -> str:
    """``text`` with its ASCII letters lowered and nothing else, each character for one,
    as ``bytes.lower`` lowers the audit line's bytes for the quick look: ``str.lower``
    lowers other letters too (``Ā``), and can lengthen a text (``İ``: the places move)."""
    if text.isascii():
        return text.lower()
    return text.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")


class Spelling(NamedTuple):
    """A value as a text may spell it; ``folded``: compared with the text lowered."""

    text: str
    folded: bool


def _spellings(value: str) -> list[tuple[Spelling, list[tuple[int, int]]]]:
    """Each spelling of ``value``, with its windows (where each starts and ends in the
    spelling): FRAGMENT of the value's characters, one at most STRIDE characters after
    the last (in base64, 16 characters every 4: 12 bytes every 3)."""
    starts = sorted({*range(0, len(value) - FRAGMENT + 1, STRIDE), len(value) - FRAGMENT})
    starts = [i for i in starts if len(set(value[i : i + FRAGMENT])) >= MIN_DISTINCT]
    out: list[tuple[Spelling, list[tuple[int, int]]]] = []
    for piece in (
        lambda c: c,
        lambda c: "".join(f"%{b:02x}" for b in c.encode("utf-8", "surrogatepass")),
        lambda c: f"\\u{ord(c):04x}",
    ):
        pieces = [piece(c) for c in value]
        offsets = [0]
        for p in pieces:
            offsets.append(offsets[-1] + len(p))
        windows = [(offsets[i], offsets[i + FRAGMENT]) for i in starts]
        out.append((Spelling(ascii_lower("".join(pieces)), True), windows))
    raw = value.encode("utf-8", "surrogatepass")
    for pad, skip in ((0, 0), (1, 2), (2, 3)):
        n = len(raw) - (pad + len(raw)) % 3  # whole groups: no character of the next
        if n <= 0:
            continue
        encoded = base64.b64encode(b"\0" * pad + raw[:n]).decode()[skip:]
        for alphabet in (encoded, encoded.replace("+", "-").replace("/", "_")):
            size = FRAGMENT * 4 // 3
            at = sorted({*range(0, len(alphabet) - size + 1, 4), max(0, len(alphabet) - size)})
            kept = [(i, i + size) for i in at if len(set(alphabet[i : i + size])) >= MIN_DISTINCT]
            out.append((Spelling(alphabet, False), kept))
    return out


class SecretForms:
    """Finds the runs of the values (as above) in a text: :meth:`spans`."""

    def __init__(self, values: tuple[str, ...]) -> None:
        #: each needle (lowered) and where it stands: (spelling, offset) pairs
        where: dict[str, list[tuple[Spelling, int]]] = {}
        covered: set[str] = set()
        for value in values:
            if len(value) < FORMS_MIN_LEN:
                continue
            for spelling, windows in _spellings(value):
                for start, end in windows:
                    needle = ascii_lower(spelling.text[start:end])
                    where.setdefault(needle, []).append((spelling, start))
                    covered.add(value)
        self.needles = tuple(where)
        self._where = tuple(where[n] for n in self.needles)
        #: the windows looked for in any case (lowered), and those (base64) only as they
        #: are: what the audit's quick look looks for besides (app.audit.quick_redact)
        self.folded = tuple(
            n for n, w in zip(self.needles, self._where, strict=True) if any(s.folded for s, _ in w)
        )
        self.exact = tuple(
            sorted(
                {
                    sp.text[off : off + len(n)]
                    for n, w in zip(self.needles, self._where, strict=True)
                    for sp, off in w
                    if not sp.folded
                }
            )
        )
        #: the values no window stands for (short, or too few different characters):
        #: looked for only whole, in their own case, by the masker's pattern
        self.uncovered = tuple(v for v in values if v not in covered)
        self._find = (
            ahocorasick_rs.AhoCorasick(
                list(self.needles), implementation=ahocorasick_rs.Implementation.DFA
            ).find_matches_as_indexes
            if self.needles
            else None
        )

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where runs of the values are in ``text``, those that touch or overlap joined."""
        if self._find is None:
            return []
        low = ascii_lower(text)
        try:
            matches = self._find(low, overlapping=True)
        except UnicodeEncodeError:  # a file's undecodable bytes (surrogateescape)
            matches = self._find(_SURROGATE.sub("\ufffd", low), overlapping=True)
        found: list[tuple[int, int]] = []
        for index, start, end in matches:
            for spelling, offset in self._where[index]:
                seen = low if spelling.folded else text
                span = _grown(seen, start, end, spelling.text, offset)
                if span is not None:
                    found.append(span)
        if not found:
            return []
        found.sort()
        joined = [found[0]]
        for start, end in found[1:]:
            last_start, last_end = joined[-1]
            if start <= last_end:
                joined[-1] = (last_start, max(last_end, end))
            else:
                joined.append((start, end))
        return joined


def _grown(seen: str, start: int, end: int, spelling: str, offset: int) -> tuple[int, int] | None:
    """The run of ``seen`` around ``[start, end)`` that ``spelling`` shares from
    ``offset`` on, grown both ways; None when the window does not stand there."""
    size = end - start
    if seen[start:end] != spelling[offset : offset + size]:
        return None  # (a base64 window lowered alike but not the same)
    left, o = start, offset
    while left > 0 and o > 0 and seen[left - 1] == spelling[o - 1]:
        left, o = left - 1, o - 1
    right, o = end, offset + size
    while right < len(seen) and o < len(spelling) and seen[right] == spelling[o]:
        right, o = right + 1, o + 1
    return left, right


def mask_spans(text: str, spans: list[tuple[int, int]], mark: str) -> str:
    """``text`` with each of ``spans`` replaced by ``mark`` (and as many line breaks as
    it held, so that the text keeps its lines)."""
    if not spans:
        return text
    pieces, at = [], 0
    for start, end in spans:
        pieces += [text[at:start], mark + "\n" * text.count("\n", start, end)]
        at = end
    pieces.append(text[at:])
    return "".join(pieces)


@lru_cache(maxsize=4)
def secret_forms(values: tuple[str, ...]) -> SecretForms:
    """The forms of the environment's secret ``values`` (made again when they change)."""
    return SecretForms(values)
