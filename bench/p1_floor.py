"""P1's floor: the least a routed cloud request must write, side by side with the router's
whole request path (``bench/router_bench.py``).

Issue 20 asks for a p50 of 150 µs. This measures how far below that the work a request
cannot skip already is, so the figure says whether the goal is a matter of the router's
Python or of the design. Every side writes the same two audit lines (the escalation
before the call, the call after it), each made as the product makes it
(``app.audit.prepared``: canonical text, the secret scan every line gets, the chain
hash), and the same budget rows (a reservation checked against the running totals,
settled with its call row). There is no decision, no approval, no masking of the request
and no backend call: a floor is what is left when all of those cost nothing.

- **floor**: the rebuild the last notes describe, on the product's own schemas
  (``app.audit.store``, ``app.router.ledger.schema``, their triggers and indexes) and
  settings (WAL, ``synchronous = NORMAL``, checkpoints on a thread of their own): both
  stores in one file on one connection, one transaction before the call (the previous
  request's settlement and call line join it: group commit), and no asyncio, pydantic
  model or thread between the statements.
- **journal floor**: no SQLite on the request path at all. The same record appended to
  a file under ``flock`` by one ``os.write``, to be folded into the tables later, off the
  request path (that folding is not counted). As crash-safe as the WAL without fsync: a
  SIGKILL loses nothing ``write`` returned for.
- **the two lines alone**: prepared and chained, written nowhere; what every floor
  holds whatever the storage.
- **the router's request path**: exactly ``router_bench``'s request, its mocked backend
  included.

All four run in this process in chunks whose order rotates.

Run: python -m bench.p1_floor [--n 10000] [--chunks 10]
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.audit.canonical import GENESIS_HASH, verify_lines
from app.audit.prepared import index_text, prepare
from app.audit.quick_redact import looks_clean

# the product's own statements, where they stand apart from its pydantic models
from app.audit.store import _HEAD as HEAD
from app.audit.store import _INSERT as INSERT_LINE
from app.audit.store import _TAIL as TAIL
from app.audit.store import SCHEMA
from app.router.ledger.caps import sums
from app.router.ledger.schema import migrate
from app.router.ledger.transactions import insert_call
from app.sqlite import CHECKPOINT_EVERY, Checkpointer
from bench._common import percentile, print_machine, print_ratio, write_result
from bench.router_bench import setup

GOAL_US = 150.0
_DUMPS = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
#: the reservation's insert, as the ledger's SQLite transactions made it before the spool
#: (issue 20): this floor is that design's, measured on its statements
_RESERVE = (
    "INSERT INTO reservations (id, session, run, provider, role, model, amount_nusd, day,"
    " created, expires, expires_at, status) VALUES (?,?,?,?,?,?,?,?,?,?,?,'live')"
)
#: the escalation line's fields as the router writes them (bench.router_bench's request)
ESCALATION: dict[str, Any] = {
    "session": "bench",
    "run": None,
    "kind": "escalation",
    "role": "architect",
    "from": "qwen3-14b",
    "to": "gpt-5.1-high",
    "reason_codes": ["ARCHITECT_LOW_CONFIDENCE"],
    "values": {
        "chain_step": 0,
        "confidence": 0.5,
        "est_cost_usd": 0.2048125,
        "inputs": {
            "approved": ["gpt-5.1-high"],
            "left": {p: 999999.9991 for p in ("anthropic", "deepseek", "moonshot", "openai")},
            "policy": "e92229c88bcc1b78",
            "signals": {"confidence": 0.5, "context_estimate": 10},
            "step": 0,
            "v": 1,
        },
    },
    "policy_version": "1.0.0",
    "provenance": {
        "est_cost_usd": 0.204813,
        "input_hash": "sha256v2:" + "45" * 32,
        "model": "gpt-5.1-high",
        "policy_version": "1.0.0",
        "trigger": ["architect_low_confidence"],
        "values": {"confidence": 0.5},
    },
    "detail": "confidence 0.5 < 0.75 → gpt-5.1-high",
}
CALL: dict[str, Any] = {
    **ESCALATION,
    "kind": "call",
    "from": None,
    "values": {
        "cost_usd": 0.00045,
        "finish_reason": "stop",
        "latency_ms": 0.0,
        "provider": "openai",
        "secrets_masked": 0,
        "tokens_in": 200,
        "tokens_out": 20,
        "usage_counted_locally": False,
    },
    "detail": "200 in / 20 out, $0.0004",
}


def timed(request: Callable[[], None], n: int) -> list[float]:
    """The seconds each of ``n`` calls of ``request`` took."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        request()
        out.append(time.perf_counter() - t0)
    return out


def line_row(fields: dict[str, Any], seq: int, prev: str, ts: str) -> tuple[Any, ...]:
    """One audit line as the product makes it (``app.audit.prepared``: the canonical text
    in one pass of the C encoder; ``looks_clean``: the secret scan every line gets; the
    chain hash; the line is not read back, as the product's request path does not), as
    the row ``app.audit.store``'s insert takes (its index columns as the fold reads them)."""
    made = prepare(fields)
    if made is None:
        raise RuntimeError("a bench line only the slow way spells")
    prepared, text, data = made
    if not looks_clean(text, data):
        raise RuntimeError("a secret in a bench line")
    line = prepared.chain(seq, prev, ts)
    kind, session, run = prepared.index.split("\t")
    return (seq, ts, index_text(session), index_text(run), kind, line.hash, line.text)


def close_live(db: sqlite3.Connection, rid: str, cost: int, closed: str) -> None:
    """Settle a live reservation with its call row (the pre-spool ledger's statements)."""
    db.execute(
        "UPDATE reservations SET status = 'settled', closed = ? WHERE id = ? AND status = 'live'",
        (closed, rid),
    )
    day, session, run, role, model, provider = db.execute(
        "SELECT day, session, run, role, model, provider FROM reservations WHERE id = ?", (rid,)
    ).fetchone()
    row = (closed, day, session, run, role, model, provider, 200, 20, 0.0, cost, "ok")
    insert_call(db, (*row, rid))


def expire_stale(db: sqlite3.Connection, now: float) -> None:
    """What the pre-spool ledger read first in every reservation (nothing is stale here)."""
    sql = "SELECT * FROM reservations WHERE status = 'live' AND expires_at <= ?"
    db.execute(sql, (now,)).fetchall()


class Floor:
    """Both stores in one file, one connection, one transaction per request."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        # checkpoints (two fsyncs) off the request path, as the product makes them
        self.db.execute("PRAGMA wal_autocheckpoint = 0")
        self.checkpointer = Checkpointer(path, "NORMAL")
        self.commits = 0
        self.db.executescript(SCHEMA)
        migrate(self.db, path)
        #: the previous request's settlement, committed with the next transaction
        self.pending: tuple[str, int] | None = None

    def request(self) -> None:
        now = datetime.now(UTC)
        ts = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        day, epoch = ts[:10], now.timestamp()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(TAIL).fetchone()
            seq, prev = (row[0], row[1]) if row else (0, GENESIS_HASH)
            lines = []
            if self.pending is not None:  # the last call: settled, its row, its line
                rid, cost = self.pending
                close_live(db, rid, cost, ts)
                seq += 1
                lines.append(line_row(CALL, seq, prev, ts))
                prev = lines[-1][5]
            expire_stale(db, epoch)
            totals = sums(db, "bench", day)  # the cap check's read
            if totals.s_spent < 0:
                raise RuntimeError("negative totals")
            seq += 1
            lines.append(line_row(ESCALATION, seq, prev, ts))
            rid = uuid.uuid4().hex
            amount = 204_812_500
            reservation = (rid, "bench", "", "openai", "architect", "gpt-5.1-high", amount)
            db.execute(_RESERVE, (*reservation, day, ts, ts, epoch + 600))
            db.executemany(INSERT_LINE, lines)
            db.execute(HEAD, (seq, lines[-1][5]))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.pending = (rid, 450_000)
        self.commits += 1
        if self.commits % CHECKPOINT_EVERY == 0:
            self.checkpointer.poke()

    def timed(self, n: int) -> list[float]:
        return timed(self.request, n)

    def lines(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM audit_lines").fetchone()[0])


class JournalFloor:
    """The same two lines and reservation appended to a journal file instead of SQLite:
    the floor of the design the last note pointed at (an append-only journal, folded into
    the tables later, off the request path; the folding is not counted here).

    One record per request, written by one ``os.write`` under ``flock`` (writers in other
    processes would share the file, as they share the database today): the previous
    call's settlement and line, the escalation line and the reservation. The chain's tail
    and the cap check's totals are this process's own; a real store would read both back
    from the file whenever another writer had grown it (here nobody else writes, so that
    read is never paid). A record is length-prefixed, so a torn last one can be found.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self.size = 0
        self.seq, self.prev = 0, GENESIS_HASH
        self.spent_nusd = 0
        self.pending: tuple[str, int] | None = None

    def request(self) -> None:
        now = datetime.now(UTC)
        ts = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(self.fd).st_size
            if size != self.size:  # another writer: its tail (never taken here)
                raise RuntimeError("the journal grew under another writer")
            lines = []
            seq, prev = self.seq, self.prev
            # one record: the ledger's rows as one small JSON object, then the lines'
            # canonical text as it is stored (it holds no newline), one per line
            rows: dict[str, Any] = {}
            if self.pending is not None:
                rows["settled"] = self.pending
                seq += 1
                lines.append(line_row(CALL, seq, prev, ts))
                prev = lines[-1][5]
            if self.spent_nusd < 0:  # the cap check, on this process's totals
                raise RuntimeError("negative totals")
            seq += 1
            lines.append(line_row(ESCALATION, seq, prev, ts))
            rid = uuid.uuid4().hex
            amount = 204_812_500
            rows["reserve"] = (rid, "bench", "openai", "architect", amount, ts)
            body = "\n".join([_DUMPS(rows), *(line[6] for line in lines)]).encode()
            data = len(body).to_bytes(4, "little") + body
            os.write(self.fd, data)
            self.size = size + len(data)
            self.seq, self.prev = seq, lines[-1][5]
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.spent_nusd += amount
        self.pending = (rid, 450_000)

    def timed(self, n: int) -> list[float]:
        return timed(self.request, n)


def journal_records(path: Path) -> list[list[str]]:
    """Each record of a journal :class:`JournalFloor` wrote: its ledger rows (JSON), then
    its lines."""
    data = path.read_bytes()
    out, at = [], 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "little")
        body = data[at + 4 : at + 4 + size]
        if len(body) != size:
            raise ValueError(f"{path}: a torn record at byte {at}")
        out.append(body.decode().split("\n"))
        at += 4 + size
    return out


def lines_timed(n: int) -> list[float]:
    """The two lines of a request prepared, nothing written: what every floor holds."""
    ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    out = []
    prev = GENESIS_HASH
    for seq in range(n):
        t0 = time.perf_counter()
        prev = line_row(CALL, 2 * seq + 1, prev, ts)[5]
        prev = line_row(ESCALATION, 2 * seq + 2, prev, ts)[5]
        out.append(time.perf_counter() - t0)
    return out


async def main_async(n: int, chunks: int, work: Path) -> dict[str, Any]:
    floor = Floor(work / "floor.db")
    journal = JournalFloor(work / "floor.journal")
    router = await setup(work)
    floor.timed(200)
    journal.timed(200)
    await router.timed(200)
    per = max(1, n // chunks)
    ours: list[float] = []
    least: list[float] = []
    appended: list[float] = []
    prepared: list[float] = []
    for i in range(chunks):
        # the order rotates, so that no side always runs first
        for k in range(4):
            side = (i + k) % 4
            if side == 0:
                ours += await router.timed(per)
            elif side == 1:
                least += floor.timed(per)
            elif side == 2:
                appended += journal.timed(per)
            else:
                prepared += lines_timed(per)
    closing = await router.close()
    floor.checkpointer.close()
    # both floors wrote whole, valid chains (a floor that skipped work would not)
    stored = floor.db.execute("SELECT line FROM audit_lines ORDER BY seq").fetchall()
    journaled = [text for record in journal_records(journal.path) for text in record[1:]]
    return {
        "router_us": _stats(ours),
        "floor_us": _stats(least),
        "journal_us": _stats(appended),
        "lines_us": _stats(prepared),
        "floor_lines": floor.lines(),
        "journal_bytes": journal.size,
        "floor_chain_ok": verify_lines(row[0] for row in stored).ok,
        "journal_lines": len(journaled),
        "journal_chain_ok": verify_lines(journaled).ok,
        "router_audit_ok": closing["audit_ok"],
    }


def _stats(seconds: list[float]) -> dict[str, float]:
    us = [s * 1e6 for s in seconds]
    return {"n": len(us), "p50": statistics.median(us), "p99": percentile(us, 99)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="requests per side")
    ap.add_argument("--chunks", type=int, default=10, help="alternating chunks")
    args = ap.parse_args(argv)
    print_machine()
    with tempfile.TemporaryDirectory(prefix="sy-p1-floor-") as tmp:
        res = asyncio.run(main_async(args.n, args.chunks, Path(tmp)))
    f, j, r, lines = res["floor_us"], res["journal_us"], res["router_us"], res["lines_us"]
    print(f"{args.n} requests per side, {args.chunks} alternating chunks (µs)")
    rows = (
        ("floor (one file, one transaction, no asyncio)", f),
        ("journal floor (one append under flock)", j),
        ("the two lines alone (prepared, not written)", lines),
        ("the router's request path", r),
    )
    for label, st in rows:
        print(f"  {label:<46} p50 {st['p50']:7.1f}  p99 {st['p99']:8.1f}")
    ratio = print_ratio("p1_floor_p50", f["p50"], r["p50"], "the router's request path")
    print(
        f"the floor is {f['p50'] / GOAL_US:.2f}× the 150 µs goal at p50; the router is "
        f"{r['p50'] / f['p50']:.1f}× the floor; the journal floor is "
        f"{j['p50'] / GOAL_US:.2f}× the goal, and the two lines alone "
        f"{lines['p50'] / GOAL_US:.2f}×"
    )
    write_result("p1_floor", {**res, "n": args.n, "chunks": args.chunks, "ratio": ratio})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
