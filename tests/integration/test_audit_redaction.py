"""A canary key in the environment never reaches the database file or an export."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from app.audit import AuditLog, verify_lines
from app.audit.redact import REDACTED


async def test_canary_keys_never_reach_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Shapes no pattern knows: only the environment net can catch these.
    canary = f"canary-{uuid.uuid4().hex}"
    token = f"tok-{uuid.uuid4().hex}"
    shaped = "sk-ant-api03-" + uuid.uuid4().hex
    monkeypatch.setenv("ANTHROPIC_API_KEY", canary)
    monkeypatch.setenv("ACME_SERVICE_TOKEN", token)

    db = tmp_path / "audit.sqlite3"
    export = tmp_path / "audit.jsonl"
    async with AuditLog.open(db) as log:
        await log.append(
            "escalation",
            session=f"s-{canary}",
            run=token,
            role=canary,
            from_=f"local {canary}",
            to=shaped,
            reason_codes=[canary, "confidence_low"],
            values={"headers": {"x-api-key": canary}, "nested": [[token]], canary: 1},
            provenance={"request": f"Authorization: Bearer {token}"},
            detail=f"called with {canary} / {token} / {shaped}",
        )
        await log.append("call", session="s", detail=f"plain {canary}")
        assert (await log.verify()).ok
        assert await log.export_jsonl(export) == 2
        # While open, recent pages may still sit in the WAL file: check that too.
        assert _files_holding(tmp_path, (canary, token, shaped)) == []
        lines = await log.lines()

    assert _files_holding(tmp_path, (canary, token, shaped)) == []

    text = _read(export)
    assert REDACTED in text
    assert verify_lines(text.splitlines()).ok
    first = json.loads(text.splitlines()[0])
    assert first["role"] == REDACTED
    assert first["values"]["headers"] == {"x-api-key": REDACTED}
    assert lines[1].detail == f"plain {REDACTED}"


def _files_holding(folder: Path, secrets: tuple[str, ...]) -> list[str]:
    """Names of the DB, WAL, SHM and export files whose raw bytes contain any secret."""
    files = [p for p in folder.iterdir() if p.name.startswith("audit")]
    assert any(p.suffix == ".sqlite3" for p in files)
    return [p.name for p in files for s in secrets if s.encode() in p.read_bytes()]


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


async def test_common_credential_shapes_never_reach_disk(tmp_path: Path) -> None:
    """A JWT, a GitLab, npm or Hugging Face token and a quoted ``db_pass`` in a line's
    text, values and provenance (no environment value: the shapes alone) went into the
    audit as they were (a user audit); each is masked before the line is hashed, in the
    database and in the export, and the chain still verifies."""
    from tests.unit.test_masking import COMMON_CREDENTIALS

    texts = [text for text, _ in COMMON_CREDENTIALS]
    secrets = tuple(secret for _, secret in COMMON_CREDENTIALS)
    db = tmp_path / "audit.sqlite3"
    export = tmp_path / "audit.jsonl"
    async with AuditLog.open(db) as log:
        await log.append(
            "call",
            session="s",
            values={"error": texts[0], "nested": [texts[1:3]], "said": {"x": texts[3]}},
            provenance={"request": texts[4]},
            detail=" / ".join(texts),
        )
        assert await log.export_jsonl(export) == 1
        assert _files_holding(tmp_path, secrets) == []
        (line,) = await log.lines()
    assert _files_holding(tmp_path, secrets) == []
    assert line.detail is not None and line.detail.count(REDACTED) == len(texts)
    assert verify_lines(_read(export).splitlines()).ok
