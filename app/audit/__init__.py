"""The hash-chained audit log (GR-005, GR-013)."""

from app.audit.canonical import GENESIS_HASH, VerifyReport, canonical_json, verify_lines
from app.audit.log import AuditLog
from app.audit.redact import redact
from app.audit.types import AUDIT_KINDS, AuditLine, AuditSink

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
