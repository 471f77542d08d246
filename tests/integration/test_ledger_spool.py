"""The ledger's spool (issue 20): the request path's writes stand in ``ledger.db-spool``
when they return (another process's ledger counts them at once), the ledger folds them
into the tables in batches or a quarter of a second later, every report folds first; a
killed writer's records are folded by the next open. (The audit log's spool:
tests/integration/test_audit_spool.py.) And the runner's checkpoints, which the folds'
commits make, run on a thread of their own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiosqlite
import pytest

from app import spool as spools
from app.clock import ManualClock
from app.policy.schema import Budget
from app.router.ledger import (
    BudgetLedger,
    CapExceeded,
    LedgerError,
    LedgerSpoolDamaged,
    Reservation,
    ReservationClosed,
    UnknownReservation,
)
from app.sqlite import SQLiteRunner, use_wal
from tests.limits import file_size_limit

BUDGET = Budget(session_usd=5.0, day_usd=20.0, reservation_ttl_s=900)


def _size(path: str) -> int:
    return os.stat(path).st_size


def _records(path: Path) -> list[bytes]:
    """Every record of the ledger's spool (after its header)."""
    with open(f"{path}-spool", "rb") as fh:
        return spools.parse(fh.read().partition(b"\n")[2])[0]


def _append_record(path: Path, record: bytes) -> None:
    with open(f"{path}-spool", "ab") as fh:
        fh.write(spools.frame(record))


def _count(path: Path, sql: str) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute(sql).fetchone()[0])


async def test_a_write_stands_in_the_spool_and_another_ledger_counts_it(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    clock = ManualClock()
    async with (
        await BudgetLedger.open(path, BUDGET, clock=clock) as led,
        await BudgetLedger.open(path, BUDGET, clock=clock) as other,
    ):
        first = await led.reserve(
            session="s", provider="deepseek", role="r", model="m", amount_usd=1.0
        )
        assert await other.left_usd("s", "deepseek") == pytest.approx(4.0)
        await led.settle(first.id, actual_usd=0.5, tokens_in=1, tokens_out=1, latency_ms=1)
        # the other ledger reads the settlement before it checks a cap: $4.5 is left
        assert await other.left_usd("s", "deepseek") == pytest.approx(4.5)
        await other.reserve(session="s", provider="deepseek", role="r", model="m", amount_usd=4.5)
        with pytest.raises(CapExceeded):
            await led.reserve(
                session="s", provider="deepseek", role="r", model="m", amount_usd=0.01
            )
        # a report folds what is not folded yet: the tables hold every record
        snap = await other.snapshot("s")
        assert (snap.per_session.spent_usd, snap.reserved_usd, snap.calls) == (0.5, 4.5, 1)
        assert _count(path, "SELECT COUNT(*) FROM reservations WHERE status = 'live'") == 1
        assert _count(path, "SELECT COUNT(*) FROM calls") == 1


async def test_a_refused_write_keeps_what_was_written_before_it(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with await BudgetLedger.open(path, BUDGET, clock=ManualClock()) as led:
        res = await led.reserve(session="s", provider="deepseek", role="r", model="m", amount_usd=1)
        await led.settle(res.id, actual_usd=1, tokens_in=1, tokens_out=1, latency_ms=1)
        with pytest.raises(UnknownReservation):
            await led.settle("nope", actual_usd=1, tokens_in=1, tokens_out=1, latency_ms=1)
        with pytest.raises(ReservationClosed):
            await led.release(res.id)
        await led.flush()
        assert _count(path, "SELECT COUNT(*) FROM calls") == 1


async def test_a_closed_reservation_of_another_process_is_said_closed(tmp_path: Path) -> None:
    """A reservation closed before this ledger opened is not in its memory: the tables say."""
    path = tmp_path / "ledger.db"
    async with await BudgetLedger.open(path, BUDGET, clock=ManualClock()) as led:
        res = await led.reserve(session="s", provider="deepseek", role="r", model="m", amount_usd=1)
        await led.release(res.id)
    async with await BudgetLedger.open(path, BUDGET, clock=ManualClock()) as led:
        with pytest.raises(ReservationClosed, match="released"):
            await led.settle(res.id, actual_usd=1, tokens_in=1, tokens_out=1, latency_ms=1)


# Reserves (and settles, when asked) and then blocks without ever giving the event loop a
# turn, its folds stopped: whatever it wrote is in the spool alone when it is killed.
_CHILD = """
import asyncio, json, sys, time
from datetime import datetime
from app.clock import ManualClock
from app.policy.schema import Budget
from app.router.ledger import BudgetLedger

async def main(path, budget, start, settle):
    clock = ManualClock(datetime.fromisoformat(start))
    led = await BudgetLedger.open(path, Budget(**budget), clock=clock)
    await led._spooled.stop()
    res = await led.reserve(session="k", provider="deepseek", role="r", model="m", amount_usd=2.0)
    if settle == "settle":
        await led.settle(res.id, actual_usd=0.1, tokens_in=1, tokens_out=1, latency_ms=1)
    print(json.dumps({"id": res.id}), flush=True)
    time.sleep(60)

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]))
"""


def _spawn_and_kill(path: Path, start: str, settle: str = "") -> str:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), json.dumps(BUDGET.model_dump()), start, settle],
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


@pytest.mark.parametrize(
    "record",
    [
        b"not json",
        b'["k"]',
        b"{}",
        b'["r", 1]',
        b"[]",
        b'["c", "id"]',
        b"\xff",
        b'["k","t","d","s",null,"r","m","p",1,1,0.0,"5","ok"]',  # a cost that is text
        b'["k","t","d","s","","r","m","p",9,1,0.0,5,"ok","7"]',  # cached tokens that are text
    ],
)
async def test_a_record_that_checks_but_is_no_ledger_record_refuses_the_ledger(
    tmp_path: Path, record: bytes
) -> None:
    """Its CRC held and its content was no record: a JSONDecodeError, IndexError or
    KeyError traceback from every command, or a bindings error read as "cannot open"
    (an audit). The ledger is refused with one line saying what to do."""
    path = tmp_path / "ledger.db"
    async with await BudgetLedger.open(path, BUDGET) as ledger:
        await ledger.reserve(
            session="s", provider="openai", role="architect", model="m", amount_usd=1.0
        )
    _append_record(path, record)
    with pytest.raises(
        LedgerSpoolDamaged, match="a record of the budget ledger's spool is damaged"
    ):
        async with await BudgetLedger.open(path, BUDGET):
            pass


async def test_a_settlement_written_before_the_kill_stands(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    clock = ManualClock()
    rid = _spawn_and_kill(path, clock.now().isoformat(), "settle")
    assert _count(path, "SELECT COUNT(*) FROM reservations") == 0  # in the spool alone
    async with await BudgetLedger.open(path, BUDGET, clock=clock) as led:
        snap = await led.snapshot("k")
    assert (snap.reserved_usd, snap.per_session.spent_usd, snap.calls) == (0.0, 0.1, 1)
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT status FROM reservations WHERE id = ?", (rid,)).fetchone()
    assert row == ("settled",)


async def test_a_kill_before_the_settlement_charges_the_reservation(tmp_path: Path) -> None:
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
    """The runner's writes (a fold, the memory store's) poke the checkpointer; it copies
    the WAL back on its own thread, and the next write starts the WAL over."""
    path = tmp_path / "runner.db"
    db = await aiosqlite.connect(path, isolation_level=None, check_same_thread=False)
    await use_wal(db, "NORMAL")
    await db.execute("CREATE TABLE t (x TEXT)")
    runner = SQLiteRunner(db, path, checkpoint_every=10)
    await runner.setup()

    def insert(conn: sqlite3.Connection, inline: bool) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?)", ("x" * 2000,))
        conn.execute("COMMIT")

    try:
        for _ in range(50):
            await runner.run(insert)
        for _ in range(1200):  # the checkpointer catches up while nothing is written
            if runner.checkpointer.caught_up():
                break
            await asyncio.sleep(0.05)
        assert runner.checkpointer.caught_up() and runner.checkpointer.asked == 5
        wal = _size(f"{path}-wal")
        for _ in range(5):
            await runner.run(insert)
        # The WAL started over from its beginning: five rows more did not grow it.
        assert _size(f"{path}-wal") <= wal
    finally:
        runner.close()
        await db.close()
    assert runner.checkpointer._thread is None  # closing the runner ended the thread


async def test_a_grown_spool_is_replaced_and_both_ledgers_keep_counting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spools, "ROTATE_BYTES", 2048)
    path = tmp_path / "ledger.db"
    spool = tmp_path / "ledger.db-spool"
    clock = ManualClock()
    budget = Budget(session_usd=100.0, day_usd=100.0, reservation_ttl_s=900)
    async with (
        await BudgetLedger.open(path, budget, clock=clock) as a,
        await BudgetLedger.open(path, budget, clock=clock) as b,
    ):
        header = spool.read_bytes().split(b"\n")[0]
        for i in range(40):
            led = a if i % 2 else b
            res = await led.reserve(
                session="s", provider="deepseek", role="r", model="m", amount_usd=1.0
            )
            await led.settle(res.id, actual_usd=0.5, tokens_in=1, tokens_out=1, latency_ms=1)
            await asyncio.sleep(0.02)  # idle folds: one of them replaces the spool
        for _ in range(1000):  # (a deadline against a hang, not a timing claim)
            if spool.read_bytes().split(b"\n")[0] != header:
                break
            await asyncio.sleep(0.02)
        assert spool.read_bytes().split(b"\n")[0] != header, "the spool was never replaced"
        for led in (a, b):
            res = await led.reserve(
                session="s", provider="deepseek", role="r", model="m", amount_usd=1.0
            )
            await led.settle(res.id, actual_usd=0.5, tokens_in=1, tokens_out=1, latency_ms=1)
        assert await a.left_usd("s", "deepseek") == pytest.approx(100 - 21)
        assert await b.left_usd("s", "deepseek") == pytest.approx(100 - 21)
        snap = await a.snapshot("s")
        assert (snap.per_session.spent_usd, snap.reserved_usd, snap.calls) == (21.0, 0.0, 42)
    async with await BudgetLedger.open(path, budget, clock=clock) as c:
        assert (await c.snapshot("s")).calls == 42


async def test_a_reserve_cancelled_while_it_waits_lets_no_other_through_beside_it(
    tmp_path: Path,
) -> None:
    """A request given up while its thread waits for the spool's lock (another process
    holds it): the thread goes on, and the lock it takes belongs to the ledger's file, not
    to the thread; no other request of the ledger may check the cap beside it."""
    import fcntl

    budget = Budget(session_usd=5.0, day_usd=20.0, reservation_ttl_s=900)
    for trial in range(10):
        path = tmp_path / f"ledger{trial}.db"
        led = await BudgetLedger.open(path, budget, clock=ManualClock())
        await led.left_usd("s", "deepseek")  # the session's totals in memory
        holder = os.open(f"{path}-spool", os.O_RDWR)
        fcntl.flock(holder, fcntl.LOCK_EX)  # another process's writer
        tasks = []
        for i in range(4):  # four requests; three give up while they wait
            task = asyncio.create_task(
                led.reserve(session="s", provider="deepseek", role="r", model="m", amount_usd=3)
            )
            await asyncio.sleep(0.02)  # its thread waits for the lock
            if i < 3:
                task.cancel()
            tasks.append(task)
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.2)  # (a thread left running would finish meanwhile)
        await led.close()
        with sqlite3.connect(path) as db:
            held = db.execute("SELECT COALESCE(SUM(amount_nusd), 0) FROM reservations")
            assert held.fetchone()[0] <= 5 * 10**9, trial


async def test_a_spool_shorter_than_what_was_folded_from_it_goes_on_from_its_end(
    tmp_path: Path,
) -> None:
    """A power cut kept the fold's commit and lost the spool's tail (or a copy was made
    spool first): what comes next is folded, and the caps count what the tables hold."""
    path = tmp_path / "ledger.db"
    async with await BudgetLedger.open(path, BUDGET, clock=ManualClock()) as led:
        for _ in range(3):
            await led.reserve(session="s", provider="deepseek", role="r", model="m", amount_usd=1)
        await led.flush()
    spool = tmp_path / "ledger.db-spool"
    spool.write_bytes(spool.read_bytes().split(b"\n")[0] + b"\n")  # the records are gone
    async with await BudgetLedger.open(path, BUDGET, clock=ManualClock()) as led:
        assert await led.left_usd("s", "deepseek") == pytest.approx(2.0)
        await led.reserve(session="s", provider="deepseek", role="r", model="m", amount_usd=2)
        with pytest.raises(CapExceeded):
            await led.reserve(session="s", provider="deepseek", role="r", model="m", amount_usd=1)
    async with await BudgetLedger.open(path, BUDGET, clock=ManualClock()) as led:
        assert (await led.snapshot("s")).reserved_usd == pytest.approx(5.0)


async def test_a_ledger_that_slept_through_two_rotations_counts_the_middle_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reservation in a spool that came and went while this ledger wrote nothing is
    counted (it is in the tables: a rotation folds a file whole first)."""
    monkeypatch.setattr(spools, "ROTATE_BYTES", 2000)
    path = tmp_path / "ledger.db"
    kw = {"provider": "deepseek", "role": "r", "model": "m"}
    async with (
        await BudgetLedger.open(path, BUDGET, clock=ManualClock()) as busy,
        await BudgetLedger.open(path, BUDGET, clock=ManualClock()) as idle,
    ):
        assert await idle.left_usd("s", "deepseek") == pytest.approx(5.0)
        for _ in range(15):
            await busy.reserve(session="other", **kw, amount_usd=0.01)
        await busy.flush()  # the first rotation
        await busy.reserve(session="s", **kw, amount_usd=4.8)  # in the middle file
        for _ in range(15):
            await busy.reserve(session="other", **kw, amount_usd=0.01)
        await busy.flush()  # the second
        with pytest.raises(CapExceeded):
            await idle.reserve(session="s", **kw, amount_usd=4.0)
        assert await idle.left_usd("s", "deepseek") == pytest.approx(0.2)


async def test_a_full_disk_keeps_the_expiry_a_reservation_wrote_before_it(
    tmp_path: Path,
) -> None:
    """A reservation that finds an expired one writes the expiry, then itself, in one
    write; the disk full half-way through its own record: the expiry stands (another
    process may have folded it already) and is counted once, the reservation is refused."""
    path = tmp_path / "ledger.db"
    clock = ManualClock()
    session = "s" * 3_000  # records of a few KB: the limit falls inside the second
    told: list[str] = []

    async def hook(expired: list[Reservation]) -> None:
        told.extend(r.id for r in expired)

    async with await BudgetLedger.open(path, BUDGET, clock=clock) as led:
        led.on_expired = hook
        old = await led.reserve(
            session=session, provider="deepseek", role="r", model="m", amount_usd=1.0
        )
        clock.advance(BUDGET.reservation_ttl_s + 1)
        size = _size(f"{path}-spool")
        with file_size_limit(size + 4_000), pytest.raises(LedgerError, match="short write"):
            await led.reserve(
                session=session, provider="deepseek", role="r", model="m", amount_usd=2.0
            )
        # the expiry is told (its audit line), once, and is in the tables
        assert told == [old.id]
        await led.flush()
        assert _count(path, "SELECT COUNT(*) FROM reservations WHERE status = 'expired'") == 1
        await led.reserve(session=session, provider="deepseek", role="r", model="m", amount_usd=2.0)
        snap = await led.snapshot(session)
        assert (snap.per_session.spent_usd, snap.reserved_usd) == (1.0, 2.0)
        assert told == [old.id]
    # one expiry record: the ledger's memory had it closed, none was written again
    assert sum(r.startswith(b'["x"') for r in _records(path)) == 1
    with sqlite3.connect(path) as db:
        statuses = dict(db.execute("SELECT id, status FROM reservations").fetchall())
    assert statuses.pop(old.id) == "expired"
    assert list(statuses.values()) == ["live"]
