"""The typed edit list (GR-012's machine-read message for code) and the applier's answers.

A model writes its change as plain text (SEARCH/REPLACE blocks, a whole small file, or a
unified diff); :mod:`.parse` turns that text into an :class:`EditList`, which is what the
pipeline passes on and keeps in the evidence. :mod:`.apply` answers with an
:class:`Applied`: the new text of every file it changed, a note per edit saying how and
where it landed, and a typed :class:`Refusal` per edit that did not.
"""

from __future__ import annotations

import unicodedata
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.paths import STATE_DIR_NAME

#: characters in one edit's text at most (a whole small file fits many times over)
MAX_TEXT = 60_000
#: edits in one reply at most
MAX_EDITS = 64


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: the Unicode categories no edit path holds: control, surrogate, format, separators
_UNSEEN = frozenset({"Cc", "Cs", "Cf", "Zl", "Zp"})


def check_path(value: str) -> str:
    """A repository-relative POSIX path that stays inside the tree and out of git's and
    Switchyard's own directories (the worktree checks the real path again on write)."""
    path = value.strip()
    if not path or len(path) > 400:
        raise ValueError("a path must be 1 to 400 characters")
    if "\\" in path or any(unicodedata.category(c) in _UNSEEN for c in path):
        # (every control character, ESC included, a lone surrogate, a format character
        # such as a bidi override, and a line or paragraph separator: a git-quoted name
        # decodes to any byte, and a name must read as what it is, reviews)
        raise ValueError(f"{path!r}: a path holds no control characters or backslashes")
    pure = PurePosixPath(path)
    if pure.is_absolute() or path.startswith("~"):
        raise ValueError(f"{path}: the path must be relative to the repository")
    parts = [p for p in pure.parts if p != "."]
    if not parts or ".." in parts:
        raise ValueError(f"{path}: the path must stay inside the repository")
    if parts[0] in (".git", STATE_DIR_NAME):
        raise ValueError(f"{path}: {parts[0]}/ is not part of the change")
    return "/".join(parts)


RelPath = Annotated[str, AfterValidator(check_path)]


class SearchReplace(_Strict):
    """Replace ``search`` (lines copied from the file) with ``replace``. Both hold whole
    lines, each ending in a newline; an empty ``search`` creates a new file."""

    kind: Literal["replace"] = "replace"
    path: RelPath
    search: str = Field(max_length=MAX_TEXT)
    replace: str = Field(max_length=MAX_TEXT)


class WholeFile(_Strict):
    """The whole new content of a small (or new) file."""

    kind: Literal["write"] = "write"
    path: RelPath
    content: str = Field(max_length=MAX_TEXT)


class DiffHunk(_Strict):
    """One hunk of a unified diff, its header's line numbers dropped (never trusted)."""

    kind: Literal["hunk"] = "hunk"
    path: RelPath
    #: each line starts with " ", "-" or "+"
    lines: list[Annotated[str, Field(max_length=MAX_TEXT)]] = Field(max_length=5000)
    #: ``--- /dev/null``: the hunk creates the file
    new_file: bool = False


Edit = Annotated[SearchReplace | WholeFile | DiffHunk, Field(discriminator="kind")]

Format = Literal["blocks", "diff", "json"]


class Trailer(_Strict):
    """The small JSON trailer after the edits: the §3 self-check signal, validated."""

    self_check_confidence: float = Field(ge=0, le=1)
    notes: str = Field(default="", max_length=500)


class EditList(_Strict):
    """What the Implementer's reply means: the edits, in order, and its self-check."""

    edits: list[Edit] = Field(min_length=1, max_length=MAX_EDITS)
    self_check_confidence: float = Field(ge=0, le=1)
    notes: str = Field(default="", max_length=500)
    #: how the model wrote them (blocks, a unified diff, or the older JSON with a diff)
    format: Format = "blocks"

    def paths(self) -> list[str]:
        return list(dict.fromkeys(e.path for e in self.edits))


# ── the applier's answers ────────────────────────────────────────────────────────────────


class LineSpan(_Strict):
    """Lines ``start``..``end`` of a file, 1-based and inclusive (``end < start``: an
    empty span, i.e. a point before line ``start``)."""

    start: int = Field(ge=1)
    end: int = Field(ge=0)

    def __str__(self) -> str:
        if self.end < self.start:
            return f"before line {self.start}"
        return f"line {self.start}" if self.end == self.start else f"lines {self.start}-{self.end}"


How = Literal[
    "exact",
    "trailing_whitespace",
    "whitespace",
    "blank_lines",
    "fuzzy_context",
    "elided",
    "line_numbers",
    "created",
    "rewritten",
]

RefusalReason = Literal[
    "not_found",
    "ambiguous",
    "missing_file",
    "file_exists",
    "too_large",
    "bad_elision",
    "reindent",
    "no_change",
]


class EditNote(_Strict):
    """How and where one edit landed (in the file as it was before that edit)."""

    edit: int = Field(ge=1)
    path: str
    how: How
    at: LineSpan | None = None
    detail: str = ""


class Refusal(_Strict):
    """An edit that did not land, and why: what the model is told in the next turn."""

    edit: int = Field(ge=0)
    path: str
    reason: RefusalReason
    #: the whole feedback, with the nearest text and its line numbers where there is one
    message: str
    #: where an ambiguous edit could go
    candidates: list[LineSpan] = Field(default_factory=list)
    #: the nearest text found for an edit that was not found
    nearest: LineSpan | None = None


class Applied(_Strict):
    """The applier's answer. ``files`` holds the new text of each changed file and is
    meant to be used only when ``ok``: a refused edit refuses the whole attempt, so a
    change never lands half-applied."""

    files: dict[str, str] = Field(default_factory=dict)
    notes: list[EditNote] = Field(default_factory=list)
    refusals: list[Refusal] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refusals and bool(self.files)

    def feedback(self) -> list[str]:
        """One problem per refused edit, as the repair turn shows them."""
        return [r.message for r in self.refusals]
