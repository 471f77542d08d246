"""The audit log's SQLite file: its schema and set-up; the lines chained after the tail
as records of its spool (:mod:`app.spool`); and the fold that moves those records into
the tables (the lines, the head, how far it has folded) in one transaction.

Writers in any number of processes are serialised by the spool's lock: a writer reads the
records the others appended (the tail moves with them) and appends its own under it, so
two writers can never both extend the same tail.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence

import aiosqlite

from app.audit.canonical import GENESIS_HASH
from app.audit.prepared import PreparedLine, index_text
from app.audit.types import Appended
from app.clock import Clock, iso
from app.errors import AuditTamperError
from app.spool import Spool, mark, unfolded
from app.sqlite import use_wal
from app.store.errors import SchemaTooNew

#: WAL + NORMAL: a committed line survives a crash of the process at any point; a power
#: cut or an OS crash may lose the last lines committed before it (the chain that remains
#: still verifies: each line and the head are written in one transaction). FULL would
#: fsync every append, about 3 ms each on this project's machines.
SYNCHRONOUS = "NORMAL"
#: v2: lines are appended to a spool first and folded into ``audit_lines`` (issue 20);
#: ``audit_spool`` says how far. A v1 Switchyard would write around the spool: refused.
SCHEMA_VERSION = 2

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
-- Where a range read (`policy simulate --since`) starts, exactly whatever the clock did.
-- Added to v2 files as they are opened (older versions keep it up to date as they write).
CREATE INDEX IF NOT EXISTS audit_lines_ts ON audit_lines (ts);
-- The head is updated in the same transaction as each insert, so cutting lines off the
-- end of the chain (which no hash chain detects by itself) shows up in verify().
CREATE TABLE IF NOT EXISTS audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
-- How far the spool (audit.db-spool, app/spool.py) is folded into audit_lines.
CREATE TABLE IF NOT EXISTS audit_spool (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    spool  TEXT NOT NULL,
    folded INTEGER NOT NULL
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


def chain_lines(
    lines: Sequence[PreparedLine], tail: tuple[int, str], clock: Clock
) -> tuple[list[Appended], list[bytes]]:
    """``lines`` chained after ``tail`` (seq, hash): the lines and their spool records.
    Every line is made (and any not checked when prepared, validated) before any is
    written: one that does not validate writes nothing. The time is read here, under the
    spool's lock, so ts follows seq."""
    seq, prev_hash = tail
    ts = iso(clock.now())
    out: list[Appended] = []
    records: list[bytes] = []
    for prepared in lines:
        seq += 1
        line = prepared.chain(seq, prev_hash, ts)
        records.append(
            f"{seq}\t{line.hash}\t{prev_hash}\t{ts}\t{prepared.index}\t{line.text}".encode()
        )
        prev_hash = line.hash
        out.append(line)
    return out, records


def record_tail(record: bytes) -> tuple[int, str]:
    """The seq and hash of a spool record (:func:`chain_lines`); :class:`SpoolBroken`
    for a record that is not one (its check held, its content is no line's: a traceback
    from every command, ``audit verify`` included, before)."""
    try:
        seq, digest, _ = record.split(b"\t", 2)
        return int(seq), digest.decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise SpoolBroken(0, f"a spool record is not an audit line: {record[:40]!r}") from None


def last_tail(records: list[bytes]) -> tuple[int, str] | None:
    """The seq and hash of the last of ``records`` that is a line's, if any is."""
    for record in reversed(records):
        try:
            return record_tail(record)
        except SpoolBroken:
            continue
    return None


#: the table that records how far the spool is folded (app.spool.watermark)
SPOOL_TABLE = "audit_spool"


def fold(db: sqlite3.Connection, spool: Spool) -> tuple[str, int]:
    """Move the spool's records after the last fold into ``audit_lines`` (and the head),
    inside a write transaction the caller holds; the spool id and offset folded to.

    A record that does not continue the chain (its seq or prev_hash) is not folded, nor
    any after it: the spool was tampered with, or written around.
    """
    records, end = unfolded(db, spool, SPOOL_TABLE)
    if not records:
        return spool.ident, end
    row = db.execute(_TAIL).fetchone()
    seq, prev_hash = (row[0], row[1]) if row else (0, GENESIS_HASH)
    rows = []
    for record in records:
        # seq, hash, prev_hash, ts, kind, session, run: the index columns, made when the
        # line was (no JSON read here: the fold runs beside the request path)
        try:
            parts = record.decode("utf-8").split("\t", 7)
            n = int(parts[0])
            linked = len(parts) == 8 and n == seq + 1 and parts[2] == prev_hash
            values = (
                n,
                parts[3],
                index_text(parts[5]),
                index_text(parts[6]),
                parts[4],
                parts[1],
                parts[7],
            )
        except (ValueError, IndexError):
            linked = False
        if not linked:
            raise SpoolBroken(
                seq + 1, f"{spool.path}: line {seq + 1} does not continue the chain at {seq}"
            )
        rows.append(values)
        seq, prev_hash = n, parts[1]
    db.executemany(_INSERT, rows)
    db.execute(_HEAD, (seq, prev_hash))
    mark(db, SPOOL_TABLE, spool.ident, end)
    return spool.ident, end


class SpoolBroken(AuditTamperError):
    """A spool record that does not continue the chain (``seq``: the record's)."""

    def __init__(self, seq: int, text: str) -> None:
        super().__init__(f"{text}; run `switchyard audit verify`")
        self.seq = seq
        self.text = text


def tail_of(db: sqlite3.Connection) -> tuple[int, str]:
    row = db.execute(_TAIL).fetchone()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)


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
