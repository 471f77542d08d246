"""Concurrent reservations never cross a cap: one ledger, several ledgers, several processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from app.clock import ManualClock
from app.policy.schema import Budget
from app.router.ledger import BudgetLedger, CapExceeded, Reservation

# 200 callers asking $0.05 each against a $5 session cap: exactly 100 can win.
BUDGET = Budget(
    session_usd=5.0, day_usd=20.0, reservation_ttl_s=900, provider_day_usd={"deepseek": 4.0}
)
CALLS = 200


async def _try(led: BudgetLedger, session: str, provider: str, usd: float) -> Reservation | None:
    try:
        return await led.reserve(
            session=session, provider=provider, role="implementer", model="m", amount_usd=usd
        )
    except CapExceeded:
        return None


async def _outstanding(led: BudgetLedger, session: str) -> tuple[float, float]:
    snap = await led.snapshot(session)
    return snap.per_session.reserved_usd, snap.per_session.spent_usd


async def test_200_concurrent_reservations_on_one_ledger(tmp_path: Path) -> None:
    async with await BudgetLedger.open(tmp_path / "l.db", BUDGET, clock=ManualClock()) as led:
        results = await asyncio.gather(*(_try(led, "s", "openai", 0.05) for _ in range(CALLS)))
        granted = [r for r in results if r is not None]
        assert len(granted) == 100
        assert await _outstanding(led, "s") == (5.0, 0.0)
        assert await led.left_usd("s", "openai") == 0.0


async def test_200_concurrent_settles_and_reserves_stay_under_the_cap(tmp_path: Path) -> None:
    """Reservations racing with settlements of earlier ones: spent + reserved <= cap."""
    async with await BudgetLedger.open(tmp_path / "l.db", BUDGET, clock=ManualClock()) as led:

        async def worker(i: int) -> None:
            res = await _try(led, "s", "openai", 0.05 + (i % 7) * 0.01)
            if res is not None:
                await led.settle(
                    res.id, actual_usd=res.amount_usd, tokens_in=1, tokens_out=1, latency_ms=1
                )

        await asyncio.gather(*(worker(i) for i in range(CALLS)))
        reserved, spent = await _outstanding(led, "s")
        assert reserved == 0.0
        assert 4.8 <= spent <= 5.0


async def test_200_concurrent_reservations_across_four_ledgers_on_one_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "l.db"
    ledgers = [await BudgetLedger.open(path, BUDGET, clock=ManualClock()) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(_try(ledgers[i % 4], "s", "openai", 0.05) for i in range(CALLS))
        )
        assert sum(r is not None for r in results) == 100
        # Every instance sees the same, capped, total.
        for led in ledgers:
            assert await _outstanding(led, "s") == (5.0, 0.0)
    finally:
        for led in ledgers:
            await led.close()


async def test_the_provider_cap_holds_across_sessions_and_ledgers(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledgers = [await BudgetLedger.open(path, BUDGET, clock=ManualClock()) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(_try(ledgers[i % 3], f"s{i % 10}", "deepseek", 0.1) for i in range(CALLS))
        )
        assert sum(r is not None for r in results) == 40  # $4 deepseek cap / $0.10
        snap = await ledgers[0].snapshot("s0")
        assert snap.per_provider["deepseek"].reserved_usd == 4.0
        assert snap.per_day.reserved_usd == 4.0
    finally:
        for led in ledgers:
            await led.close()


_CHILD = """
import asyncio, json, sys
from app.clock import ManualClock
from app.policy.schema import Budget
from app.router.ledger import BudgetLedger, CapExceeded

async def main(path, budget, n):
    granted = 0
    async with await BudgetLedger.open(path, Budget(**budget), clock=ManualClock()) as led:
        for _ in range(n):
            try:
                await led.reserve(session="s", provider="openai", role="r", model="m",
                                  amount_usd=0.05)
                granted += 1
            except CapExceeded:
                pass
    print(granted)

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])))
"""


def test_200_reservations_from_four_processes(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    budget = json.dumps(BUDGET.model_dump())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path), budget, str(CALLS // 4)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    granted = 0
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        granted += int(out)
    assert granted == 100

    async def check() -> None:
        async with await BudgetLedger.open(path, BUDGET, clock=ManualClock()) as led:
            assert await _outstanding(led, "s") == (5.0, 0.0)

    asyncio.run(check())
