"""A reservation is renewed while its call is in flight, and no more once it ended."""

from __future__ import annotations

import asyncio
from typing import Any

from app.policy.schema import Budget
from app.router.ledger.keepalive import KeepAlive


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


async def test_renewed_every_third_of_the_ttl_until_stopped() -> None:
    ledger = Renewals(0.03, [True, OSError("the store is down a moment"), True])
    kept = KeepAlive(ledger, "r1")  # type: ignore[arg-type]
    await until(lambda: len(ledger.asked) >= 4)  # a failed renewal is tried again
    kept.stop()
    await asyncio.sleep(0.05)
    said = len(ledger.asked)
    await asyncio.sleep(0.05)
    assert len(ledger.asked) == said and set(ledger.asked) == {"r1"}


async def test_a_call_that_ends_at_once_renews_nothing() -> None:
    ledger = Renewals(0.03, [])
    KeepAlive(ledger, "r1").stop()  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert ledger.asked == []


async def test_a_reservation_no_longer_live_is_renewed_no_more() -> None:
    ledger = Renewals(0.03, [False])
    KeepAlive(ledger, "r1")  # type: ignore[arg-type]
    await until(lambda: len(ledger.asked) == 1)
    await asyncio.sleep(0.06)
    assert ledger.asked == ["r1"]
