"""An Implementer attempt's unified diff as the SDK's diff content (path, old text, new
text), which editors render as a reviewable change.

The texts are the files' bytes read from git, never from the user's checkout (which may
hold unsaved or uncommitted edits): the old text at the run's base commit, the new text at
the commit holding the attempt, which is what a merge lands; the diff between the two,
read as bytes, says which files changed and where. Rebuilding the new text from the
attempt's diff was not exact: ``git diff`` read as text had lost every ``\\r`` (a lone one
became a line break, and the hunks no longer parsed), and a ``\\ No newline at end of
file`` was dropped, so the editor showed CRs gone and a final newline added that the
commit did not hold (an ACP audit).

Without the attempt's commit, the new text is the old one with the diff's hunks applied;
when a hunk does not match, the content falls back to the hunks' own lines, so the client
still sees what changed. A file whose bytes are binary or not UTF-8 cannot be shown as
text: its content says so instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from acp import text_block, tool_content, tool_diff_content
from acp.schema import ContentToolCallContent, FileEditToolCallContent, ToolCallLocation

from app.workspace.git import git_bytes
from app.workspace.shown_diff import DIFF_ARGS, diff_text, shown_diff

if TYPE_CHECKING:
    from unidiff.patch import Hunk, PatchedFile

Content = FileEditToolCallContent | ContentToolCallContent
#: ``path → bytes`` of a file at some commit (None: not a file there)
Reader = Callable[[str], bytes | None]
#: a diff too large for an editor's pane is shown as its first lines instead
MAX_DIFF_CHARS = 200_000
#: an escape in git's C-style quoting of a path with unusual bytes ("a/caf\303\251.txt")
_ESCAPE = re.compile(r"\\([0-7]{3}|.)", re.S)
_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13}


def read_at(repo: Path, rev: str | None) -> Reader:
    """``path → bytes`` of a file at commit ``rev`` of ``repo`` (None: not there)."""

    def read(rel: str) -> bytes | None:
        return None if rev is None else git_bytes(repo, "cat-file", "blob", f"{rev}:{rel}")

    return read


def attempt_contents(
    diff: str, repo: Path, base: str | None, commit: str | None
) -> tuple[list[Content], list[ToolCallLocation]]:
    """An attempt's content: the change ``base`` → ``commit`` as git holds it, when both
    are known; else ``diff`` (the attempt's text) rebuilt on the base."""
    if base and commit:
        # (DIFF_ARGS: a/ and b/ whatever diff.noprefix says; the names are read without them)
        raw = git_bytes(repo, "diff", *DIFF_ARGS, base, commit)
        if raw is not None:
            # the texts are read from the blobs; this only names the files and where
            change = shown_diff(diff_text(raw))
            return diff_contents(change, repo, read_at(repo, base), read_at(repo, commit))
    return diff_contents(diff, repo, read_at(repo, base))


def diff_contents(
    diff: str, repo: Path, read_old: Reader, read_new: Reader | None = None
) -> tuple[list[Content], list[ToolCallLocation]]:
    """The diff content for each file ``diff`` touches, and their locations (absolute).
    ``read_old`` reads the diff's base, ``read_new`` the commit it leads to (None: the
    new text is rebuilt from the diff)."""
    from unidiff.errors import UnidiffParseError
    from unidiff.patch import PatchSet

    if len(diff) > MAX_DIFF_CHARS:
        return [tool_content(text_block(_fenced(diff[:MAX_DIFF_CHARS])))], []
    try:
        patch = PatchSet(diff)
    except UnidiffParseError:
        patch = None
    if not patch:
        # not a unified diff the parser knows: show it as it came
        return [tool_content(text_block(_fenced(diff or "(no diff)")))], []
    contents: list[Content] = []
    locations: list[ToolCallLocation] = []
    for pf in patch:
        source, target = _strip(_unquote(pf.source_file)), _strip(_unquote(pf.target_file))
        rel = source if pf.is_removed_file else target
        first = next((h.target_start for h in pf), None)
        locations.append(ToolCallLocation(path=str(repo / rel), line=first or None))
        old = None if pf.is_added_file else read_old(source)
        new = None if pf.is_removed_file or read_new is None else read_new(target)
        contents.append(_content(pf, str(repo / rel), rel, old, new, read_new is not None))
    return contents, locations


def _content(
    pf: PatchedFile, path: str, rel: str, old: bytes | None, new: bytes | None, exact: bool
) -> Content:
    """One file's content: its texts at both commits when both were read (``exact``),
    else rebuilt from the diff; a note when they cannot be shown as text."""
    added, removed = pf.is_added_file, pf.is_removed_file
    # a NUL byte is what git calls binary (and what app.workspace.shown_diff hides)
    if pf.is_binary_file or any(b is not None and b"\0" in b for b in (old, new)):
        return _note(f"{rel}: a binary file; its change is not shown as text")
    try:
        old_text = None if old is None else old.decode("utf-8")
        new_text = None if new is None else new.decode("utf-8")
    except UnicodeDecodeError:
        return _note(f"{rel}: not UTF-8 text; its change is not shown")
    if exact and (added or old_text is not None) and (removed or new_text is not None):
        return tool_diff_content(path, new_text or "", old_text)
    rebuilt = _apply(old_text or "", pf) if (old_text is not None or added) else None
    if rebuilt is None:
        old_text, rebuilt = _excerpts(pf)
    return tool_diff_content(path, "" if removed else rebuilt, old_text)


def _note(text: str) -> ContentToolCallContent:
    return tool_content(text_block(text))


def _unquote(name: str) -> str:
    """A path as git wrote it in a diff header, with its C-style quoting undone: a name
    with non-ASCII bytes came out as ``"b/caf\\303\\251.txt"``, and was shown and read so."""
    if len(name) < 2 or name[0] != '"' or name[-1] != '"':
        return name
    body, raw, pos = name[1:-1], bytearray(), 0
    for m in _ESCAPE.finditer(body):
        raw += body[pos : m.start()].encode("utf-8")
        esc = m[1]
        if len(esc) == 3:
            raw.append(int(esc, 8))
        else:
            raw += bytes([_ESCAPES[esc]]) if esc in _ESCAPES else esc.encode("utf-8")
        pos = m.end()
    raw += body[pos:].encode("utf-8")
    # a name that is not UTF-8 cannot be sent as JSON text: shown with U+FFFD for its bytes
    return raw.decode("utf-8", "replace")


def _strip(name: str) -> str:
    for prefix in ("a/", "b/"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _lines(hunk: Hunk) -> list[tuple[str, str]]:
    """A hunk's lines as (kind, text), kind one of " -+"; a line that a ``\\ No newline at
    end of file`` follows loses its newline, as the file has none there."""
    out: list[tuple[str, str]] = []
    for line in hunk:
        if line.line_type == "\\":
            if out:
                out[-1] = (out[-1][0], out[-1][1].removesuffix("\n"))
        elif line.is_added or line.is_removed or line.is_context:
            out.append(("+" if line.is_added else "-" if line.is_removed else " ", line.value))
    return out


def _apply(old: str, pf: PatchedFile) -> str | None:
    """``old`` with ``pf``'s hunks applied; None when a hunk does not match it."""
    # lines as git counts them: str.splitlines also breaks at \f, \v, U+2028, ...
    lines = [line + "\n" for line in old.split("\n")]
    lines[-1] = lines[-1].removesuffix("\n")
    if not lines[-1]:
        lines.pop()
    out: list[str] = []
    pos = 0
    for hunk in pf:
        start = hunk.source_start - 1 if hunk.source_length else hunk.source_start
        if start < pos or start > len(lines):
            return None
        out.extend(lines[pos:start])
        pos = start
        for kind, value in _lines(hunk):
            if kind == "+":
                out.append(value)
                continue
            if pos >= len(lines) or lines[pos].rstrip("\r\n") != value.rstrip("\r\n"):
                return None
            if kind == " ":
                out.append(lines[pos])
            pos += 1
    out.extend(lines[pos:])
    return "".join(out)


def _excerpts(pf: PatchedFile) -> tuple[str, str]:
    """(old, new) as the hunks' own lines, when the file cannot be rebuilt."""
    old: list[str] = []
    new: list[str] = []
    for hunk in pf:
        for kind, value in _lines(hunk):
            if kind != "+":
                old.append(value)
            if kind != "-":
                new.append(value)
    return "".join(old), "".join(new)


def _fenced(text: str) -> str:
    return f"```diff\n{text.rstrip()}\n```"
