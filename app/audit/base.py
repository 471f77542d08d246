"""What every audit store shares: the append path up to the store's own insert (redaction,
the line's fields, one append at a time per instance, the bus), following new lines, the
JSONL export's file handling, and the GR-005 line for a subscriber the bus let go.

:class:`app.audit.log.AuditLog` (a machine's SQLite file, the default) and
:class:`app.audit.pg_log.PgAuditLog` (the team's PostgreSQL, a chain per instance) each
add ``_insert`` (extend the chain) and the reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO, Unpack

from app.audit.canonical import VerifyReport, jsonable
from app.audit.prepared import PreparedLine, prepare, prepare_plain
from app.audit.quick_redact import looks_clean, redact_fields
from app.audit.types import AUDIT_KINDS, Appended, AuditLine, LineFields
from app.bus import AuditAppended, Bus, Event
from app.clock import Clock
from app.commit_point import finish_then_cancel
from app.opener import ClosedOnExit

_KIND_SET = frozenset(AUDIT_KINDS)


class AuditBase(ClosedOnExit):
    """The shared half of an audit store. Implements :class:`app.audit.types.AuditSink`."""

    #: True for a store several machines share (the team's)
    shared = False

    def __init__(self, *, clock: Clock, bus: Bus | None, policy_version: str | None) -> None:
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

    async def close(self) -> None:
        if not self._closed:
            if self._pending:  # a detachment line still being written
                await asyncio.gather(*self._pending, return_exceptions=True)
            self._closed = True
            await self._close_store()

    async def _close_store(self) -> None:
        raise NotImplementedError

    # ── write ────────────────────────────────────────────────────────────────────────────

    async def append(self, kind: str, **fields: Unpack[LineFields]) -> AuditLine:
        """Append one line (redacted, hashed, chained) and return it once it stands (the
        machine's store: in its spool; the team's: committed). :meth:`flush` makes every
        line so far visible to the store's reads. The arguments are :meth:`add`'s.
        """
        return (await self.add(kind, **fields)).line

    async def add(
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
    ) -> Appended:
        """:meth:`append`, returning the line's seq, hash and text at once and the line
        itself when asked for (the router's path, which keeps the seq: issue 20)."""
        if self._closed:
            raise RuntimeError("the audit log is closed")
        prepared = _prepare(
            kind,
            session,
            run,
            role,
            from_,
            to,
            reason_codes,
            values,
            provenance,
            detail,
            self.policy_version,
        )
        lock = self._lock
        if lock.locked():
            # another append first: waited for to the end, so that a cancel never lands
            # between the wait and the write (a caller told "cancelled" knows its line
            # stands: a call's closing, in app.router.cloud_step, resumes on it)
            return await finish_then_cancel(self._add_now(prepared))
        async with lock:  # (free: nothing waits; _add_now's, without its frame)
            appended = (await self._insert([prepared]))[0]
            self._publish(appended, prepared)
        return appended

    async def _add_now(self, prepared: PreparedLine) -> Appended:
        async with self._lock:
            appended = (await self._insert([prepared]))[0]
            self._publish(appended, prepared)
        return appended

    async def append_many(self, lines: Sequence[Mapping[str, Any]]) -> list[AuditLine]:
        """Append several lines produced at the same moment, in order: in one transaction
        (the team's store: all committed, or none) or one write to the spool (the
        machine's: on a full disk, the lines the write completed stand, as lines appended
        one by one would, and the error says how many). Each item holds :meth:`append`'s
        arguments (``kind``, ``session``, and any of the others by the same names)."""
        if self._closed:
            raise RuntimeError("the audit log is closed")
        prepared = [
            _prepare(
                item["kind"],
                item["session"],
                item.get("run"),
                item.get("role"),
                item.get("from_"),
                item.get("to"),
                item.get("reason_codes", ()),
                item.get("values"),
                item.get("provenance"),
                item.get("detail", ""),
                self.policy_version,
            )
            for item in lines
        ]
        if not prepared:
            return []
        async with self._lock:
            out = await self._insert(prepared)
            for appended, made in zip(out, prepared, strict=True):
                self._publish(appended, made)
        return [appended.line for appended in out]

    def _publish(self, appended: Appended, made: PreparedLine) -> None:
        if self._bus is not None:
            # Under the lock, so this instance publishes in seq order; publishing never
            # waits on a subscriber (a dead one is detached), so neither does an append.
            # The line goes as its text: a subscriber reads it (AuditAppended.line, what
            # ``model_dump(by_alias=True)`` of the AuditLine read from it holds) when it
            # takes it.
            self._bus.publish_nowait(AuditAppended(session=made.session, text=appended.text))

    async def _insert(self, lines: list[PreparedLine]) -> list[Appended]:
        """Extend the chain by ``lines``, in order, in one transaction where it can."""
        raise NotImplementedError

    async def flush(self) -> None:
        """Make every line so far visible to the store's reads (the machine's folds its
        spool into the tables; the team's commits every append: nothing to do)."""

    # ── read ─────────────────────────────────────────────────────────────────────────────

    async def last_seq(self) -> int:
        """The seq of the newest line of this log's chain (0 for an empty chain)."""
        raise NotImplementedError

    async def tail(
        self, n: int = 20, *, session: str | None = None, run: str | None = None
    ) -> list[AuditLine]:
        """The last ``n`` lines (optionally of one session/run), oldest first."""
        raise NotImplementedError

    async def verify(self, *, from_seq: int = 1) -> VerifyReport:
        """Check this log's chain: hashes, links, contiguous seqs, index columns, head.

        ``from_seq``: the chain from that line to the head (what a range read relies on:
        every line it reads is linked to the head); ``lines_checked`` counts from there."""
        raise NotImplementedError

    async def first_of(
        self, *, since: str | None = None, session: str | None = None, run: str | None = None
    ) -> tuple[int, str] | None:
        """The least seq and the least ts of the lines with ``ts >= since`` of
        ``session``/``run`` (each filter when given); None when no line matches. Read
        through an index, exact whatever the clock did (a line's ts is read under the
        chain's lock, in seq order, but a clock can be set back)."""
        raise NotImplementedError

    async def first_of_sessions_from(self, seq: int) -> int | None:
        """The least first seq of the sessions that have a line at ``seq`` or after."""
        raise NotImplementedError

    async def first_unlike_before(self, seq: int) -> int | None:
        """The first line before ``seq`` whose index columns (ts, session, run) are not
        its text's, or whose text is no JSON object; None when all agree. A range read
        finds where it starts through those columns and verifies the chain from there:
        an edited column before it would move the start past lines of the range, unseen
        (a review). Checked by the database, no hashing: 1.6 s for 881k lines."""
        raise NotImplementedError

    async def lines(
        self,
        session: str | None = None,
        run: str | None = None,
        since_seq: int = 0,
        *,
        limit: int | None = None,
    ) -> list[AuditLine]:
        raise NotImplementedError

    async def run_lines(self, run: str) -> list[AuditLine]:
        """Every line of ``run`` in this store, whichever chain holds them (a merge reads
        a run's seal line from another instance's)."""
        return await self.lines(run=run)

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
        self,
        out: TextIO | Path,
        session: str | None = None,
        run: str | None = None,
        *,
        from_seq: int = 1,
    ) -> int:
        """Write lines as JSONL (the stored canonical text, verbatim). Returns the count.

        A full export verifies with ``verify_lines(..)``; one filtered by session or run
        is a sub-sequence and verifies with ``verify_lines(.., chain=False)``.
        """
        if not isinstance(out, Path):
            return await self._write_jsonl(out, session, run, from_seq)
        fh = await asyncio.to_thread(out.open, "w", encoding="utf-8", newline="\n")
        try:
            return await self._write_jsonl(fh, session, run, from_seq)
        finally:
            fh.close()

    async def _write_jsonl(
        self, out: TextIO, session: str | None, run: str | None, from_seq: int
    ) -> int:
        raise NotImplementedError


def unlike(seq: int) -> str:
    """What :meth:`AuditBase.first_unlike_before` found, said."""
    return (
        f"the index columns of line {seq} do not match its text (or it is no line): "
        "`switchyard audit verify` checks the whole chain"
    )


def _prepare(
    kind: str,
    session: str,
    run: str | None,
    role: str | None,
    from_: str | None,
    to: str | None,
    reason_codes: Sequence[str],
    values: Mapping[str, Any] | None,
    provenance: Mapping[str, Any] | None,
    detail: str,
    policy_version: str | None,
) -> PreparedLine:
    """One line's fields: plain, redacted, and in canonical text."""
    if kind not in _KIND_SET:
        raise ValueError(f"unknown audit kind {kind!r}; expected one of {AUDIT_KINDS}")
    if isinstance(reason_codes, str):  # a lone code, not its characters
        reason_codes = (reason_codes,)
    raw: dict[str, Any] = {
        "session": session,
        "run": run,
        "kind": kind,
        "role": role,
        "from": from_,
        "to": to,
        "reason_codes": [str(c) for c in reason_codes],
        "values": values if values is not None else {},
        "policy_version": policy_version,
        "provenance": provenance if provenance is not None else {},
        "detail": detail,
    }
    quick = prepare(raw)
    if quick is not None and looks_clean(quick[1], quick[2]):
        return quick[0]
    # The slow way: every value walked, and redacted where a secret may be.
    return prepare_plain(redact_fields(jsonable(raw)))
