"""The audit line and the small interface every layer writes through."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from app.audit.kinds import AUDIT_KINDS

__all__ = ["AUDIT_KINDS", "AuditLine", "AuditSink"]


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


class AuditSink(Protocol):
    """What a layer needs to write an audit line. :class:`app.audit.log.AuditLog` is one."""

    async def append(
        self,
        kind: str,
        *,
        session: str,
        run: str | None = None,
        role: str | None = None,
        from_: str | None = None,
        to: str | None = None,
        reason_codes: Sequence[str] = (),
        values: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
        detail: str = "",
    ) -> AuditLine: ...
