"""Tampering with the database is found by verify(), at the right seq, and the CLI exits 1."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.audit import AuditLog, VerifyReport
from app.audit.canonical import canonical_json, line_hash
from app.cli.main import main
from app.config import load_settings

Tamper = Callable[[sqlite3.Connection], None]


async def _build(db: Path, n: int) -> None:
    async with AuditLog.open(db) as log:
        for i in range(1, n + 1):
            await log.append("route", session="s", run=f"r{i % 2}", detail=f"d{i}")


def _tamper(db: Path, change: Tamper) -> None:
    """What a forger with write access does: drop the guards, then edit rows directly."""
    con = sqlite3.connect(db)
    try:
        con.execute("DROP TRIGGER IF EXISTS audit_lines_no_update")
        con.execute("DROP TRIGGER IF EXISTS audit_lines_no_delete")
        change(con)
        con.commit()
    finally:
        con.close()


def _verify(db: Path) -> VerifyReport:
    async def run() -> VerifyReport:
        async with AuditLog.open(db) as log:
            return await log.verify()

    return asyncio.run(run())


def _edit_json(seq: int, rehash: bool = False) -> Tamper:
    def change(con: sqlite3.Connection) -> None:
        (text,) = con.execute("SELECT line FROM audit_lines WHERE seq = ?", (seq,)).fetchone()
        data = json.loads(text)
        data["detail"] = "forged"
        if rehash:
            data["hash"] = line_hash(data)
        con.execute(
            "UPDATE audit_lines SET line = ?, hash = ? WHERE seq = ?",
            (canonical_json(data), data["hash"], seq),
        )

    return change


def _forge_first_keys(seq: int) -> Tamper:
    """The audit's forgery: fields put before the line's own. Python's reader keeps the
    last of a key given twice, so the data hashed as before; a reader that keeps the
    first, or a human, reads the forged ones."""
    forged = '{"detail":"FORGED: 0 in / 0 out, $0.00","values":{"cost_usd":0},'
    sql = "UPDATE audit_lines SET line = ? || substr(line, 2) WHERE seq = ?"
    return lambda con: con.execute(sql, (forged, seq)) and None


def _delete(seq: int) -> Tamper:
    return lambda con: con.execute("DELETE FROM audit_lines WHERE seq = ?", (seq,)) and None


def _swap(i: int, j: int) -> Tamper:
    def change(con: sqlite3.Connection) -> None:
        cols = "ts, session, run, kind, hash, line"
        rows = {
            s: con.execute(f"SELECT {cols} FROM audit_lines WHERE seq = ?", (s,)).fetchone()
            for s in (i, j)
        }
        for dst, src in ((i, j), (j, i)):
            con.execute(
                "UPDATE audit_lines SET ts = ?, session = ?, run = ?, kind = ?, hash = ?, line = ? "
                "WHERE seq = ?",
                (*rows[src], dst),
            )

    return change


CASES: list[tuple[str, Tamper, int, str]] = [
    ("edit", _edit_json(3), 3, "edited"),
    ("edit first", _edit_json(1), 1, "edited"),
    ("edit rehashed", _edit_json(3, rehash=True), 4, "prev_hash"),
    ("edit last rehashed", _edit_json(5, rehash=True), 5, "head"),
    ("forged first keys", _forge_first_keys(5), 5, "line 5 is not in canonical form"),
    (
        "whitespace",
        lambda con: (
            con.execute("UPDATE audit_lines SET line = replace(line, ',', ', ') WHERE seq = 3")
            and None
        ),
        3,
        "line 3 is not in canonical form (the line was edited)",
    ),
    ("delete", _delete(3), 3, "missing"),
    ("delete first", _delete(1), 1, "missing"),
    ("delete last", _delete(5), 5, "cut off"),
    ("swap", _swap(2, 4), 2, "reordered"),
    ("swap neighbours", _swap(4, 5), 4, "reordered"),
    (
        "garbage",
        lambda con: con.execute("UPDATE audit_lines SET line = '{oops' WHERE seq = 2") and None,
        2,
        "not valid JSON",
    ),
    (
        "stored as bytes",
        lambda con: (
            con.execute("UPDATE audit_lines SET line = CAST(line AS BLOB) WHERE seq = 2") and None
        ),
        2,
        "not stored as text",
    ),
    (
        "index column",
        lambda con: con.execute("UPDATE audit_lines SET session = 'x' WHERE seq = 3") and None,
        3,
        "index columns",
    ),
    (
        # the time column orders and pages a tail: a line moved to 1970 dropped out of it
        "time column",
        lambda con: (
            con.execute("UPDATE audit_lines SET ts = '1970-01-01T00:00:00.000Z' WHERE seq = 5")
            and None
        ),
        5,
        "index columns",
    ),
    (
        "head dropped",
        lambda con: con.execute("DELETE FROM audit_head") and None,
        None,
        "head record",
    ),
]


@pytest.mark.parametrize(
    ("change", "bad_seq", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_tamper_is_reported_at_the_right_seq(
    tmp_path: Path,
    change: Tamper,
    bad_seq: int | None,
    words: str,
) -> None:
    db = tmp_path / "audit.sqlite3"
    asyncio.run(_build(db, 5))
    assert _verify(db).ok
    _tamper(db, change)
    report = _verify(db)
    assert not report.ok
    assert report.first_bad_seq == bad_seq, report
    assert words in (report.problem or ""), report


@pytest.mark.parametrize(
    ("change", "bad_seq"),
    [(_edit_json(2), 2), (_forge_first_keys(4), 4), (_delete(3), 3), (_swap(1, 4), 1)],
    ids=["edit", "forged-first-keys", "delete", "swap"],
)
def test_cli_verify_exits_1_with_one_clear_line(
    capsys: pytest.CaptureFixture[str], change: Tamper, bad_seq: int
) -> None:
    db = load_settings().audit_db
    asyncio.run(_build(db, 5))
    assert main(["audit", "verify"]) == 0
    capsys.readouterr()

    _tamper(db, change)
    assert main(["audit", "verify"]) == 1
    captured = capsys.readouterr()
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == 1
    assert err_lines[0].startswith("switchyard: audit chain does not verify")
    assert f"line {bad_seq}" in err_lines[0]

    assert main(["audit", "verify", "--json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["ok"] is False and report["first_bad_seq"] == bad_seq

    # an export of it is the record, as it is, and says it does not verify (exit 1)
    assert main(["audit", "export"]) == 1
    captured = capsys.readouterr()
    assert captured.out and "the exported chain does not verify" in captured.err


def test_tail_of_an_unreadable_line_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    db = load_settings().audit_db
    asyncio.run(_build(db, 3))
    _tamper(db, lambda con: con.execute("UPDATE audit_lines SET line = '{' WHERE seq = 2") and None)
    assert main(["audit", "tail"]) == 1
    assert "audit line 2 is unreadable" in capsys.readouterr().err


def test_export_of_a_tampered_log_leaves_the_target_file_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The export stops at a line stored as bytes (it was a TypeError traceback) and the
    file named with -o keeps what it held: the lines are written beside it and renamed
    over it only once all are written (it was truncated, then left half written)."""
    db = load_settings().audit_db
    asyncio.run(_build(db, 4))
    out = tmp_path / "out"
    out.mkdir()
    target = out / "keep.jsonl"
    assert main(["audit", "export", "-o", str(target)]) == 0
    whole = target.read_text()
    assert len(whole.splitlines()) == 4
    target.chmod(0o640)
    capsys.readouterr()

    _tamper(db, lambda con: con.execute(
        "UPDATE audit_lines SET line = CAST(line AS BLOB) WHERE seq = 3") and None
    )  # fmt: skip
    assert main(["audit", "export", "-o", str(target)]) == 1
    err = capsys.readouterr().err
    assert "audit line 3 is unreadable" in err and "Traceback" not in err
    assert target.read_text() == whole
    assert target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in out.iterdir()] == ["keep.jsonl"]  # no temp file left


# ── property: any single-line edit, deletion or reordering in the DB is caught ──────────


@st.composite
def db_mutation(draw: st.DrawFn) -> tuple[int, str, int, int]:
    n = draw(st.integers(2, 8))
    op = draw(st.sampled_from(["edit", "edit_rehashed", "delete", "swap"]))
    i = draw(st.integers(1, n))
    j = draw(st.integers(1, n).filter(lambda k: k != i))
    return n, op, i, j


@settings(max_examples=30, deadline=None)
@given(db_mutation())
def test_any_single_line_tamper_in_the_db_is_caught(case: tuple[int, str, int, int]) -> None:
    n, op, i, j = case
    change = {
        "edit": _edit_json(i),
        "edit_rehashed": _edit_json(i, rehash=True),
        "delete": _delete(i),
        "swap": _swap(i, j),
    }[op]
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "audit.sqlite3"
        asyncio.run(_build(db, n))
        _tamper(db, change)
        report = _verify(db)
    assert not report.ok
    assert report.first_bad_seq is not None and 1 <= report.first_bad_seq <= n
    expected = {"edit": i, "delete": i, "swap": min(i, j)}.get(op)
    if expected is not None:
        assert report.first_bad_seq == expected
