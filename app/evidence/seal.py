"""Sealing: the anchor of ``audit.jsonl`` in the manifest, and the audit line that
anchors the manifest itself in the chain."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.counted import counted
from app.evidence.errors import EvidenceError
from app.evidence.layout import AUDIT
from app.evidence.records import AuditAnchor, Manifest

if TYPE_CHECKING:
    from app.audit.types import AuditLine

#: reason code of the audit line that records a sealed bundle's manifest hash
SEALED_CODE = "EVIDENCE_SEALED"


def audit_anchor(path: Path) -> AuditAnchor:
    """The line count and the last line's seq and hash of the exported ``audit.jsonl``."""
    count, last = 0, None
    with path.open(encoding="utf-8") as fh:
        for raw in fh:
            if raw.strip():
                count += 1
                last = raw
    if last is None:
        return AuditAnchor(lines=0)
    try:
        data = json.loads(last)
    except ValueError:
        raise EvidenceError(f"{AUDIT}: the last line is not JSON") from None
    return AuditAnchor(lines=count, head_seq=data.get("seq"), head_hash=data.get("hash"))


def bundle_seal_line(manifest: Manifest, manifest_sha256: str) -> dict[str, Any]:
    """The audit line that anchors a sealed bundle in the chain, as ``append`` kwargs.

    With it, ``evidence verify`` also catches a bundle rewritten wholesale (files and a
    recomputed manifest), which the manifest alone cannot.
    """
    return {
        "kind": "run",
        "run": manifest.run_id,
        "reason_codes": [SEALED_CODE],
        "values": {"manifest_sha256": manifest_sha256, "status": manifest.status},
        "detail": (
            f"evidence bundle sealed ({manifest.status}, {counted(len(manifest.files), 'file')})"
        ),
    }


def sealed_hash(lines: Iterable[AuditLine], run_id: str) -> tuple[str, int] | None:
    """The manifest sha256 (and line seq) of the newest seal line for ``run_id``, if any."""
    found: tuple[str, int] | None = None
    for line in lines:
        if line.run == run_id and line.kind == "run" and SEALED_CODE in line.reason_codes:
            value = line.values.get("manifest_sha256")
            if isinstance(value, str):
                found = (value, line.seq)
    return found


__all__ = ["SEALED_CODE", "audit_anchor", "bundle_seal_line", "sealed_hash"]
