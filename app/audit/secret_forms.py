"""A secret value found in the other forms it takes on its way back to us.

The masker found each key of the environment only whole, in its own case: a provider's
error that echoed it upper-cased, percent- or ``\\u``-escaped, in base64 (alone, or in an
``Authorization: Basic`` of ``user:key``), or cut by a line break went into skip lines,
``--json`` errors, the audit, test logs and the next cloud prompt as it came (an audit
found each). So each key-like value (:func:`key_like`: at least :data:`FORMS_MIN_LEN`
characters, letters and digits) is also
looked for in part, in each of its spellings: its characters in any case, each of them
percent-escaped, each ``\\u``-escaped, and its base64 at each of the three alignments
a value can have inside a longer encoded text (standard and URL-safe alphabets). A key
escaped only in part (a URL escapes its ``/`` and ``+``) is found by the runs left
between the escapes, when they are long enough.

The automaton looks for windows of :data:`FRAGMENT` of the value's characters, one every
:data:`STRIDE`: any run of :data:`FOUND_FROM` or more holds a whole window, and a window
found is grown, character by character, to the whole run the text shares with that
spelling. What the runs cover is masked, runs that touch made one. Any other value is
left to the masker's exact pattern, whole and in its own case: a short or word-like
password (``postgres``) in any case masked ordinary words (``PostgreSQL``).

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
    """A value as a text may spell it; ``folded``: compared with the text lowered;
    ``bounds``: where its pieces start and end (an escape is one piece: a mask never
    ends inside one), or None when every place is a bound (the characters as they are,
    base64)."""

    text: str
    folded: bool
    bounds: frozenset[int] | None = None


def key_like(value: str) -> bool:
    """A value looked for in part and in its other spellings: as long as a key, with
    letters and digits (a key's randomness). ``postgres_password`` or ``/run/secrets/x``
    in any case, in part, would mask the words people write (a review)."""
    return (
        len(value) >= FORMS_MIN_LEN
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
    )


def _starts(text: str, size: int, step: int) -> list[int]:
    """Where windows of ``size`` start, one at most ``step`` after the last: at each
    step, the first of the next places whose window has MIN_DISTINCT characters (a run
    of one character, ``0000``, in a window would match ordinary text; a window dropped
    left a gap a longer run escaped through, a review)."""
    last = len(text) - size
    out: list[int] = []
    for nominal in sorted({*range(0, last + 1, step), max(0, last)}):
        for i in range(nominal, min(nominal + step, last + 1)):
            if len(set(text[i : i + size])) >= MIN_DISTINCT:
                if not out or out[-1] != i:
                    out.append(i)
                break
    return out


def _spellings(value: str) -> list[tuple[Spelling, list[tuple[int, int]]]]:
    """Each spelling of ``value``, with its windows (where each starts and ends in the
    spelling): FRAGMENT of the value's characters, one at most STRIDE characters after
    the last (in base64, 16 characters every 4: 12 bytes every 3)."""
    starts = _starts(value, FRAGMENT, STRIDE)
    out: list[tuple[Spelling, list[tuple[int, int]]]] = []
    for escaped, piece in (
        (False, lambda c: c),
        (True, lambda c: "".join(f"%{b:02x}" for b in c.encode("utf-8", "surrogatepass"))),
        (True, lambda c: f"\\u{ord(c):04x}"),
    ):
        pieces = [piece(c) for c in value]
        offsets = [0]
        for p in pieces:
            offsets.append(offsets[-1] + len(p))
        windows = [(offsets[i], offsets[i + FRAGMENT]) for i in starts]
        bounds = frozenset(offsets) if escaped else None
        out.append((Spelling(ascii_lower("".join(pieces)), True, bounds), windows))
    raw = value.encode("utf-8", "surrogatepass")
    for pad, skip in ((0, 0), (1, 2), (2, 3)):
        n = len(raw) - (pad + len(raw)) % 3  # whole groups: no character of the next
        if n <= 0:
            continue
        encoded = base64.b64encode(b"\0" * pad + raw[:n]).decode()[skip:]
        for alphabet in (encoded, encoded.replace("+", "-").replace("/", "_")):
            size = FRAGMENT * 4 // 3
            kept = [(i, i + size) for i in _starts(alphabet, size, 4)]
            out.append((Spelling(alphabet, False), kept))
    return out


class SecretForms:
    """Finds the runs of the values (as above) in a text: :meth:`spans`."""

    def __init__(self, values: tuple[str, ...]) -> None:
        #: each needle (lowered) and where it stands: (spelling, offset) pairs
        where: dict[str, list[tuple[Spelling, int]]] = {}
        chars: set[str] = set()
        #: the longest spelling: no run of a value is longer
        self.reach = 0
        for value in values:
            if not key_like(value):
                continue  # (looked for whole and as it is, by the masker's pattern)
            for spelling, windows in _spellings(value):
                self.reach = max(self.reach, len(spelling.text))
                chars.update(spelling.text)
                if spelling.folded:
                    chars.update(spelling.text.upper())
                for start, end in windows:
                    needle = ascii_lower(spelling.text[start:end])
                    where.setdefault(needle, []).append((spelling, start))
        self.needles = tuple(where)
        #: every character a run of a value can hold (a stream holds back its text's
        #: end while it is made of them: the run may go on in the next piece)
        self.alphabet = "".join(sorted(chars))
        #: a run long enough to hold a window: a text without one holds no value's run
        self.long_run = (
            re.compile(f"[{re.escape(self.alphabet)}]{{{FRAGMENT},}}") if chars else None
        )
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
        self._find = (
            ahocorasick_rs.AhoCorasick(
                list(self.needles), implementation=ahocorasick_rs.Implementation.DFA
            ).find_matches_as_indexes
            if self.needles
            else None
        )

    def spans(self, text: str, *, join: bool = True) -> list[tuple[int, int]]:
        """Where runs of the values are in ``text``, those that touch or overlap joined
        (``join=False``: each as found, none longer than :attr:`reach`)."""
        if self._find is None:
            return []
        low = ascii_lower(text)
        try:
            matches = self._find(low, overlapping=True)
        except UnicodeEncodeError:  # a file's undecodable bytes (surrogateescape)
            matches = self._find(_SURROGATE.sub("\ufffd", low), overlapping=True)
        found: list[tuple[int, int]] = []
        # a run is grown once: each of its windows found later stands inside it (grown
        # again from each, a run of n characters cost n²/4 steps: 1 s at 4,000)
        grown: dict[tuple[int, int], tuple[int, int]] = {}
        for index, start, end in matches:
            for spelling, offset in self._where[index]:
                key = (id(spelling), start - offset)
                done = grown.get(key)
                if done is not None and done[0] <= start and end <= done[1]:
                    continue
                seen = low if spelling.folded else text
                span = _grown(seen, start, end, spelling, offset)
                if span is not None:
                    grown[key] = span
                    found.append(span)
        return join_spans(found) if join else sorted(found)


def _grown(
    seen: str, start: int, end: int, spelling: Spelling, offset: int
) -> tuple[int, int] | None:
    """The run of ``seen`` around ``[start, end)`` that ``spelling`` shares from
    ``offset`` on, grown both ways to whole pieces (never ending inside an escape: a
    mask there left ``\\u003[REDACTED]``, no JSON, a review); None when the window does
    not stand there."""
    text, size = spelling.text, end - start
    if seen[start:end] != text[offset : offset + size]:
        return None  # (a base64 window lowered alike but not the same)
    left, lo = start, offset
    while left > 0 and lo > 0 and seen[left - 1] == text[lo - 1]:
        left, lo = left - 1, lo - 1
    right, ro = end, offset + size
    while right < len(seen) and ro < len(text) and seen[right] == text[ro]:
        right, ro = right + 1, ro + 1
    bounds = spelling.bounds
    if bounds is not None:
        while lo not in bounds:  # (a window starts and ends on bounds: it stays whole)
            left, lo = left + 1, lo + 1
        while ro not in bounds:
            right, ro = right - 1, ro - 1
    return left, right


def join_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` sorted, those that touch or overlap made one."""
    if not spans:
        return []
    spans = sorted(spans)
    joined = [spans[0]]
    for start, end in spans[1:]:
        last_start, last_end = joined[-1]
        if start <= last_end:
            joined[-1] = (last_start, max(last_end, end))
        else:
            joined.append((start, end))
    return joined


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


@lru_cache(maxsize=8)
def secret_forms(values: tuple[str, ...]) -> SecretForms:
    """The forms of the environment's secret ``values`` (made again when they change)."""
    return SecretForms(values)
