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

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import aiosqlite
from pydantic import ValidationError

from app.audit.canonical import ChainChecker, Problem, VerifyReport, jsonable
from app.audit.quick_redact import redact_fields
from app.audit.store import SYNCHRONOUS, insert_line, rollback, setup
from app.audit.types import AUDIT_KINDS, AuditLine
from app.bus import AuditAppended, Bus, Event
from app.clock import Clock, SystemClock
from app.errors import AuditTamperError, SwitchyardError
from app.opener import ClosedOnExit, Opener
from app.sqlite import SQLiteRunner

__all__ = ["SYNCHRONOUS", "AuditLog", "AuditLogOpener"]

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
        self._pending: set[asyncio.Task[AuditLine]] = set()
        if bus is not None:
            bus.on_detached(self._subscriber_detached)

    def _subscriber_detached(self, name: str, why: str, event: Event) -> None:
        """GR-005: a subscriber the bus let go (it stopped reading) is a degradation line.

        Called inside a publish, possibly under this log's own lock: the line is written
        by a task of its own, after the append that overflowed the queue.
        """
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(
            self.append(
                "degradation",
                session=event.session,
                reason_codes=["GR005_SUBSCRIBER_DETACHED"],
                values={"subscriber": name},
                detail=f"live view '{name}' detached: {why}",
            )
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

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
            await setup(db)
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
            if self._pending:  # a detachment line still being written
                await asyncio.gather(*self._pending, return_exceptions=True)
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
        fields: dict[str, Any] = redact_fields(
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
                # Under the lock, so this instance publishes in seq order; publishing never
                # waits on a subscriber (a dead one is detached), so neither does an append.
                event = AuditAppended(session=line.session, line=line.model_dump(by_alias=True))
                self._bus.publish_nowait(event)
        return line

    async def _insert(self, fields: dict[str, Any]) -> AuditLine:
        clock = self._clock
        return await self._runner.run(lambda db, inline: insert_line(db, inline, fields, clock))

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
