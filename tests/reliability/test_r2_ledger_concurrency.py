"""R2 (GR-011): concurrent reservations never cross a cap, and a SIGKILL leaves the ledger
intact on restart.

Most of R2 lives where the ledger is tested (see tests/reliability/README.md):

* 200 concurrent reservations against a cap on one ledger, across four ledgers on one
  file, with settlements racing, per provider, and from four processes:
  ``tests/integration/test_ledger_concurrency.py``;
* a process SIGKILLed between reserve and settle, its reservation held until the TTL then
  charged in full, the file intact: ``tests/reliability/test_ledger_crash.py``.

This file runs the two together: 200 reservations from four processes racing for a
$5 cap (100 slots of $0.05), one of them SIGKILLed mid-write while the others are still
reserving. On restart the file is intact, exactly 100 reservations hold exactly the cap,
every id any process was told it holds is there (the dead one's too: nothing it held was
lost or freed early), and the cap still refuses the next dollar.
"""

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

from app.clock import ManualClock
from app.policy.schema import Budget
from app.router.ledger import BudgetLedger, CapExceeded

START = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
BUDGET = Budget(session_usd=5.0, day_usd=20.0, reservation_ttl_s=900)
CALLS, PROCS, AMOUNT = 200, 4, 0.05

# Tries N reservations of $0.05 in session "s", printing each granted id; then, when told
# to churn, reserves and releases in another session until it is killed (so the kill
# usually lands inside a write transaction).
_CHILD = """
import asyncio, json, sys
from datetime import datetime
from app.clock import ManualClock
from app.policy.schema import Budget
from app.router.ledger import BudgetLedger, CapExceeded

async def main(path, budget, n, churn, start):
    clock = ManualClock(datetime.fromisoformat(start))
    async with await BudgetLedger.open(path, Budget(**budget), clock=clock) as led:
        for _ in range(n):
            try:
                r = await led.reserve(session="s", provider="openai", role="architect",
                                      model="gpt-5.1-high", amount_usd=0.05)
                print(json.dumps({"id": r.id}), flush=True)
            except CapExceeded:
                pass
        print(json.dumps({"done": True}), flush=True)
        while churn:
            r = await led.reserve(session="churn", provider="deepseek", role="implementer",
                                  model="deepseek-chat", amount_usd=0.01)
            await led.release(r.id)

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1",
                 sys.argv[5]))
"""


def _spawn(path: Path, n: int, churn: bool) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(path),
            json.dumps(BUDGET.model_dump()),
            str(n),
            "1" if churn else "0",
            START.isoformat(),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ids(lines: list[str]) -> list[str]:
    return [json.loads(x)["id"] for x in lines if x.strip() and "id" in json.loads(x)]


def test_200_reservations_from_four_processes_one_killed_mid_write(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    victim = _spawn(path, CALLS // PROCS, churn=True)
    others = [_spawn(path, CALLS // PROCS, churn=False) for _ in range(PROCS - 1)]
    victim_lines: list[str] = []
    try:
        assert victim.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = victim.stdout.readline()
            assert line, victim.stderr.read() if victim.stderr else "the victim died"
            victim_lines.append(line)
            if '"done"' in line:
                break
        time.sleep(0.2)  # let it churn: the kill lands mid-transaction more often than not
        assert victim.poll() is None, "the victim should still be running"
        os.kill(victim.pid, signal.SIGKILL)
        granted = _ids(victim_lines)
        for proc in others:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            granted += _ids(out.splitlines())
    finally:
        for proc in (victim, *others):
            proc.kill()
            proc.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL

    # every process was told the truth, and together they filled the cap exactly
    assert len(granted) == len(set(granted)) == int(BUDGET.session_usd / AMOUNT)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    async def restart() -> None:
        async with await BudgetLedger.open(path, BUDGET, clock=ManualClock(START)) as led:
            snap = await led.snapshot("s")
            assert snap.per_session.reserved_usd == pytest.approx(BUDGET.session_usd)
            assert snap.per_session.spent_usd == 0.0
            assert (await led.snapshot("churn")).per_session.reserved_usd <= 0.01 + 1e-9
            with pytest.raises(CapExceeded):
                await led.reserve(
                    session="s", provider="openai", role="r", model="m", amount_usd=0.01
                )

    asyncio.run(restart())
    with sqlite3.connect(path) as db:
        rows = dict(db.execute("SELECT id, status FROM reservations WHERE session = 's'"))
    assert set(granted) == set(rows) and set(rows.values()) == {"live"}
