"""P8: the team ledger: reservation latency and throughput on PostgreSQL vs SQLite, in
one process and in 8, and the overspend when 8 processes race for one cap.

Each reservation is the ledger's real ``reserve`` (the cap check and the hold as one
step): on SQLite one record appended to the file's spool under its lock, checked against
the totals every writer's records keep in memory (folded into the WAL file in batches), on
PostgreSQL one call of the reservation function (a conditional UPDATE of the cap rows),
with fsync on, as a team's server runs (and again with fsync off, to show what the
disk's flush costs: every reservation of a team updates the team's day row, so they
commit one after another, each after its flush). 1 process: sequential; 8 processes:
each with 4 reservations in flight. Overspend: 8 processes × 100 concurrent reservations of $0.01
against a $5.00 team cap, on a store of its own (the goal is $0.00; 500 grants is the cap
exactly).

The anchor is LiteLLM's documented behaviour (not measured here): spend is synced between
proxy replicas about every 60 s, so within that window each of 8 replicas may admit up to
the whole cap: up to 7 × the cap over it.

Run: python -m bench.team_ledger [--n 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench._common import percentile, print_machine, print_ratio, write_result

ROOT = Path(__file__).resolve().parent.parent
PROCS, RACE_EACH, CAP_USD, AMOUNT = 8, 100, 5.0, 0.01


def _budget(day_usd: float) -> Any:
    from app.policy.schema import Budget

    return Budget(session_usd=1e6, day_usd=day_usd, reservation_ttl_s=900)


async def _open(location: str, day_usd: float, user: str) -> Any:
    if location.startswith("postgresql://"):
        from app.router.ledger.pg_ledger import PgBudgetLedger

        return await PgBudgetLedger.open(location, _budget(day_usd), team="bench", user=user)
    from app.router.ledger import BudgetLedger

    return await BudgetLedger.open(location, _budget(day_usd))


async def _timed_reservations(location: str, n: int, inflight: int, user: str) -> list[float]:
    """``n`` reservations, ``inflight`` at a time: each one's latency in seconds."""
    led = await _open(location, 1e6, user)
    out: list[float] = []
    try:
        for _ in range(20):  # warm up (connections, statement caches)
            await led.reserve(session=user, provider="openai", role="r", model="m", amount_usd=0.0)
        left = n

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                t0 = time.perf_counter()
                await led.reserve(
                    session=user, provider="openai", role="r", model="m", amount_usd=0.001
                )
                out.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(inflight)))
    finally:
        await led.close()
    return out


async def _race(location: str, user: str) -> int:
    """``RACE_EACH`` concurrent $0.01 reservations against the $5 cap: how many won."""
    from app.router.ledger import CapExceeded

    led = await _open(location, CAP_USD, user)

    async def one() -> int:
        try:
            await led.reserve(
                session=f"race-{user}", provider="openai", role="r", model="m", amount_usd=AMOUNT
            )
        except CapExceeded:
            return 0
        return 1

    try:
        return sum(await asyncio.gather(*(one() for _ in range(RACE_EACH))))
    finally:
        await led.close()


def _child(args: argparse.Namespace) -> None:
    if args.child == "race":
        print(json.dumps({"granted": asyncio.run(_race(args.location, args.user))}))
    else:
        lat = asyncio.run(_timed_reservations(args.location, args.n, 4, args.user))
        print(json.dumps({"latencies": lat}))


def _spawn(kind: str, location: str, user: str, n: int) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "bench.team_ledger", "--child", kind, "--location", location]
    return subprocess.Popen(
        [*cmd, "--user", user, "--n", str(n)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )


def _measure(location: str, n: int, race_location: str) -> dict[str, Any]:
    """Latency and throughput on ``location``; the race on ``race_location``, a store of
    its own: on the first, the timed reservations are still held (about $4 of the day),
    and a race against what they leave could overspend by that much unseen."""
    t0 = time.perf_counter()
    one = asyncio.run(_timed_reservations(location, n, 1, "solo"))
    one_wall = time.perf_counter() - t0
    per = max(n // PROCS, 50)
    t0 = time.perf_counter()
    procs = [_spawn("timed", location, f"p{i}", per) for i in range(PROCS)]
    many: list[float] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        many += json.loads(out.strip().splitlines()[-1])["latencies"]
    many_wall = time.perf_counter() - t0
    procs = [_spawn("race", race_location, f"r{i}", 0) for i in range(PROCS)]
    granted = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        granted += json.loads(out.strip().splitlines()[-1])["granted"]
    return {
        "one": {
            "p50_us": percentile(one, 50) * 1e6,
            "p99_us": percentile(one, 99) * 1e6,
            "per_s": len(one) / one_wall,
        },
        "eight": {
            "p50_us": percentile(many, 50) * 1e6,
            "p99_us": percentile(many, 99) * 1e6,
            # the processes' start-up is in the wall time: a floor, not a ceiling
            "per_s": len(many) / many_wall,
        },
        # every grant is $0.01 against a fresh $5.00 cap: 500 is the cap exactly
        "race_granted": granted,
        "overspend_usd": round(max(0.0, granted * AMOUNT - CAP_USD), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--child", choices=("timed", "race"))
    parser.add_argument("--location")
    parser.add_argument("--user", default="u")
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    print_machine()
    sys.path.insert(0, str(ROOT))
    from tests.pg_cluster import ClusterUnavailable, start_cluster

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = _measure(
            str(Path(tmp) / "ledger.db"), args.n, str(Path(tmp) / "race.db")
        )
    # fsync on, as a team's server runs; fsync off shows what the disk's flush costs
    for key, fsync in (("postgres", True), ("postgres, fsync off", False)):
        try:
            cluster = start_cluster(fsync=fsync)
        except ClusterUnavailable as exc:
            print(f"PostgreSQL side not run: {exc}")
            write_result("team_ledger", results)
            return
        try:
            results[key] = _measure(_database(cluster), args.n, _database(cluster))
        finally:
            cluster.stop()
    _report(results)
    write_result("team_ledger", {"n": args.n, "procs": PROCS, **results}, packages=("asyncpg",))


def _database(cluster: Any) -> str:
    import asyncpg

    name = f"bench_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        conn = await asyncpg.connect(cluster.admin_url)
        await conn.execute(f"CREATE DATABASE {name}")
        await conn.close()

    asyncio.run(create())
    return str(cluster.url_for(name))


def _report(r: dict[str, Any]) -> None:
    print("| store | procs | p50 µs | p99 µs | reservations/s | 8-proc overspend on $5 |")
    print("|---|---|---|---|---|---|")
    for store in ("sqlite", "postgres", "postgres, fsync off"):
        for key, procs in (("one", 1), ("eight", PROCS)):
            m = r[store][key]
            granted = r[store]["race_granted"]
            over = f"${r[store]['overspend_usd']:.2f} ({granted} granted)" if procs == PROCS else ""
            print(
                f"| {store} | {procs} | {m['p50_us']:.0f} | {m['p99_us']:.0f} |"
                f" {m['per_s']:.0f} | {over} |"
            )
    print(
        f"| LiteLLM (documented: spend synced every 60 s) | {PROCS} replicas | — | — | — |"
        f" up to ${(PROCS - 1) * CAP_USD:.2f} |"
    )
    print_ratio(
        "team ledger reserve p50, 1 process",
        r["postgres"]["one"]["p50_us"],
        r["sqlite"]["one"]["p50_us"],
        "the SQLite ledger",
    )
    print_ratio(
        "team ledger reservations/s, 8 processes",
        r["postgres"]["eight"]["per_s"],
        r["sqlite"]["eight"]["per_s"],
        "the SQLite ledger",
        higher_is_better=True,
    )


if __name__ == "__main__":
    main()
