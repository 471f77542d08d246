"""P1's floor: the least a routed cloud request must write, in Python and SQLite, side by
side with the router's whole request path (``bench/router_bench.py``).

Issue 20 asks for a p50 of 150 µs. This measures how far below that the storage a
request cannot skip already is, so the figure says whether the goal is a matter of the
router's Python or of the design: the same two audit lines (the escalation before the
call, the call after it, hash-chained, their text scanned for secrets) and the same
budget rows (a reservation checked against the running totals, settled with its call
row), on the product's own schemas (``app.audit.store``, ``app.router.ledger.schema``,
their triggers and indexes) and settings (WAL, ``synchronous = NORMAL``, checkpoints on a
thread of their own), with what the
rebuild the last notes describe would do: both stores in one file on one connection,
one transaction before the call (the previous request's settlement and call line join
it: group commit) and no asyncio, pydantic or thread between the statements. There is
no decision, no approval, no masking of the request and no backend call: the floor is
what is left when all of those cost nothing.

Both sides run in this process in alternating chunks; the router side is exactly
``router_bench``'s request (its mocked backend included).

Run: python -m bench.p1_floor [--n 10000] [--chunks 10]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sqlite3
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.audit.quick_redact import looks_clean

# the product's own statements, where they stand apart from its pydantic models
from app.audit.store import _HEAD as HEAD
from app.audit.store import _INSERT as INSERT_LINE
from app.audit.store import _TAIL as TAIL
from app.audit.store import SCHEMA
from app.router.ledger.caps import sums
from app.router.ledger.schema import migrate
from app.router.ledger.transactions import close_live, expire_stale
from app.sqlite import CHECKPOINT_EVERY, Checkpointer
from bench._common import percentile, print_machine, print_ratio, write_result
from bench.router_bench import setup

GOAL_US = 150.0
_DUMPS = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
#: the reservation's insert, as ``transactions.reserve`` makes it (that function also
#: takes a pydantic ``Reservation``, which the floor leaves out)
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
        "input_hash": "sha256:" + "45" * 32,
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

    def _line(self, fields: dict[str, Any], seq: int, prev: str, ts: str) -> tuple[Any, ...]:
        body = {**fields, "seq": seq, "prev_hash": prev, "ts": ts}
        text = _DUMPS(body)
        if not looks_clean(text):  # the secret scan every line gets
            raise RuntimeError("a secret in a bench line")
        digest = hashlib.sha256(text.encode()).hexdigest()
        line = _DUMPS({**body, "hash": digest})
        return (seq, ts, fields["session"], fields["run"], fields["kind"], digest, line)

    def request(self) -> None:
        now = datetime.now(UTC)
        ts = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        day, epoch = ts[:10], now.timestamp()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(TAIL).fetchone()
            seq, prev = (row[0], row[1]) if row else (0, "0" * 64)
            lines = []
            if self.pending is not None:  # the last call: settled, its row, its line
                rid, cost = self.pending
                close_live(db, rid, "settled", now, cost, "ok", 200, 20, 0.0)
                seq += 1
                lines.append(self._line(CALL, seq, prev, ts))
                prev = lines[-1][5]
            expire_stale(db, now)
            totals = sums(db, "bench", day)  # the cap check's read
            if totals.s_spent < 0:
                raise RuntimeError("negative totals")
            seq += 1
            lines.append(self._line(ESCALATION, seq, prev, ts))
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
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.request()
            out.append(time.perf_counter() - t0)
        return out

    def lines(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM audit_lines").fetchone()[0])


async def main_async(n: int, chunks: int, work: Path) -> dict[str, Any]:
    floor = Floor(work / "floor.db")
    router = await setup(work)
    floor.timed(200)
    await router.timed(200)
    per = max(1, n // chunks)
    ours: list[float] = []
    least: list[float] = []
    for i in range(chunks):
        if i % 2:
            ours += await router.timed(per)
            least += floor.timed(per)
        else:
            least += floor.timed(per)
            ours += await router.timed(per)
    closing = await router.close()
    floor.checkpointer.close()
    return {
        "router_us": _stats(ours),
        "floor_us": _stats(least),
        "floor_lines": floor.lines(),
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
    f, r = res["floor_us"], res["router_us"]
    print(f"{args.n} requests per side, {args.chunks} alternating chunks (µs)")
    print(
        f"  floor (one file, one transaction, no asyncio)  p50 {f['p50']:7.1f}  p99 {f['p99']:8.1f}"
    )
    print(
        f"  the router's request path                      p50 {r['p50']:7.1f}  p99 {r['p99']:8.1f}"
    )
    ratio = print_ratio("p1_floor_p50", f["p50"], r["p50"], "the router's request path")
    print(
        f"the floor is {f['p50'] / GOAL_US:.2f}× the 150 µs goal at p50; the router is "
        f"{r['p50'] / f['p50']:.1f}× the floor"
    )
    write_result("p1_floor", {**res, "n": args.n, "chunks": args.chunks, "ratio": ratio})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
