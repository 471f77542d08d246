"""The applier: file texts and an edit list in, new file texts or typed refusals out.

Pure (no I/O, no clock) and total: whatever it is given, it returns an
:class:`~app.pipeline.edits.model.Applied`, never raises. Each edit lands at exactly one
place or is refused with its reason (not found, with the nearest text and its line
numbers; ambiguous, with the candidates; ...). Edits apply in order, each to the text
the ones before it left; two edits of a file whose changes overlap in the file as it was
are both refused (one could otherwise take the other's place). One refusal refuses the
attempt: nothing lands half-applied, and every refusal is reported at once, so the model
can fix them all in its next turn.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from difflib import SequenceMatcher

from app.pipeline.edits.land import Landed, Missed, land
from app.pipeline.edits.model import (
    Applied,
    DiffHunk,
    Edit,
    EditNote,
    LineSpan,
    Refusal,
    SearchReplace,
    WholeFile,
)
from app.pipeline.edits.text import (
    FileText,
    Op,
    Tag,
    block_lines,
    is_marker,
    ops_between,
    ops_between_from_end,
    strip_cr,
)

#: a whole-file rewrite is for small files: past this many lines, SEARCH/REPLACE
WHOLE_FILE_MAX_LINES = 150
#: the levels that skip lines, where a change's place can hang on how its lines pair up
LOOSE = frozenset({"blank_lines", "fuzzy_context", "elided", "line_numbers"})


def apply_edits(
    files: Mapping[str, str | None],
    edits: Sequence[Edit],
    *,
    whole_file_max_lines: int = WHOLE_FILE_MAX_LINES,
) -> Applied:
    """``files`` maps each path the edits name to its text (None: no such file)."""
    current: dict[str, str | None] = dict(files)
    notes: list[EditNote] = []
    refusals: list[Refusal] = []
    clashes = _clashes(files, edits)
    for n, edit in enumerate(edits, 1):
        if n in clashes:
            refusals.append(_refusal(n, edit, clashes[n]))
            continue
        try:
            outcome = _one(current.get(edit.path), edit, whole_file_max_lines)
        except RecursionError:  # pathological input; refused, never raised
            outcome = Missed("not_found", "the edit is too large to place")
        if isinstance(outcome, Missed):
            refusals.append(_refusal(n, edit, outcome))
            continue
        new, how, at = outcome
        current[edit.path] = new
        notes.append(EditNote(edit=n, path=edit.path, how=how, at=at))
    changed = {p: t for p, t in current.items() if t is not None and t != files.get(p)}
    if not refusals and not changed:
        refusals.append(
            Refusal(edit=0, path="", reason="no_change", message="the edits change nothing")
        )
    return Applied(files={} if refusals else changed, notes=notes, refusals=refusals)


_Outcome = tuple[str, str, LineSpan | None] | Missed


def _one(text: str | None, edit: Edit, whole_max: int) -> _Outcome:
    if isinstance(edit, WholeFile):
        return _whole(text, edit.content, whole_max)
    if isinstance(edit, DiffHunk):
        if edit.new_file:
            if text is not None:
                return Missed("file_exists", "the diff creates it, but it exists already")
            body = [line[1:] for line in edit.lines if line.startswith("+")]
            return "".join(line + "\n" for line in body), "created", None
        ops = [Op(_TAGS[line[0]], line[1:]) for line in edit.lines if line[:1] in _TAGS]
        return _placed(text, ops, None)
    search, repl = block_lines(edit.search), block_lines(edit.replace)
    if not search:
        if text:
            return Missed(
                "file_exists",
                "SEARCH is empty, which creates a file, but it exists; copy the lines to "
                "change into SEARCH",
            )
        return "".join(line + "\n" for line in repl), "created", None
    expanded = expand_markers(search, repl)
    if expanded is None:
        return Missed(
            "bad_elision",
            'REPLACE leaves lines out ("...") next to lines it changes; put "# ... '
            'existing code ..." only between unchanged lines, or write the lines out',
        )
    return _placed(text, ops_between(search, expanded), ops_between_from_end(search, expanded))


_TAGS: dict[str, Tag] = {" ": " ", "-": "-", "+": "+"}


def _placed(text: str | None, ops: list[Op], other: list[Op] | None) -> _Outcome:
    """Land ``ops``; ``other`` is the same SEARCH/REPLACE paired from the end."""
    if text is None:
        return Missed("missing_file", "there is no such file; to create it, leave SEARCH empty")
    current = FileText.of(text)
    found = land(current, ops)
    if isinstance(found, Missed):
        return found
    if other is not None and other != ops and found.how in LOOSE:
        # Lines left out next to a change: its meaning must not hang on how SEARCH and
        # REPLACE pair up (a repeated line such as a blank one can pair either way).
        again = land(current, other)
        if not isinstance(again, Landed) or again.text.lines != found.text.lines:
            return Missed(
                "ambiguous",
                "a line the edit leaves out sits next to the change, and the lines around "
                "it repeat, so the change can be read two ways; copy the lines around the "
                "change exactly as the file has them",
            )
    return found.text.render(), found.how, found.at


def _whole(text: str | None, content: str, whole_max: int) -> _Outcome:
    if text is None:
        # A new file is written as it is: there are no lines a marker could stand for, and
        # a line that is only "..." is as likely code (Python's Ellipsis, the body of a
        # stub or a Protocol's method) as anything else in it.
        return content, "created", None
    old = FileText.of(text)
    if len(old.lines) > whole_max:
        return Missed(
            "too_large",
            f"it has {len(old.lines)} lines; a whole-file rewrite is for files of up to "
            f"{whole_max} lines: use SEARCH/REPLACE blocks",
        )
    new = FileText.of(content)
    at = left_out(old.lines, new.lines)
    if at is not None:
        return Missed(
            "bad_elision",
            f"line {at} of the new text ({new.lines[at - 1].strip()!r}) stands for lines "
            "left out, and a whole-file rewrite would delete them: write out every line of "
            'the file, or change only what changes with SEARCH/REPLACE blocks (a "..." '
            "that is code, such as a stub's body, goes on the line of its def)",
        )
    if old.crlf:
        new = FileText([line + "\r" for line in new.lines], new.final_newline)
    return new.render(), "rewritten", LineSpan(start=1, end=len(old.lines))


def left_out(old: Sequence[str], new: Sequence[str]) -> int | None:
    """The first line (1-based) of an existing file's new text that is an elision marker
    ("# ... rest of the file unchanged ...", "# ... existing code ...", a bare "..."), or
    None: the lines it stands for would be deleted, the whole file being replaced.

    A marker line the file has, kept as it was (paired with its own line: a Protocol's
    "..." body, a doctest's "..." line), is the file's code and not a marker. Any other
    is refused, even one that may be code the model adds (a new stub's "..." body): one
    among changed lines cannot be told from the lines it would stand for (as in
    :func:`expand_markers`), and a refusal costs a repair turn where a wrong guess deletes
    code. An empty file has no lines to leave out.
    """
    marks = [k for k, line in enumerate(new) if is_marker(line)]
    if not marks or not old:
        return None
    kept: set[int] = set()
    matcher = SequenceMatcher(None, _keys(old), _keys(new), autojunk=False)
    for tag, _, _, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            kept.update(range(j1, j2))
    return next((k + 1 for k in marks if k not in kept), None)


def _keys(lines: Sequence[str]) -> list[str]:
    return [strip_cr(line).rstrip() for line in lines]


def expand_markers(search: Sequence[str], repl: Sequence[str]) -> list[str] | None:
    """REPLACE with its elision markers replaced by the SEARCH lines they stand for.

    Only a marker that is a whole change of its own (the lines around it unchanged)
    stands for lines; a marker among changed lines cannot be told apart from them (None).
    SEARCH with markers of its own is left for the applier's pieces.
    """
    if not any(is_marker(line) for line in repl) or any(is_marker(line) for line in search):
        return list(repl)
    out: list[str] = []
    matcher = SequenceMatcher(None, list(search), list(repl), autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        chunk = list(repl[j1:j2])
        if tag == "equal" or not any(is_marker(line) for line in chunk):
            out += chunk
        elif len(chunk) == 1:
            out += search[i1:i2]
        else:
            return None
    return out


def _clashes(files: Mapping[str, str | None], edits: Sequence[Edit]) -> dict[int, Missed]:
    """Edits of one file whose changes fall on the same lines of the file as it was.

    Edits apply in order, each to the text before it; so an edit whose own place another
    edit took first could still find a place, the wrong one (two near-identical blocks,
    each edit written for one of them). Each edit is also placed in the original file;
    two whose changes overlap there are both refused.
    """
    placed: dict[str, list[tuple[int, tuple[int, int]]]] = {}
    per_file = Counter(e.path for e in edits)
    for n, edit in enumerate(edits, 1):
        text = files.get(edit.path)
        if text is None or isinstance(edit, WholeFile) or per_file[edit.path] < 2:
            continue
        if isinstance(edit, DiffHunk):
            ops = [Op(_TAGS[line[0]], line[1:]) for line in edit.lines if line[:1] in _TAGS]
        else:
            search = block_lines(edit.search)
            expanded = expand_markers(search, block_lines(edit.replace))
            if not search or expanded is None:
                continue
            ops = ops_between(search, expanded)
        found = land(FileText.of(text), ops) if ops else None
        if isinstance(found, Landed):
            placed.setdefault(edit.path, []).append((n, found.changed))
    out: dict[int, Missed] = {}
    for spans in placed.values():
        for i, (a, sa) in enumerate(spans):
            for b, sb in spans[i + 1 :]:
                if _overlap(sa, sb):
                    where = f"lines {min(sa[0], sb[0]) + 1}-{max(sa[1], sb[1])}"
                    detail = (
                        f"edits {a} and {b} both change {where} of the file; make each "
                        "SEARCH text match its own place only"
                    )
                    out[a] = out.get(a) or Missed("ambiguous", detail)
                    out[b] = out.get(b) or Missed("ambiguous", detail)
    return out


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Two changes (half-open line ranges; equal ends: an insertion point) meet."""
    (a0, a1), (b0, b1) = a, b
    if a0 == a1 and b0 == b1:
        return a0 == b0
    if a0 == a1:
        return b0 < a0 < b1
    if b0 == b1:
        return a0 < b0 < a1
    return a0 < b1 and b0 < a1


def _noun(edit: Edit) -> str:
    if isinstance(edit, SearchReplace):
        return "the SEARCH text"
    if isinstance(edit, DiffHunk):
        return "the hunk's context and removed lines"
    return "the file"


def _refusal(n: int, edit: Edit, missed: Missed) -> Refusal:
    head = f"edit {n} ({edit.path}): "
    if missed.reason in ("not_found", "ambiguous"):
        body = f"{_noun(edit)} was not placed: {missed.detail}"
        if missed.reason == "ambiguous":
            body += "; copy more lines around the change so that it matches one place only"
        else:
            body += "\ncopy the lines exactly as the file has them (no line numbers)"
    else:
        body = missed.detail
    return Refusal(
        edit=n,
        path=edit.path,
        reason=missed.reason,
        message=head + body,
        candidates=missed.candidates,
        nearest=missed.nearest,
    )
