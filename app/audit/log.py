"""The audit log: one SQLite file per data dir holding one hash chain (GR-005, GR-013).

Writers in any number of processes are serialised by SQLite itself: each append reads the
chain's tail and inserts the next line inside one ``BEGIN IMMEDIATE`` transaction, so two
writers can never both extend the same tail. Lines are stored as their canonical JSON
text, which is what gets hashed, exported and verified; the other columns are indexes.

An append is one function that runs the whole transaction (:mod:`app.sqlite`): on the
event loop when the file's write lock is free at once (tens of microseconds, no fsync in
WAL + NORMAL), else on the connection's thread, which waits for the lock. Checkpoints (two
fsyncs) run on that thread too, never on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO, cast

import aiosqlite
from pydantic import ValidationError

from app.audit.canonical import (
    GENESIS_HASH,
    ChainChecker,
    Problem,
    VerifyReport,
    canonical_json,
    jsonable,
)
from app.audit.redact import _MAYBE_SHAPED, _SECRET_KEY, redact, secret_env_values
from app.audit.types import AUDIT_KINDS, AuditLine
from app.bus import AuditAppended, Bus
from app.clock import Clock, SystemClock, iso
from app.errors import AuditTamperError, SwitchyardError
from app.opener import ClosedOnExit, Opener
from app.sqlite import BUSY_TIMEOUT_MS, Busy, SQLiteRunner, is_busy, rollback_quietly

#: WAL + NORMAL: a committed line survives a crash of the process at any point; a power
#: cut or an OS crash may lose the last lines committed before it (the chain that remains
#: still verifies: each line and the head are written in one transaction). FULL would
#: fsync every append, about 3 ms each on this project's machines.
SYNCHRONOUS = "NORMAL"
_SCHEMA_VERSION = 1

_SCHEMA = """
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

_KIND_SET = frozenset(AUDIT_KINDS)


class AuditLog(ClosedOnExit):
    """The hash-chained audit log. Implements :class:`app.audit.types.AuditSink`.

    ``log = await AuditLog.open(path)`` … ``await log.close()``, or
    ``async with AuditLog.open(path) as log:``.
    """

    def __init__(
        self,
        db: aiosqlite.Connection,
        path: Path,
        *,
        clock: Clock,
        bus: Bus | None,
        policy_version: str | None,
    ) -> None:
        self._db = db
        self._runner = SQLiteRunner(db, path, synchronous=SYNCHRONOUS)
        self.path = path
        self._clock = clock
        self._bus = bus
        self.policy_version = policy_version
        # One connection cannot nest transactions: coroutines sharing it take turns.
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def open(
        cls,
        db_path: Path,
        *,
        clock: Clock | None = None,
        bus: Bus | None = None,
        policy_version: str | None = None,
    ) -> AuditLogOpener:
        """Open (creating if needed) the chain in ``db_path``. Await it or ``async with`` it."""
        return AuditLogOpener(cls._open(db_path, clock or SystemClock(), bus, policy_version))

    @classmethod
    async def _open(
        cls, db_path: Path, clock: Clock, bus: Bus | None, policy_version: str | None
    ) -> AuditLog:
        db_path = Path(db_path)
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
            # We BEGIN ourselves; appends run on the loop as well as on aiosqlite's thread.
            db = await aiosqlite.connect(db_path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise SwitchyardError(f"cannot open the audit log {db_path}: {exc}") from None
        log = cls(db, db_path, clock=clock, bus=bus, policy_version=policy_version)
        try:
            await _setup(db)
            await log._runner.setup()
        except sqlite3.Error as exc:
            await db.close()
            raise SwitchyardError(f"cannot open the audit log {db_path}: {exc}") from None
        except BaseException:
            await db.close()
            raise
        return log

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._db.close()

    # ── write ────────────────────────────────────────────────────────────────────────────

    async def append(
        self,
        kind: str,
        *,
        session: str,
        run: str | None = None,
        role: str | None = None,
        from_: str | None = None,
        to: str | None = None,
        reason_codes: Sequence[str] = (),
        values: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
        detail: str = "",
    ) -> AuditLine:
        """Append one line (redacted, hashed, chained) and return it once committed."""
        if self._closed:
            raise RuntimeError("the audit log is closed")
        if kind not in _KIND_SET:
            raise ValueError(f"unknown audit kind {kind!r}; expected one of {AUDIT_KINDS}")
        if isinstance(reason_codes, str):  # a lone code, not its characters
            reason_codes = (reason_codes,)
        fields: dict[str, Any] = _redact(
            jsonable(
                {
                    "session": session,
                    "run": run,
                    "kind": kind,
                    "role": role,
                    "from": from_,
                    "to": to,
                    "reason_codes": [str(c) for c in reason_codes],
                    "values": dict(values or {}),
                    "policy_version": self.policy_version,
                    "provenance": dict(provenance or {}),
                    "detail": detail,
                }
            )
        )
        async with self._lock:
            line = await self._insert(fields)
            if self._bus is not None:
                # Under the lock, so this instance publishes in seq order.
                event = AuditAppended(session=line.session, line=line.model_dump(by_alias=True))
                await self._bus.publish(event)
        return line

    async def _insert(self, fields: dict[str, Any]) -> AuditLine:
        clock = self._clock
        return await self._runner.run(lambda db, inline: _insert_line(db, inline, fields, clock))

    # ── read ─────────────────────────────────────────────────────────────────────────────

    async def last_seq(self) -> int:
        """The seq of the newest line (0 for an empty chain)."""
        async with (
            self._lock,
            self._runner.waiting() as db,
            db.execute("SELECT MAX(seq) FROM audit_lines") as cur,
        ):
            row = await cur.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    async def tail(
        self, n: int = 20, *, session: str | None = None, run: str | None = None
    ) -> list[AuditLine]:
        """The last ``n`` lines (optionally of one session/run), oldest first."""
        where, params = _where(session, run, 0)
        sql = f"SELECT seq, line FROM audit_lines{where} ORDER BY seq DESC LIMIT ?"
        rows = await self._fetch(sql, (*params, max(n, 0)))
        return [_to_line(seq, text) for seq, text in reversed(rows)]

    async def lines(
        self,
        session: str | None = None,
        run: str | None = None,
        since_seq: int = 0,
        *,
        limit: int | None = None,
    ) -> list[AuditLine]:
        """Lines with seq > ``since_seq`` (optionally of one session/run), in seq order."""
        where, params = _where(session, run, since_seq)
        sql = f"SELECT seq, line FROM audit_lines{where} ORDER BY seq LIMIT ?"
        rows = await self._fetch(sql, (*params, -1 if limit is None else limit))
        return [_to_line(seq, text) for seq, text in rows]

    async def follow(
        self,
        session: str | None = None,
        run: str | None = None,
        since_seq: int = 0,
        *,
        interval: float = 0.5,
    ) -> AsyncIterator[AuditLine]:
        """Yield lines after ``since_seq`` as they are committed, by any writer. Never ends."""
        last = since_seq
        while True:
            batch = await self.lines(session, run, last, limit=500)
            for line in batch:
                last = line.seq
                yield line
            if not batch:
                await asyncio.sleep(interval)

    async def export_jsonl(
        self, out: TextIO | Path, session: str | None = None, run: str | None = None
    ) -> int:
        """Write lines as JSONL (the stored canonical text, verbatim). Returns the count.

        A full export verifies with ``verify_lines(..)``; one filtered by session or run
        is a sub-sequence and verifies with ``verify_lines(.., chain=False)``.
        """
        if not isinstance(out, Path):
            return await self._write_jsonl(out, session, run)
        fh = await asyncio.to_thread(out.open, "w", encoding="utf-8", newline="\n")
        try:
            return await self._write_jsonl(fh, session, run)
        finally:
            fh.close()

    async def _write_jsonl(self, out: TextIO, session: str | None, run: str | None) -> int:
        where, params = _where(session, run, 0)
        count = 0
        async with self._lock, self._runner.waiting():
            # One read transaction: a consistent snapshot while other writers go on.
            await self._db.execute("BEGIN")
            try:
                sql = f"SELECT line FROM audit_lines{where} ORDER BY seq"
                async with self._db.execute(sql, params) as cur:
                    async for (text,) in cur:
                        out.write(text + "\n")
                        count += 1
            finally:
                await _rollback(self._db)
        return count

    async def verify(self) -> VerifyReport:
        """Check the whole chain: hashes, links, contiguous seqs, index columns, head."""
        checker = ChainChecker(chain=True)
        async with self._lock, self._runner.waiting():
            await self._db.execute("BEGIN")  # lines and head from one snapshot
            try:
                await self._check(checker)
            except Problem as problem:
                return checker.report(problem)
            finally:
                await _rollback(self._db)
        return checker.report()

    async def _check(self, checker: ChainChecker) -> None:
        sql = "SELECT seq, hash, session, run, kind, line FROM audit_lines ORDER BY seq"
        async with self._db.execute(sql) as cur:
            async for seq, hash_, session, run, kind, text in cur:
                expected = checker.last_seq + 1
                if seq != expected:
                    missing = f"{expected}" if seq == expected + 1 else f"{expected}–{seq - 1}"
                    raise Problem(expected, f"line {missing} is missing (the chain jumps to {seq})")
                data = checker.feed(text, where=f"line {seq}")
                if (hash_, session, run, kind) != (
                    data["hash"],
                    data["session"],
                    data["run"],
                    data["kind"],
                ):
                    raise Problem(seq, f"the index columns of line {seq} do not match its text")
        async with self._db.execute("SELECT seq, hash FROM audit_head WHERE id = 1") as cur:
            head = await cur.fetchone()
        if head is None:
            if checker.last_seq:
                raise Problem(None, "the chain head record is missing")
            return
        checker.finish(head_hash=head[1], head_seq=head[0])

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[int, str]]:
        async with self._lock, self._runner.waiting() as db, db.execute(sql, params) as cur:
            rows = await cur.fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]


#: what :meth:`AuditLog.open` returns: awaitable, and an async context manager
AuditLogOpener = Opener[AuditLog]


async def _setup(db: aiosqlite.Connection) -> None:
    await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    # Switching to WAL needs a moment alone with the file; several processes opening a new
    # chain at once can see "locked" here despite the busy timeout, so retry briefly.
    for attempt in range(50):
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.05)
    await db.execute(f"PRAGMA synchronous = {SYNCHRONOUS}")
    await db.execute("BEGIN IMMEDIATE")
    try:
        for statement in _statements(_SCHEMA):
            await db.execute(statement)
        await db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        await db.execute("COMMIT")
    except BaseException:
        await _rollback(db)
        raise


def _insert_line(
    db: sqlite3.Connection, inline: bool, fields: dict[str, Any], clock: Clock
) -> AuditLine:
    """Read the tail and append the next line in one ``BEGIN IMMEDIATE`` transaction."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        if inline and is_busy(exc):
            raise Busy from exc
        raise
    try:
        row = db.execute("SELECT seq, hash FROM audit_lines ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev_hash = (row[0] + 1, row[1]) if row else (1, GENESIS_HASH)
        # The time is read inside the transaction so ts order follows seq order.
        body = {**fields, "seq": seq, "ts": iso(clock.now()), "prev_hash": prev_hash}
        unhashed = canonical_json(body)  # what line_hash() hashes: no "hash" in it yet
        body["hash"] = hashlib.sha256(unhashed.encode("utf-8")).hexdigest()
        line = AuditLine.model_validate(body)
        text = _with_hash(unhashed, body["hash"])
        db.execute(
            "INSERT INTO audit_lines (seq, ts, session, run, kind, hash, line) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, body["ts"], body["session"], body["run"], body["kind"], body["hash"], text),
        )
        db.execute(
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            (seq, body["hash"]),
        )
        db.execute("COMMIT")
    except BaseException as exc:
        rollback_quietly(db)
        if inline and is_busy(exc):
            raise Busy from exc
        raise
    return line


# ── Redaction, the quick way when there is nothing to redact ─────────────────────────────
#
# redact() walks every string of a line through case-insensitive regexes (about 60 µs a
# line, most of an append's CPU). Nearly every line holds nothing to redact, which one look
# at the line's compact JSON text can prove: no secret value from the environment in it,
# none of the key shapes redact() looks for, and no key that redact() blanks by name. The
# look is written against redact.py's patterns as they are below: if they change, it is
# off and every line takes redact() itself.

_SHAPED_AS_WRITTEN = r"(?i)sk-|bearer|api[_-]?key|gh[pousr]_|github_pat_|xox|AIza"
_SECRET_KEY_AS_WRITTEN = (
    r"(?i)^(authorization|proxy-authorization|x-api-key|api[_-]?key|[a-z0-9_]*_api_key|"
    r"password|secret|client_secret|access_token|refresh_token|auth_token|id_token)$"
)
_SHORTCUT = (
    _MAYBE_SHAPED.pattern == _SHAPED_AS_WRITTEN and _SECRET_KEY.pattern == _SECRET_KEY_AS_WRITTEN
)
# What _MAYBE_SHAPED finds, in lower case (it ignores case).
_SHAPES = (
    "sk-",
    "bearer",
    "apikey",
    "api_key",
    "api-key",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xox",
    "aiza",
)
# How every key _SECRET_KEY matches ends in compact JSON ("…token":), and a key ending in a
# newline, which its $ also matches ("password\n").
_SECRET_KEY_ENDS = ('authorization":', 'key":', 'password":', 'secret":', 'token":', '\\n":')
# The only non-ASCII characters that an ignore-case pattern matches to ASCII letters
# (İ ı ſ K); lower() maps no other one to ASCII. A line holding one takes redact().
_FOLDS_TO_ASCII = re.compile("[\u0130\u0131\u017f\u212a]")
# A secret holding a character JSON escapes would not be found in the text as it is.
_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')
_env_seen: tuple[tuple[Any, ...], tuple[str, ...]] | None = None


def _secret_values() -> tuple[str, ...]:
    """``secret_env_values()``, recomputed only when the environment has changed."""
    global _env_seen
    data = getattr(os.environ, "_data", None)
    if not isinstance(data, dict):
        return secret_env_values()
    snapshot = tuple(data.items())
    if _env_seen is None or _env_seen[0] != snapshot:
        _env_seen = (snapshot, secret_env_values())
    return _env_seen[1]


def _redact(fields: dict[str, Any]) -> dict[str, Any]:
    """``redact(fields)`` for plain JSON values (``jsonable``'s output): equal to it."""
    if _SHORTCUT:
        values = _secret_values()
        if not any(_JSON_ESCAPED.search(v) for v in values):
            text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
            if not _FOLDS_TO_ASCII.search(text):
                low = text.lower()
                if not (
                    any(v in text for v in values)
                    or any(s in low for s in _SHAPES)
                    or any(k in low for k in _SECRET_KEY_ENDS)
                ):
                    return fields
    return cast(dict[str, Any], redact(fields))


def _with_hash(unhashed: str, digest: str) -> str:
    """``canonical_json(body)`` once ``hash`` is in ``body``, from the text without it.

    Sorted, "hash" comes between "from" and "kind"; before it stand only "detail" and
    "from", a string and a string or null once the line has validated, in which every
    quote is escaped: so the first ``,"kind":`` in the text is the key itself.
    """
    cut = unhashed.index(',"kind":')
    return f'{unhashed[:cut]},"hash":"{digest}"{unhashed[cut:]}'


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


async def _rollback(db: aiosqlite.Connection) -> None:
    # Nothing open is fine: the COMMIT went through, or BEGIN never did.
    with contextlib.suppress(sqlite3.OperationalError):
        await db.execute("ROLLBACK")


def _where(session: str | None, run: str | None, since_seq: int) -> tuple[str, tuple[Any, ...]]:
    clauses = ["seq > ?"]
    params: list[Any] = [since_seq]
    if session is not None:
        clauses.append("session = ?")
        params.append(session)
    if run is not None:
        clauses.append("run = ?")
        params.append(run)
    return " WHERE " + " AND ".join(clauses), tuple(params)


def _to_line(seq: int, text: str) -> AuditLine:
    try:
        return AuditLine.model_validate_json(text)
    except ValidationError:
        raise AuditTamperError(
            f"audit line {seq} is unreadable; run `switchyard audit verify`"
        ) from None
