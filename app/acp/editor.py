"""What the prompt carries besides its text: the files the user attached or @-mentioned.

A resource link names a file; when the client offers ``fs/read_text_file``, the agent
reads it through the client, which answers with the editor's buffer, unsaved changes
included. Without that capability the file is read from disk. An embedded resource
already carries its text. Only files inside the session's repository are read.

The result is a markdown section the planner reads after the Stage0 brief (the run's
worktree starts from the last commit: these buffers inform the plan, they are not the
code the run changes). Nothing here ever writes a file: the run works in its worktree,
and only the gated merge touches the user's checkout (GR-003).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from acp.schema import EmbeddedResourceContentBlock, ResourceContentBlock, TextResourceContents

log = logging.getLogger("app.acp")

#: characters of one buffer, and of all of them, that reach the planner
FILE_CHARS = 6000
TOTAL_CHARS = 12000
#: a file on disk larger than this is not read at all
MAX_FILE_BYTES = 1_000_000

ReadBuffer = Callable[[str], Awaitable[str]]


def prompt_text(blocks: Sequence[Any]) -> str:
    """The prompt's text blocks, joined (the task, or the tutor's question)."""
    return "\n".join(b.text for b in blocks if getattr(b, "type", None) == "text").strip()


async def editor_context(blocks: Sequence[Any], repo: Path, read_buffer: ReadBuffer | None) -> str:
    """The markdown section for the planner ("" when the prompt names no file)."""
    parts: list[str] = []
    budget = TOTAL_CHARS
    for block in blocks:
        if budget <= 0:
            break
        found = await _one(block, repo, read_buffer)
        if found is None:
            continue
        rel, text = found
        clipped = text[: min(FILE_CHARS, budget)]
        budget -= len(clipped)
        more = "" if len(clipped) == len(text) else f"\n… ({len(text) - len(clipped)} more chars)"
        parts.append(f"### {rel}\n```\n{clipped.rstrip()}{more}\n```")
    if not parts:
        return ""
    head = (
        "## From the editor\n\nWhat the user's editor holds for the files the request names "
        "(possibly unsaved). The run's worktree starts from the last commit."
    )
    return head + "\n\n" + "\n\n".join(parts)


async def _one(block: Any, repo: Path, read_buffer: ReadBuffer | None) -> tuple[str, str] | None:
    if isinstance(block, EmbeddedResourceContentBlock):
        res = block.resource
        if not isinstance(res, TextResourceContents):
            return None
        path = _inside(res.uri, repo)
        return (str(path.relative_to(repo)) if path else res.uri), res.text
    if not isinstance(block, ResourceContentBlock):
        return None
    path = _inside(block.uri, repo)
    if path is None:
        log.info("not read (outside the repository or not a file): %s", block.uri)
        return None
    rel = str(path.relative_to(repo))
    if read_buffer is not None:
        try:
            return rel, await read_buffer(str(path))
        except Exception as exc:  # the client could not: the file on disk will do
            log.info("fs/read_text_file %s failed: %r", path, exc)
    try:
        if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
            return None
        return rel, path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _inside(uri: str, repo: Path) -> Path | None:
    """The absolute path ``uri`` names when it is a file inside ``repo``."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("file", ""):
        return None
    raw = unquote(parsed.path if parsed.scheme == "file" else uri)
    if not raw:
        return None
    path = Path(raw) if Path(raw).is_absolute() else repo / raw
    try:
        resolved = path.resolve()
        resolved.relative_to(repo)
    except (OSError, ValueError):
        return None
    return resolved
