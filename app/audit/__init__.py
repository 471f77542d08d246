"""The hash-chained audit log (GR-005, GR-013).

The names below load on first use (PEP 562): ``app.audit.kinds`` alone must not pull
in pydantic and the log (the TUI's first frame colours by kind before any session)."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.audit.canonical import GENESIS_HASH, VerifyReport, canonical_json, verify_lines
    from app.audit.kinds import AUDIT_KINDS
    from app.audit.log import AuditLog
    from app.audit.redact import redact
    from app.audit.types import AuditLine, AuditSink

_WHERE = {
    "AUDIT_KINDS": "app.audit.kinds",
    "GENESIS_HASH": "app.audit.canonical",
    "AuditLine": "app.audit.types",
    "AuditLog": "app.audit.log",
    "AuditSink": "app.audit.types",
    "VerifyReport": "app.audit.canonical",
    "canonical_json": "app.audit.canonical",
    "redact": "app.audit.redact",
    "verify_lines": "app.audit.canonical",
}

__all__ = [
    "AUDIT_KINDS",
    "GENESIS_HASH",
    "AuditLine",
    "AuditLog",
    "AuditSink",
    "VerifyReport",
    "canonical_json",
    "redact",
    "verify_lines",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(where), name)
