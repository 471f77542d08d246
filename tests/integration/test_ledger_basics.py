"""The budget ledger against a real SQLite file: reserve, settle, release, caps, expiry."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.bus import BudgetUpdated, Bus
from app.clock import ManualClock
from app.errors import BudgetExceeded, SwitchyardError
from app.policy.schema import Budget
from app.router.ledger import (
    SCHEMA_VERSION,
    BudgetLedger,
    CapExceeded,
    LedgerError,
    ReservationClosed,
    UnknownReservation,
)

BUDGET = Budget(
    session_usd=5.0,
    day_usd=8.0,
    reservation_ttl_s=60,
    provider_day_usd={"deepseek": 3.0, "openai": 6.0},
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def ledger(tmp_path: Path, clock: ManualClock) -> AsyncIterator[BudgetLedger]:
    async with await BudgetLedger.open(tmp_path / "ledger.db", BUDGET, clock=clock) as led:
        yield led


async def _reserve(
    led: BudgetLedger,
    amount: float,
    *,
    session: str = "s1",
    provider: str = "openai",
    model: str = "gpt",
) -> str:
    res = await led.reserve(
        session=session, provider=provider, role="judge", model=model, amount_usd=amount
    )
    return res.id


async def test_reserve_returns_a_reservation_with_ttl(ledger: BudgetLedger) -> None:
    res = await ledger.reserve(
        session="s1", provider="openai", role="judge", model="gpt", amount_usd=0.25, run="r1"
    )
    assert res.amount_usd == 0.25
    assert (res.session, res.provider, res.role, res.model, res.run) == (
        "s1",
        "openai",
        "judge",
        "gpt",
        "r1",
    )
    assert res.created == "2026-01-01T12:00:00.000Z"
    assert res.expires == "2026-01-01T12:01:00.000Z"
    snap = await ledger.snapshot("s1")
    assert snap.reserved_usd == 0.25
    assert snap.per_session.spent_usd == 0.0
    assert snap.per_provider["openai"].reserved_usd == 0.25


async def test_settle_records_actual_cost_and_frees_the_reservation(
    ledger: BudgetLedger,
) -> None:
    rid = await _reserve(ledger, 1.0)
    await ledger.settle(rid, actual_usd=0.4, tokens_in=1000, tokens_out=500, latency_ms=900)
    snap = await ledger.snapshot("s1")
    assert snap.per_session.spent_usd == 0.4
    assert snap.per_session.reserved_usd == 0.0
    assert snap.per_session.left_usd == 4.6
    assert snap.per_day.left_usd == 7.6
    assert snap.per_provider["openai"].left_usd == 5.6
    assert snap.by_role == {"judge": 0.4}
    assert snap.by_model == {"gpt": 0.4}
    assert snap.by_provider == {"openai": 0.4}
    assert snap.calls == 1


async def test_settle_above_the_reservation_is_recorded_truthfully(
    ledger: BudgetLedger,
) -> None:
    rid = await _reserve(ledger, 0.5)
    await ledger.settle(rid, actual_usd=4.9, tokens_in=1, tokens_out=1, latency_ms=1)
    snap = await ledger.snapshot("s1")
    assert snap.per_session.spent_usd == 4.9
    with pytest.raises(CapExceeded) as info:
        await _reserve(ledger, 0.2)
    assert info.value.cap == "session"


async def test_release_frees_the_amount_and_may_bill_tokens(ledger: BudgetLedger) -> None:
    first = await _reserve(ledger, 2.0)
    await ledger.release(first)
    second = await _reserve(ledger, 2.0)
    await ledger.release(second, "timeout", actual_usd=0.05, tokens_in=300)
    snap = await ledger.snapshot("s1")
    assert snap.per_session.spent_usd == 0.05
    assert snap.reserved_usd == 0.0
    report = await ledger.report("s1")
    # both released: neither came through (one billed its tokens)
    assert report["total"] == {
        "cost_usd": 0.05,
        "calls": 2,
        "failed": 2,
        "tokens_in": 300,
        "tokens_cached": 0,
        "tokens_out": 0,
    }


async def test_closing_twice_or_unknown_raises_a_ledger_error(ledger: BudgetLedger) -> None:
    rid = await _reserve(ledger, 0.1)
    await ledger.settle(rid, actual_usd=0.1, tokens_in=1, tokens_out=1, latency_ms=1)
    with pytest.raises(ReservationClosed, match="already settled"):
        await ledger.settle(rid, actual_usd=0.1, tokens_in=1, tokens_out=1, latency_ms=1)
    with pytest.raises(ReservationClosed):
        await ledger.release(rid)
    with pytest.raises(UnknownReservation):
        await ledger.release("nope")
    assert issubclass(LedgerError, SwitchyardError)
    # A refused close changes nothing.
    assert (await ledger.snapshot("s1")).per_session.spent_usd == 0.1


@pytest.mark.parametrize(
    ("session", "provider", "amount", "cap", "limit"),
    [
        ("s1", "openai", 5.01, "session", 5.0),
        ("s1", "deepseek", 3.5, "provider:deepseek", 3.0),
    ],
)
async def test_each_cap_is_named_when_it_would_be_crossed(
    ledger: BudgetLedger, session: str, provider: str, amount: float, cap: str, limit: float
) -> None:
    with pytest.raises(CapExceeded) as info:
        await _reserve(ledger, amount, session=session, provider=provider)
    err = info.value
    assert isinstance(err, BudgetExceeded)
    assert (err.cap, err.limit_usd, err.requested_usd) == (cap, limit, amount)
    assert f"{cap} cap of ${limit:.2f}" in str(err)


async def test_day_cap_counts_every_session(ledger: BudgetLedger) -> None:
    for session in ("a", "b"):
        rid = await _reserve(ledger, 3.0, session=session, provider="moonshot")
        await ledger.settle(rid, actual_usd=3.0, tokens_in=0, tokens_out=0, latency_ms=0)
    await _reserve(ledger, 1.5, session="c", provider="moonshot")  # live: counts as reserved
    with pytest.raises(CapExceeded) as info:
        await _reserve(ledger, 0.6, session="d")
    err = info.value
    assert (err.cap, err.spent_usd, err.reserved_usd) == ("day", 6.0, 1.5)
    assert await ledger.left_usd("d", "openai") == 0.5


async def test_exactly_reaching_a_cap_is_allowed(ledger: BudgetLedger) -> None:
    for _ in range(10):
        await _reserve(ledger, 0.3, provider="deepseek", session="x")
    assert (await ledger.snapshot("x")).per_provider["deepseek"].left_usd == 0.0
    with pytest.raises(CapExceeded):
        await _reserve(ledger, 0.000001, provider="deepseek", session="y")


async def test_provider_without_a_cap_has_only_the_global_caps(ledger: BudgetLedger) -> None:
    await _reserve(ledger, 5.0, provider="moonshot")
    snap = await ledger.snapshot("s1")
    assert snap.per_provider["moonshot"].cap_usd is None
    assert snap.per_provider["moonshot"].left_usd is None
    assert snap.per_provider["moonshot"].reserved_usd == 5.0
    assert await ledger.left_usd("s1", "moonshot") == 0.0
    assert await ledger.left_usd("other", "moonshot") == 3.0  # the day cap binds


async def test_local_calls_are_never_blocked_and_still_recorded(ledger: BudgetLedger) -> None:
    rid = await _reserve(ledger, 5.0)
    await ledger.settle(rid, actual_usd=5.0, tokens_in=1, tokens_out=1, latency_ms=1)
    with pytest.raises(CapExceeded):
        await _reserve(ledger, 0.01)
    for _ in range(3):
        res = await ledger.reserve(
            session="s1", provider="local", role="implementer", model="qwen", amount_usd=0
        )
        await ledger.settle(res.id, actual_usd=0, tokens_in=10, tokens_out=5, latency_ms=80)
    # Zero on a cloud provider is not blocked either (e.g. a cached reply).
    await _reserve(ledger, 0.0)
    snap = await ledger.snapshot("s1")
    assert snap.calls == 4
    assert snap.by_provider == {"openai": 5.0}  # the money view leaves free calls out
    report = await ledger.report("s1")
    assert [(r["provider"], r["calls"]) for r in report["by_provider"]] == [
        ("openai", 1),
        ("local", 3),
    ]
    assert snap.per_session.spent_usd == 5.0


async def test_local_reservations_must_be_free(ledger: BudgetLedger) -> None:
    with pytest.raises(LedgerError, match="local"):
        await _reserve(ledger, 0.1, provider="local")


@pytest.mark.parametrize("amount", [-0.01, float("nan"), float("inf")])
async def test_bad_amounts_are_refused(ledger: BudgetLedger, amount: float) -> None:
    with pytest.raises(LedgerError, match="amount_usd"):
        await _reserve(ledger, amount)


async def test_a_settlement_beyond_a_records_reach_is_refused_and_the_ledger_goes_on(
    ledger: BudgetLedger,
) -> None:
    """1e24 tokens settled at $1e18 entered the spool and overflowed SQLite's integer at
    every later fold: `budget` and every request failed until the spool was edited."""
    rid = await _reserve(ledger, 0.5)
    with pytest.raises(LedgerError, match=r"actual_usd .* beyond what one ledger record holds"):
        await ledger.settle(rid, actual_usd=1e18, tokens_in=1, tokens_out=1, latency_ms=1)
    with pytest.raises(LedgerError, match=r"got beyond 2\*\*62 in, 1 out"):
        await ledger.settle(rid, actual_usd=0.1, tokens_in=10**24, tokens_out=1, latency_ms=1)
    await ledger.settle(rid, actual_usd=0.1, tokens_in=1, tokens_out=1, latency_ms=1)
    report = await ledger.report()  # folds what the spool holds
    assert report["in_flight"] == {"reservations": 0, "reserved_usd": 0.0}
    assert (await ledger.snapshot("s1")).per_session.spent_usd == pytest.approx(0.1)


async def test_a_refused_reservation_leaves_nothing_behind(ledger: BudgetLedger) -> None:
    with pytest.raises(CapExceeded):
        await _reserve(ledger, 9.0)
    report = await ledger.report()
    assert report["in_flight"] == {"reservations": 0, "reserved_usd": 0.0}


async def test_expired_reservations_are_charged_in_full(
    ledger: BudgetLedger, clock: ManualClock
) -> None:
    rid = await _reserve(ledger, 2.0)
    clock.advance(59)
    assert (await ledger.snapshot("s1")).reserved_usd == 2.0
    clock.advance(1)
    snap = await ledger.snapshot("s1")
    assert (snap.reserved_usd, snap.per_session.spent_usd) == (0.0, 2.0)
    with pytest.raises(ReservationClosed, match="expired"):
        await ledger.settle(rid, actual_usd=0.1, tokens_in=1, tokens_out=1, latency_ms=1)
    report = await ledger.report("s1")
    assert report["total"]["calls"] == 1
    assert report["by_role"][0]["cost_usd"] == 2.0


async def test_a_late_settle_before_lazy_expiry_is_still_accepted(
    ledger: BudgetLedger, clock: ManualClock
) -> None:
    rid = await _reserve(ledger, 2.0)
    clock.advance(600)  # nothing has looked at the ledger since
    await ledger.settle(rid, actual_usd=0.3, tokens_in=1, tokens_out=1, latency_ms=1)
    assert (await ledger.snapshot("s1")).per_session.spent_usd == 0.3


async def test_reserve_expires_stale_reservations_first(
    ledger: BudgetLedger, clock: ManualClock
) -> None:
    await _reserve(ledger, 4.0)
    clock.advance(61)
    with pytest.raises(CapExceeded) as info:
        await _reserve(ledger, 1.5)
    # Counted as spent, not as a free slot; and the expiry is kept despite the refusal.
    assert (info.value.spent_usd, info.value.reserved_usd) == (4.0, 0.0)
    await ledger.flush()  # the expiry's record, folded into the tables
    with sqlite3.connect(ledger.path) as db:
        assert db.execute("SELECT status FROM reservations").fetchall() == [("expired",)]


async def test_a_cost_belongs_to_the_day_of_its_reservation(
    ledger: BudgetLedger, clock: ManualClock
) -> None:
    clock.advance(12 * 3600 - 30)  # 23:59:30
    rid = await _reserve(ledger, 1.0, session="night")
    clock.advance(40)  # the call ends after midnight
    await ledger.settle(rid, actual_usd=1.0, tokens_in=1, tokens_out=1, latency_ms=1)
    snap = await ledger.snapshot("night")
    assert snap.day == "2026-01-02"
    assert snap.per_day.spent_usd == 0.0
    assert snap.per_session.spent_usd == 1.0
    report = await ledger.report(days=2)
    assert [(d["day"], d["cost_usd"]) for d in report["by_day"]] == [("2026-01-01", 1.0)]


async def test_the_day_cap_resets_at_utc_midnight(ledger: BudgetLedger, clock: ManualClock) -> None:
    for session in ("a", "b"):
        rid = await _reserve(ledger, 4.0, session=session, provider="moonshot")
        await ledger.settle(rid, actual_usd=4.0, tokens_in=0, tokens_out=0, latency_ms=0)
    with pytest.raises(CapExceeded) as refused:
        await _reserve(ledger, 1.0, session="c")
    assert refused.value.cap == "day"
    clock.advance(12 * 3600)
    await _reserve(ledger, 1.0, session="c")
    # The session cap is not a day cap: session a stays spent.
    with pytest.raises(CapExceeded) as info:
        await _reserve(ledger, 1.5, session="a")
    assert info.value.cap == "session"


async def test_record_call_counts_against_the_caps(ledger: BudgetLedger) -> None:
    await ledger.record_call(
        session="s1",
        run="r",
        role="librarian",
        model="kimi",
        provider="moonshot",
        tokens_in=5000,
        tokens_out=100,
        latency_ms=2000,
        cost_usd=4.5,
        outcome="ok",
    )
    assert await ledger.left_usd("s1", "openai") == 0.5
    report = await ledger.report()
    assert report["by_provider"] == [
        {
            "provider": "moonshot",
            "cost_usd": 4.5,
            "calls": 1,
            "failed": 0,
            "tokens_in": 5000,
            "tokens_cached": 0,
            "tokens_out": 100,
        }
    ]


async def test_bus_gets_a_budget_update_after_each_change(
    tmp_path: Path, clock: ManualClock
) -> None:
    bus = Bus()
    sub = bus.subscribe(kinds=(BudgetUpdated,))
    async with await BudgetLedger.open(tmp_path / "l.db", BUDGET, clock=clock, bus=bus) as led:
        rid = await _reserve(led, 1.0)
        # published off the request path: soon after the change, not inside it
        assert sub.get_nowait() is None
        first = await asyncio.wait_for(sub.get(), 5)
        assert isinstance(first, BudgetUpdated)
        assert first.session == "s1"
        assert first.snapshot["reserved_usd"] == 1.0
        await led.settle(rid, actual_usd=0.7, tokens_in=1, tokens_out=1, latency_ms=1)
        await led.release(await _reserve(led, 1.0))
    events = sub.drain()
    # Delivery "latest": queued snapshots of one session replace each other.
    assert len(events) == 1
    last = events[0]
    assert isinstance(last, BudgetUpdated)
    assert last.snapshot["per_session"]["spent_usd"] == 0.7
    assert last.snapshot["reserved_usd"] == 0.0


async def test_report_groups_by_role_model_provider_and_day(
    ledger: BudgetLedger, clock: ManualClock
) -> None:
    async def call(session: str, role: str, model: str, provider: str, usd: float) -> None:
        res = await ledger.reserve(
            session=session, provider=provider, role=role, model=model, amount_usd=usd
        )
        await ledger.settle(res.id, actual_usd=usd, tokens_in=100, tokens_out=10, latency_ms=5)

    await call("a", "judge", "gpt", "openai", 1.0)
    clock.advance(86400)
    await call("a", "implementer", "ds", "deepseek", 0.5)
    await call("b", "judge", "claude", "anthropic", 0.25)
    await ledger.reserve(session="b", provider="openai", role="judge", model="gpt", amount_usd=0.1)

    everything = await ledger.report(days=2)
    assert [(r["role"], r["cost_usd"], r["calls"]) for r in everything["by_role"]] == [
        ("judge", 1.25, 2),
        ("implementer", 0.5, 1),
    ]
    assert [r["model"] for r in everything["by_model"]] == ["gpt", "ds", "claude"]
    assert [(d["day"], d["cost_usd"]) for d in everything["by_day"]] == [
        ("2026-01-01", 1.0),
        ("2026-01-02", 0.75),
    ]
    assert everything["total"] == {
        "cost_usd": 1.75,
        "calls": 3,
        "failed": 0,
        "tokens_in": 300,
        "tokens_cached": 0,
        "tokens_out": 30,
    }
    assert everything["in_flight"] == {"reservations": 1, "reserved_usd": 0.1}
    assert everything["today"]["day"] == "2026-01-02"
    assert everything["today"]["spent_usd"] == 0.75
    assert everything["today"]["providers"]["deepseek"]["left_usd"] == 2.5
    assert everything["caps"]["provider_day_usd"] == {"deepseek": 3.0, "openai": 6.0}
    assert everything["session_budget"] is None

    today_b = await ledger.report("b", days=1)
    assert today_b["total"]["cost_usd"] == 0.25
    assert today_b["session_budget"] == {
        "cap_usd": 5.0,
        "spent_usd": 0.25,
        "reserved_usd": 0.1,
        "left_usd": 4.65,
    }
    with pytest.raises(LedgerError):
        await ledger.report(days=0)


async def test_reopen_keeps_everything_and_uses_wal(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "ledger.db"
    async with await BudgetLedger.open(path, BUDGET, clock=clock) as led:
        await _reserve(led, 1.25)
    async with await BudgetLedger.open(path, BUDGET, clock=clock) as led:
        assert (await led.snapshot("s1")).reserved_usd == 1.25
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with await BudgetLedger.open(path, BUDGET):
        pass
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_version VALUES (99)")
    with pytest.raises(LedgerError, match=r"newer.*; upgrade Switchyard on this machine"):
        await BudgetLedger.open(path, BUDGET)


async def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LedgerError, match="cannot open the budget ledger"):
        await BudgetLedger.open(path, BUDGET)


async def test_a_closed_ledger_refuses_work(tmp_path: Path) -> None:
    led = await BudgetLedger.open(tmp_path / "l.db", BUDGET)
    await led.close()
    await led.close()  # idempotent
    with pytest.raises(LedgerError, match="closed"):
        await led.snapshot("s1")


async def test_a_file_locked_too_long_is_a_ledger_error_not_a_traceback(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "l.db"
    async with await BudgetLedger.open(path, BUDGET, clock=clock, busy_timeout_s=0.1) as led:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(LedgerError, match="unavailable"):
                await _reserve(led, 0.1)
        finally:
            other.execute("ROLLBACK")
            other.close()
        await _reserve(led, 0.1)  # the connection is still usable
        assert (await led.snapshot("s1")).reserved_usd == 0.1


# ── the prompt cache's tokens (a part of tokens_in) ──────────────────────────────────────


async def test_the_cached_tokens_of_each_call_are_kept_and_reported(
    tmp_path: Path, clock: ManualClock
) -> None:
    """A settlement, a release and a call recorded each keep how many of their prompt's
    tokens the provider's cache read; the report sums them beside tokens_in, in every
    group, and they stand in the file (a ledger opened again reads them from its rows)."""
    path = tmp_path / "ledger.db"
    async with await BudgetLedger.open(path, BUDGET, clock=clock) as led:
        settled = await _reserve(led, 0.1, provider="anthropic", model="claude")
        await led.settle(
            settled,
            actual_usd=0.010045,
            tokens_in=100010,
            tokens_out=7,
            latency_ms=5,
            tokens_cached=100000,
        )
        released = await _reserve(led, 0.1, provider="deepseek", model="ds")
        await led.release(released, "timeout", actual_usd=0.001, tokens_in=900, tokens_cached=800)
        await led.record_call(
            session="s1",
            role="tutor",
            model="qwen",
            provider="local",
            tokens_in=50,
            tokens_out=5,
            latency_ms=1,
            cost_usd=0.0,
            tokens_cached=20,
        )
        await led.record_call(
            session="s1",
            role="tutor",
            model="qwen",
            provider="local",
            tokens_in=30,
            tokens_out=5,
            latency_ms=1,
            cost_usd=0.0,
        )
    async with await BudgetLedger.open(path, BUDGET, clock=clock) as led:
        report = await led.report("s1")
    assert (report["total"]["tokens_in"], report["total"]["tokens_cached"]) == (100990, 100820)
    by_provider = {r["provider"]: r["tokens_cached"] for r in report["by_provider"]}
    assert by_provider == {"anthropic": 100000, "deepseek": 800, "local": 20}
    assert report["total"]["cost_usd"] == pytest.approx(0.011045, abs=1e-12)
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT tokens_in, tokens_cached FROM calls ORDER BY id").fetchall()
    assert rows == [(100010, 100000), (900, 800), (50, 20), (30, 0)]


async def test_more_cached_tokens_than_the_prompt_are_refused(ledger: BudgetLedger) -> None:
    rid = await _reserve(ledger, 0.1)
    with pytest.raises(LedgerError, match=r"cached tokens must be in 0\.\.tokens_in"):
        await ledger.settle(
            rid, actual_usd=0.01, tokens_in=10, tokens_out=1, latency_ms=1, tokens_cached=11
        )
    # refused before anything was written: the reservation is still there to settle
    await ledger.settle(rid, actual_usd=0.01, tokens_in=10, tokens_out=1, latency_ms=1)
