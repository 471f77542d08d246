"""Group commit (app.sqlite): a write that records what already happened (``defer=True``: a
settlement) is committed with the next write on its file, or as soon as the event loop
runs again; a write that must stand before an effect is never deferred. (The audit log's
lines go to its spool, each standing when its append returns: tests/integration/
test_audit_spool.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from app.audit.log import AuditLog
from app.clock import ManualClock
from app.policy.schema import Budget
from app.router.ledger import BudgetLedger, UnknownReservation

BUDGET = Budget(session_usd=5.0, day_usd=20.0, reservation_ttl_s=900)


def _size(path: str) -> int:
    return os.stat(path).st_size


def _count(path: Path, sql: str) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute(sql).fetchone()[0])


async def test_a_deferred_settlement_and_the_next_reservation_commit_together(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    async with await BudgetLedger.open(path, BUDGET, clock=ManualClock()) as led:
        first = await led.reserve(
            session="s", provider="deepseek", role="r", model="m", amount_usd=1.0
        )
        await led.settle(
            first.id, actual_usd=0.5, tokens_in=1, tokens_out=1, latency_ms=1, defer=True
        )
        live = "SELECT COUNT(*) FROM reservations WHERE status = 'live'"
        assert _count(path, live) == 1  # the settlement is not committed yet
        # This connection reads its own deferred write: what is left counts it.
        assert await led.left_usd("s", "deepseek") == pytest.approx(4.5)
        await led.reserve(session="s", provider="deepseek", role="r", model="m", amount_usd=4.5)
        assert _count(path, live) == 1  # the first is settled, the second live
        assert _count(path, "SELECT COUNT(*) FROM calls") == 1


async def test_a_refused_write_keeps_what_was_deferred_before_it(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with await BudgetLedger.open(path, BUDGET, clock=ManualClock()) as led:
        res = await led.reserve(session="s", provider="deepseek", role="r", model="m", amount_usd=1)
        await led.settle(res.id, actual_usd=1, tokens_in=1, tokens_out=1, latency_ms=1, defer=True)
        with pytest.raises(UnknownReservation):
            await led.settle("nope", actual_usd=1, tokens_in=1, tokens_out=1, latency_ms=1)
        assert _count(path, "SELECT COUNT(*) FROM calls") == 1


# Reserves, reports, settles with defer=True and then blocks without ever giving the event
# loop a turn: the settlement is not committed when the process is killed.
_CHILD = """
import asyncio, json, sys, time
from datetime import datetime
from app.clock import ManualClock
from app.policy.schema import Budget
from app.router.ledger import BudgetLedger

async def main(path, budget, start):
    clock = ManualClock(datetime.fromisoformat(start))
    led = await BudgetLedger.open(path, Budget(**budget), clock=clock)
    res = await led.reserve(session="k", provider="deepseek", role="r", model="m", amount_usd=2.0)
    await led.settle(res.id, actual_usd=0.1, tokens_in=1, tokens_out=1, latency_ms=1, defer=True)
    print(json.dumps({"id": res.id}), flush=True)
    time.sleep(60)

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]))
"""


def _spawn_and_kill(path: Path, start: str) -> str:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), json.dumps(BUDGET.model_dump()), start],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        rid = str(json.loads(proc.stdout.readline())["id"])
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    return rid


async def test_a_kill_before_a_deferred_settlement_is_committed_charges_the_reservation(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    clock = ManualClock()
    rid = _spawn_and_kill(path, clock.now().isoformat())
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    async with await BudgetLedger.open(path, BUDGET, clock=clock) as led:
        # As if the process had died just before settling: the $2 stays held …
        assert (await led.snapshot("k")).reserved_usd == 2.0
        clock.advance(900)
        snap = await led.snapshot("k")
    # … and once its TTL has passed it is charged in full, never freed.
    assert snap.reserved_usd == 0.0
    assert snap.per_session.spent_usd == 2.0
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT status FROM reservations WHERE id = ?", (rid,)).fetchone()
    assert row == ("expired",)


async def test_checkpoints_run_on_a_thread_of_their_own_and_the_wal_starts_over(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.db"
    async with AuditLog.open(path) as log:
        runner = log._runner
        runner.checkpoint_every = 10
        for _ in range(50):
            await log.append("route", session="s")
        for _ in range(1200):  # the checkpointer catches up while nothing is written
            if runner.checkpointer.caught_up():
                break
            await asyncio.sleep(0.05)
        assert runner.checkpointer.caught_up()
        wal = _size(f"{path}-wal")
        for _ in range(5):
            await log.append("route", session="s")
        # The WAL started over from its beginning: five lines more did not grow it.
        assert _size(f"{path}-wal") <= wal
        assert (await log.verify()).ok
    assert runner.checkpointer._thread is None  # closing the log ended the thread
