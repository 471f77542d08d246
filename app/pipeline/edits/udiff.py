"""Unified diffs as a model writes them, read leniently into hunks.

Hunk headers' line numbers and counts are dropped (models miscount them, and the applier
finds a hunk by its lines, not its numbers); a header with no numbers at all (``@@ @@``),
or none at all after the file names, is fine. An empty line inside a hunk is a blank
context line (models drop the leading space). Renames, deletions and binary patches are
not edits a model should write here and are reported as problems.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import pairwise

_GIT_HEADER = re.compile(r"^diff --git ")
_OLD = re.compile(r"^--- (?:a/)?(\S.*?)(?:\t.*)?\s*$")
_NEW = re.compile(r"^\+\+\+ (?:b/)?(\S.*?)(?:\t.*)?\s*$")
_HUNK = re.compile(r"^@@.*@@|^@@\s*$")
_FENCE = re.compile(r"^\s*(?:`{3,}|~{3,})")
DEV_NULL = "/dev/null"


@dataclass
class RawHunk:
    path: str
    lines: list[str]
    new_file: bool = False


@dataclass
class DiffRead:
    hunks: list[RawHunk] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: index of the line after the diff's last line (where a trailer may start)
    end: int = 0


_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}
_QUOTED = re.compile(r"\\([0-7]{3}|.)")


def _path(text: str, side: str) -> str:
    """A file name from a ``---``/``+++`` line: as it is, or unquoted when git quoted it
    (``"a/dir with space/caf\\303\\251.txt"``: a name with a space, a quote or a byte
    past ASCII, as git prints it unless ``core.quotepath=false``; it was taken with its
    quotes and refused, an audit), its ``a/``/``b/`` prefix then dropped."""
    if len(text) < 2 or not (text.startswith('"') and text.endswith('"')):
        return text
    raw = bytearray()
    at = 0
    inner = text[1:-1]
    try:
        for m in _QUOTED.finditer(inner):
            raw += inner[at : m.start()].encode("utf-8", "surrogateescape")
            code = m.group(1)
            if len(code) == 3:
                raw.append(int(code, 8) & 0xFF)
            elif code in _ESCAPES:
                raw.append(_ESCAPES[code])
            else:
                return text  # (no escape git writes: not a quoted name)
            at = m.end()
        raw += inner[at:].encode("utf-8", "surrogateescape")
        name = raw.decode("utf-8")
    except UnicodeError:
        return text  # (no UTF-8, or a lone surrogate: refused as written, quotes and all)
    return name.removeprefix(side) if name != DEV_NULL else name


def looks_like_diff(lines: list[str]) -> bool:
    return any(_OLD.match(a) and _NEW.match(b) for a, b in pairwise(lines)) or any(
        _HUNK.match(line) for line in lines
    )


def read_diff(lines: list[str]) -> DiffRead:
    out = DiffRead()
    path: str | None = None
    new_file = False
    current: RawHunk | None = None
    i = 0

    def close() -> None:
        nonlocal current
        if current is not None:
            while current.lines and current.lines[-1] == " ":
                current.lines.pop()  # a blank line after a hunk separates it
            if any(line[:1] in "-+" for line in current.lines) or current.new_file:
                out.hunks.append(current)
            current = None

    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if _OLD.match(line) and _NEW.match(nxt):
            close()
            old = _OLD.match(line)
            new = _NEW.match(nxt)
            assert old is not None and new is not None
            src, dst = _path(old.group(1), "a/"), _path(new.group(1), "b/")
            new_file = src == DEV_NULL
            if dst == DEV_NULL:
                out.problems.append(f"the diff deletes {src}: deleting files is not supported")
                path = None
            else:
                path = dst
            i += 2
            if i < len(lines) and not _HUNK.match(lines[i]) and path is not None:
                current = RawHunk(path, [], new_file)  # no @@ header: one hunk follows
            out.end = i
            continue
        if _HUNK.match(line):
            close()
            if path is None:
                if not out.problems:
                    out.problems.append("a hunk (@@) comes before any --- / +++ file names")
            else:
                current = RawHunk(path, [], new_file)
            i += 1
            out.end = i
            continue
        if current is not None and _in_hunk(line):
            if line.startswith("\\"):
                pass  # "\ No newline at end of file"
            elif line == "":
                current.lines.append(" ")
            else:
                current.lines.append(line)
            i += 1
            out.end = i
            continue
        if current is not None:
            close()
        if _GIT_HEADER.match(line) or line.startswith(("index ", "new file mode", "similarity")):
            i += 1
            continue
        if line.startswith(("rename from", "rename to", "deleted file", "Binary files")):
            out.problems.append(f"the diff has {line.split(' ')[0]} lines: not supported")
        i += 1
    close()
    return out


def _in_hunk(line: str) -> bool:
    # a closing fence starts its line; " ~~~~" is a context line (an RST underline, say)
    if line.startswith(("```", "~~~")) or _GIT_HEADER.match(line):
        return False
    return line == "" or line[0] in " -+\\"
