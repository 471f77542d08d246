"""Evidence bundles on disk: writing, sealing, verifying, and every kind of tampering."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.clock import ManualClock
from app.errors import UsageError
from app.evidence.bundle import (
    MANIFEST,
    RUN_INFO,
    EvidenceBundle,
    EvidenceError,
    UnknownRun,
    check_name,
    list_runs,
    read_manifest,
    resolve_run,
    verify_bundle,
)
from app.evidence.read import gate_facts, read_cost, read_verdicts
from app.evidence.runid import new_run_id, validate_run_id
from app.policy import load_policy
from app.policy.gate import VerdictRecord
from app.workspace.sandbox import SandboxResult

HEAD = "c" * 40

POLICY = load_policy().policy


def sandbox_result(exit_code: int = 0, output: str = "1 passed\n") -> SandboxResult:
    return SandboxResult(
        argv=["python", "-m", "pytest"],
        cwd="/w",
        exit_code=exit_code,
        output=output,
        timed_out=False,
        runner="bwrap",
        degraded=False,
        reason="",
        duration_s=1.5,
        timeout_s=600,
        memory_mb=4096,
    )


CLOUD_APPROVE = VerdictRecord(
    model="claude-sonnet-4.6",
    provider="anthropic",
    local=False,
    verdict="approve",
    citations_resolved=True,
)


def full_bundle(repo: Path, run_id: str = "run-1", *, clock: ManualClock | None = None) -> Path:
    clock = clock or ManualClock()
    b = EvidenceBundle.create(repo, run_id, task="fix add()", session="s1", clock=clock)
    b.write_text("TASK_BRIEF.md", "# Task\nfix add()\n")
    b.write_json("brief.json", {"task": "fix add()", "files": ["calc.py"]})
    b.write_json("plan.json", {"goal": "fix", "confidence": 0.8})
    b.write_diff(1, "--- a/calc.py\n+++ b/calc.py\n")
    b.write_test_loop(1, sandbox_result(1, "1 failed\n"), attempt=1, commit="b" * 40)
    b.write_diff(2, "--- a/calc.py\n+++ b/calc.py\n")
    b.write_test_loop(2, sandbox_result(0), attempt=2, commit=HEAD)
    b.write_json("highrisk.json", {"high_risk": False, "reasons": []})
    b.write_json("critique.json", {"risks": []})
    b.write_verdicts([CLOUD_APPROVE])
    b.write_json("cost.json", {"total_usd": 0.42, "calls": 3})
    clock.advance(90)
    b.finalize(status="merge_ready", base="a" * 40, branch="switchyard/" + run_id, head=HEAD)
    return b.path


def test_create_finalize_verify(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2026, 3, 1, 9, 30, tzinfo=UTC))
    path = full_bundle(tmp_path, clock=clock)
    assert path == tmp_path / ".switchyard" / "runs" / "run-1"
    assert (tmp_path / ".switchyard" / ".gitignore").read_text().endswith("*\n")
    m = read_manifest(path)
    assert (m.run_id, m.task, m.session, m.status) == ("run-1", "fix add()", "s1", "merge_ready")
    assert m.created == "2026-03-01T09:30:00.000Z" and m.finalized == "2026-03-01T09:31:30.000Z"
    assert m.head == HEAD and m.branch == "switchyard/run-1" and m.audit is None
    assert sorted(m.files) == [
        "TASK_BRIEF.md",
        "brief.json",
        "cost.json",
        "critique.json",
        "diffs/attempt-1.diff",
        "diffs/attempt-2.diff",
        "highrisk.json",
        "plan.json",
        RUN_INFO,
        "tests/loop-1.json",
        "tests/loop-1.log",
        "tests/loop-2.json",
        "tests/loop-2.log",
        "verdict.json",
    ]
    entry = m.files["TASK_BRIEF.md"]
    assert entry.size == len("# Task\nfix add()\n")
    log = (path / "tests" / "loop-1.log").read_text()
    assert log.startswith("$ python -m pytest\n# runner=bwrap exit=1") and log.endswith(
        "1 failed\n"
    )
    report = verify_bundle(path)
    assert report.ok and report.problems == [] and report.files_checked == 14


def test_a_sealed_bundle_takes_no_more_writes(tmp_path: Path) -> None:
    path = full_bundle(tmp_path)
    again = EvidenceBundle.open(tmp_path, "run-1")
    assert again.sealed
    with pytest.raises(EvidenceError, match="sealed"):
        again.write_text("late.txt", "x")
    with pytest.raises(EvidenceError, match="already sealed"):
        again.finalize(status="failed")
    with pytest.raises(EvidenceError, match="already exists"):
        EvidenceBundle.create(tmp_path, "run-1")
    assert verify_bundle(path).ok


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (lambda p: (p / "plan.json").write_text('{"goal": "other"}'), "plan.json: sha256"),
        (lambda p: (p / "tests" / "loop-2.json").unlink(), "tests/loop-2.json: missing"),
        (lambda p: (p / "extra.txt").write_text("x"), "extra.txt: not listed"),
        (lambda p: (p / "diffs" / ".hidden").write_text("x"), "diffs/.hidden: not listed"),
        (lambda p: (p / "verdict.json").write_bytes(b""), "verdict.json: sha256"),
        (lambda p: _swap_for_symlink(p / "cost.json"), "cost.json: not a regular file"),
        (lambda p: (p / MANIFEST).unlink(), "manifest.json is missing"),
        (lambda p: (p / MANIFEST).write_text("{"), "not a valid manifest"),
        (lambda p: _edit_manifest(p, run_id="run-2"), "is not the bundle's"),
        (lambda p: _edit_manifest(p, add="../outside"), "invalid name '../outside'"),
    ],
)
def test_tampering_is_detected(tmp_path: Path, tamper, expected: str) -> None:  # type: ignore[no-untyped-def]
    path = full_bundle(tmp_path)
    tamper(path)
    report = verify_bundle(path)
    assert not report.ok
    assert any(expected in p for p in report.problems), report.problems


def _swap_for_symlink(p: Path) -> None:
    target = p.with_name("elsewhere")
    p.rename(target)
    p.symlink_to(target.name)


def _edit_manifest(path: Path, *, run_id: str | None = None, add: str | None = None) -> None:
    data = json.loads((path / MANIFEST).read_text())
    if run_id:
        data["run_id"] = run_id
    if add:
        data["files"][add] = {"sha256": "0" * 64, "size": 0}
    (path / MANIFEST).write_text(json.dumps(data))


def test_names_are_checked() -> None:
    for good in ("plan.json", "diffs/attempt-1.diff", "tests/loop-10.log", "a_b/c-d.e"):
        assert check_name(good) == good
    for bad in ("", "../x", "/abs", "a//b", "a/./b", MANIFEST, ".tmp-x", "d/.tmp-y", "a\\b", " x"):
        with pytest.raises(UsageError):
            check_name(bad)


def test_writes_are_atomic_and_crashed_writes_are_not_evidence(tmp_path: Path) -> None:
    b = EvidenceBundle.create(tmp_path, "run-1", clock=ManualClock())
    b.write_text("plan.json", "v1")
    b.write_text("plan.json", "v2")
    assert (b.path / "plan.json").read_text() == "v2"
    assert [p.name for p in b.path.iterdir() if p.name.startswith(".tmp-")] == []
    (b.path / "diffs").mkdir()
    (b.path / "diffs" / ".tmp-abc123").write_text("half a diff")  # as after a crash
    m = b.finalize(status="failed", reason="2 failed loops")
    assert not (b.path / "diffs" / ".tmp-abc123").exists()
    assert "diffs/.tmp-abc123" not in m.files and m.reason == "2 failed loops"
    assert verify_bundle(b.path).ok


def test_list_and_resolve_runs(tmp_path: Path) -> None:
    assert list_runs(tmp_path) == []
    clock = ManualClock()
    full_bundle(tmp_path, "20260101-120000-aaaaaa", clock=clock)
    clock.advance(60)
    EvidenceBundle.create(tmp_path, "20260101-120100-bbbbbb", task="crashed", clock=clock)
    clock.advance(60)
    full_bundle(tmp_path, "20260101-120200-bbbbcc", clock=clock)
    runs = list_runs(tmp_path)
    assert [r.run_id for r in runs] == [
        "20260101-120000-aaaaaa",
        "20260101-120100-bbbbbb",
        "20260101-120200-bbbbcc",
    ]
    assert [r.finalized for r in runs] == [True, False, True]
    assert runs[1].task == "crashed" and runs[1].status is None
    assert runs[0].status == "merge_ready"

    assert resolve_run(tmp_path, "20260101-120000").name == "20260101-120000-aaaaaa"
    assert resolve_run(tmp_path, "20260101-120200-bbbbcc").name == "20260101-120200-bbbbcc"
    with pytest.raises(UsageError, match="ambiguous") as amb:
        resolve_run(tmp_path, "2026")
    assert amb.value.exit_code == 2
    with pytest.raises(UnknownRun) as unknown:
        resolve_run(tmp_path, "nope")
    assert unknown.value.exit_code == 2


def test_verdict_file_shapes(tmp_path: Path) -> None:
    def write(obj: object) -> list[VerdictRecord]:
        (tmp_path / "verdict.json").write_text(json.dumps(obj))
        return read_verdicts(tmp_path)

    assert read_verdicts(tmp_path) == []
    base = CLOUD_APPROVE.model_dump()
    assert write({"verdicts": [base]}) == [CLOUD_APPROVE]
    assert write([base, base]) == [CLOUD_APPROVE, CLOUD_APPROVE]
    # One verdict, carrying the Judge's findings beside the fields the gate reads.
    rich = {**base, "verdict": "needs-work", "findings": [{"cite": "calc.py:2"}]}
    assert write(rich)[0].verdict == "needs_work"
    with pytest.raises(EvidenceError, match="citations_resolved"):
        write({k: v for k, v in base.items() if k != "citations_resolved"})
    with pytest.raises(EvidenceError, match="not an object"):
        write([1])
    with pytest.raises(EvidenceError, match="not valid JSON"):
        (tmp_path / "verdict.json").write_text("{")
        read_verdicts(tmp_path)


def test_gate_facts(tmp_path: Path) -> None:
    path = full_bundle(tmp_path)
    m = read_manifest(path)
    facts = gate_facts(path, m, POLICY)
    assert facts.tests_green and not facts.high_risk and facts.verdicts == [CLOUD_APPROVE]
    assert facts.notes == [] and facts.last_loop is not None and facts.last_loop.loop == 2
    assert facts.gate(human_approved=True).ok
    assert not facts.gate(human_approved=False).ok
    assert read_cost(path) == {"total_usd": 0.42, "calls": 3}

    # The tests must have run on the sealed commit.
    moved = m.model_copy(update={"head": "d" * 40})
    stale = gate_facts(path, moved, POLICY)
    assert not stale.tests_green and "not on the sealed branch tip" in stale.notes[0]


def test_gate_facts_fail_safe(tmp_path: Path) -> None:
    b = EvidenceBundle.create(tmp_path, "run-2", clock=ManualClock())
    b.write_test_loop(1, sandbox_result(0), commit=HEAD)
    b.write_test_loop(2, sandbox_result(2, "boom"), commit=HEAD)
    m = b.finalize(status="failed", head=HEAD)
    facts = gate_facts(b.path, m, POLICY)
    assert not facts.tests_green and facts.high_risk
    assert facts.notes == [
        "GR-006: the last test loop (2) exited 2",
        "GR-002: the bundle has no highrisk.json: treated as High-Risk",
    ]
    empty = EvidenceBundle.create(tmp_path, "run-3", clock=ManualClock())
    m3 = empty.finalize(status="stopped")
    assert "no test loop is recorded" in gate_facts(empty.path, m3, POLICY).notes[0]
    # only the baseline ran (no attempt reached the tests): it said "the last test loop (0)"
    base = EvidenceBundle.create(tmp_path, "run-5", clock=ManualClock())
    base.write_test_loop(0, sandbox_result(1, "red"), commit=HEAD)
    m5 = base.finalize(status="stopped", head=HEAD)
    assert gate_facts(base.path, m5, POLICY).notes[0] == (
        "GR-006: only the baseline test run, before any change, exited 1"
    )


def test_loops_sort_numerically(tmp_path: Path) -> None:
    b = EvidenceBundle.create(tmp_path, "run-4", clock=ManualClock())
    for n in (1, 2, 10):
        b.write_test_loop(n, sandbox_result(0 if n == 10 else 1), commit=HEAD)
    m = b.finalize(status="merge_ready", head=HEAD)
    facts = gate_facts(b.path, m, POLICY)
    assert facts.last_loop is not None and facts.last_loop.loop == 10 and facts.tests_green


def test_run_ids() -> None:
    rid = new_run_id(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "abc123")
    assert rid == "20260102-030405-abc123"
    assert len(new_run_id(datetime.now(UTC))) == len(rid)
    for bad in ("", "-a", "a/b", "a..b", "a.lock", "x" * 81, "a b", "é"):
        with pytest.raises(UsageError):
            validate_run_id(bad)


def test_unreadable_manifest_is_reported_not_raised(tmp_path: Path) -> None:
    path = full_bundle(tmp_path)
    os.chmod(path / MANIFEST, 0o000)
    try:
        report = verify_bundle(path)
    finally:
        os.chmod(path / MANIFEST, 0o644)
    # root reads anything; elsewhere the manifest is unreadable: either way, no traceback
    assert report.ok or "cannot be read" in report.problems[0]


def test_a_bundle_never_classified_says_so_in_the_refusal(tmp_path: Path) -> None:
    """No highrisk.json (a run that changed nothing): held as High-Risk, and the gate's
    reason says the run was never classified, not that it is a High-Risk change."""
    b = EvidenceBundle.create(tmp_path, "run-6", clock=ManualClock())
    b.write_test_loop(1, sandbox_result(0), commit=HEAD)
    m = b.finalize(status="merge_ready", head=HEAD)
    facts = gate_facts(b.path, m, POLICY)
    assert facts.high_risk and not facts.high_risk_classified
    gate = facts.gate(human_approved=True)
    assert not gate.ok
    assert gate.reasons == [
        "GR-002: the run was never classified as High-Risk or not, so it is held to the"
        " High-Risk gate: it needs an approving cloud Judge verdict"
    ]
    classified = full_bundle(tmp_path, "run-7")
    assert gate_facts(classified, read_manifest(classified), POLICY).high_risk_classified
