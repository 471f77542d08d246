"""Reading a simulation's input out of the audit log: the chain is verified first (a
broken chain stops here, naming its first bad line), then every verified line is
streamed into the collector, parsed once, never held as text."""

from __future__ import annotations

import io
import json
from typing import Protocol, TextIO

from app.audit.canonical import VerifyReport
from app.errors import AuditTamperError
from app.router.simulate.gcpause import gc_paused
from app.router.simulate.requests import Collected, Collector


class ChainStore(Protocol):
    """What is read of an audit store (the SQLite log, or the team's)."""

    async def verify(self) -> VerifyReport: ...

    async def export_jsonl(self, out: TextIO) -> int: ...


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


async def read_log(log: ChainStore) -> Collected:
    """Every line of ``log``, grouped into requests, once the chain verifies."""
    report = await log.verify()
    if not report.ok:
        where = f" at line {report.first_bad_seq}" if report.first_bad_seq else ""
        raise AuditTamperError(
            f"the audit chain does not verify{where}: {report.problem}; nothing was simulated"
        )
    collector = Collector()
    with gc_paused():
        await log.export_jsonl(_Feed(collector, report.lines_checked))  # type: ignore[arg-type]
    return collector.done()
