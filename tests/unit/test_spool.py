"""The spool file (app/spool.py): framing, what a reader stops at, the header, the lock,
and a rotation seen by a handle that holds the old file."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from app import spool as spools
from app.spool import MAGIC, Spool, frame, parse


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


def test_garbage_after_the_last_record_is_cut_off_by_the_next_writer(tmp_path: Path) -> None:
    path = tmp_path / "x-spool"
    s = Spool(path)
    try:
        s.acquire(blocking=True)
        s.write([b"kept"])
        s.release()
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


def test_a_rotation_hands_the_old_records_to_a_handle_that_had_not_read_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spools, "ROTATE_BYTES", 10)
    path = tmp_path / "x-spool"
    writer, late, rotator = Spool(path), Spool(path), Spool(path)
    try:
        writer.acquire(blocking=True)
        writer.write([b"a" * 20, b"b"])
        writer.release()
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
    finally:
        for s in (writer, late, rotator):
            s.close()
