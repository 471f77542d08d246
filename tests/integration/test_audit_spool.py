"""The audit log's spool (issue 20): an append stands in ``audit.db-spool`` when it
returns; the log folds it into the tables a quarter of a second later, or on the append
that makes a batch, and every read folds first; writers in other handles and processes
extend one chain; a killed writer's lines are folded by the next open; a spool that does
not continue the chain is found; a grown spool is replaced."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app import spool as spools
from app.audit.canonical import verify_lines
from app.audit.log import AuditLog
from app.bus import AuditAppended, Bus
from app.errors import AuditTamperError, StoreError
from app.spool import frame
from tests.limits import file_size_limit


def _count(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM audit_lines").fetchone()[0])


def _spool(path: Path) -> Path:
    return path.with_name(f"{path.name}-spool")


def _write_around(path: Path) -> None:
    """A record written around the log: seq 2 after a prev_hash that is not line 1's."""
    text = (
        '{"detail":"","from":null,"hash":"ab","kind":"route","policy_version":null,'
        '"prev_hash":"00","provenance":{},"reason_codes":[],"role":null,"run":null,'
        '"seq":2,"session":"s","to":null,"ts":"2026-01-01T00:00:00.000Z","values":{}}'
    )
    with _spool(path).open("ab") as fh:
        fh.write(frame(f"2\tab\t{text}".encode()))


async def _until(check: object, what: str) -> None:
    """Wait for an idle fold (a deadline against a hang, not a timing claim)."""
    deadline = time.monotonic() + 20
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)


async def test_an_append_stands_in_the_spool_and_is_folded_behind_it(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    async with AuditLog.open(path) as log:
        line = await log.append("escalation", session="s", to="m")
        assert line.seq == 1
        assert b'"seq":1,' in _spool(path).read_bytes()
        assert _count(path) == 0  # not yet in the tables: the loop has not been free
        await _until(lambda: _count(path) == 1, "the idle loop folded the line")
        await log.append("call", session="s")
        # a read folds what is left before it reads
        assert [ln.kind for ln in await log.tail(5)] == ["escalation", "call"]
        assert _count(path) == 2
        assert (await log.verify()).ok


async def test_a_batch_of_lines_is_folded_by_the_append_that_makes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spools, "FOLD_RECORDS", 5)
    monkeypatch.setattr(spools, "FOLD_SPACING_S", 0.0)  # (whatever folded before this test)
    path = tmp_path / "audit.db"
    async with AuditLog.open(path) as log:
        for i in range(4):
            await log.append("route", session="s", detail=str(i))
        assert _count(path) == 0
        await log.append("route", session="s", detail="4")  # the fifth: a batch
        assert _count(path) == 5
        assert (await log.verify()).ok


async def test_two_handles_interleaved_extend_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    async with AuditLog.open(path) as a, AuditLog.open(path) as b:
        for i in range(30):
            writer = a if i % 3 else b
            line = await writer.append("route", session=f"s{i % 2}", detail=str(i))
            assert line.seq == i + 1
        assert (await a.verify()).ok
        assert [ln.detail for ln in await b.tail(30)] == [str(i) for i in range(30)]


async def test_a_spool_line_that_does_not_continue_the_chain_is_found(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    async with AuditLog.open(path) as log:
        await log.append("route", session="s")
        await log.flush()
        _write_around(path)
        report = await log.verify()
        assert not report.ok and report.first_bad_seq == 2 and report.lines_checked == 1
        assert "does not continue the chain" in str(report.problem)
        with pytest.raises(AuditTamperError):
            await log.tail(5)


async def test_a_grown_spool_is_replaced_and_every_writer_moves_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spools, "ROTATE_BYTES", 4096)
    path = tmp_path / "audit.db"
    async with AuditLog.open(path) as a, AuditLog.open(path) as b:
        first = (await a.append("route", session="s")).seq
        header = _spool(path).read_bytes().split(b"\n")[0]
        for i in range(60):
            await (a if i % 2 else b).append("route", session="s", detail="x" * 200)
            await asyncio.sleep(0.005)
        await _until(
            lambda: _spool(path).read_bytes().split(b"\n")[0] != header, "the spool was replaced"
        )
        for i in range(10):
            await (a if i % 2 else b).append("route", session="s", detail=str(i))
        report = await a.verify()
        assert report.ok, report
        assert report.lines_checked == first + 70
    assert _spool(path).stat().st_size < 60 * 400


def _posix_locks(pid: int, path: Path) -> int:
    """How many POSIX (fcntl) locks ``pid`` holds on ``path``'s file (Linux)."""
    ino = path.stat().st_ino
    held = Path("/proc/locks").read_text().splitlines()
    return sum(1 for x in held if "POSIX" in x and f" {pid} " in x and f":{ino} " in x)


def _exists(path: Path) -> bool:
    return path.exists()


_CLOSE_ONE = (
    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
    " c.execute('SELECT count(*) FROM sqlite_master').fetchone(); c.close()"
)


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads Linux's /proc/locks")
async def test_a_rotation_keeps_sqlites_locks_and_a_command_beside_leaves_the_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotation synced the file and its WAL through descriptors of its own, opened and
    closed: closing one dropped every POSIX lock the process held on the file, SQLite's
    too. The next command to close its connection (``audit tail``) took itself for the
    last, checkpointed and deleted the WAL under ``serve``, and the log was corrupt ("database
    disk image is malformed": a long-life audit). The locks stay; the WAL stays."""
    monkeypatch.setattr(spools, "ROTATE_BYTES", 4096)
    path = tmp_path / "audit.db"
    async with AuditLog.open(path) as log:
        await log.append("route", session="s")
        held = _posix_locks(os.getpid(), path)
        assert held > 0  # (SQLite's, on an open WAL database)
        header = _spool(path).read_bytes().split(b"\n")[0]
        for _ in range(60):
            await log.append("route", session="s", detail="x" * 200)
            await asyncio.sleep(0.005)
        await _until(
            lambda: _spool(path).read_bytes().split(b"\n")[0] != header, "the spool was replaced"
        )
        assert _posix_locks(os.getpid(), path) == held
        other = await asyncio.create_subprocess_exec(sys.executable, "-c", _CLOSE_ONE, str(path))
        assert await asyncio.wait_for(other.wait(), 60) == 0
        assert _exists(Path(f"{path}-wal"))
        for i in range(5):
            await log.append("route", session="s", detail=str(i))
        report = await log.verify()
        assert report.ok and report.lines_checked == 66, report
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA quick_check").fetchone() == ("ok",)


_WRITER = """
import asyncio, sys
from pathlib import Path
from app import spool as spools
from app.audit.log import AuditLog
from app.bus import AuditAppended, Bus

async def main():
    log = await AuditLog.open(Path(sys.argv[1]))
    await log._spooled.stop()  # no idle fold, and no batch: every line stays in the spool
    spools.FOLD_RECORDS = 10**9
    for i in range(10**6):
        await log.append("route", session="w", detail=str(i))
        if i == 50:
            print("going", flush=True)

asyncio.run(main())
"""


def _spawn_and_kill(path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "going"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


async def test_a_killed_writers_lines_are_folded_by_the_next_open(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _spawn_and_kill(path)
    assert _count(path) == 0  # all of them in the spool
    async with AuditLog.open(path) as log:
        report = await log.verify()
        assert report.ok and report.lines_checked > 50
        lines = await log.tail(report.lines_checked)
        assert [ln.detail for ln in lines] == [str(i) for i in range(len(lines))]
        nxt = await log.append("route", session="after")
        assert nxt.seq == report.lines_checked + 1
    exported = tmp_path / "out.jsonl"
    async with AuditLog.open(path) as log:
        assert await log.export_jsonl(exported) == report.lines_checked + 1
    assert verify_lines(exported.read_text().splitlines()).ok


async def test_a_broken_spool_still_opens_and_verify_says_where(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    async with AuditLog.open(path) as log:
        await log.append("route", session="s")
    _write_around(path)
    async with AuditLog.open(path) as log:
        report = await log.verify()
        assert not report.ok and report.first_bad_seq == 2 and report.lines_checked == 1
        with pytest.raises(AuditTamperError):
            await log.lines()


@pytest.mark.parametrize(
    "record", [b'{"not":"a line"}', b"\xff\xfe\tnot utf-8", b"abc\tdef\tghi", b"3\t\xff\tx"]
)
async def test_a_record_that_checks_but_is_no_line_is_a_broken_chain_not_a_traceback(
    tmp_path: Path, record: bytes
) -> None:
    """Its CRC held and its content was no line's: every command, ``audit verify``
    included, ended in a ValueError or UnicodeDecodeError traceback (an audit)."""
    path = tmp_path / "audit.db"
    async with AuditLog.open(path) as log:
        await log.append("route", session="s")
    with _spool(path).open("ab") as fh:
        fh.write(frame(record))
    async with AuditLog.open(path) as log:
        report = await log.verify()
        assert not report.ok and report.first_bad_seq == 2 and report.lines_checked == 1
        with pytest.raises(AuditTamperError):
            await log.lines()


async def test_a_spool_shorter_than_what_was_folded_from_it_goes_on_from_its_end(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.db"
    async with AuditLog.open(path) as log:
        for i in range(5):
            await log.append("route", session="s", detail=str(i))
    spool = _spool(path)
    spool.write_bytes(spool.read_bytes().split(b"\n")[0] + b"\n")  # its records are gone
    async with AuditLog.open(path) as log:
        assert (await log.append("route", session="s", detail="5")).seq == 6
        await log.append("route", session="s", detail="6")
        report = await log.verify()
        assert report.ok and report.lines_checked == 7


async def test_a_log_that_slept_through_two_rotations_goes_on_from_the_right_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool was replaced twice while this log wrote nothing: the middle file is
    gone (folded), so the tail comes from the newest file or the tables, never from the
    last file this log read."""
    monkeypatch.setattr(spools, "ROTATE_BYTES", 2000)
    path = tmp_path / "audit.db"
    async with AuditLog.open(path) as busy, AuditLog.open(path) as idle:
        assert (await idle.append("route", session="idle")).seq == 1
        for _ in range(2):
            for _ in range(10):
                await busy.append("route", session="busy", detail="x" * 200)
            await busy.flush()  # folded whole and past the size: replaced
        assert (await idle.append("route", session="idle")).seq == 22
        report = await busy.verify()
        assert report.ok and report.lines_checked == 22


async def test_a_deleted_spool_loses_its_unfolded_lines_not_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    async with AuditLog.open(path) as log:
        for i in range(3):
            await log.append("route", session="s", detail=str(i))
        await log.flush()
        await log.append("route", session="s", detail="lost")  # not folded yet
        _spool(path).unlink()
        line = await log.append("route", session="s", detail="after")
        assert line.seq == 4  # after the tables' tail: the deleted line's seq, again
        assert (await log.verify()).ok


async def test_a_full_disk_keeps_the_lines_a_write_completed_and_the_chain_goes_on(
    tmp_path: Path,
) -> None:
    """Two lines in one write, the disk full half-way through the second: the first stands
    (another process may have folded it already), the second is gone, the error says so,
    and the next append continues the chain after the first."""
    path = tmp_path / "audit.db"
    bus = Bus()
    seen = bus.subscribe(name="live view")
    async with (
        await AuditLog.open(path, bus=bus) as log,
        await AuditLog.open(path) as other,
    ):
        await log.append("run", session="s")
        size = _spool(path).stat().st_size
        lines = [
            {"kind": "run", "session": "s", "detail": "kept"},
            {"kind": "run", "session": "s", "detail": "x" * 20_000},
        ]
        with file_size_limit(size + 2_000), pytest.raises(StoreError) as caught:
            await log.append_many(lines)
        assert "the first 1 of its records stand" in str(caught.value)
        # the live view is shown the line that stands
        shown = [seen.get_nowait(), seen.get_nowait(), seen.get_nowait()]
        assert [e.line["seq"] for e in shown if isinstance(e, AuditAppended)] == [1, 2]
        # another writer and reader see the line that stands
        assert [(line.seq, line.detail) for line in await other.lines()] == [(1, ""), (2, "kept")]
        assert (await log.append("run", session="s", detail="next")).seq == 3
        assert (await other.append("run", session="s")).seq == 4
        report = await log.verify()
        assert report.ok and report.lines_checked == 4
