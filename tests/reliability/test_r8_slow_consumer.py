"""R8: a slow or dead consumer of the bus never stalls the audit chain, the ledger or the
router. A view that stops reading is detached, with a GR-005 degradation line; a view
that raises closes its own subscription. Real SQLite, the real bus."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.audit.log import AuditLog
from app.bus import AuditAppended, BudgetUpdated, Bus
from app.clock import ManualClock
from app.policy.schema import Policy
from app.router.ledger import BudgetLedger

APPENDS = 10_000


async def test_a_dead_subscriber_does_not_stall_10k_audit_appends(tmp_path: Path) -> None:
    bus = Bus()
    dead = bus.subscribe(maxsize=64, name="tui")  # never read from
    async with AuditLog.open(tmp_path / "audit.db", bus=bus, clock=ManualClock()) as log:

        async def appends() -> None:
            for i in range(APPENDS):
                await log.append("route", session="s", detail=f"line {i}")

        # a stall would hang here; no wall-clock figure is asserted, only that it ends
        await asyncio.wait_for(appends(), timeout=600)
        await asyncio.sleep(0)  # let the detachment line's task run
        assert dead.closed and dead.detached is not None
        lines = await log.lines(session="s")
    assert len([ln for ln in lines if ln.kind == "route"]) == APPENDS
    detached = [ln for ln in lines if ln.kind == "degradation"]
    assert len(detached) == 1
    assert detached[0].reason_codes == ["GR005_SUBSCRIBER_DETACHED"]
    assert detached[0].values["subscriber"] == "tui" and "fell behind" in detached[0].detail
    # the chain written around the detachment verifies
    async with AuditLog.open(tmp_path / "audit.db") as again:
        assert (await again.verify()).ok


async def test_a_consumer_that_raises_leaves_the_audit_and_ledger_free(
    tmp_path: Path, policy: Policy
) -> None:
    bus = Bus()
    seen: list[int] = []

    async def printer() -> None:  # a `run --progress` printer whose pipe broke
        with bus.subscribe(kinds=(AuditAppended, BudgetUpdated), name="printer") as sub:
            async for event in sub:
                if isinstance(event, AuditAppended):
                    seen.append(event.line["seq"])
                    if len(seen) == 3:
                        raise BrokenPipeError("stdout closed")

    clock = ManualClock()
    ledger = await BudgetLedger.open(tmp_path / "ledger.db", policy.budget, clock=clock, bus=bus)
    async with AuditLog.open(tmp_path / "audit.db", bus=bus, clock=clock) as log:
        task = asyncio.create_task(printer())
        await asyncio.sleep(0)
        for i in range(5000):
            await log.append("call", session="s", detail=f"call {i}")
            if i % 10 == 0:
                await asyncio.sleep(0)
        res = await ledger.reserve(
            session="s", provider="openai", role="architect", model="gpt-5.1-high", amount_usd=0.01
        )
        await ledger.settle(res.id, actual_usd=0.01, tokens_in=1, tokens_out=1, latency_ms=1.0)
        with pytest.raises(BrokenPipeError):
            await task
        assert bus.subscriber_count == 0 and len(seen) == 3
        assert len(await log.lines(session="s")) == 5000
    await ledger.close()
