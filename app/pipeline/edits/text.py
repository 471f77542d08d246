"""The applier's raw material: a file as lines, an edit as operations, and the keys lines
are compared by at each level of tolerance. Pure functions only.

A file keeps every byte: lines are split on ``\\n`` alone (a ``\\r`` stays at the end of
its line, so CRLF files and stray form feeds come back unchanged), and whether the text
ended with a newline is remembered.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from functools import cached_property
from typing import Literal

Tag = Literal[" ", "-", "+"]


@dataclass(frozen=True)
class Op:
    """One line of an edit: context (``" "``), removed (``"-"``) or added (``"+"``)."""

    tag: Tag
    text: str


@dataclass(frozen=True)
class LineStats:
    """What the applier asks of a whole file, counted in one pass over its lines."""

    #: lines ending in CR (CRLF line ends)
    crs: int
    #: lines starting with a tab, with a space
    tabs: int
    spaces: int
    #: of those, the lines with text on them (not whitespace only)
    text_tabs: int
    text_spaces: int


def line_stats(lines: Sequence[str]) -> LineStats:
    crs = tabs = spaces = text_tabs = text_spaces = 0
    for line in lines:
        crs += line.endswith("\r")
        if line.startswith("\t"):
            tabs += 1
            text_tabs += bool(line.strip())
        elif line.startswith(" "):
            spaces += 1
            text_spaces += bool(line.strip())
    return LineStats(crs, tabs, spaces, text_tabs, text_spaces)


@dataclass
class FileText:
    """A file's lines. They are never changed in place (an edit makes a new
    :class:`FileText`), so what is learnt of them is kept: each level's line keys, and
    :attr:`stats`, which every candidate place of an edit would otherwise count again
    (the whole file each time: quadratic in a large file with a common line)."""

    lines: list[str]
    final_newline: bool = True
    _keys: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, text: str) -> FileText:
        lines = text.split("\n")
        final = lines[-1] == ""
        if final:
            lines.pop()
        return cls(lines, final_newline=final or not lines)

    def render(self) -> str:
        if not self.lines:
            return ""
        return "\n".join(self.lines) + ("\n" if self.final_newline else "")

    @cached_property
    def stats(self) -> LineStats:
        return line_stats(self.lines)

    @property
    def crlf(self) -> bool:
        """Most lines end in CRLF: added lines get one too."""
        return self.stats.crs * 2 > len(self.lines) > 0

    def keys(self, level: str) -> list[str]:
        cached = self._keys.get(level)
        if cached is None:
            cached = self._keys[level] = [KEYS[level](line) for line in self.lines]
        return cached

    def replaced(self, start: int, end: int, new: Sequence[str]) -> FileText:
        return FileText([*self.lines[:start], *new, *self.lines[end:]], self.final_newline)


def block_lines(text: str) -> list[str]:
    """The lines of an edit's text (each written with a newline; a last line without one
    is a line too); CRs are dropped: the file's own line ends are kept on write."""
    if not text:
        return []
    lines = text.replace("\r\n", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def ops_between(old: Sequence[str], new: Sequence[str]) -> list[Op]:
    """SEARCH → REPLACE as operations: lines both share are context."""
    ops: list[Op] = []
    matcher = SequenceMatcher(None, list(old), list(new), autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            ops += [Op(" ", line) for line in old[i1:i2]]
            continue
        ops += [Op("-", line) for line in old[i1:i2]]
        ops += [Op("+", line) for line in new[j1:j2]]
    return ops


def ops_between_from_end(old: Sequence[str], new: Sequence[str]) -> list[Op]:
    """The same operations paired from the end: where a line repeats next to a change
    (a blank line, say), the two pairings put the change on either side of it."""
    return list(reversed(ops_between(list(reversed(old)), list(reversed(new)))))


def old_side(ops: Sequence[Op]) -> list[Op]:
    return [op for op in ops if op.tag != "+"]


def strip_cr(line: str) -> str:
    return line[:-1] if line.endswith("\r") else line


def squash(line: str) -> str:
    return " ".join(line.split())


#: the levels of tolerance for finding text, strictest first, and their line keys
KEYS: dict[str, Callable[[str], str]] = {
    "exact": strip_cr,
    "trailing_whitespace": lambda line: strip_cr(line).rstrip(),
    "whitespace": squash,
}


def leading(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


# ── elided lines and copied line numbers ─────────────────────────────────────────────────

_DOTS = r"(?:\.\.\.|…)"
_COMMENT = r"(?:#|//|--|;|/\*|<!--)"
_WORDS = r"[A-Za-z][A-Za-z ,'()_-]*"
#: "...", "# ...", "# ... existing code ...", "// ... rest of the function ...", "…"
_MARKER = re.compile(
    rf"^\s*(?:{_COMMENT}\s*)?{_DOTS}(?:\s*{_WORDS})?\s*{_DOTS}?\s*(?:\*/|-->)?\s*$"
)
#: "# existing code ...", "# (rest of the file unchanged)"
_PHRASE = re.compile(
    rf"^\s*{_COMMENT}\s*\(?\s*(?:\.\.\.\s*)?(?:rest of|existing|remaining|unchanged|other)\b"
    rf"[A-Za-z ,'_-]*(?:unchanged|code|here|lines|{_DOTS})\s*\)?\s*$",
    re.IGNORECASE,
)


def is_marker(line: str) -> bool:
    """A line standing for unchanged lines the model left out."""
    return bool(_MARKER.match(line) or _PHRASE.match(line))


_NUMBERED = re.compile(r"^\s*(\d+)([:|]\s?|\t| |$)")


def strip_line_numbers(lines: Sequence[str]) -> list[str] | None:
    """The lines without the numbers a model copied from a numbered listing, when every
    line carries one and they count up by one; None otherwise."""
    if len(lines) < 2:
        return None
    out: list[str] = []
    expect: int | None = None
    for line in lines:
        m = _NUMBERED.match(line)
        if m is None:
            return None
        number = int(m.group(1))
        if expect is not None and number != expect:
            return None
        expect = number + 1
        out.append(line[m.end() :])
    return out


def strip_numbers_loosely(lines: Sequence[str], copied: Sequence[str]) -> list[str]:
    """Added lines may or may not carry a copied number; drop one written as the copied
    lines' were (``copied``: those, every one numbered): the same separator, and a number
    within theirs widened by the added lines. A line of the file's own that starts with a
    number (``    102: ("processing",),`` in a table) is code, not a copied number."""
    marks = [m for m in map(_NUMBERED.match, copied) if m]
    seps = {m.group(2)[:1] for m in marks}
    nums = [int(m.group(1)) for m in marks]
    lo, hi = (min(nums) - len(lines), max(nums) + len(lines)) if nums else (0, -1)
    out = []
    for line in lines:
        m = _NUMBERED.match(line)
        ours = m is not None and m.group(2)[:1] in seps and lo <= int(m.group(1)) <= hi
        out.append(line[m.end() :] if m and ours else line)
    return out
