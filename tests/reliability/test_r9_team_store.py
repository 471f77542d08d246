"""R9 (issue 18): team caps that hold across machines, and a team audit.

Machines are processes here, each with its own connection pool (or its own SQLite
connection): the same tests run on a SQLite file and on the team's PostgreSQL.

* 8 processes × 100 concurrent reservations of $0.01 against a $5.00 team day cap:
  exactly 500 granted, the spend never above the cap, no row lost;
* the same with 3 processes SIGKILLed in the middle (some while reserving, some while
  settling): what they held expires (by the store's clock) and is charged in full, every
  id any process was told it holds is on file, nothing is live, and the cap held;
* two processes appending to the team audit at once: both chains verify, and
  ``switchyard audit verify`` says so.
"""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.policy.schema import Budget
from tests.pg import StoreUnderTest, ledger_at
from tests.reliability.kit import run_cli

ROOT = Path(__file__).resolve().parents[2]
PROCS, EACH, AMOUNT = 8, 100, 0.01
CAP_USD = 5.0
NANO = 1_000_000_000

# Opens its ledger and says so, waits for "go" (every process starts reserving at once,
# none ahead for having started up sooner), reserves EACH × $0.01 at once (100
# coroutines), printing each granted id, then settles them one by one, printing each
# settled id. argv: location, user, ttl_s, pause_s.
_CHILD = """
import asyncio, json, sys
from app.policy.schema import Budget
from app.router.ledger import CapExceeded
from tests.pg import ledger_at

EACH = int(sys.argv[5])

async def main(location, user, ttl, pause):
    budget = Budget(session_usd=100.0, day_usd=5.0, reservation_ttl_s=ttl)
    led = await ledger_at(location, budget, team="team", user=user)
    print(json.dumps({"ready": user}), flush=True)
    told = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if told.strip() != "go":  # the test gave up before the start: reserve nothing
        await led.close()
        return
    async def one():
        try:
            r = await led.reserve(session="s-" + user, provider="openai", role="implementer",
                                  model="gpt-5.1-high", amount_usd=0.01)
        except CapExceeded:
            return None
        print(json.dumps({"granted": r.id}), flush=True)
        return r
    held = [r for r in await asyncio.gather(*(one() for _ in range(EACH))) if r is not None]
    print(json.dumps({"reserved": len(held)}), flush=True)
    await asyncio.sleep(pause)
    for r in held:
        await led.settle(r.id, actual_usd=0.01, tokens_in=10, tokens_out=10, latency_ms=1.0)
        print(json.dumps({"settled": r.id}), flush=True)
    await led.close()

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])))
"""


def _spawn(store: StoreUnderTest, user: str, ttl: float, pause: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, store.location, user, str(ttl), str(pause), str(EACH)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _go(procs: list[subprocess.Popen[str]], within_s: float = 120.0) -> None:
    """Once every process has its ledger open, let them all reserve at once. (Started as
    they came up, the five that were not killed could take the whole cap before a victim
    had reserved anything: a flake under load.) A process that is not ready in time
    fails the test; the caller kills them all."""
    deadline = time.monotonic() + within_s
    for proc in procs:
        assert proc.stdin is not None and proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            ready = sel.select(max(deadline - time.monotonic(), 0))
        assert ready, f"a process did not open its ledger within {within_s:g}s"
        line = proc.stdout.readline()
        assert line.startswith('{"ready"'), line + (proc.stderr.read() if proc.stderr else "")
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()


def _events(out: str) -> list[dict[str, object]]:
    return [json.loads(x) for x in out.splitlines() if x.strip().startswith("{")]


async def _on_file(store: StoreUnderTest) -> dict[str, tuple[str, int]]:
    """Every reservation of the team: id → (status, amount in nano-dollars)."""
    if store.shared:
        import asyncpg

        conn = await asyncpg.connect(store.location)
        try:
            rows = await conn.fetch(
                "SELECT id, status, amount_nusd FROM ledger_reservations WHERE team = 'team'"
            )
        finally:
            await conn.close()
        return {r["id"]: (r["status"], int(r["amount_nusd"])) for r in rows}
    import sqlite3

    with sqlite3.connect(store.location) as db:
        found = db.execute("SELECT id, status, amount_nusd FROM reservations").fetchall()
    return {i: (s, int(a)) for i, s, a in found}


async def _spend(store: StoreUnderTest) -> tuple[float, float]:
    budget = Budget(session_usd=100.0, day_usd=CAP_USD, reservation_ttl_s=1.0)
    async with await ledger_at(store.location, budget, team="team", user="auditor") as led:
        await led.expire_stale()
        snap = await led.snapshot("nobody")
    return snap.per_day.spent_usd, snap.per_day.reserved_usd


def test_8_processes_x_100_reservations_against_a_5_dollar_team_cap(
    any_store: StoreUnderTest,
) -> None:
    asyncio.run(_prepare(any_store))
    procs = [_spawn(any_store, f"user{i}", 900, 0.0) for i in range(PROCS)]
    granted: list[str] = []
    settled: list[str] = []
    try:
        _go(procs)
        for proc in procs:
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err[-2000:]
            events = _events(out)
            granted += [str(e["granted"]) for e in events if "granted" in e]
            settled += [str(e["settled"]) for e in events if "settled" in e]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)
    assert len(granted) == len(set(granted)) == 500
    assert sorted(settled) == sorted(granted)
    rows = asyncio.run(_on_file(any_store))
    assert set(rows) == set(granted)  # no row lost, none extra
    assert {s for s, _ in rows.values()} == {"settled"}
    assert sum(a for _, a in rows.values()) == CAP_USD * NANO
    spent, reserved = asyncio.run(_spend(any_store))
    assert (spent, reserved) == (CAP_USD, 0.0)


def test_processes_killed_mid_run_their_reservations_expire_and_are_charged_in_full(
    any_store: StoreUnderTest,
) -> None:
    asyncio.run(_prepare(any_store))
    ttl = 1.5
    # the victims pause before settling, so a kill lands while they hold reservations
    procs = [_spawn(any_store, f"user{i}", ttl, 3.0 if i < 3 else 0.0) for i in range(PROCS)]
    told: dict[int, list[dict[str, object]]] = {i: [] for i in range(PROCS)}
    victims = procs[:3]
    try:
        _go(procs)
        for i, proc in enumerate(victims):
            assert proc.stdout is not None
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                assert line, proc.stderr.read() if proc.stderr else "a victim died early"
                told[i].append(json.loads(line))
                if "reserved" in told[i][-1]:
                    break
        for proc in victims:
            os.kill(proc.pid, signal.SIGKILL)
        for i, proc in enumerate(procs[3:], start=3):
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err[-2000:]
            told[i] = _events(out)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)
    assert all(p.returncode == -signal.SIGKILL for p in victims)
    granted = [str(e["granted"]) for events in told.values() for e in events if "granted" in e]
    held_by_victims = {str(e["granted"]) for i in range(3) for e in told[i] if "granted" in e}
    assert held_by_victims, "the victims should have held reservations when killed"
    assert len(granted) == len(set(granted)) == 500

    time.sleep(ttl + 0.5)  # past the TTL by the store's clock
    spent, reserved = asyncio.run(_spend(any_store))
    rows = asyncio.run(_on_file(any_store))
    assert set(rows) == set(granted)  # every id a process was told it holds is on file
    assert {rows[i][0] for i in held_by_victims} == {"expired"}
    assert {s for s, _ in rows.values()} <= {"settled", "expired"}  # nothing left live
    # charged in full: the cap is exactly spent, never crossed, nothing freed early
    assert (spent, reserved) == (CAP_USD, 0.0)


async def _prepare(store: StoreUnderTest) -> None:
    """Create the schema once, so eight first opens do not all migrate at the same time
    (they may: the migration lock serialises them; this keeps the test about caps)."""
    budget = Budget(session_usd=100.0, day_usd=CAP_USD, reservation_ttl_s=1.0)
    async with await ledger_at(store.location, budget, team="team"):
        pass


_WRITER = """
import asyncio, sys
from app.audit.pg_log import PgAuditLog

async def main(url, user):
    async with await PgAuditLog.open(url, team="default", user=user, host="box-" + user) as log:
        async def one(i):
            await log.append("route", session="s-" + user, detail=f"{user} {i}")
        await asyncio.gather(*(one(i) for i in range(200)))
        print(log.chain, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_two_processes_append_to_the_team_audit_at_once_every_chain_verifies(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, pg_url, user],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for user in ("alice", "bob")
    ]
    chains = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        chains.append(out.strip())
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", pg_url)
    rc, out, err = run_cli(["audit", "verify", "--json"], capsys)
    assert rc == 0, err
    data = json.loads(out)
    assert data["ok"] and sorted(c["chain"] for c in data["chains"]) == sorted(chains)
    assert [c["lines_checked"] for c in data["chains"]] == [200, 200]
