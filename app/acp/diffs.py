"""An Implementer attempt's unified diff as the SDK's diff content (path, old text, new
text), which editors render as a reviewable change.

The old text is the file at the run's base commit (read from git, never from the user's
checkout, which may hold unsaved or uncommitted edits); the new text is that file with the
diff's hunks applied in memory. When a hunk does not match (the attempt's diff would not
apply either), the content falls back to the hunk's own lines, so the client still sees
exactly what the model proposed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from acp import text_block, tool_content, tool_diff_content
from acp.schema import ContentToolCallContent, FileEditToolCallContent, ToolCallLocation

from app.workspace.git import run_git

Content = FileEditToolCallContent | ContentToolCallContent
#: a diff too large for an editor's pane is shown as its first lines instead
MAX_DIFF_CHARS = 200_000


def read_at(repo: Path, base: str | None) -> Callable[[str], str | None]:
    """``path → text`` of a file at commit ``base`` of ``repo`` (None: not there)."""

    def read(rel: str) -> str | None:
        if base is None:
            return None
        proc = run_git(repo, "show", f"{base}:{rel}", check=False)
        return proc.stdout if proc.returncode == 0 else None

    return read


def diff_contents(
    diff: str, repo: Path, read_old: Callable[[str], str | None]
) -> tuple[list[Content], list[ToolCallLocation]]:
    """The diff content for each file ``diff`` touches, and their locations (absolute)."""
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
        rel = _strip(pf.target_file if not pf.is_removed_file else pf.source_file)
        path = str(repo / rel)
        old = None if pf.is_added_file else read_old(_strip(pf.source_file))
        new = _apply(old or "", pf) if (old is not None or pf.is_added_file) else None
        if new is None:
            old, new = _excerpts(pf)
        first = next((h.target_start for h in pf), None)
        locations.append(ToolCallLocation(path=path, line=first or None))
        contents.append(tool_diff_content(path, "" if pf.is_removed_file else new, old))
    return contents, locations


def _strip(name: str) -> str:
    for prefix in ("a/", "b/"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _apply(old: str, pf: object) -> str | None:
    """``old`` with ``pf``'s hunks applied; None when a hunk does not match it."""
    lines = old.splitlines(keepends=True)
    out: list[str] = []
    pos = 0
    for hunk in pf:  # type: ignore[attr-defined]
        start = hunk.source_start - 1 if hunk.source_length else hunk.source_start
        if start < pos or start > len(lines):
            return None
        out.extend(lines[pos:start])
        pos = start
        for line in hunk:
            if line.is_added:
                out.append(line.value)
            elif line.is_context or line.is_removed:
                if pos >= len(lines) or lines[pos].rstrip("\r\n") != line.value.rstrip("\r\n"):
                    return None
                if line.is_context:
                    out.append(lines[pos])
                pos += 1
    out.extend(lines[pos:])
    return "".join(out)


def _excerpts(pf: object) -> tuple[str, str]:
    """(old, new) as the hunks' own lines, when the file cannot be rebuilt."""
    old: list[str] = []
    new: list[str] = []
    for hunk in pf:  # type: ignore[attr-defined]
        for line in hunk:
            if line.is_context or line.is_removed:
                old.append(line.value)
            if line.is_context or line.is_added:
                new.append(line.value)
    return "".join(old), "".join(new)


def _fenced(text: str) -> str:
    return f"```diff\n{text.rstrip()}\n```"
