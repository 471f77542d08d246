"""The audit log: one SQLite file per data dir holding one hash chain (GR-005, GR-013).

An append goes to the file's spool (``audit.db-spool``, :mod:`app.spool`): under the
spool's lock, shared by writers in any number of processes, the writer reads the records
others appended since it last looked (the chain's tail moves with them), chains its lines
after the tail and writes them in one ``write``; so two writers can never both extend the
same tail, and a line stands (killed or not) before the append returns. The log folds the
spool into the SQLite tables in batches (512 lines, on the append that brings them), a
quarter of a second after a write, and at close; every read folds what is left first, so a
reader never misses a line. Lines are stored as their canonical JSON text, which is what
gets hashed, exported and verified; the other columns are indexes.

The lock is taken on the event loop when it is free at once (a few microseconds), else on
a worker thread, which waits for it.

The file's schema and that transaction are in :mod:`app.audit.store`; the redaction every
line goes through first is in :mod:`app.audit.quick_redact`.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import aiosqlite
from pydantic import ValidationError

from app.audit.base import AuditBase
from app.audit.canonical import ChainChecker, Problem, VerifyReport, check_row
from app.audit.prepared import PreparedLine
from app.audit.store import (
    SPOOL_TABLE,
    SYNCHRONOUS,
    SpoolBroken,
    chain_lines,
    fold,
    last_tail,
    record_tail,
    rollback,
    setup,
    tail_of,
)
from app.audit.types import Appended, AuditLine
from app.bus import Bus
from app.clock import Clock, SystemClock
from app.errors import AuditTamperError, AuditUnreadable, StoreError, SwitchyardError
from app.opener import Opener
from app.spool import NotASpool, ShortWrite, Spooled, to_the_end
from app.sqlite import SQLiteRunner, connect_async, failure_text

__all__ = ["SYNCHRONOUS", "AuditLog", "AuditLogOpener"]

log = logging.getLogger(__name__)


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
        #: the spool (app.spool), and the chain's tail as this log last saw it
        self._spooled: Spooled | None = None
        self._tail: tuple[int, str] = (0, "")
        #: the lines a write cut short left standing, to publish once it has raised
        self._standing: list[Appended] = []

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
            db = await connect_async(db_path)
        except (OSError, sqlite3.Error) as exc:
            raise SwitchyardError(f"cannot open the audit log {db_path}: {exc}") from None
        log = cls(db, db_path, clock=clock, bus=bus, policy_version=policy_version)
        try:
            await setup(db, str(db_path))
            await log._runner.setup()
            await log._open_spool()
        except (sqlite3.Error, OSError) as exc:
            await log._close_spool()
            await db.close()
            unreadable = (
                isinstance(exc, sqlite3.DatabaseError)
                and not isinstance(exc, sqlite3.OperationalError)
            ) or isinstance(exc, NotASpool)
            raise (AuditUnreadable if unreadable else SwitchyardError)(
                f"cannot open the audit log {db_path}: {exc}"
            ) from None
        except BaseException:
            await log._close_spool()
            await db.close()
            raise
        return log

    async def _open_spool(self) -> None:
        """Open the spool and fold what it holds (a killed writer's last lines too), then
        read the chain's tail: under the spool's lock, so no line comes in between."""
        spooled = self._spooled = Spooled(self.path, fold, SPOOL_TABLE)

        def opening(conn: sqlite3.Connection, inline: bool) -> tuple[int, str]:
            records = spooled.appends.acquire(blocking=True) or []
            try:
                spooled.fold(conn, spooled.appends)
                return tail_of(conn)
            except SpoolBroken as exc:
                # The log still opens (``audit verify`` says where the chain breaks, every
                # read refuses): new lines go after the spool's last, as its writers did.
                log.error("%s", exc)
                return last_tail(records) or tail_of(conn)
            finally:
                spooled.appends.release()

        self._tail = await self._runner.run(opening, inline=False)

    async def _close_spool(self) -> None:
        spooled, self._spooled = self._spooled, None
        if spooled is not None:
            spooled.close()

    async def _close_store(self) -> None:
        try:
            if self._spooled is not None:
                await self._spooled.stop()
        finally:
            # (under the lock: an append still under way keeps the spool until it ends)
            async with self._lock:
                try:
                    # What is left is folded by the next open (the lines stand in the
                    # spool): a failure here (a full disk) takes nothing away.
                    with contextlib.suppress(sqlite3.Error, OSError, SwitchyardError):
                        await self._fold_here()
                finally:
                    await self._close_spool()
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
        except OSError as exc:  # its spool (a full disk, a file that is no spool)
            where = self._spooled.path if self._spooled is not None else self.path
            raise StoreError(f"cannot use the audit log's spool {where}: {exc}") from exc

    # ── write ────────────────────────────────────────────────────────────────────────────

    async def _insert(self, lines: list[PreparedLine]) -> list[Appended]:
        """Chain ``lines`` after the tail and append them to the spool in one ``write``
        (they stand when it returns)."""
        assert self._spooled is not None
        spool = self._spooled.appends
        try:
            news = spool.acquire(blocking=False)
            if news is None:  # another writer holds it: wait off the loop
                out = await to_the_end(self._append, lines, None)
            else:
                out = self._append(lines, news)
        except OSError as exc:
            standing, self._standing = self._standing, []
            for line, made in zip(standing, lines, strict=False):  # (cut short: see _append)
                self._publish(line, made)
            if standing:
                await self._after_write(len(standing))
            raise StoreError(f"cannot write the audit log {spool.path}: {exc}") from exc
        await self._after_write(len(out))
        return out

    async def _after_write(self, records: int) -> None:
        """Fold now when enough lines wait, else a quarter of a second later (the caller
        holds ``_lock``). The lines stand in the spool whatever a fold does: one that fails is
        logged here, and raised by the next read."""
        spooled = self._spooled
        assert spooled is not None
        if not spooled.wrote(records):
            spooled.when_idle(self._idle_fold)
            return
        try:
            await self._fold_here(inline=True)
        except (StoreError, AuditTamperError, OSError) as exc:
            log.warning("%s: folding the audit spool failed: %s", self.path, exc)

    async def _idle_fold(self) -> None:
        async with self._lock:
            if not self._closed:
                await self._fold_here(inline=True)

    def _append(self, lines: list[PreparedLine], news: list[bytes] | None) -> list[Appended]:
        assert self._spooled is not None
        spool = self._spooled.appends
        if news is None:
            news = spool.acquire(blocking=True)
            assert news is not None
        try:
            if spool.missed:
                # A spool came and went since this log last looked: the tail is the last
                # line of the one now there, else the tables' (a rotation folds first).
                records_now, _ = spool.read_since(spool.start)
                self._tail = (
                    record_tail(records_now[-1]) if records_now else tail_of(self._db._conn)
                )
                spool.missed = False
            elif news:  # other writers' lines: the tail moved
                self._tail = record_tail(news[-1])
            out, records = chain_lines(lines, self._tail, self._clock)
            try:
                spool.write(records)
            except ShortWrite as short:
                # the lines it completed stand (a fold may have them already): the chain
                # goes on after them, they are published, and the caller is told the
                # append failed
                if short.standing:
                    last = out[short.standing - 1]
                    self._tail = (last.seq, last.hash)
                    self._standing = out[: short.standing]
                raise
            last = out[-1]
            self._tail = (last.seq, last.hash)
        finally:
            spool.release()
        return out

    async def flush(self) -> None:
        """Fold the spool into the tables now (what a reader does before it reads)."""
        async with self._lock:
            await self._fold_here()

    async def _fold_here(self, *, inline: bool = False) -> None:
        """Fold what the spool holds beyond the last fold, on this log's connection (the
        caller holds ``_lock``): nothing to do, and no statement, when nothing is new.
        ``inline``: on the event loop when the file is free at once (a batch on the
        request path), else on the connection's thread."""
        spooled = self._spooled
        if spooled is None or not spooled.behind():
            return
        with self._mapped(writing=True):
            await self._runner.run(spooled.fold_inline, inline=inline)
        # a fold writes many pages: the WAL is copied back after each, on its own thread
        self._runner.checkpointer.poke()

    # ── read ─────────────────────────────────────────────────────────────────────────────

    async def last_seq(self) -> int:
        """The seq of the newest line (0 for an empty chain)."""
        async with self._lock:
            await self._fold_here()
            async with (
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

    async def _write_jsonl(
        self, out: TextIO, session: str | None, run: str | None, from_seq: int
    ) -> int:
        where, params = _where(session, run, max(from_seq, 1) - 1)
        count = 0
        async with self._lock:
            await self._fold_here()
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

    async def verify(self, *, from_seq: int = 1) -> VerifyReport:
        """Check the chain (from ``from_seq``): hashes, links, contiguous seqs, index
        columns, head."""
        checker = ChainChecker(chain=True, start=max(from_seq, 1))
        broken: SpoolBroken | None = None
        async with self._lock:
            try:
                await self._fold_here()
            except SpoolBroken as exc:  # the tables are checked all the same
                broken = exc
        async with self._lock, self._runner.waiting():
            await self._db.execute("BEGIN")  # lines and head from one snapshot
            try:
                await self._check(checker)
            except Problem as problem:
                return checker.report(problem)
            finally:
                await rollback(self._db)
        if broken is not None:
            return checker.report(Problem(broken.seq, broken.text))
        return checker.report()

    async def _check(self, checker: ChainChecker) -> None:
        sql = (
            "SELECT seq, ts, hash, session, run, kind, line FROM audit_lines WHERE seq > ?"
            " ORDER BY seq"
        )
        async with self._db.execute(sql, (checker.last_seq,)) as cur:
            async for seq, ts, hash_, session, run, kind, text in cur:
                check_row(checker, seq, ts, hash_, session, run, kind, text)
        async with self._db.execute("SELECT seq, hash FROM audit_head WHERE id = 1") as cur:
            head = await cur.fetchone()
        if head is None:
            if checker.last_seq:
                raise Problem(None, "the chain head record is missing")
            return
        checker.finish(head_hash=head[1], head_seq=head[0])

    async def first_of(
        self, *, since: str | None = None, session: str | None = None, run: str | None = None
    ) -> tuple[int, str] | None:
        clauses, params = [], []
        for clause, value in (("ts >= ?", since), ("session = ?", session), ("run = ?", run)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        # By ts alone, SQLite's plan walked the rows in seq order until one matched (the
        # whole log for a recent --since); the ts index reads only the range.
        table = "audit_lines INDEXED BY audit_lines_ts" if clauses == ["ts >= ?"] else "audit_lines"
        row = await self._row(f"SELECT MIN(seq), MIN(ts) FROM {table}{where}", params)
        return None if row[0] is None else (int(row[0]), str(row[1]))

    async def first_of_sessions_from(self, seq: int) -> int | None:
        # the sessions of the rows from ``seq`` on (by seq, not a scan of the whole
        # session index), then each one's first line: one probe of (session, seq) each
        sql = (
            "SELECT MIN((SELECT MIN(b.seq) FROM audit_lines b WHERE b.session = a.session))"
            " FROM (SELECT DISTINCT session FROM audit_lines NOT INDEXED WHERE seq >= ?) a"
        )
        row = await self._row(sql, (seq,))
        return None if row[0] is None else int(row[0])

    async def first_unlike_before(self, seq: int) -> int | None:
        sql = (
            "SELECT MIN(seq) FROM audit_lines WHERE seq < ? AND (NOT json_valid(line)"
            " OR json_type(line) IS NOT 'object'"
            " OR json_extract(line, '$.ts') IS NOT ts"
            " OR json_extract(line, '$.session') IS NOT session"
            " OR json_extract(line, '$.run') IS NOT run)"
        )
        row = await self._row(sql, (seq,))
        return None if row[0] is None else int(row[0])

    async def _row(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...]:
        """The one row of an aggregate ``sql``."""
        (row,) = await self._rows(sql, params)
        return tuple(row)

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[int, str]]:
        return [(int(r[0]), str(r[1])) for r in await self._rows(sql, params)]

    async def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """``sql``'s rows, read once the spool is folded in."""
        with self._mapped(writing=False):
            async with self._lock:
                await self._fold_here()
                async with self._runner.waiting() as db, db.execute(sql, params) as cur:
                    return list(await cur.fetchall())


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
