"""The audit log's SQLite file: its schema and set-up, and the one transaction that
extends the chain (read the tail, hash the next line, insert it and move the head).

Writers in any number of processes are serialised by SQLite itself: the append reads the
chain's tail and inserts the next line inside one ``BEGIN IMMEDIATE`` transaction, so two
writers can never both extend the same tail.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence

import aiosqlite

from app.audit.canonical import GENESIS_HASH
from app.audit.prepared import PreparedLine
from app.audit.types import AuditLine
from app.clock import Clock, iso
from app.sqlite import use_wal
from app.store.errors import SchemaTooNew

#: WAL + NORMAL: a committed line survives a crash of the process at any point; a power
#: cut or an OS crash may lose the last lines committed before it (the chain that remains
#: still verifies: each line and the head are written in one transaction). FULL would
#: fsync every append, about 3 ms each on this project's machines.
SYNCHRONOUS = "NORMAL"
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_lines (
    seq     INTEGER PRIMARY KEY,
    ts      TEXT NOT NULL,
    session TEXT NOT NULL,
    run     TEXT,
    kind    TEXT NOT NULL,
    hash    TEXT NOT NULL,
    line    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_lines_session ON audit_lines (session, seq);
CREATE INDEX IF NOT EXISTS audit_lines_run ON audit_lines (run, seq);
-- The head is updated in the same transaction as each insert, so cutting lines off the
-- end of the chain (which no hash chain detects by itself) shows up in verify().
CREATE TABLE IF NOT EXISTS audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
-- Append-only against accidents; deliberate tampering is verify()'s job.
CREATE TRIGGER IF NOT EXISTS audit_lines_no_update BEFORE UPDATE ON audit_lines
BEGIN SELECT RAISE(ABORT, 'audit lines are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_lines_no_delete BEFORE DELETE ON audit_lines
BEGIN SELECT RAISE(ABORT, 'audit lines are append-only'); END;
"""


async def setup(db: aiosqlite.Connection, what: str = "") -> None:
    """WAL, the durability above, and the tables (created if missing), before any append."""
    await use_wal(db, SYNCHRONOUS)
    await db.execute("BEGIN IMMEDIATE")
    try:
        async with db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise SchemaTooNew(f"audit log {what}", found, SCHEMA_VERSION)
        for statement in _statements(SCHEMA):
            await db.execute(statement)
        await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        await db.execute("COMMIT")
    except BaseException:
        await rollback(db)
        raise


_TAIL = "SELECT seq, hash FROM audit_lines ORDER BY seq DESC LIMIT 1"
_INSERT = (
    "INSERT INTO audit_lines (seq, ts, session, run, kind, hash, line) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_HEAD = (
    "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash"
)


def write_lines(
    db: sqlite3.Connection, lines: Sequence[PreparedLine], clock: Clock
) -> list[AuditLine]:
    """Read the tail and append ``lines`` after it, inside a write transaction (``BEGIN
    IMMEDIATE``) the caller holds: two writers can never both extend the same tail."""
    row = db.execute(_TAIL).fetchone()
    seq, prev_hash = (row[0], row[1]) if row else (0, GENESIS_HASH)
    # The time is read inside the transaction so ts order follows seq order.
    ts = iso(clock.now())
    out: list[AuditLine] = []
    # Every line is made (and validated) before the first is written: a line that does
    # not validate writes nothing.
    made = []
    for prepared in lines:
        seq += 1
        line, text = prepared.chain(seq, prev_hash, ts)
        made.append((seq, ts, line.session, line.run, line.kind, line.hash, text))
        prev_hash = line.hash
        out.append(line)
    db.executemany(_INSERT, made)
    db.execute(_HEAD, (seq, prev_hash))
    return out


def _statements(script: str) -> list[str]:
    """Split the schema script into statements (triggers hold inner semicolons)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines():
        if line.strip().startswith("--") or not line.strip():
            continue
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out


async def rollback(db: aiosqlite.Connection) -> None:
    # Nothing open is fine: the COMMIT went through, or BEGIN never did.
    with contextlib.suppress(sqlite3.OperationalError):
        await db.execute("ROLLBACK")
