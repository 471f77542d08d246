"""The audit log: one SQLite file per data dir holding one hash chain (GR-005, GR-013).

Writers in any number of processes are serialised by SQLite itself: each append reads the
chain's tail and inserts the next line inside one ``BEGIN IMMEDIATE`` transaction, so two
writers can never both extend the same tail. Lines are stored as their canonical JSON
text, which is what gets hashed, exported and verified; the other columns are indexes.

An append is one function that runs the whole transaction (:mod:`app.sqlite`): on the
event loop when the file's write lock is free at once (tens of microseconds, no fsync in
WAL + NORMAL), else on the connection's thread, which waits for the lock. Checkpoints (two
fsyncs) run on that thread too, never on the loop.

The file's schema and that transaction are in :mod:`app.audit.store`; the redaction every
line goes through first is in :mod:`app.audit.quick_redact`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import aiosqlite
from pydantic import ValidationError

from app.audit.base import AuditBase
from app.audit.canonical import ChainChecker, Problem, VerifyReport, check_row
from app.audit.prepared import PreparedLine
from app.audit.store import SYNCHRONOUS, rollback, setup, write_lines
from app.audit.types import AuditLine
from app.bus import Bus
from app.clock import Clock, SystemClock
from app.errors import AuditTamperError, StoreError, SwitchyardError
from app.opener import Opener
from app.sqlite import SQLiteRunner, failure_text

__all__ = ["SYNCHRONOUS", "AuditLog", "AuditLogOpener"]


class AuditLog(AuditBase):
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
        super().__init__(clock=clock, bus=bus, policy_version=policy_version)
        self._db = db
        self._runner = SQLiteRunner(db, path, synchronous=SYNCHRONOUS)
        self.path = path

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
            await setup(db, str(db_path))
            await log._runner.setup()
        except sqlite3.Error as exc:
            await db.close()
            raise SwitchyardError(f"cannot open the audit log {db_path}: {exc}") from None
        except BaseException:
            await db.close()
            raise
        return log

    async def _close_store(self) -> None:
        self._runner.close()
        await self._db.close()

    @contextlib.contextmanager
    def _mapped(self, *, writing: bool) -> Iterator[None]:
        """A failed statement (a full disk, a read-only file) as one line naming the file."""
        try:
            yield
        except sqlite3.Error as exc:
            text = failure_text("the audit log", self.path, exc, writing=writing)
            raise StoreError(text) from exc

    # ── write ────────────────────────────────────────────────────────────────────────────

    async def _insert(self, lines: list[PreparedLine], *, defer: bool) -> list[AuditLine]:
        clock = self._clock
        try:  # (not _mapped: the request path's every append; a try costs nothing here)
            return await self._runner.write(lambda db: write_lines(db, lines, clock), defer=defer)
        except sqlite3.Error as exc:
            raise StoreError(failure_text("the audit log", self.path, exc)) from exc

    async def flush(self) -> None:
        """Commit the lines appended with ``defer=True`` now."""
        async with self._lock:
            with self._mapped(writing=True):
                await self._runner.flush()

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

    async def _write_jsonl(self, out: TextIO, session: str | None, run: str | None) -> int:
        where, params = _where(session, run, 0)
        count = 0
        async with self._lock, self._runner.waiting():
            # One read transaction: a consistent snapshot while other writers go on.
            await self._db.execute("BEGIN")
            try:
                sql = f"SELECT seq, line FROM audit_lines{where} ORDER BY seq"
                async with self._db.execute(sql, params) as cur:
                    async for seq, text in cur:
                        if type(text) is not str:  # stored as bytes or a number: tampered
                            raise AuditTamperError(_UNREADABLE.format(seq=seq))
                        _to_line(seq, text)  # as tail reads it: a line that is none is refused
                        out.write(text + "\n")
                        count += 1
            finally:
                await rollback(self._db)
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
                await rollback(self._db)
        return checker.report()

    async def _check(self, checker: ChainChecker) -> None:
        sql = "SELECT seq, ts, hash, session, run, kind, line FROM audit_lines ORDER BY seq"
        async with self._db.execute(sql) as cur:
            async for seq, ts, hash_, session, run, kind, text in cur:
                check_row(checker, seq, ts, hash_, session, run, kind, text)
        async with self._db.execute("SELECT seq, hash FROM audit_head WHERE id = 1") as cur:
            head = await cur.fetchone()
        if head is None:
            if checker.last_seq:
                raise Problem(None, "the chain head record is missing")
            return
        checker.finish(head_hash=head[1], head_seq=head[0])

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[int, str]]:
        with self._mapped(writing=False):
            async with self._lock, self._runner.waiting() as db, db.execute(sql, params) as cur:
                rows = await cur.fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]


#: what :meth:`AuditLog.open` returns: awaitable, and an async context manager
AuditLogOpener = Opener[AuditLog]


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


_UNREADABLE = "audit line {seq} is unreadable; run `switchyard audit verify`"


def _to_line(seq: int, text: str) -> AuditLine:
    try:
        return AuditLine.model_validate_json(text)
    except ValidationError:
        raise AuditTamperError(_UNREADABLE.format(seq=seq)) from None
