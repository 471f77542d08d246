"""Edits written out as a model would write them: the prompt's example, the tests'
scripted replies and the bench's inputs all come from here, so they cannot drift from
what :mod:`.parse` reads."""

from __future__ import annotations

import json
from collections.abc import Iterable

from app.pipeline.edits.model import DiffHunk, Edit, EditList, SearchReplace, WholeFile


def trailer(confidence: float, notes: str = "") -> str:
    return json.dumps({"self_check_confidence": confidence, "notes": notes})


def block(path: str, search: str, replace: str) -> str:
    """One SEARCH/REPLACE block (``search`` and ``replace`` are whole lines)."""
    return f"{path}\n<<<<<<< SEARCH\n{_lines(search)}=======\n{_lines(replace)}>>>>>>> REPLACE\n"


def whole_file(path: str, content: str) -> str:
    return f"{path}\n<<<<<<< FILE\n{_lines(content)}>>>>>>> FILE\n"


def reply(blocks: Iterable[str], confidence: float = 0.8, notes: str = "") -> str:
    """A whole reply: the blocks, then the trailer."""
    return "\n".join(blocks) + "\n" + trailer(confidence, notes) + "\n"


def hunk_text(edit: DiffHunk) -> str:
    head = f"--- {'/dev/null' if edit.new_file else 'a/' + edit.path}\n+++ b/{edit.path}\n"
    return head + "@@ @@\n" + "".join(line + "\n" for line in edit.lines)


def render(edits: EditList) -> str:
    """An edit list as the reply that parses back to it (blocks, or a diff)."""
    parts: list[str] = []
    for edit in edits.edits:
        parts.append(_one(edit))
    return reply(parts, edits.self_check_confidence, edits.notes)


def _one(edit: Edit) -> str:
    if isinstance(edit, SearchReplace):
        return block(edit.path, edit.search, edit.replace)
    if isinstance(edit, WholeFile):
        return whole_file(edit.path, edit.content)
    return hunk_text(edit)


def _lines(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


EXAMPLE = reply(
    [
        block(
            "app/util.py",
            "def add(a, b):\n    return a - b\n",
            "def add(a, b):\n    return a + b\n",
        )
    ],
    0.8,
    "add() subtracted",
)
