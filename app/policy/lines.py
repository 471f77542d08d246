"""Map TOML key paths back to the line that defines them, so errors can say FILE:LINE.

tomllib gives no positions, so this scans the text: table headers (``[a.b]``,
``[[a]]`` with a running index per array, also for sub-tables of an array's last
element) and ``key = value`` lines. Keys inside multi-line arrays, inline tables and
multi-line strings are not mapped: they fall back to the line of their parent key.

Lines are counted the way TOML (and tomllib's error positions) count them: only ``\\n``
ends a line, so a stray form feed or U+2028 in a comment never shifts the numbers.
The scanner never raises, whatever the text.
"""

from __future__ import annotations

import re
import tomllib

Path = tuple[str | int, ...]

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"|\'[^\']*\''
_KEY = rf"(?:{_BARE}|{_QUOTED})"
_DOTTED = rf"{_KEY}(?:[ \t]*\.[ \t]*{_KEY})*"
_HEADER = re.compile(rf"^[ \t]*(\[\[?)[ \t]*({_DOTTED})[ \t]*\]\]?[ \t]*(?:#.*)?\r?$")
_ASSIGN = re.compile(rf"^[ \t]*({_DOTTED})[ \t]*=")
_PART = re.compile(_KEY)


def _unescape(quoted: str) -> str:
    """A basic-string key as TOML reads it (escapes like ``\\n`` and ``\\u00e9``)."""
    try:
        return next(iter(tomllib.loads(f"{quoted} = 0")))
    except (tomllib.TOMLDecodeError, ValueError, StopIteration):
        return quoted[1:-1]


def _split(dotted: str) -> list[str]:
    parts = []
    for m in _PART.finditer(dotted):
        token = m.group(0)
        if token[0] == '"':
            token = _unescape(token)
        elif token[0] == "'":
            token = token[1:-1]
        parts.append(token)
    return parts


def _scan(line: str, pos: int, depth: int, ml: str | None) -> tuple[int, str | None]:
    """Follow a value from ``pos`` to the end of ``line``.

    Returns the bracket depth still open and the delimiter of a multi-line string still
    open (``None`` when closed). Brackets inside strings and comments do not count.
    """
    i, n = pos, len(line)
    while i < n:
        c = line[i]
        if ml is not None:
            if c == "\\" and ml == '"""':
                i += 2
            elif line.startswith(ml, i):
                i += 3
                extra = 0  # a closing delimiter may be preceded by up to two quotes
                while i < n and line[i] == ml[0] and extra < 2:
                    i += 1
                    extra += 1
                ml = None
            else:
                i += 1
            continue
        if c == "#":
            break
        if line.startswith('"""', i) or line.startswith("'''", i):
            ml = line[i : i + 3]
            i += 3
        elif c == '"':
            i += 1
            while i < n and line[i] != '"':
                i += 2 if line[i] == "\\" else 1
            i += 1
        elif c == "'":
            end = line.find("'", i + 1)
            i = n if end < 0 else end + 1
        else:
            if c in "[{":
                depth += 1
            elif c in "]}":
                depth = max(depth - 1, 0)
            i += 1
    return depth, ml


def _resolve(names: tuple[str, ...], arrays: dict[Path, int]) -> Path:
    """A header's key path, with the index of the last element of every array it crosses."""
    out: list[str | int] = []
    for name in names:
        out.append(name)
        count = arrays.get(tuple(out))
        if count:
            out.append(count - 1)
    return tuple(out)


def key_lines(text: str) -> dict[Path, int]:
    """Return {key path: 1-based line} for every header and assignment in ``text``."""
    lines: dict[Path, int] = {}
    arrays: dict[Path, int] = {}  # array-of-tables path -> elements seen so far
    table: Path = ()
    depth = 0  # bracket depth of a multi-line value; keys inside are not mapped
    ml: str | None = None  # the delimiter of an open multi-line string
    for lineno, raw in enumerate(text.split("\n"), start=1):
        if depth > 0 or ml is not None:
            depth, ml = _scan(raw, 0, depth, ml)
            continue
        header = _HEADER.match(raw)
        if header:
            names = tuple(_split(header.group(2)))
            if header.group(1) == "[[":
                array = (*_resolve(names[:-1], arrays), names[-1])
                index = arrays.get(array, 0)
                arrays[array] = index + 1
                table = (*array, index)
            else:
                table = _resolve(names, arrays)
            lines.setdefault(table, lineno)
            continue
        assign = _ASSIGN.match(raw)
        if assign:
            path = (*table, *_split(assign.group(1)))
            lines.setdefault(path, lineno)
            depth, ml = _scan(raw, assign.end(), 0, None)
    return lines


def line_for(lines: dict[Path, int], path: Path) -> int | None:
    """The line of ``path``, else of its nearest mapped ancestor.

    A table that has no header of its own (``[roles.a]`` defines ``roles`` implicitly)
    is placed at its first mapped descendant instead.
    """
    probe = tuple(path)
    while probe:
        if probe in lines:
            return lines[probe]
        n = len(probe)
        below = [line for key, line in lines.items() if key[:n] == probe]
        if below:
            return min(below)
        probe = probe[:-1]
    return None
