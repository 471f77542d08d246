"""The budget meter's breakdown (calls, failed, cost by role, model and provider) is kept
per ledger and read on from the last snapshot (app/router/ledger/call_groups.py): what
it shows must stay what a ledger with nothing cached reads, whoever writes the calls and
whenever their transactions commit."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg

from app.clock import ManualClock
from app.policy.schema import Budget
from app.router.ledger import BudgetLedger, reports
from app.router.ledger.call_groups import GroupCache
from app.router.ledger.caps import sums
from app.router.ledger.records import BudgetSnapshot
from app.router.ledger.transactions import insert_call
from tests.pg import StoreUnderTest

BUDGET = Budget(session_usd=50.0, day_usd=80.0, reservation_ttl_s=900)


def _shown(snap: BudgetSnapshot) -> tuple[Any, ...]:
    return (
        snap.calls,
        snap.failed,
        snap.by_role,
        snap.by_model,
        snap.by_provider,
        snap.per_session.spent_usd,
        snap.reserved_usd,
    )


async def _as_read_afresh(store: StoreUnderTest, session: str, clock: ManualClock) -> Any:
    async with await store.ledger(BUDGET, clock) as fresh:
        return _shown(await fresh.snapshot(session))


async def _call(led: Any, role: str, usd: float, outcome: str = "ok", session: str = "s") -> None:
    await led.record_call(
        session=session,
        role=role,
        model=f"{role}-model",
        provider="local" if usd == 0 else "openai",
        tokens_in=1,
        tokens_out=1,
        latency_ms=1.0,
        cost_usd=usd,
        outcome=outcome,
    )


async def test_what_another_ledger_settles_after_a_snapshot_is_shown(
    any_store: StoreUnderTest,
) -> None:
    """A reservation held when the first snapshot was read, settled by another ledger (a
    connection and, on SQLite, a spool handle of its own); a failed call and a free one
    recorded there too: the first ledger's next snapshot shows them, once each."""
    clock = ManualClock()
    async with (
        await any_store.ledger(BUDGET, clock) as led,
        await any_store.ledger(BUDGET, clock) as other,
    ):
        await _call(led, "judge", 0.1)
        held = await led.reserve(
            session="s", provider="openai", role="coder", model="coder-model", amount_usd=1.0
        )
        first = await led.snapshot("s")
        assert (first.calls, first.reserved_usd, first.by_role) == (1, 1.0, {"judge": 0.1})
        await other.settle(held.id, actual_usd=0.4, tokens_in=1, tokens_out=1, latency_ms=1)
        await _call(other, "judge", 0.25, "failed")
        await _call(other, "reader", 0.0)
        snap = await led.snapshot("s")
        assert snap.by_role == {"coder": 0.4, "judge": 0.35}
        assert (snap.calls, snap.failed, snap.reserved_usd) == (4, 1, 0.0)
        assert _shown(await led.snapshot("s")) == _shown(snap)  # read on: nothing twice
        assert _shown(await other.snapshot("s")) == _shown(snap)
        await _call(other, "reader", 0.0, "failed")  # (no cost: the session's total stays)
        snap = await led.snapshot("s")
        assert (snap.calls, snap.failed) == (5, 2)
    assert await _as_read_afresh(any_store, "s", clock) == _shown(snap)


async def test_a_new_day_and_an_expiry_after_a_snapshot(tmp_path: Path) -> None:
    """The meter's breakdown is the session's, across days: a call of the next day and a
    reservation held overnight, charged by its expiry (a call row of the day it was
    made), are added to what was cached the day before."""
    clock = ManualClock()
    store = StoreUnderTest("sqlite", str(tmp_path / "ledger.db"))
    async with await store.ledger(BUDGET, clock) as led:
        await _call(led, "judge", 1.0)
        await led.reserve(
            session="s", provider="openai", role="coder", model="coder-model", amount_usd=2.0
        )
        before = await led.snapshot("s")
        assert (before.calls, before.reserved_usd) == (1, 2.0)
        clock.advance(24 * 3600)
        await _call(led, "judge", 0.5)
        snap = await led.snapshot("s")
    assert snap.day != before.day
    assert (snap.per_day.spent_usd, snap.per_session.spent_usd) == (0.5, 3.5)
    assert snap.by_role == {"coder": 2.0, "judge": 1.5}
    assert (snap.calls, snap.failed, snap.reserved_usd) == (3, 1, 0.0)
    assert await _as_read_afresh(store, "s", clock) == _shown(snap)


async def test_calls_changed_by_hand_are_read_again(tmp_path: Path) -> None:
    """Nothing in Switchyard changes a call once written; a hand's edit still shows (the
    session's running total, kept by triggers, no longer matches what was cached)."""
    path = tmp_path / "ledger.db"
    async with await BudgetLedger.open(path, BUDGET, clock=ManualClock()) as led:
        for role, usd in (("judge", 0.1), ("coder", 0.2), ("judge", 0.3)):
            await _call(led, role, usd)
        assert (await led.snapshot("s")).by_role == {"coder": 0.2, "judge": 0.4}
        with sqlite3.connect(path) as db:
            db.execute("DELETE FROM calls WHERE role = 'coder'")
            db.execute("UPDATE calls SET cost_nusd = 50000000 WHERE cost_nusd = 300000000")
        snap = await led.snapshot("s")
    assert (snap.calls, snap.by_role, snap.per_session.spent_usd) == (2, {"judge": 0.15}, 0.15)


async def test_a_read_older_than_the_point_cached_does_not_use_it(tmp_path: Path) -> None:
    """The meter's connection and the ledger's each read, in snapshots of their own: one
    that began before a call was written must not take the point a newer one cached
    (a free call: the session's total cannot tell)."""
    path = tmp_path / "ledger.db"
    async with await BudgetLedger.open(path, BUDGET, clock=ManualClock()) as led:
        await _call(led, "judge", 0.1)
    old = sqlite3.connect(path, isolation_level=None)
    new = sqlite3.connect(path, isolation_level=None)
    try:
        old.execute("BEGIN")
        spent = sums(old, "s", "2026-01-01").s_spent  # (its snapshot starts here)
        row = ("2026-01-01T12:00:00Z", "2026-01-01", "s", "", "reader", "m", "local")
        insert_call(new, (*row, 1, 1, 1.0, 0, "ok", None))
        cache = GroupCache()
        assert reports.call_groups(new, "s", spent, cache).calls == 2
        assert reports.call_groups(old, "s", spent, cache).calls == 1
        old.execute("COMMIT")
        assert reports.call_groups(old, "s", spent, cache).calls == 2
    finally:
        old.close()
        new.close()


# Settles a reservation another process holds, its folds stopped, then blocks: killed,
# the settlement stands in the spool alone.
_SETTLER = """
import asyncio, json, sys, time
from datetime import datetime
from app.clock import ManualClock
from app.policy.schema import Budget
from app.router.ledger import BudgetLedger

async def main(path, budget, start, rid):
    clock = ManualClock(datetime.fromisoformat(start))
    led = await BudgetLedger.open(path, Budget(**budget), clock=clock)
    await led._spooled.stop()
    await led.settle(rid, actual_usd=0.7, tokens_in=1, tokens_out=1, latency_ms=1)
    print("settled", flush=True)
    time.sleep(60)

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]))
"""


def _settle_elsewhere(path: Path, clock: ManualClock, rid: str) -> None:
    args = [str(path), json.dumps(BUDGET.model_dump()), clock.now().isoformat(), rid]
    proc = subprocess.Popen(
        [sys.executable, "-c", _SETTLER, *args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "settled"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)


async def test_a_settlement_by_another_process_after_a_snapshot_is_shown(
    tmp_path: Path,
) -> None:
    path, clock = tmp_path / "ledger.db", ManualClock()
    async with await BudgetLedger.open(path, BUDGET, clock=clock) as led:
        await _call(led, "judge", 0.1)
        held = await led.reserve(
            session="s", provider="openai", role="coder", model="coder-model", amount_usd=1.0
        )
        assert (await led.snapshot("s")).by_role == {"judge": 0.1}
        _settle_elsewhere(path, clock, held.id)
        snap = await led.snapshot("s")
    assert snap.by_role == {"coder": 0.7, "judge": 0.1}
    assert (snap.calls, snap.reserved_usd) == (2, 0.0)


# ── the team store: a transaction's calls are cached once it has ended ─────────────────


async def test_a_call_committed_after_later_ones_is_shown(pg_url: str) -> None:
    """A transaction writes a call, then another writes one and commits first (a lower id
    committed after a higher one was read): the snapshot between counts the later call
    without caching it, and the next one shows both, once each."""
    store = StoreUnderTest("postgres", pg_url, "t")
    async with await store.ledger(BUDGET) as led:
        await _call(led, "judge", 0.1)
        await led.snapshot("s")
        late = await asyncpg.connect(pg_url)
        try:
            tx = late.transaction()
            await tx.start()
            await late.execute(
                "SELECT sy_ledger_record('t', 'alice', 'h', 's', '', 'late', 'late-model',"
                " 'openai', 1, 1, 1.0, 0, 'failed')"
            )
            await _call(led, "judge", 0.2)
            between = await led.snapshot("s")
            assert (between.calls, between.by_role) == (2, {"judge": 0.3})
            await tx.commit()
        finally:
            await late.close()
        snap = await led.snapshot("s")
        assert (snap.calls, snap.failed, snap.by_role) == (3, 1, {"judge": 0.3})
        assert _shown(await led.snapshot("s")) == _shown(snap)
    assert await _as_read_afresh(store, "s", ManualClock()) == _shown(snap)


async def test_a_team_read_older_than_the_point_cached_does_not_use_it(pg_url: str) -> None:
    """Two pooled connections' snapshots: the older one must not take the point that the
    newer one cached (which counts a call the older cannot see)."""
    from app.router.ledger import pg_reports

    store = StoreUnderTest("postgres", pg_url, "t")
    xmin = "SELECT pg_snapshot_xmin(pg_current_snapshot())"
    async with await store.ledger(BUDGET) as led:
        await _call(led, "judge", 0.1)
        old, new = await asyncpg.connect(pg_url), await asyncpg.connect(pg_url)
        try:
            async with old.transaction(isolation="repeatable_read", readonly=True):
                old_xmin = int(await old.fetchval(xmin))
                await _call(led, "judge", 0.2)
                cache = GroupCache()
                async with new.transaction(isolation="repeatable_read", readonly=True):
                    new_xmin = int(await new.fetchval(xmin))
                    assert (await pg_reports.call_groups(new, "s", new_xmin, cache)).calls == 2
                assert (await pg_reports.call_groups(old, "s", old_xmin, cache)).calls == 1
        finally:
            await old.close()
            await new.close()


async def test_calls_written_before_schema_v6_are_counted_in_every_snapshot(pg_url: str) -> None:
    """A call row from before the migration has no ``tx``: it was written before any read
    of it, so it counts as ended, in the first snapshot and in every one read on from the
    point cached (a review: taking it out of the sums passed every test)."""
    store = StoreUnderTest("postgres", pg_url, "t")
    async with await store.ledger(BUDGET) as led:
        await _call(led, "judge", 0.1)
        await _call(led, "judge", 0.2)
        admin = await asyncpg.connect(pg_url)
        try:  # the first call as a v5 database holds it
            await admin.execute(
                "UPDATE ledger_calls SET tx = NULL WHERE id = (SELECT min(id) FROM ledger_calls)"
            )
        finally:
            await admin.close()
        first = await led.snapshot("s")
        assert (first.calls, first.by_role) == (2, {"judge": 0.3})
        await _call(led, "judge", 0.4)
        again = await led.snapshot("s")
        assert (again.calls, again.by_role) == (3, {"judge": 0.7})
    assert await _as_read_afresh(store, "s", ManualClock()) == _shown(again)
