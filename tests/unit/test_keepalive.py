"""Reservations are renewed while their calls are in flight, and no more once they end."""

from __future__ import annotations

import asyncio
from typing import Any

from app.policy.schema import Budget
from app.router.ledger.keepalive import InFlight


class Renewals:
    def __init__(self, ttl: float, answers: list[Any]) -> None:
        self.budget = Budget(session_usd=1.0, day_usd=1.0, reservation_ttl_s=ttl)
        self.asked: list[str] = []
        self.answers = answers

    async def renew(self, reservation_id: str) -> bool:
        self.asked.append(reservation_id)
        answer = self.answers.pop(0) if self.answers else True
        if isinstance(answer, Exception):
            raise answer
        return bool(answer)


async def until(predicate: Any, limit: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not predicate():
        assert loop.time() < end, "never happened"
        await asyncio.sleep(0.005)


async def test_a_long_call_is_renewed_until_it_ends() -> None:
    ledger = Renewals(0.03, [True, OSError("the store is down a moment"), True])
    calls = InFlight(ledger)  # type: ignore[arg-type]
    calls.add("r1")
    await until(lambda: len(ledger.asked) >= 4)  # a failed renewal is tried again
    calls.done("r1")
    await asyncio.sleep(0.05)
    said = len(ledger.asked)
    await asyncio.sleep(0.05)
    assert len(ledger.asked) == said and set(ledger.asked) == {"r1"}
    assert calls._timer is None  # idle: no timer left on the loop


async def test_a_call_that_ends_at_once_renews_nothing() -> None:
    ledger = Renewals(0.03, [])
    calls = InFlight(ledger)  # type: ignore[arg-type]
    for n in range(50):
        calls.add(f"r{n}")
        calls.done(f"r{n}")
    await asyncio.sleep(0.05)
    assert ledger.asked == []


async def test_a_reservation_no_longer_live_is_renewed_no_more() -> None:
    ledger = Renewals(0.03, [False])
    calls = InFlight(ledger)  # type: ignore[arg-type]
    calls.add("r1")
    await until(lambda: len(ledger.asked) == 1)
    await asyncio.sleep(0.06)
    assert ledger.asked == ["r1"]
