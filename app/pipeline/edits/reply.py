"""The Implementer's reply as a parser of GR-012's one owner (:mod:`app.router.structured`).

A reply fits when it parses into an edit list *and* every edit lands in the files as they
are: so an edit that does not land is what the one repair turn is about, with the
applier's refusal (the nearest text and its line numbers, or the candidates) as the
problem. The owner makes that repair and audits it; this module only judges a reply, and
keeps a record of each one for the evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.pipeline.edits.apply import apply_edits
from app.pipeline.edits.model import EditList, EditNote, Refusal, check_path
from app.pipeline.edits.parse import EditFormatError, parse_edits
from app.router.structured import ReplyRejected

#: a file's text by its repository path; None when there is no such file
Reader = Callable[[str], "str | None"]


class UnreadableFile(ValueError):
    """A file an edit names exists but is not UTF-8 text."""


class Change(BaseModel):
    """A reply that fits: its edit list and the new text of every file it changes."""

    model_config = ConfigDict(frozen=True)

    edits: EditList
    files: dict[str, str]
    notes: list[EditNote]


class ReplyRecord(BaseModel):
    """One reply as it was judged (kept in the evidence, one per generation)."""

    outcome: Literal["landed", "format", "refused"]
    format: str | None = None
    edits: EditList | None = None
    notes: list[EditNote] = Field(default_factory=list)
    refusals: list[Refusal] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    #: the reply as written, when it did not land (clipped; the bundle masks it)
    reply: str = ""


#: characters of a reply that did not land kept in its record
REPLY_CHARS = 4000


class EditReplyParser:
    """Text → :class:`Change`, or :class:`ReplyRejected` with what to fix."""

    def __init__(self, read: Reader) -> None:
        self._read = read
        self.records: list[ReplyRecord] = []

    def __call__(self, text: str) -> Change:
        try:
            edits = parse_edits(text, exists=self._exists)
        except EditFormatError as exc:
            self.records.append(
                ReplyRecord(outcome="format", problems=exc.problems, reply=text[:REPLY_CHARS])
            )
            raise ReplyRejected(exc.problems) from None
        files: dict[str, str | None] = {}
        unreadable: list[str] = []
        for path in edits.paths():
            try:
                files[path] = self._read(path)
            except UnreadableFile as exc:
                unreadable.append(f"{path}: {exc}")
        if unreadable:
            self.records.append(
                ReplyRecord(
                    outcome="format",
                    format=edits.format,
                    edits=edits,
                    problems=unreadable,
                    reply=text[:REPLY_CHARS],
                )
            )
            raise ReplyRejected(unreadable)
        applied = apply_edits(files, edits.edits)
        record = ReplyRecord(
            outcome="landed" if applied.ok else "refused",
            format=edits.format,
            edits=edits,
            notes=applied.notes,
            refusals=applied.refusals,
            problems=applied.feedback(),
            reply="" if applied.ok else text[:REPLY_CHARS],
        )
        self.records.append(record)
        if not applied.ok:
            raise ReplyRejected(applied.feedback())
        return Change(edits=edits, files=applied.files, notes=applied.notes)

    def _exists(self, path: str) -> bool:
        """Whether ``path`` names a file: the parser's question for a path line that can
        be read two ways (a file that is not text is there all the same)."""
        try:
            return self._read(check_path(path)) is not None
        except UnreadableFile:
            return True
        except (ValueError, OSError):  # not a path in the tree, or one the system refuses
            return False

    @property
    def last(self) -> ReplyRecord | None:
        return self.records[-1] if self.records else None
