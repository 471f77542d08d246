"""R3: tampering with the audit chain is found, in the database and in an exported JSONL.

The chain is written by the product itself (``switchyard ask`` against a loopback vLLM,
with a trigger firing so the lines carry reason codes, values and provenance), then
changed the way a forger with write access would: the append-only triggers dropped, a
line edited, deleted, or two lines swapped, or the same done to an export. ``switchyard
audit verify`` exits 1 with one clear line naming the first bad seq; an export is checked
with :func:`app.audit.verify_lines` against the head hash the database reports.

Elsewhere: every single-line tamper kind at the right seq, and a property test over random
edits/deletions/swaps (``tests/integration/test_audit_tamper.py``); an evidence bundle's
``audit.jsonl`` edited, cut, reordered or given a foreign line, and ``switchyard evidence
verify`` exiting 1 (``tests/integration/test_evidence_audit.py``).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.audit import verify_lines
from app.audit.canonical import canonical_json, line_hash
from app.config import load_settings
from tests.fakes.openai_server import FakeOpenAIServer
from tests.reliability.kit import LOCAL_MODELS, closed_port, run_cli, run_json

Tamper = Callable[[sqlite3.Connection], None]


@pytest.fixture
def chain(
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> Path:
    """An audit DB of at least 8 lines written by real `switchyard ask` calls."""
    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS, default_reply="ok")
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    for role, signal in (("architect", "confidence=0.5"), ("tutor", "user_request=true")):
        rc, _, err = run_json(
            ["ask", "--role", role, "--signal", signal, "--local-only", "hello"], capsys
        )
        assert rc == 0, err
    db = load_settings().audit_db
    assert run_cli(["audit", "verify"], capsys)[0] == 0
    return db


def _rows(con: sqlite3.Connection) -> int:
    return int(con.execute("SELECT COUNT(*) FROM audit_lines").fetchone()[0])


def _edit(seq: int, rehash: bool = False) -> Tamper:
    def change(con: sqlite3.Connection) -> None:
        (text,) = con.execute("SELECT line FROM audit_lines WHERE seq = ?", (seq,)).fetchone()
        data = json.loads(text)
        data["detail"] = "nothing to see here"
        if rehash:
            data["hash"] = line_hash(data)
        con.execute(
            "UPDATE audit_lines SET line = ?, hash = ? WHERE seq = ?",
            (canonical_json(data), data["hash"], seq),
        )

    return change


def _delete(seq: int) -> Tamper:
    def change(con: sqlite3.Connection) -> None:
        con.execute("DELETE FROM audit_lines WHERE seq = ?", (seq,))

    return change


def _swap(i: int, j: int) -> Tamper:
    def change(con: sqlite3.Connection) -> None:
        cols = "ts, session, run, kind, hash, line"
        rows = {
            s: con.execute(f"SELECT {cols} FROM audit_lines WHERE seq = ?", (s,)).fetchone()
            for s in (i, j)
        }
        for dst, src in ((i, j), (j, i)):
            con.execute(
                "UPDATE audit_lines SET ts = ?, session = ?, run = ?, kind = ?, hash = ?, "
                "line = ? WHERE seq = ?",
                (*rows[src], dst),
            )

    return change


DB_CASES: list[tuple[str, Tamper, int]] = [
    ("edit", _edit(3), 3),
    ("edit-and-rehash", _edit(3, rehash=True), 4),
    ("delete", _delete(4), 4),
    ("reorder", _swap(2, 5), 2),
]


def test_tampering_with_the_db_makes_audit_verify_exit_1(
    chain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pristine = tmp_path / "pristine.sqlite3"
    with sqlite3.connect(chain) as con:  # the whole chain in the main file, WAL folded in
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copyfile(chain, pristine)
    for name, change, bad_seq in DB_CASES:
        for side in ("-wal", "-shm"):
            chain.with_name(chain.name + side).unlink(missing_ok=True)
        shutil.copyfile(pristine, chain)
        con = sqlite3.connect(chain)
        try:
            assert _rows(con) >= 6
            con.execute("DROP TRIGGER IF EXISTS audit_lines_no_update")
            con.execute("DROP TRIGGER IF EXISTS audit_lines_no_delete")
            change(con)
            con.commit()
        finally:
            con.close()
        rc, out, err = run_cli(["audit", "verify"], capsys)
        assert rc == 1, (name, out, err)
        (line,) = err.strip().splitlines()
        assert line.startswith("switchyard: audit chain does not verify"), (name, line)
        assert f"line {bad_seq}" in line, (name, line)
        rc, out, _ = run_cli(["audit", "verify", "--json"], capsys)
        report = json.loads(out)
        assert rc == 1 and report["ok"] is False and report["first_bad_seq"] == bad_seq, name
    shutil.copyfile(pristine, chain)
    assert run_cli(["audit", "verify"], capsys)[0] == 0


def test_tampering_with_an_export_is_found(
    chain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "audit.jsonl"
    assert run_cli(["audit", "export", "-o", str(export)], capsys)[0] == 0
    rc, out, _ = run_cli(["audit", "verify", "--json"], capsys)
    assert rc == 0
    head = json.loads(out)
    lines = export.read_text(encoding="utf-8").splitlines()
    n = len(lines)
    assert n >= 6 and verify_lines(lines, head_hash=head["head_hash"], head_seq=n).ok

    def edited(i: int, rehash: bool = False) -> list[str]:
        data: dict[str, Any] = json.loads(lines[i])
        data["reason_codes"] = []
        if rehash:
            data["hash"] = line_hash(data)
        return [*lines[:i], canonical_json(data), *lines[i + 1 :]]

    cases: dict[str, tuple[list[str], int | None]] = {
        "edit": (edited(2), 3),
        "edit-and-rehash": (edited(2, rehash=True), 4),
        "delete": ([*lines[:3], *lines[4:]], 4),
        "reorder": ([lines[0], lines[4], *lines[2:4], lines[1], *lines[5:]], 2),
        "truncate": (lines[:-2], None),
        "garbage": ([*lines[:1], "{not json", *lines[2:]], 2),
    }
    for name, (changed, bad_seq) in cases.items():
        report = verify_lines(changed, head_hash=head["head_hash"], head_seq=n)
        assert not report.ok, name
        if bad_seq is not None:
            assert report.first_bad_seq == bad_seq, (name, report)
        assert report.problem, name
