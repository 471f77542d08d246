"""Map TOML key paths back to the line that defines them, so errors can say FILE:LINE.

tomllib gives no positions, so this scans the text: table headers (``[a.b]``,
``[[a]]`` with a running index per array) and ``key = value`` lines. Keys inside
multi-line arrays or inline tables fall back to the line of their parent key.
"""

from __future__ import annotations

import re

Path = tuple[str | int, ...]

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"|\'[^\']*\''
_KEY = rf"(?:{_BARE}|{_QUOTED})"
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_ASSIGN = re.compile(rf"^\s*({_DOTTED})\s*=")
_PART = re.compile(_KEY)


def _split(dotted: str) -> list[str]:
    parts = []
    for m in _PART.finditer(dotted):
        token = m.group(0)
        if token[0] in "\"'":
            token = token[1:-1]
        parts.append(token)
    return parts


def key_lines(text: str) -> dict[Path, int]:
    """Return {key path: 1-based line} for every header and assignment in ``text``."""
    lines: dict[Path, int] = {}
    array_counts: dict[tuple[str, ...], int] = {}
    table: Path = ()
    depth = 0  # bracket depth of a multi-line value; keys inside are not mapped
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0] if '"' not in raw and "'" not in raw else raw
        if depth > 0:
            depth += line.count("[") + line.count("{") - line.count("]") - line.count("}")
            depth = max(depth, 0)
            continue
        header = _HEADER.match(raw)
        if header:
            names = tuple(_split(header.group(2)))
            if header.group(1) == "[[":
                index = array_counts.get(names, 0)
                array_counts[names] = index + 1
                table = (*names, index)
            else:
                table = names
            lines.setdefault(table, lineno)
            continue
        assign = _ASSIGN.match(raw)
        if assign:
            path = (*table, *_split(assign.group(1)))
            lines.setdefault(path, lineno)
            value = raw[assign.end() :]
            value = re.sub(_QUOTED, '""', value).split("#", 1)[0]
            depth = value.count("[") + value.count("{") - value.count("]") - value.count("}")
            depth = max(depth, 0)
    return lines


def line_for(lines: dict[Path, int], path: Path) -> int | None:
    """The line of ``path``, or of its nearest mapped ancestor."""
    probe = tuple(path)
    while probe:
        if probe in lines:
            return lines[probe]
        probe = probe[:-1]
    return None
