"""A process killed between reserve and settle never lets a cap be crossed (GR-011)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.clock import ManualClock, SystemClock
from app.policy.schema import Budget
from app.router.ledger import BudgetLedger, CapExceeded, ReservationClosed

START = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)

# Reserves $3, reports the id, then churns small reserve/release pairs until it is killed,
# so the kill usually lands inside a write transaction.
_CHILD = """
import asyncio, json, sys
from datetime import datetime
from app.clock import ManualClock, SystemClock
from app.policy.schema import Budget
from app.router.ledger import BudgetLedger

async def main(path, budget, start):
    clock = ManualClock(datetime.fromisoformat(start)) if start else SystemClock()
    led = await BudgetLedger.open(path, Budget(**budget), clock=clock)
    res = await led.reserve(session="crash", provider="deepseek", role="implementer",
                            model="deepseek-reasoner", amount_usd=3.0, run="r1")
    print(json.dumps({"id": res.id}), flush=True)
    while True:
        small = await led.reserve(session="crash", provider="deepseek", role="implementer",
                                  model="deepseek-reasoner", amount_usd=0.01)
        await led.release(small.id)

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]))
"""


def _spawn_and_kill(path: Path, budget: Budget, start: str) -> str:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), json.dumps(budget.model_dump()), start],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else "child died"
        time.sleep(0.3)  # let the churn run
        assert proc.poll() is None, "the child should still be running"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return str(json.loads(line)["id"])


def _integrity(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def _status(path: Path, rid: str) -> str:
    with sqlite3.connect(path) as db:
        return str(db.execute("SELECT status FROM reservations WHERE id = ?", (rid,)).fetchone()[0])


async def test_sigkill_before_settle_keeps_the_reservation_until_ttl_then_charges_it(
    tmp_path: Path,
) -> None:
    budget = Budget(
        session_usd=5.0, day_usd=20.0, reservation_ttl_s=900, provider_day_usd={"deepseek": 5.0}
    )
    path = tmp_path / "ledger.db"
    rid = _spawn_and_kill(path, budget, START.isoformat())

    assert _integrity(path) == "ok"
    clock = ManualClock(START)
    async with await BudgetLedger.open(path, budget, clock=clock) as led:
        snap = await led.snapshot("crash")
        # The $3 is still held; at most one churn reservation was caught in flight.
        assert 3.0 <= snap.reserved_usd <= 3.01
        assert snap.per_session.spent_usd == 0.0
        with pytest.raises(CapExceeded):
            await led.reserve(
                session="crash",
                provider="deepseek",
                role="implementer",
                model="m",
                amount_usd=2.5,
            )

        clock.advance(899)
        assert (await led.snapshot("crash")).reserved_usd >= 3.0
        assert _status(path, rid) == "live"

        clock.advance(1)
        snap = await led.snapshot("crash")
        assert snap.reserved_usd == 0.0
        assert 3.0 <= snap.per_session.spent_usd <= 3.01  # charged in full, never freed
        assert _status(path, rid) == "expired"
        assert snap.by_model == {"deepseek-reasoner": snap.per_session.spent_usd}
        with pytest.raises(ReservationClosed):
            await led.settle(rid, actual_usd=0.1, tokens_in=1, tokens_out=1, latency_ms=1)

        # What is left is exactly what the cap allows after the full charge.
        left = await led.left_usd("crash", "deepseek")
        assert left == pytest.approx(5.0 - snap.per_session.spent_usd)
        with pytest.raises(CapExceeded):
            await led.reserve(
                session="crash",
                provider="deepseek",
                role="implementer",
                model="m",
                amount_usd=left + 0.01,
            )
        await led.reserve(
            session="crash", provider="deepseek", role="implementer", model="m", amount_usd=left
        )
    assert _integrity(path) == "ok"


async def test_sigkill_with_a_tiny_ttl_on_the_wall_clock(tmp_path: Path) -> None:
    budget = Budget(session_usd=5.0, day_usd=20.0, reservation_ttl_s=0.5)
    path = tmp_path / "ledger.db"
    rid = _spawn_and_kill(path, budget, "")
    assert _integrity(path) == "ok"
    await asyncio.sleep(0.6)
    async with await BudgetLedger.open(path, budget, clock=SystemClock()) as led:
        snap = await led.snapshot("crash")
    assert snap.reserved_usd == 0.0
    assert snap.per_session.spent_usd >= 3.0
    assert _status(path, rid) == "expired"


def test_a_ledger_left_open_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    code = (
        "import asyncio, sys\n"
        "from app.policy.schema import Budget\n"
        "from app.router.ledger import BudgetLedger\n"
        "async def main():\n"
        "    led = await BudgetLedger.open(sys.argv[1], Budget(session_usd=1, day_usd=1,"
        " reservation_ttl_s=5))\n"
        "    await led.reserve(session='s', provider='p', role='r', model='m', amount_usd=0.5)\n"
        "    globals()['kept'] = led  # never closed\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "l.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert _integrity(tmp_path / "l.db") == "ok"
