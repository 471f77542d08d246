"""A store's WAL is cut back once a checkpoint lets it start over: it kept the size a
long read had let it reach (125 MB beside a busy serve during an audit verify), for as
long as a connection stayed open (a long-life audit)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from app import sqlite as stores


def _size(path: str) -> int:
    return os.path.getsize(path)


async def test_a_grown_wal_is_cut_back_when_it_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stores, "JOURNAL_SIZE_LIMIT", 256 * 1024)
    path = tmp_path / "store.db"
    wal = f"{path}-wal"
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        await stores.use_wal(db, "NORMAL")
        await db.execute("PRAGMA wal_autocheckpoint = 0")  # (the stores checkpoint apart)
        await db.execute("CREATE TABLE t (x BLOB)")
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()  # a long read: no reset
        for _ in range(64):
            await db.execute("INSERT INTO t VALUES (randomblob(32768))")
        grown = _size(wal)
        assert grown > 2 * 2**20
        reader.execute("COMMIT")
        reader.close()
        await db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        await db.execute("INSERT INTO t VALUES (1)")  # starts the WAL over
        assert _size(wal) <= 256 * 1024
    finally:
        await db.close()
