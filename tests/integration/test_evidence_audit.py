"""A bundle's audit.jsonl from the real chain, its seal, and ``switchyard evidence``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.audit.log import AuditLog
from app.cli import main as cli_main
from app.cli.main import main
from app.clock import ManualClock
from app.config import load_settings
from app.evidence.bundle import (
    AUDIT,
    MANIFEST,
    EvidenceBundle,
    Manifest,
    bundle_seal_line,
    file_entry,
    read_manifest,
    verify_bundle,
)
from app.policy.gate import VerdictRecord
from app.router.ledger.records import BudgetSnapshot, CapUsage
from tests.unit.test_evidence_bundle import CLOUD_APPROVE, HEAD, sandbox_result

RUN = "20260101-120000-abc123"
#: what a run writes: the session's ledger snapshot when the run ended
COST = BudgetSnapshot(
    session="s1",
    day="2026-01-01",
    ts="2026-01-01T12:00:00.000Z",
    per_session=CapUsage(cap_usd=5.0, spent_usd=0.42, reserved_usd=0.0, left_usd=4.58),
    per_day=CapUsage(cap_usd=20.0, spent_usd=0.42, reserved_usd=0.0, left_usd=19.58),
    per_provider={},
    reserved_usd=0.0,
    calls=3,
    by_role={"judge": 0.42},
    by_model={"claude-sonnet-4.6": 0.42},
    by_provider={"anthropic": 0.42, "local": 0.0},
).model_dump()


@pytest.fixture(autouse=True)
def _commands(monkeypatch: pytest.MonkeyPatch) -> None:
    # Registered in COMMAND_MODULES by the integrator; added here until then.
    mods = (*cli_main.COMMAND_MODULES, "app.cli.evidence_cmd", "app.cli.merge_cmd")
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", tuple(dict.fromkeys(mods)))


async def _record(
    repo: Path,
    *,
    seal: bool = True,
    status: str = "merge_ready",
    verdicts: list[VerdictRecord] | None = None,
) -> tuple[Path, Manifest]:
    clock = ManualClock()
    db = load_settings().audit_db
    async with AuditLog.open(db, clock=clock, policy_version="1.0.0") as log:
        b = EvidenceBundle.create(repo, RUN, task="fix add()", session="s1", clock=clock)
        await log.append("run", session="s1", run=RUN, detail="started")
        await log.append("route", session="s0", run="other-run", role="architect")
        await log.append("route", session="s1", run=RUN, role="architect", to="qwen14b")
        await log.append(
            "degradation", session="s1", run=RUN, reason_codes=["GR010_SANDBOX_DEGRADED"]
        )
        await log.append("route", session="s0", run="other-run", role="judge")
        await log.append("verdict", session="s1", run=RUN, role="judge", detail="approve")
        b.write_text("TASK_BRIEF.md", "# fix add()\n")
        b.write_test_loop(1, sandbox_result(0), attempt=1, commit=HEAD)
        b.write_json("highrisk.json", {"high_risk": False})
        b.write_verdicts(verdicts if verdicts is not None else [CLOUD_APPROVE])
        b.write_json("cost.json", COST)
        assert await b.export_audit(log) == 4
        manifest = b.finalize(
            status=status,  # type: ignore[arg-type]
            head=HEAD,
            branch=f"switchyard/{RUN}",
            policy_version="1.0.0",
        )
        if seal:
            await log.append(**bundle_seal_line(manifest, b.manifest_sha256), session="s1")
    return b.path, manifest


def record(repo: Path, **kwargs: object) -> tuple[Path, Manifest]:
    return asyncio.run(_record(repo, **kwargs))  # type: ignore[arg-type]


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    r = tmp_path / "repo"
    r.mkdir()
    yield r


def test_the_export_holds_this_runs_lines_and_verifies(repo: Path) -> None:
    path, manifest = record(repo)
    lines = [json.loads(x) for x in (path / AUDIT).read_text().splitlines()]
    assert [x["run"] for x in lines] == [RUN] * 4
    assert [x["seq"] for x in lines] == [1, 3, 4, 6]  # a sub-sequence of the chain
    assert manifest.audit is not None
    assert (manifest.audit.lines, manifest.audit.head_seq) == (4, 6)
    assert manifest.audit.head_hash == lines[-1]["hash"]
    assert verify_bundle(path).ok


def _rewrite_audit(path: Path, lines: list[str], *, anchor: bool = False) -> None:
    """Change audit.jsonl and fix the manifest's entry for it, as a careful forger would."""
    (path / AUDIT).write_text("".join(x + "\n" for x in lines))
    data = json.loads((path / MANIFEST).read_text())
    data["files"][AUDIT] = file_entry(path / AUDIT).model_dump()
    if anchor:
        last = json.loads(lines[-1])
        data["audit"] = {"lines": len(lines), "head_seq": last["seq"], "head_hash": last["hash"]}
    (path / MANIFEST).write_text(json.dumps(data))


def test_an_edited_audit_line_is_caught_even_with_a_fixed_manifest(repo: Path) -> None:
    path, _ = record(repo)
    lines = (path / AUDIT).read_text().splitlines()
    edited = json.loads(lines[1])
    edited["to"] = "some-cloud-model"
    lines[1] = json.dumps(edited, sort_keys=True, separators=(",", ":"))
    _rewrite_audit(path, lines)
    report = verify_bundle(path)
    assert not report.ok
    assert any("does not match its hash" in p for p in report.problems), report.problems


def test_a_line_forged_before_its_own_fields_is_caught_even_with_a_fixed_manifest(
    repo: Path,
) -> None:
    """Fields put before a line's own: Python's reader keeps the last of a key given twice,
    so the data still hashed; the text is not its data's canonical text."""
    path, _ = record(repo)
    lines = (path / AUDIT).read_text().splitlines()
    lines[1] = '{"detail":"FORGED","to":"some-cloud-model",' + lines[1][1:]
    _rewrite_audit(path, lines)
    report = verify_bundle(path)
    assert report.problems == [f"{AUDIT}: line 3 is not in canonical form (the line was edited)"]


def test_a_line_holding_a_unicode_line_separator_verifies(repo: Path) -> None:
    """JSON keeps U+2028 and U+0085 as they are, and ``evidence verify`` split the file
    with ``splitlines()``, which breaks at them: a model's words in a detail made an
    honest bundle "not valid JSON" (tampered, exit 1)."""

    async def run() -> Path:
        clock = ManualClock()
        async with AuditLog.open(load_settings().audit_db, clock=clock) as log:
            b = EvidenceBundle.create(repo, RUN, task="fix add()", session="s1", clock=clock)
            said = "the model said: a\u2028b\u2029c\x85d"
            await log.append("run", session="s1", run=RUN, detail=said)
            assert await b.export_audit(log) == 1
            b.finalize(status="merge_ready", head=HEAD, branch="b", policy_version="1.0.0")
        return b.path

    path = asyncio.run(run())
    report = verify_bundle(path)
    assert report.ok, report.problems


def test_a_removed_audit_line_is_caught(repo: Path) -> None:
    path, _ = record(repo)
    lines = (path / AUDIT).read_text().splitlines()
    _rewrite_audit(path, lines[:-1])  # cut the tail: only the anchor knows
    report = verify_bundle(path)
    assert not report.ok and any("cut off" in p for p in report.problems), report.problems


def test_a_foreign_line_is_caught(repo: Path) -> None:
    path, _ = record(repo)
    lines = (path / AUDIT).read_text().splitlines()
    # A genuine line of another run, slipped in (hash intact, seq in order).
    db = load_settings().audit_db

    async def other() -> str:
        async with AuditLog.open(db) as log:
            return (await log.lines(run="other-run"))[0].model_dump_json(by_alias=True)

    foreign = json.loads(asyncio.run(other()))
    text = json.dumps(foreign, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    _rewrite_audit(path, [lines[0], text, *lines[1:]], anchor=True)
    report = verify_bundle(path)
    assert not report.ok
    assert any("belongs to run 'other-run'" in p for p in report.problems), report.problems


def test_a_reordered_audit_file_is_caught(repo: Path) -> None:
    path, _ = record(repo)
    lines = (path / AUDIT).read_text().splitlines()
    _rewrite_audit(path, [lines[1], lines[0], *lines[2:]])
    assert not verify_bundle(path).ok


# ── the CLI ──────────────────────────────────────────────────────────────────────────────


def test_verify_ok_with_the_seal(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record(repo)
    assert main(["evidence", "verify", RUN, "--repo", str(repo)]) == 0
    out = capsys.readouterr().out
    assert f"evidence ok: run {RUN}" in out and "sealed in the audit log (line 7)" in out
    assert main(["evidence", "verify", "20260101", "--repo", str(repo), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["problems"] == [] and data["seal_in_audit"] is True
    assert data["run_id"] == RUN and data["files_checked"] == 8


def test_verify_without_a_seal_exits_1_and_says_nothing_vouches_for_it(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A whole, consistent bundle is easy to write by hand; only a run writes its seal
    line. Without one verify said "ok" and exited 0, and merge took the bundle."""
    record(repo, seal=False)
    assert main(["evidence", "verify", RUN, "--repo", str(repo)]) == 1
    err = capsys.readouterr().err
    assert f"evidence UNSEALED: run {RUN}" in err
    assert f"the audit log holds no seal line for run {RUN}" in err
    assert main(["evidence", "verify", RUN, "--repo", str(repo), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["seal_in_audit"] is None


def test_verify_tampered_exits_1_with_the_problems(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = record(repo)
    (path / "cost.json").write_text('{"total_usd": 0.01}')
    (path / "notes.txt").write_text("added later")
    assert main(["evidence", "verify", RUN, "--repo", str(repo)]) == 1
    err = capsys.readouterr().err
    assert "evidence TAMPERED" in err
    assert "cost.json: sha256" in err and "notes.txt: not listed" in err
    assert main(["evidence", "verify", RUN, "--repo", str(repo), "--json"]) == 1
    assert len(json.loads(capsys.readouterr().out)["problems"]) == 2


def test_a_wholesale_rewrite_is_caught_by_the_seal(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = record(repo)
    (path / "cost.json").write_text('{"total_usd": 0.01}')
    data = json.loads((path / MANIFEST).read_text())
    data["files"]["cost.json"] = file_entry(path / "cost.json").model_dump()
    (path / MANIFEST).write_text(json.dumps(data))
    assert verify_bundle(path).ok  # consistent with itself…
    assert main(["evidence", "verify", RUN, "--repo", str(repo)]) == 1
    assert "is not the" in capsys.readouterr().err  # …but not with the chain


def test_unknown_and_ambiguous_runs_exit_2(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evidence", "verify", "nope", "--repo", str(repo)]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    record(repo)
    EvidenceBundle.create(repo, "20260101-999999-zzz", clock=ManualClock())
    assert main(["evidence", "show", "2026", "--repo", str(repo)]) == 2
    assert "ambiguous" in capsys.readouterr().err


def test_show(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    record(repo)
    monkeypatch.chdir(repo)  # --repo defaults to here
    assert main(["evidence", "show", RUN]) == 0
    out = capsys.readouterr().out
    assert f"run {RUN}  merge_ready" in out
    assert "task      fix add()" in out
    assert "evidence  ok" in out
    assert "tests     green: loop 1 exit 0 under bwrap" in out
    assert "risk      not High-Risk" in out
    assert "approve by claude-sonnet-4.6 (anthropic, cloud); citations resolve" in out
    assert "cost      session s1: $0.42 of $5.00 spent in 3 calls (anthropic $0.42)" in out
    assert "gate      holds, given a human's confirmation" in out
    assert "audit.jsonl" in out and "tests/loop-1.log" in out

    assert main(["evidence", "show", RUN, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "merge_ready" and data["verify"]["ok"] is True
    assert data["gate"] == {
        "ok": True,
        "assumes_human_approval": True,
        "reasons": [],
        "notes": [],
    }
    assert data["tests"]["green"] is True and data["high_risk"] is False
    assert data["verdicts"][0]["verdict"] == "approve"
    assert data["cost"] == COST
    names = {f["name"]: f for f in data["files"]}
    assert names["audit.jsonl"]["size"] > 0 and len(names["cost.json"]["sha256"]) == 64


def test_show_says_a_local_verdicts_locality_once(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It read "approve by qwen3-14b (local, local)": the provider "local" and where the
    model ran, the same word twice, as a typo would."""
    local = CLOUD_APPROVE.model_copy(
        update={"model": "qwen3-14b", "provider": "local", "local": True}
    )
    record(repo, verdicts=[CLOUD_APPROVE, local])
    assert main(["evidence", "show", RUN, "--repo", str(repo)]) == 0
    out = capsys.readouterr().out
    assert "approve by qwen3-14b (local); citations resolve" in out
    assert "(local, local)" not in out
    assert "approve by claude-sonnet-4.6 (anthropic, cloud); citations resolve" in out


def test_show_a_refused_and_a_tampered_run(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = record(repo, status="failed")
    (path / "highrisk.json").write_text('{"high_risk": true}')
    (path / "cost.json").write_text('{"total_usd": 0.01}')
    assert main(["evidence", "show", RUN, "--repo", str(repo)]) == 0
    out = capsys.readouterr().out
    assert "evidence  TAMPERED" in out and "gate      refuses:" in out
    assert "cost      unreadable cost.json (not a ledger snapshot)" in out
    assert "EVIDENCE: the bundle does not verify" in out
    assert "STATUS: the run ended failed" in out


def test_show_an_unfinalized_run(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = EvidenceBundle.create(repo, RUN, task="crashed", clock=ManualClock())
    b.write_text("TASK_BRIEF.md", "x")
    assert main(["evidence", "show", RUN, "--repo", str(repo), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["finalized"] is False and data["verify"]["ok"] is False
    assert {f["name"] for f in data["files"]} == {"TASK_BRIEF.md", "run.json"}
    assert main(["evidence", "show", RUN, "--repo", str(repo)]) == 0
    assert "evidence  NOT FINALIZED: manifest.json is missing" in capsys.readouterr().out
    assert main(["evidence", "verify", RUN, "--repo", str(repo)]) == 1
    err = capsys.readouterr().err
    assert f"evidence NOT FINALIZED: run {RUN}" in err and "was not finalized" in err
    assert "TAMPERED" not in err


def test_a_sealed_runs_deleted_manifest_is_tampering(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "not finalized ... not proof that anyone changed them", while the audit log
    held the seal line of the manifest someone deleted."""
    path, _ = record(repo)
    (path / "manifest.json").unlink()
    assert main(["evidence", "verify", RUN, "--repo", str(repo)]) == 1
    err = capsys.readouterr().err
    assert f"evidence TAMPERED: run {RUN}" in err and "NOT FINALIZED" not in err
    assert "manifest.json was deleted: the audit log sealed it at line" in err


def test_show_a_run_whose_manifest_was_edited(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = record(repo)
    assert main(["evidence", "show", RUN, "--repo", str(repo), "--json"]) == 0
    good = json.loads(capsys.readouterr().out)
    (path / "manifest.json").write_text("{ not json")
    assert main(["evidence", "show", RUN, "--repo", str(repo)]) == 0
    out = capsys.readouterr().out
    # it was finalized, then edited: not a run that never ended
    assert f"run {RUN}  manifest unreadable" in out and "not finalized" not in out
    assert "evidence  TAMPERED: manifest.json is not a valid manifest" in out
    assert main(["evidence", "show", RUN, "--repo", str(repo), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["finalized"] is True and data["status"] == "manifest unreadable"
    assert data["verify"]["ok"] is False
    # the same keys as a readable bundle's, null for what could not be read (they were
    # left out: a reader had to know which keys come when)
    path.joinpath("manifest.json").unlink()
    assert main(["evidence", "show", RUN, "--repo", str(repo), "--json"]) == 0
    unfinalized = json.loads(capsys.readouterr().out)
    assert unfinalized["finalized"] is False and unfinalized["base"] is None
    assert set(unfinalized) == set(data) == set(good)
    for key in ("task", "base", "branch", "head", "cost", "tests", "gate", "verdicts"):
        assert key in data and data[key] is None, key


def test_manifest_reads_back(repo: Path) -> None:
    path, manifest = record(repo)
    assert read_manifest(path) == manifest
