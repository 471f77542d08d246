"""Every file an evidence bundle holds is masked before it is written, and the manifest
hashes what is on disk: the masked bytes (DESIGN decision 3)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from app.audit.masking import REDACTED
from app.clock import ManualClock
from app.evidence.bundle import MANIFEST, EvidenceBundle, file_entry, verify_bundle
from app.evidence.read import gate_facts, read_verdicts
from app.policy import load_policy
from app.policy.gate import VerdictRecord
from tests.unit.test_evidence_bundle import HEAD, sandbox_result

AWS_ID = "AKIAIOSFODNN7EXAMPLE"

POLICY = load_policy().policy


@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch) -> str:
    """A key in a shape no pattern knows: only the environment net can mask it."""
    value = f"canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("DEEPSEEK_API_KEY", value)
    return value


def test_every_writer_masks_and_the_manifest_hashes_the_masked_files(
    tmp_path: Path, canary: str
) -> None:
    b = EvidenceBundle.create(tmp_path, "run-1", task=f"use {canary}", clock=ManualClock())
    b.write_text("TASK_BRIEF.md", f"# Task\nkey {canary}\n")
    b.write_json("plan.json", {"goal": f"rotate {AWS_ID}", "password": "hunter22-x"})
    b.write_diff(1, f"--- a/.env\n+++ b/.env\n@@ -1 +1 @@\n-APP_SECRET=old-value-1\n+K={canary}\n")
    b.write_test_loop(
        1, sandbox_result(output=f"DEEPSEEK_KEY = '{canary}'\nAPP_SECRET=s3cr3t-42\n"), commit=HEAD
    )
    b.write_json("critique.json", {"findings": [f"settings.py quotes {canary}"]})
    b.write_verdicts(
        [
            VerdictRecord(
                model="claude-sonnet-4.6",
                provider="anthropic",
                local=False,
                verdict="approve",
                citations_resolved=True,
            ),
            {"model": "qwen", "summary": f"saw {canary}", "verdict": "approve"},
        ]
    )
    b.write_bytes("raw.bin", b"\xff\xfe" + canary.encode() + b"\x80")
    manifest = b.finalize(
        status="merge_ready", head=HEAD, reason=f"because {canary}", extra={"k": canary}
    )

    secrets = (canary, AWS_ID, "hunter22-x", "old-value-1", "s3cr3t-42")
    files = [p for p in b.path.rglob("*") if p.is_file()]
    assert len(files) == 10
    for path in files:
        data = path.read_bytes()
        assert not [s for s in secrets if s.encode() in data], path.name
    for rel, entry in manifest.files.items():
        assert file_entry(b.path / rel) == entry  # the hash of the masked bytes
    assert verify_bundle(b.path).ok

    assert REDACTED in (b.path / "diffs" / "attempt-1.diff").read_text()
    log = (b.path / "tests" / "loop-1.log").read_text()
    assert f"DEEPSEEK_KEY = '{REDACTED}'" in log and f"APP_SECRET={REDACTED}" in log
    assert (b.path / "raw.bin").read_bytes() == b"\xff\xfe" + REDACTED.encode() + b"\x80"
    assert manifest.task == f"use {REDACTED}"
    assert REDACTED in (b.path / MANIFEST).read_text()


def test_masking_leaves_what_the_merge_gate_reads_as_it_was(tmp_path: Path, canary: str) -> None:
    b = EvidenceBundle.create(tmp_path, "run-2", clock=ManualClock())
    b.write_test_loop(1, sandbox_result(output=f"ok {canary}\n"), commit=HEAD)
    b.write_json("highrisk.json", {"high_risk": True, "reasons": []})
    b.write_verdicts(
        [
            VerdictRecord(
                model="claude-sonnet-4.6",
                provider="anthropic",
                local=False,
                verdict="approve",
                citations_resolved=True,
            )
        ]
    )
    manifest = b.finalize(status="merge_ready", head=HEAD)
    facts = gate_facts(b.path, manifest, POLICY)
    assert facts.tests_green and facts.high_risk
    assert [v.verdict for v in read_verdicts(b.path)] == ["approve"]
