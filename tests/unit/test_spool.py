"""The spool file (app/spool.py): framing, what a reader stops at, the header, the lock,
and a rotation seen by a handle that holds the old file."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import spool as spools
from app.spool import MAGIC, ShortWrite, Spool, Spooled, frame, mark, parse
from tests.limits import file_size_limit


def _append(spool: Spool, *payloads: bytes) -> None:
    """What a writer does: take the lock, append, let go."""
    spool.acquire(blocking=True)
    spool.write(list(payloads))
    spool.release()


@contextlib.contextmanager
def _held(path: Path) -> Iterator[None]:
    """The lock of the file at ``path`` held as another process's writer would."""
    holder = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(holder)


@contextlib.contextmanager
def _handles(path: Path, n: int) -> Iterator[list[Spool]]:
    """``n`` handles on the spool at ``path`` (as many processes would have), closed at
    the end."""
    handles: list[Spool] = []
    try:
        handles.extend(Spool(path) for _ in range(n))
        yield handles
    finally:
        for h in handles:
            h.close()


def test_records_round_trip_and_a_half_written_one_is_not_read() -> None:
    data = frame(b"one") + frame(b"two\tthree") + frame(b"four")[:-3]
    payloads, used = parse(data)
    assert payloads == [b"one", b"two\tthree"]
    assert used == len(frame(b"one") + frame(b"two\tthree"))


@pytest.mark.parametrize(
    "bad",
    [
        b"%08x %s\n" % (zlib.crc32(b"x") ^ 1, b"x"),  # a CRC that does not check
        b"zzzzzzzz x\n",  # no CRC at all
        b"\x00" * 40 + b"\n",  # a power cut's zeros
        b"short\n",
    ],
)
def test_reading_stops_at_the_first_record_that_does_not_check(bad: bytes) -> None:
    payloads, used = parse(frame(b"good") + bad + frame(b"after"))
    assert payloads == [b"good"]
    assert used == len(frame(b"good"))


def test_a_new_spool_gets_a_header_and_a_second_handle_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "x-spool"
    a, b = Spool(path), Spool(path)
    try:
        assert path.read_bytes().startswith(MAGIC)
        assert a.ident == b.ident and a.start == b.start
        assert a.acquire(blocking=False) == []
        a.write([b"r1", b"r2"])
        # the lock is held: the other handle cannot take it without waiting
        assert b.acquire(blocking=False) is None
        a.release()
        assert b.acquire(blocking=False) == [b"r1", b"r2"]
        b.write([b"r3"])
        b.release()
        assert a.acquire(blocking=True) == [b"r3"]
        a.release()
        assert a.read_since(a.start) == ([b"r1", b"r2", b"r3"], a.size())
    finally:
        a.close()
        b.close()


def test_a_newline_in_a_record_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    s = Spool(tmp_path / "x-spool")
    try:
        s.acquire(blocking=True)
        with pytest.raises(ValueError, match="newline"):
            s.write([b"fine", b"not\nfine"])
        s.release()
        assert s.read_since(s.start) == ([], s.start)
    finally:
        s.close()


def test_a_short_write_keeps_the_records_it_completed_and_cuts_the_rest(tmp_path: Path) -> None:
    """Another process's fold reads records without the lock: one that checks may be
    folded the moment it is written, so a full disk never takes it back."""
    path = tmp_path / "x-spool"
    s = Spool(path)
    try:
        _append(s, b"before")
        first, second = b"a" * 100, b"b" * 100
        s.acquire(blocking=True)
        limit = file_size_limit(s.size() + len(frame(first)) + 50)
        with limit, pytest.raises(ShortWrite, match="the first 1 of its records stand") as short:
            s.write([first, second])
        assert short.value.standing == 1
        assert s.size() == s.offset  # the half of the second one is cut off
        s.write([b"after"])
        s.release()
        assert s.read_since(s.start)[0] == [b"before", first, b"after"]
        # a lone record is all there or not at all
        s.acquire(blocking=True)
        with file_size_limit(s.size() + 50), pytest.raises(ShortWrite) as short:
            s.write([second])
        s.release()
        assert short.value.standing == 0
        assert s.read_since(s.start)[0] == [b"before", first, b"after"]
        assert s.size() == s.offset
    finally:
        s.close()


def test_garbage_after_the_last_record_is_cut_off_by_the_next_writer(tmp_path: Path) -> None:
    path = tmp_path / "x-spool"
    s = Spool(path)
    try:
        _append(s, b"kept")
        with path.open("ab") as fh:
            fh.write(b"\x00\x00\x00garbage without a newline")
        other = Spool(path)
        try:
            assert other.acquire(blocking=True) == [b"kept"]
            other.write([b"next"])
            other.release()
        finally:
            other.close()
        assert s.read_since(s.start)[0] == [b"kept", b"next"]
    finally:
        s.close()


def test_a_torn_header_is_written_again_and_a_foreign_file_is_refused(tmp_path: Path) -> None:
    torn = tmp_path / "torn-spool"
    torn.write_bytes(MAGIC[:7])
    s = Spool(torn)
    s.close()
    assert torn.read_bytes().startswith(MAGIC) and torn.read_bytes().endswith(b"\n")
    foreign = tmp_path / "foreign-spool"
    foreign.write_bytes(b"SQLite format 3\x00 and more\n")
    with pytest.raises(OSError, match="not a Switchyard spool"):
        Spool(foreign)


@pytest.mark.parametrize("damage", ["newline", "non-ascii", "ident"])
def test_a_damaged_header_over_records_fails_closed_and_keeps_every_record(
    tmp_path: Path, damage: str
) -> None:
    """One byte of the header changed was taken for a torn header: the file was emptied,
    every record not yet folded with it (audit lines, reservations: an audit)."""
    path = tmp_path / "x-spool"
    s = Spool(path)
    _append(s, *(b"record %d" % i for i in range(5)))
    s.close()
    data = bytearray(path.read_bytes())
    header_end = data.index(b"\n")
    at = {"newline": header_end, "non-ascii": header_end - 3, "ident": len(MAGIC)}[damage]
    data[at] = {"newline": 0x20, "non-ascii": 0xE9, "ident": ord("z")}[damage]
    path.write_bytes(bytes(data))
    with pytest.raises(OSError, match="not a Switchyard spool file \\(its header is damaged\\)"):
        Spool(path)
    assert path.read_bytes() == bytes(data)  # nothing was cut


def test_a_rotation_hands_the_old_records_to_a_handle_that_had_not_read_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spools, "ROTATE_BYTES", 10)
    path = tmp_path / "x-spool"
    with _handles(path, 3) as (writer, late, rotator):
        _append(writer, b"a" * 20, b"b")
        old_ident, size = writer.ident, writer.size()
        # not folded that far: no rotation
        assert not rotator.rotate(lambda: (old_ident, size - 1))
        assert rotator.rotate(lambda: (old_ident, size))
        new = Spool(path)
        assert new.ident != old_ident
        # the late handle still holds the old file: it reads its rest, then moves over
        assert late.acquire(blocking=True) == [b"a" * 20, b"b"]
        assert late.ident == new.ident
        late.write([b"c"])
        late.release()
        assert writer.acquire(blocking=True) == [b"c"]
        writer.release()
        new.close()
        leftovers = [p for p in os.listdir(tmp_path) if p != "x-spool"]
        assert leftovers == []


def _in_thread(fn: object, timeout: float = 10.0) -> object:
    """``fn()`` on a thread, within ``timeout`` (a deadline against a hang, not a timing
    claim): what it returned."""
    import threading

    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)  # type: ignore[operator]
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "it waited for a lock it should not wait for"
    return out[0]


def test_a_reading_handle_follows_a_rotation_without_waiting_for_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fold holds the database's write lock while it follows the spool: it must never
    wait for a writer that holds the spool's lock (and may be waiting for the database)."""
    monkeypatch.setattr(spools, "ROTATE_BYTES", 10)
    path = tmp_path / "x-spool"
    with _handles(path, 3) as (writer, reader, rotator):
        _append(writer, b"a" * 20)
        assert rotator.rotate(lambda: (writer.ident, writer.size()))
        with _held(path):  # another process's writer, on the new file
            _in_thread(reader.follow)
            assert reader.ident != writer.ident
            # an appender on the old file is told to come back, and loses nothing it read
            assert writer.acquire(blocking=False) is None
        assert writer.acquire(blocking=False) == []
        writer.release()


def test_records_read_before_a_move_that_must_wait_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spools, "ROTATE_BYTES", 10)
    path = tmp_path / "x-spool"
    with _handles(path, 3) as (late, other, rotator):
        _append(other, b"from another writer", b"and another")
        assert rotator.rotate(lambda: (other.ident, other.size()))
        with _held(path):
            assert _in_thread(lambda: late.acquire(blocking=False)) is None
        # what it read of the old file before it had to give up comes with the next call
        assert late.acquire(blocking=False) == [b"from another writer", b"and another"]
        late.release()


def test_a_lock_held_too_long_is_an_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spools, "LOCK_TIMEOUT_S", 0.2)
    path = tmp_path / "x-spool"
    s = Spool(path)
    try:
        with _held(path):  # a process stopped while it holds the lock
            with pytest.raises(OSError, match="locked by another process") as caught:
                s.acquire(blocking=True)
            assert caught.value.filename == str(path)
    finally:
        s.close()


def test_a_batch_waits_while_another_store_of_the_process_has_just_folded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit log and the ledger reach their batch on the same request: the second
    folds later (two folds in one request were the request path's p99.9), never past
    twice its batch; a store's own fold, or another's that failed, holds nothing back."""
    monkeypatch.setattr(spools, "FOLD_RECORDS", 4)
    monkeypatch.setattr(spools, "FOLD_SPACING_S", 3600.0)
    monkeypatch.setattr(spools, "_last_fold", (-1e9, 0))

    def fails(db: sqlite3.Connection, spool: Spool) -> tuple[str, int]:
        raise sqlite3.OperationalError("disk full")

    conn = sqlite3.connect(":memory:", isolation_level=None)
    a = Spooled(tmp_path / "a.db", lambda db, spool: (spool.ident, 0), "t")
    b = Spooled(tmp_path / "b.db", lambda db, spool: (spool.ident, 0), "t")
    broken = Spooled(tmp_path / "c.db", fails, "t")
    try:
        assert not a.wrote(3)
        assert a.wrote(1)  # the first batch of the process
        with pytest.raises(sqlite3.OperationalError):
            broken.fold(conn)
        assert b.wrote(4)  # a failed fold holds nothing back
        a.fold(conn)
        assert not b.wrote(0)  # a batch, but another store has just folded
        assert not b.wrote(3)
        assert b.wrote(1)  # two batches wait: folded all the same
        assert a.wrote(4)  # its own fold holds nothing back
        monkeypatch.setattr(spools, "FOLD_SPACING_S", 0.0)  # long enough ago
        assert b.wrote(0)
    finally:
        for spooled in (a, b, broken):
            spooled.close()
        conn.close()


def test_the_rotations_sync_writes_a_page_under_full_and_puts_normal_back(
    tmp_path: Path,
) -> None:
    """The rotation makes the folds durable by one commit under ``synchronous = FULL``
    (in WAL mode it syncs the WAL): a commit that wrote nothing synced nothing, and the
    watermark stored as it stood wrote nothing (a review: no fdatasync of the WAL). The
    commit writes a page (the WAL grows by a frame), the watermark stands as it was, and
    the connection is NORMAL again."""
    db_path = tmp_path / "store.db"
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA wal_autocheckpoint = 0")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY CHECK (id = 1), spool TEXT, folded INT)")

    def fold(conn: sqlite3.Connection, spool: Spool) -> tuple[str, int]:
        mark(conn, "t", "abc", 7)
        return "abc", 7

    spooled = Spooled(db_path, fold, "t")
    try:
        spooled.fold(db)  # the watermark: ("abc", 7)
        frames = Path(f"{db_path}-wal").stat().st_size
        assert spooled._fold_rest(db) == ("abc", 7)
        assert Path(f"{db_path}-wal").stat().st_size > frames  # a frame: a commit that synced
        assert db.execute("SELECT spool, folded FROM t").fetchone() == ("abc", 7)
        assert db.execute("PRAGMA synchronous").fetchone() == (1,)
    finally:
        spooled.close()
        db.close()
