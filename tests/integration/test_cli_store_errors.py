"""A store's file that cannot be written (a full disk, a read-only file) is one line that
names the file, exit 1, never a traceback: for the memory DB, for the audit log under
``ask``, and for the audit log's own appends and deferred commits.

The conditions are SQLite's own: a file whose header marks it read-only (write version
3: SQLite opens it, reads it and refuses every write, whoever the user is: root too, for
whom a ``chmod 444`` changes nothing), and ``PRAGMA max_page_count`` at the file's size
(SQLITE_FULL, "database or disk is full", as on a full disk).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import aiosqlite
import pytest

from app.audit.log import AuditLog
from app.cli.main import main
from app.errors import AuditTamperError, StoreError, SwitchyardError
from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration.test_harvest import commit, git
from tests.limits import file_size_limit
from tests.ports import closed_port
from tests.reliability.kit import LOCAL_MODELS


def data_dir() -> Path:
    import os

    return Path(os.environ["SWITCHYARD_DATA_DIR"])


def make_read_only(db: Path) -> None:
    """Mark ``db`` read-only in its header (the write version byte, offset 18, set to 3:
    "the database file must be treated as read-only"), its WAL checkpointed first."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with db.open("r+b") as fh:
        fh.seek(18)
        fh.write(bytes([3]))


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_memory_add_to_a_read_only_db_is_one_line_naming_the_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["memory", "add", "first", "--no-embed"]) == 0
    db = data_dir() / "memory.sqlite3"
    make_read_only(db)
    capsys.readouterr()
    assert main(["memory", "add", "second", "--no-embed"]) == 1
    line = one_line(capsys.readouterr().err)
    assert (
        line == f"switchyard: cannot write the memory DB {db}: attempt to write a readonly database"
    )


def test_memory_harvest_into_a_read_only_db_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, {"a.py": "x = 1\n"}, "add a", 1)
    assert main(["memory", "add", "first", "--no-embed"]) == 0
    db = data_dir() / "memory.sqlite3"
    make_read_only(db)
    capsys.readouterr()
    assert main(["memory", "harvest", "--repo", str(repo), "--no-embed"]) == 1
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"switchyard: cannot write the memory DB {db}: ")


def test_ask_whose_audit_line_cannot_be_written_is_one_line_naming_the_audit_log(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tester's full disk under ``ask``: the route's audit line failed at COMMIT and
    the whole stack came out. The audit file's own set-up writes (so a file read-only on
    disk stops at open, said already); here the connection turns read-only just after it
    (``PRAGMA query_only``: SQLite refuses every write, SQLITE_READONLY), so the fold of
    the spool that opening makes fails. A full spool is the next test's."""
    import app.audit.log as log_module

    real_setup = log_module.setup

    async def setup_then_read_only(db: aiosqlite.Connection, what: str = "") -> None:
        await real_setup(db, what)
        await db.execute("PRAGMA query_only = 1")

    monkeypatch.setattr(log_module, "setup", setup_then_read_only)
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", f"http://127.0.0.1:{closed_port()}/v1")
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    rc = main(["ask", "--role", "tutor", "--max-tokens", "4", "--local-only", "hi"])
    err = capsys.readouterr().err
    assert rc == 1, err
    db = data_dir() / "audit.sqlite3"
    assert one_line(err) == (
        f"switchyard: cannot open the audit log {db}: attempt to write a readonly database"
    )


def fill_up(conn: sqlite3.Connection) -> None:
    """No page more than the file has now: the next page needed is SQLITE_FULL."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


BIG = "x" * 20_000  # more than one page's worth, even after the line's other fields


async def test_an_append_on_a_full_disk_is_a_store_error_naming_the_file(tmp_path: Path) -> None:
    """The spool cannot grow (a file-size limit: the write is cut short, then refused):
    the append is one error naming the file, and nothing of it is left half-written."""
    path = tmp_path / "audit.sqlite3"
    spool = tmp_path / "audit.sqlite3-spool"
    async with AuditLog.open(path) as log:
        await log.append("run", session="s")
        with file_size_limit(spool.stat().st_size + 100), pytest.raises(StoreError) as caught:
            await log.append("run", session="s", detail=BIG)
        assert str(caught.value).startswith(f"cannot write the audit log {spool}: ")
        assert [line.seq for line in await log.lines()] == [1]  # nothing half-written
        assert (await log.append("run", session="s")).seq == 2


async def test_a_database_that_cannot_grow_fails_the_reader_naming_the_file(
    tmp_path: Path,
) -> None:
    """The line stands in the spool; folding it into a file that cannot take another page
    fails the next read, as one line naming the file."""
    path = tmp_path / "audit.sqlite3"
    async with AuditLog.open(path) as log:
        await log.append("run", session="s")
        await log.flush()
        assert log._spooled is not None
        await log._spooled.stop()  # no idle fold: the read is the first to fold
        fill_up(log._db._conn)
        await log.append("run", session="s", detail=BIG)
        with pytest.raises(StoreError) as caught:
            await log.lines()
        assert str(caught.value) == f"cannot write the audit log {path}: database or disk is full"
        # the failed fold is not taken for done: the next read tries again, and says so
        with pytest.raises(StoreError):
            await log.lines()


@pytest.mark.parametrize("name", ["audit.sqlite3", "ledger.sqlite3"])
def test_each_store_says_the_same_exit_code_for_the_same_trouble(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is no database is what the store was given (2, as a policy that is
    not one); a file the machine will not let it write is the machine's trouble (1). The
    ledger said 2 for both and the audit log 1 for both (an audit)."""
    data_dir().mkdir(parents=True, exist_ok=True)
    target = data_dir() / name
    target.write_bytes(b"garbage" * 1000)
    argv = ["audit", "tail"] if name.startswith("audit") else ["budget"]
    assert main(argv) == 2
    assert "cannot open the" in one_line(capsys.readouterr().err)
    target.unlink()
    target.mkdir()  # a folder in its place: SQLite cannot open it
    assert main(argv) == 1
    assert "cannot open the" in one_line(capsys.readouterr().err)
    target.rmdir()
    spool = data_dir() / f"{name}-spool"
    spool.write_bytes(b"no header here\n")  # a spool that is not one: what it was given
    assert main(argv) == 2
    assert "not a Switchyard spool file" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "trouble",
    [
        StoreError("cannot write the audit log: database or disk is full"),
        SwitchyardError("team audit log postgresql://db unavailable: connection lost"),
        AuditTamperError("line 3 does not continue the chain at 2"),
    ],
    ids=["full-disk", "team-store-gone", "broken-chain"],
)
def test_an_answer_whose_lines_cannot_be_read_back_is_still_given(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    trouble: SwitchyardError,
) -> None:
    """``ask`` reads its lines back to show them, and reading folds the spool, which a
    full disk refuses: a paid answer, recorded and charged, was lost to that (stdout
    empty, exit 1; a chaos audit). The answer is given, and the lines' trouble said."""
    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS, default_reply="An answer.")
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")

    async def refused(self: AuditLog, *args: object, **kwargs: object) -> list[object]:
        raise trouble

    monkeypatch.setattr(AuditLog, "lines", refused)
    rc = main(["ask", "--role", "tutor", "--json", "hi"])
    out, err = capsys.readouterr()
    if isinstance(trouble, AuditTamperError):  # a broken chain still fails the command
        assert rc == 1 and "does not continue the chain" in err
        return
    assert rc == 0
    data = json.loads(out)
    assert data["ok"] is True and data["text"] == "An answer." and data["audit"] == []
    assert one_line(err) == f"switchyard: this request's audit lines cannot be shown: {trouble}"
