"""Reading a simulation's input out of the audit log: the chain is verified first (a
broken chain stops here, naming its first bad line), then every verified line is
streamed into the collector, parsed once, never held as text. A range (``--since``,
``--session``) is read from the first line it needs, not from the log's first: at 955k
lines the whole log took 50 s and 1 GB (a long-life audit) for a day's replay."""

from __future__ import annotations

import io
import json
from typing import Protocol, TextIO

from app.audit.base import unlike
from app.audit.canonical import VerifyReport
from app.errors import AuditTamperError
from app.router.simulate.gcpause import gc_paused
from app.router.simulate.requests import Collected, Collector


class ChainStore(Protocol):
    """What is read of an audit store (the SQLite log, or the team's)."""

    async def verify(self, *, from_seq: int = 1) -> VerifyReport: ...

    async def export_jsonl(self, out: TextIO, *, from_seq: int = 1) -> int: ...

    async def first_of(
        self, *, since: str | None = None, session: str | None = None, run: str | None = None
    ) -> tuple[int, str] | None: ...

    async def first_of_sessions_from(self, seq: int) -> int | None: ...

    async def last_seq(self) -> int: ...

    async def first_unlike_before(self, seq: int) -> int | None: ...


class _Feed(io.TextIOBase):
    """A text sink for ``export_jsonl``: each whole line goes to the collector, up to the
    last line verified (a line appended since was not)."""

    def __init__(self, collector: Collector, last_seq: int) -> None:
        self._collector = collector
        self._last_seq = last_seq
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *whole, self._partial = (self._partial + text).split("\n")
        for raw in whole:
            if raw:
                line = json.loads(raw)
                if line["seq"] <= self._last_seq:
                    self._collector.feed(line)
        return len(text)


async def read_start(log: ChainStore, since: str | None, session: str | None) -> int | None:
    """The first line a simulation of the lines from ``since`` (of ``session``) must read,
    so that it replays them as a read of the whole log would; None when no line matches.

    The requests replayed stand from line ``k`` on, the first that matches. Before them
    the simulated ledgers must have charged every cost their caps count: each day's from
    the earliest day a matching line has (every line of that day or later stands after
    the first of them) and each replayed session's from its start. Both are found
    through the indexes, exactly (a clock set back leaves a line's ts out of seq order:
    the least ts is asked for, not the first line's). Nothing before the least of these
    bears on a cap of a replayed request, and no request of the range began before it
    (its lines are its session's, read from the session's first)."""
    if since is None and session is None:
        return 1
    first = await log.first_of(since=since, session=session)
    if first is None:
        return None
    k, least_ts = first
    day = await log.first_of(since=least_ts[:10])
    if session is None:
        own = await log.first_of_sessions_from(k)
    else:
        found = await log.first_of(session=session)
        own = found[0] if found else None
    return min(s for s in (k, day[0] if day else None, own) if s is not None)


async def read_log(
    log: ChainStore, *, since: str | None = None, session: str | None = None
) -> Collected:
    """The lines of ``log`` a simulation of ``since``/``session`` needs (every line when
    neither is given: :func:`read_start`), grouped into requests, once the chain verifies
    from the first of them to its head."""
    start = await read_start(log, since, session)
    past = await log.last_seq() + 1 if start is None else start
    if past > 1:  # the columns the start was found by hold for every line before it
        bad = await log.first_unlike_before(past)
        if bad is not None:
            raise AuditTamperError(
                f"the audit chain does not verify at line {bad}: {unlike(bad)}; nothing was "
                "simulated"
            )
    if start is None:  # no line in the range: nothing to read, nothing to replay
        return Collected(start=past)
    report = await log.verify(from_seq=start)
    if not report.ok:
        where = f" at line {report.first_bad_seq}" if report.first_bad_seq else ""
        raise AuditTamperError(
            f"the audit chain does not verify{where}: {report.problem}; nothing was simulated"
        )
    collector = Collector()
    last = start + report.lines_checked - 1
    with gc_paused():
        await log.export_jsonl(_Feed(collector, last), from_seq=start)  # type: ignore[arg-type]
    collected = collector.done()
    collected.start = start
    return collected
