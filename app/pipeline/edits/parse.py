"""The Implementer's reply, read into a typed :class:`EditList` (GR-012 for code).

Accepted, in the order they are looked for:

- SEARCH/REPLACE blocks: the file's path on the line before each block ::

      parser.py
      <<<<<<< SEARCH
          for i in range(len(tokens) - 1):
      =======
          for i in range(len(tokens)):
      >>>>>>> REPLACE

  and whole small files between ``<<<<<<< FILE`` and ``>>>>>>> FILE``;
- a unified diff (fenced or not);
- the older JSON object ``{"diff": ..., "self_check_confidence": ..., "notes": ...}``
  (or the edit list itself as JSON).

Blocks and diffs end with the JSON trailer ``{"self_check_confidence": 0.8, "notes":
"..."}``, validated as :class:`Trailer`. Prose around the blocks is ignored; a path line
may carry Markdown decoration (backticks, bold, "File:"). A path may hold spaces; a line
that could be such a path or prose ending in one ("my file.py", "Update calc.py") is
settled by which files exist, when the caller can tell (``exists``), and refused when
neither reading is safe. Anything else that does not fit raises :class:`EditFormatError`
with every problem found, for the one repair turn. Parsing never raises anything else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from app.pipeline.edits.model import (
    DiffHunk,
    Edit,
    EditList,
    Format,
    SearchReplace,
    Trailer,
    WholeFile,
)
from app.pipeline.edits.udiff import looks_like_diff, read_diff

_SEARCH = re.compile(r"^\s*<{5,9}\s*SEARCH\s*$", re.IGNORECASE)
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_REPLACE = re.compile(r"^\s*>{5,9}\s*REPLACE\s*$", re.IGNORECASE)
_FILE = re.compile(r"^\s*<{5,9}\s*(?:WHOLE\s+)?FILE\s*$", re.IGNORECASE)
_FILE_END = re.compile(r"^\s*>{5,9}\s*(?:END(?:\s+FILE)?|FILE)\s*$", re.IGNORECASE)
_FENCE = re.compile(r"^\s*(?:`{3,}|~{3,})")
_PATHISH = re.compile(r"[\w][\w.\-/+@]*")
#: a path that may hold spaces between its words: "docs/my notes.md"
_SPACED = re.compile(r"[\w.\-/+@]+(?: +[\w.\-/+@]+)*")
#: text in backticks or quotes within a line (not an apostrophe: "Here's")
_SPAN = re.compile(r"`+([^`]+)`+|\"([^\"]+)\"|(?<!\w)'([^']+)'(?!\w)")
_LEGACY_KEYS = frozenset({"diff", "self_check_confidence", "notes"})

TRAILER_HINT = 'end with the JSON trailer {"self_check_confidence": 0.8, "notes": "..."}'


class EditFormatError(ValueError):
    """The reply does not fit the edit format; ``problems`` says exactly where."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems or ["the reply holds no edits"]
        super().__init__("; ".join(self.problems))


#: whether a path names a file that exists (the reader's answer; the parser does no I/O)
Exists = Callable[[str], bool]


def parse_edits(text: str, *, exists: Exists | None = None) -> EditList:
    """The reply's edits, or :class:`EditFormatError` with what is wrong. ``exists``
    settles a path line that can be read two ways (:class:`_PathLine`)."""
    if not isinstance(text, str):
        raise EditFormatError(["the reply is not text"])
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    from_json = _json_reply(text)
    if from_json is not None:
        return from_json
    if any(_SEARCH.match(line) or _FILE.match(line) for line in lines):
        edits, problems, end = _blocks(lines, exists)
        fmt: Format = "blocks"
    elif looks_like_diff(lines):
        read = read_diff(lines)
        edits = [
            _Spec("hunk", h.path, lines=tuple(h.lines), new_file=h.new_file) for h in read.hunks
        ]
        problems, end = list(read.problems), read.end
        if not read.hunks and not problems:
            problems.append("the diff has no hunk with a changed line")
        fmt = "diff"
    else:
        raise EditFormatError(
            [
                "no edits found: write SEARCH/REPLACE blocks (the path, <<<<<<< SEARCH, the "
                "lines to change, =======, the new lines, >>>>>>> REPLACE), then "
                + TRAILER_HINT[len("end with ") :]
            ]
        )
    trailer, trailer_problems = _trailer(lines[end:])
    problems += trailer_problems
    built = _build(edits, problems)
    if problems:
        raise EditFormatError(problems)
    assert trailer is not None
    try:
        return EditList(
            edits=built,
            self_check_confidence=trailer.self_check_confidence,
            notes=trailer.notes,
            format=fmt,
        )
    except ValidationError as exc:
        raise EditFormatError(_validation_problems(exc)) from None


@dataclass(frozen=True)
class _Spec:
    """One edit as read, before validation."""

    kind: str
    path: str
    text: str = ""
    replace: str = ""
    lines: tuple[str, ...] = ()
    new_file: bool = False


def _build(specs: list[_Spec], problems: list[str]) -> list[Edit]:
    out: list[Edit] = []
    for n, spec in enumerate(specs, 1):
        try:
            if spec.kind == "hunk":
                out.append(DiffHunk(path=spec.path, lines=list(spec.lines), new_file=spec.new_file))
            elif spec.kind == "write":
                out.append(WholeFile(path=spec.path, content=spec.text))
            else:
                out.append(SearchReplace(path=spec.path, search=spec.text, replace=spec.replace))
        except ValidationError as exc:
            problems += [f"edit {n}: {p}" for p in _validation_problems(exc)]
    return out


def _blocks(lines: list[str], exists: Exists | None) -> tuple[list[_Spec], list[str], int]:
    """SEARCH/REPLACE and FILE blocks: (specs, problems, index after the last block)."""
    specs: list[_Spec] = []
    problems: list[str] = []
    named: _PathLine | None = None
    floor = end = i = 0
    outside: list[str] = []  # the lines between blocks
    while i < len(lines):
        line = lines[i]
        whole = bool(_FILE.match(line))
        if not (whole or _SEARCH.match(line)):
            outside.append(line)
            i += 1
            continue
        n = len(specs) + len(problems) + 1
        named = _path_before(lines, i, floor) or named
        if named is None:
            problems.append(f"block {n} (line {i + 1}): no file path on the line before it")
        spec: _Spec | None = None
        if whole:
            body, j, problem = _until(lines, i + 1, _FILE_END, "a >>>>>>> FILE line")
            if problem is None:
                spec = _Spec("write", "", _joined(body))
        else:
            search, j, problem = _until(lines, i + 1, _DIVIDER, "a ======= line")
            if problem is None:
                repl, j, problem = _until(lines, j + 1, _REPLACE, "a >>>>>>> REPLACE line")
                if problem is None:
                    spec = _Spec("replace", "", _joined(search), _joined(repl))
        if named is not None and spec is not None:
            # a FILE block, or an empty SEARCH, writes the file whether or not it exists
            path = named.read(creates=whole or not spec.text, exists=exists)
            if path is None:
                problem = named.unclear()
            else:
                specs.append(replace(spec, path=path))
        if problem is not None:
            problems.append(f"block {n} (line {i + 1}): {problem}")
            if j >= len(lines):
                break
        i = floor = end = j + 1
    if not specs and not problems:
        problems.append("no complete block found")
    if looks_like_diff(outside):
        # the diff's edits were dropped without a word while the blocks landed
        problems.append(
            "the reply mixes SEARCH/REPLACE blocks with a unified diff: write every edit as a block"
        )
    return specs, problems, end


def _until(
    lines: list[str], start: int, stop: re.Pattern[str], what: str
) -> tuple[list[str], int, str | None]:
    """The lines from ``start`` up to the first line matching ``stop`` (its index), or
    a problem when a block marker or the end comes first."""
    body: list[str] = []
    j = start
    while j < len(lines):
        line = lines[j]
        if stop.match(line):
            return body, j, None
        if _SEARCH.match(line) or _FILE.match(line) or _REPLACE.match(line):
            return body, j, f"{what} is missing before line {j + 1}"
        if _FILE_END.match(line) and stop is not _FILE_END:
            return body, j, f"{what} is missing before line {j + 1}"
        body.append(line)
        j += 1
    return body, j, f"{what} is missing (the reply ends first)"


def _joined(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _path_before(lines: list[str], i: int, floor: int) -> _PathLine | None:
    """The path on the nearest line above a block (skipping blank and fence lines)."""
    j = i - 1
    while j >= floor:
        line = lines[j].strip()
        if not line or _FENCE.match(line):
            info = line.lstrip("`~").strip()
            if info and ("/" in info or "." in info):
                return _path_in(info)
            j -= 1
            continue
        return _path_in(line)
    return None


@dataclass(frozen=True)
class _PathLine:
    """What the line before a block names: ``path``, or, when the line can be read two
    ways, ``path`` (its last path-like word: prose ending in a path, "Update calc.py")
    or ``wide`` (the path with spaces that ends in it: "my file.py")."""

    line: str
    path: str
    wide: str | None = None
    #: the line reads as prose ("Here is the fix for calc.py:", ending in a colon), so
    #: the narrow reading is the likelier one; else the wide one is
    prose: bool = False

    def read(self, *, creates: bool, exists: Exists | None) -> str | None:
        """The path the block is for; None when that cannot be told safely.

        A file named by the wide reading settles it (a sentence is no file's name). Else
        an edit of an existing file can only mean the narrow reading if that file exists;
        but a block that writes its file (FILE, or an empty SEARCH) could be creating the
        wide one: writing the narrow one instead would change another file than the one
        meant, so it is refused, unless the line reads as prose. With neither file, or
        without ``exists``, the likelier reading.
        """
        if self.wide is None:
            return self.path
        likely = self.path if self.prose else self.wide
        if exists is None:
            return likely
        if exists(self.wide):
            return self.wide
        if not exists(self.path):
            return likely
        if self.prose or not creates:
            return self.path
        return None

    def unclear(self) -> str:
        return (
            f"the line before it, {self.line.strip()!r}, could name {self.wide!r} or "
            f"{self.path!r}: write the file's path alone on that line (in backticks when "
            "it has spaces)"
        )


def _path_in(line: str) -> _PathLine | None:
    """The path a line names: a line that is only a path, spaces and all (bare, in
    backticks or quotes, after a heading, bullet or "File:" marker), or the last path-like
    word of a prose line. Only backticks or quotes around the whole line settle it: a bare
    "my file.py" may be prose too ("Update calc.py"), so both readings are kept
    (:meth:`_PathLine.read` chooses)."""
    bare = re.sub(r"^(?:#+|[*>-])\s*", "", line.strip())
    labelled = re.sub(r"^(?:file|path|filename)\s*:\s*", "", bare, flags=re.IGNORECASE)
    text = labelled.strip("`*'\"").rstrip(":").strip("`*'\" ")
    if text and not any(c.isspace() for c in text):
        return _PathLine(line, text)  # a line that is only a path (Makefile, src/app.py)
    found = [
        m for m in _PATHISH.finditer(line) if "/" in m[0].rstrip(".") or "." in m[0].rstrip(".")
    ]
    if not found:
        return None
    last = found[-1]
    token = last[0].rstrip(".")
    spaced = text.endswith(token) and _spaced(text)  # the whole line a path that ends in it
    if spaced and re.fullmatch(r"\**([`'\"])[^`'\"]+\1\**:?", labelled):
        return _PathLine(line, text)  # only a path, in backticks or quotes: `my file.py`
    for span in _SPAN.finditer(line):
        inner = (span[1] or span[2] or span[3]).strip()
        if span.start() < last.start() < span.end() and _spaced(inner) and inner.endswith(token):
            # prose naming the path in code ("In `my file.py`:"), or a command (`python
            # calc.py`): the span is the likelier path
            return _PathLine(line, token, inner) if inner != token else _PathLine(line, token)
    if spaced:
        prose = bool(re.search(r":[`*'\"\s]*$", line))
        return _PathLine(line, token, text, prose=prose)
    return _PathLine(line, token)


def _spaced(text: str) -> bool:
    """A path, perhaps with spaces between its words, with a "/" or a "." in it (as the
    path-like words of a prose line must have), not ending a sentence."""
    return bool(_SPACED.fullmatch(text)) and ("/" in text or "." in text) and text[-1] != "."


def _trailer(tail: list[str]) -> tuple[Trailer | None, list[str]]:
    """The last JSON object with ``self_check_confidence`` after the edits."""
    text = "\n".join(tail)
    decoder = json.JSONDecoder()
    found: Any = None
    for m in reversed(list(re.finditer(r"\{", text))):
        try:
            value, _ = decoder.raw_decode(text[m.start() :])
        except ValueError:
            continue
        if isinstance(value, dict) and "self_check_confidence" in value:
            found = value
            break
    if found is None:
        return None, [f"no JSON trailer after the edits: {TRAILER_HINT}"]
    try:
        return Trailer.model_validate(found), []
    except ValidationError as exc:
        return None, [f"trailer: {p}" for p in _validation_problems(exc)]


def _json_reply(text: str) -> EditList | None:
    """The older JSON reply (a unified diff in a string) or the edit list as JSON."""
    body = text.strip()
    fenced = re.match(r"^```[\w-]*\s*\n(.*?)\n\s*```$", body, re.DOTALL)
    if fenced:
        body = fenced.group(1).strip()
    if not body.startswith("{"):
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    if "edits" in value:
        try:
            return EditList.model_validate({"format": "json", **value})
        except ValidationError as exc:
            raise EditFormatError(_validation_problems(exc)) from None
    if not ({"diff", "self_check_confidence"} <= value.keys() <= _LEGACY_KEYS):
        return None
    diff = value.get("diff")
    if not isinstance(diff, str) or not diff.strip():
        raise EditFormatError(["diff: a non-empty unified diff is required"])
    read = read_diff(diff.replace("\r\n", "\n").split("\n"))
    problems = list(read.problems)
    if not read.hunks:
        problems.append("diff: not a unified diff (no hunk with a changed line)")
    specs = [_Spec("hunk", h.path, lines=tuple(h.lines), new_file=h.new_file) for h in read.hunks]
    edits = _build(specs, problems) if not problems else []
    if problems:
        raise EditFormatError(problems)
    try:
        trailer = Trailer.model_validate(
            {k: v for k, v in value.items() if k in ("self_check_confidence", "notes")}
        )
        return EditList(
            edits=edits,
            self_check_confidence=trailer.self_check_confidence,
            notes=trailer.notes,
            format="json",
        )
    except ValidationError as exc:
        raise EditFormatError(_validation_problems(exc)) from None


def _validation_problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        out.append(f"{where}: {err['msg']}")
    return out
