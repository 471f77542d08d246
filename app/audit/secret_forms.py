"""A secret value found in the other forms it takes on its way back to us.

The masker found each key of the environment only whole, in its own case: a provider's
error that echoed it upper-cased, percent- or ``\\u``-escaped, in base64 (alone, or in an
``Authorization: Basic`` of ``user:key``), or cut by a line break went into skip lines,
``--json`` errors, the audit, test logs and the next cloud prompt as it came (an audit
found each). So each value is also looked for in part: any run of :data:`FRAGMENT` of its
characters, in any case, percent- or ``\\u``-escaped, and any run of its base64 (at each
of the three alignments a value can have inside a longer encoded text, standard or
URL-safe alphabet) that encodes as many bytes. What such a run covers is masked, runs
that touch made one.

A run of a value's characters that could be ordinary text is left out: fewer than
:data:`MIN_DISTINCT` different characters (``000000000000`` in a made-up test key).
"""

from __future__ import annotations

import base64
import re
from functools import lru_cache

import ahocorasick_rs

#: how many characters of a value a run must hold to be masked: fewer say too little of
#: a key to matter (a provider's own 401 shows 12), and would match ordinary text
FRAGMENT = 12
#: a run with fewer different characters than this is not looked for
MIN_DISTINCT = 5
#: base64 characters that encode FRAGMENT bytes
_B64_FRAGMENT = FRAGMENT * 4 // 3

#: a lone surrogate: shown as one replacement character, for one (the places stay)
_SURROGATE = re.compile("[\ud800-\udfff]")


def ascii_lower(text: str) -> str:
    """``text`` with its ASCII letters lowered and nothing else, each character for one,
    as ``bytes.lower`` lowers the audit line's bytes for the quick look: ``str.lower``
    lowers other letters too (``Ā``), and can lengthen a text (``İ``: the places move)."""
    if text.isascii():
        return text.lower()
    return text.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")


def _windows(text: str, size: int) -> list[str]:
    if len(text) <= size:
        return [text]
    return [text[i : i + size] for i in range(len(text) - size + 1)]


def _base64_forms(value: bytes) -> list[str]:
    """The base64 of ``value`` at each alignment, only the characters that depend on its
    bytes alone (none of a neighbour's), standard and URL-safe."""
    forms = []
    for pad, skip in ((0, 0), (1, 2), (2, 3)):
        n = len(value) - (pad + len(value)) % 3  # whole groups: no character of the next
        if n <= 0:
            continue
        encoded = base64.b64encode(b"\0" * pad + value[:n]).decode()[skip:]
        forms += [encoded, encoded.replace("+", "-").replace("/", "_")]
    return forms


class SecretForms:
    """Finds the runs of the values (as above) in a text: :meth:`spans`. A value found
    whole is found as its runs, joined: one span."""

    def __init__(self, values: tuple[str, ...]) -> None:
        folded: set[str] = set()  # looked for in any case
        exact: set[str] = set()  # base64: its case is its content
        covered: set[str] = set()
        for value in values:
            for run in _windows(value, FRAGMENT):
                if len(set(run)) < MIN_DISTINCT:
                    continue
                covered.add(value)
                folded.add(ascii_lower(run))
                folded.add("".join(f"%{b:02x}" for b in run.encode("utf-8", "surrogatepass")))
                # (the run's own characters: an escape's code names the case)
                folded.add("".join(f"\\u{ord(c):04x}" for c in run))
            for form in _base64_forms(value.encode("utf-8", "surrogatepass")):
                runs = _windows(form, _B64_FRAGMENT)
                exact.update(r for r in runs if len(set(r)) >= MIN_DISTINCT)
        self.folded = tuple(sorted(folded))
        #: the values no run stands for (too few different characters), longest first:
        #: looked for only whole, in their own case
        self.uncovered = tuple(v for v in values if v not in covered)
        #: lowered base64 runs (after the folded ones) and the runs each stands for
        by_lowered: dict[str, set[str]] = {}
        for run in exact:
            by_lowered.setdefault(ascii_lower(run), set()).add(run)
        lowered = [low for low in sorted(by_lowered) if low not in folded]
        self.exact = tuple(frozenset(by_lowered[low]) for low in lowered)
        self.needles = (*self.folded, *lowered)
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
        n_folded, exact = len(self.folded), self.exact
        found: list[tuple[int, int]] = []
        low = ascii_lower(text)
        try:
            matches = self._find(low, overlapping=True)
        except UnicodeEncodeError:  # a file's undecodable bytes (surrogateescape)
            matches = self._find(_SURROGATE.sub("\ufffd", low), overlapping=True)
        for index, start, end in matches:
            if index < n_folded or text[start:end] in exact[index - n_folded]:
                found.append((start, end))
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
