"""The audit line and the small interface every layer writes through."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NotRequired, Protocol, TypedDict, Unpack

from pydantic import BaseModel, ConfigDict, Field

from app.audit.kinds import AUDIT_KINDS

__all__ = ["AUDIT_KINDS", "Appended", "AuditLine", "AuditSink", "LineFields"]


class AuditLine(BaseModel):
    """One hash-chained line. ``hash`` covers every other field as canonical JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    seq: int
    ts: str
    session: str
    run: str | None = None
    kind: str
    role: str | None = None
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    reason_codes: list[str] = Field(default_factory=list)
    values: dict[str, Any] = Field(default_factory=dict)
    policy_version: str | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)
    detail: str = ""
    prev_hash: str
    hash: str


#: ``AuditLine.model_validate_json`` without its Python wrapper (about 1 µs a line)
read_line: Callable[[str], AuditLine] = AuditLine.__pydantic_validator__.validate_json


class Appended:
    """A line as it was appended: its ``seq``, ``hash`` and canonical ``text`` (what is
    stored, exported and verified). :attr:`line` is the :class:`AuditLine` read from that
    text, exactly what a reader of the log gets; it is read when first asked for, as the
    router's path never asks (reading an escalation line costs 6-12 µs, issue 20)."""

    __slots__ = ("_line", "hash", "seq", "text")

    def __init__(self, seq: int, digest: str, text: str, line: AuditLine | None = None) -> None:
        self.seq = seq
        self.hash = digest
        self.text = text
        self._line = line

    @property
    def line(self) -> AuditLine:
        line = self._line
        if line is None:
            line = self._line = read_line(self.text)
        return line

    def __repr__(self) -> str:
        return f"Appended(seq={self.seq}, hash={self.hash[:12]}…)"


class LineFields(TypedDict):
    """An append's keyword arguments beside ``kind`` (``AuditBase.add`` spells them out,
    with their defaults: the router's path passes them without a dict)."""

    session: str
    run: NotRequired[str | None]
    role: NotRequired[str | None]
    from_: NotRequired[str | None]
    to: NotRequired[str | None]
    reason_codes: NotRequired[Sequence[str]]
    values: NotRequired[Mapping[str, Any] | None]
    provenance: NotRequired[Mapping[str, Any] | None]
    detail: NotRequired[str]


class AuditSink(Protocol):
    """What a layer needs to write an audit line. :class:`app.audit.log.AuditLog` is one."""

    async def append(self, kind: str, **fields: Unpack[LineFields]) -> AuditLine: ...
