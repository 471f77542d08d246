"""The ledger file's schema: a v2 file (the last one with IN lists in its constraints) is
migrated to v3 with every row, total and constraint kept, and the statements on the request
path build no ephemeral table (SQLite's IN list and RETURNING each did: ~30k and ~15k
instructions per use, ~10 uses per routed request; issue 20, P1)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app.clock import ManualClock
from app.policy.schema import Budget
from app.router.ledger import SCHEMA_VERSION, BudgetLedger
from app.router.ledger.caps import _SUMS
from app.router.ledger.schema import MIGRATIONS
from app.router.ledger.spooled import _AMOUNT, _CLOSE

BUDGET = Budget(session_usd=5.0, day_usd=8.0, reservation_ttl_s=60, provider_day_usd={})


def _v2_file(path: Path) -> None:
    """A ledger file as a v2 Switchyard left it: its schema, and rows its triggers summed."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN")
    for stmt in (*MIGRATIONS[0], *MIGRATIONS[1]):
        db.execute(stmt)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (2)")
    rows = [
        ("r1", "s1", "openai", 250_000_000, "live"),  # $0.25 in flight
        ("r2", "s1", "openai", 500_000_000, "settled"),
        ("r3", "s2", "deepseek", 100_000_000, "live"),
    ]
    for rid, session, provider, amount, _ in rows:
        db.execute(
            "INSERT INTO reservations (id, session, provider, role, model, amount_nusd, day,"
            " created, expires, expires_at, status) VALUES (?, ?, ?, 'judge', 'm', ?,"
            " '2026-01-01', 'c', 'e', 1e12, 'live')",
            (rid, session, provider, amount),
        )
    db.execute("UPDATE reservations SET status = 'settled', closed = 'x' WHERE id = 'r2'")
    db.execute(
        "INSERT INTO calls (ts, day, session, role, model, provider, tokens_in, tokens_out,"
        " latency_ms, cost_nusd, outcome, reservation_id) VALUES ('t', '2026-01-01', 's1',"
        " 'judge', 'm', 'openai', 10, 5, 3.0, 400000000, 'ok', 'r2')"
    )
    db.execute("COMMIT")
    db.close()


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return [tuple(r) for r in db.execute(sql).fetchall()]


async def test_a_v2_file_is_migrated_with_every_row_and_total(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    _v2_file(path)
    reservations = _rows(path, "SELECT * FROM reservations ORDER BY id")
    calls = _rows(path, "SELECT * FROM calls")
    totals = _rows(path, "SELECT * FROM totals ORDER BY scope, key, provider")
    assert len(reservations) == 3 and len(totals) == 5

    clock = ManualClock()
    async with await BudgetLedger.open(path, BUDGET, clock=clock) as led:
        assert (await led.snapshot("s1")).reserved_usd == 0.25
        assert (await led.snapshot("s2")).reserved_usd == 0.1
    assert _rows(path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert _rows(path, "SELECT * FROM reservations ORDER BY id") == reservations
    # (v5's column last: of tokens_in, the cached ones, 0 on every row from before it)
    assert _rows(path, "SELECT * FROM calls") == [(*row, 0) for row in calls]
    assert _rows(path, "SELECT * FROM totals ORDER BY scope, key, provider") == totals
    names = {n for (n,) in _rows(path, "SELECT name FROM sqlite_master")}
    assert {"reservations_live", "calls_totals_ins", "reservations_totals_upd_new"} <= names
    assert "reservations_v3" not in names


async def test_the_migrated_file_keeps_its_constraints_and_triggers(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    _v2_file(path)
    async with await BudgetLedger.open(path, BUDGET, clock=ManualClock()) as led:
        res = await led.reserve(
            session="s1", provider="openai", role="judge", model="m", amount_usd=0.5
        )
        await led.settle(res.id, actual_usd=0.3, tokens_in=1, tokens_out=1, latency_ms=1.0)
        assert (await led.snapshot("s1")).per_session.spent_usd == pytest.approx(0.7)
    db = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        db.execute("UPDATE reservations SET status = 'lost' WHERE id = 'r1'")
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        db.execute("INSERT INTO totals (scope, key) VALUES ('week', 'x')")
    for status in ("live", "settled", "released", "expired"):  # every one still allowed
        db.execute("UPDATE reservations SET status = ? WHERE id = 'r1'", (status,))
    db.close()


def _ephemeral(db: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> bool:
    ops = [row[1] for row in db.execute(f"EXPLAIN {sql}", params)]
    return "OpenEphemeral" in ops or "OpenDup" in ops


async def test_the_request_path_statements_build_no_ephemeral_table(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with await BudgetLedger.open(path, BUDGET, clock=ManualClock()):
        pass
    db = sqlite3.connect(path, isolation_level=None)
    assert not _ephemeral(db, _SUMS, ("s1", "2026-01-01"))
    assert not _ephemeral(db, _CLOSE, ("settled", "x", "r1"))
    assert not _ephemeral(db, _AMOUNT, ("r1",))
    # the constraints checked at every write: no IN list left in the schema
    for name, sql in db.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"):
        assert " IN (" not in sql.upper(), name
    db.close()
