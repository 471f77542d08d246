"""The ledger's guarantees on both stores (a SQLite file, the team's PostgreSQL): caps
under 200 concurrent reservations, settlement and release, overruns recorded truthfully,
exact money (no float drift), expiry charged in full, random sequences against a
reference model. PostgreSQL's own: the CHECK backstop, expiry by the database's clock,
a newer schema refused, caps per team, user and provider."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.clock import ManualClock
from app.policy.schema import Budget
from app.router.ledger import CapExceeded, Reservation
from app.store.errors import SchemaTooNew
from tests.pg import StoreUnderTest, run_sync

BUDGET = Budget(
    session_usd=5.0, day_usd=20.0, reservation_ttl_s=900, provider_day_usd={"deepseek": 4.0}
)


async def _try(led: object, session: str, provider: str, usd: float) -> Reservation | None:
    try:
        return await led.reserve(  # type: ignore[attr-defined, no-any-return]
            session=session, provider=provider, role="implementer", model="m", amount_usd=usd
        )
    except CapExceeded:
        return None


async def test_200_concurrent_reservations_never_cross_the_cap(any_store: StoreUnderTest) -> None:
    async with await any_store.ledger(BUDGET, ManualClock()) as led:
        results = await asyncio.gather(*(_try(led, "s", "openai", 0.05) for _ in range(200)))
        assert sum(r is not None for r in results) == 100
        snap = await led.snapshot("s")
        assert (snap.per_session.reserved_usd, snap.per_session.spent_usd) == (5.0, 0.0)
        assert await led.left_usd("s", "openai") == 0.0


async def test_200_settles_racing_reservations_stay_under_the_cap(
    any_store: StoreUnderTest,
) -> None:
    async with await any_store.ledger(BUDGET, ManualClock()) as led:

        async def worker(i: int) -> None:
            res = await _try(led, "s", "openai", 0.05 + (i % 7) * 0.01)
            if res is not None:
                await led.settle(
                    res.id, actual_usd=res.amount_usd, tokens_in=1, tokens_out=1, latency_ms=1
                )

        await asyncio.gather(*(worker(i) for i in range(200)))
        snap = await led.snapshot("s")
        assert snap.per_session.reserved_usd == 0.0
        assert 4.8 <= snap.per_session.spent_usd <= 5.0


async def test_the_provider_cap_holds_across_sessions(any_store: StoreUnderTest) -> None:
    async with await any_store.ledger(BUDGET, ManualClock()) as led:
        results = await asyncio.gather(
            *(_try(led, f"s{i % 10}", "deepseek", 0.10) for i in range(200))
        )
        assert sum(r is not None for r in results) == 40  # $4 / $0.10
        snap = await led.snapshot("s0")
        assert snap.per_provider["deepseek"].reserved_usd == pytest.approx(4.0)


async def test_money_is_exact_ten_dimes_fill_a_dollar(any_store: StoreUnderTest) -> None:
    """0.1 ten times is 0.9999999999999999 in floats: the ledger counts 1.00 exactly."""
    budget = Budget(session_usd=1.0, day_usd=1.0, reservation_ttl_s=900)
    async with await any_store.ledger(budget, ManualClock()) as led:
        granted = [await _try(led, "s", "openai", 0.1) for _ in range(10)]
        assert all(r is not None for r in granted)
        assert await _try(led, "s", "openai", 1e-9) is None
        assert await led.left_usd("s", "openai") == 0.0


async def test_the_report_gives_money_as_numbers_on_both_stores(
    any_store: StoreUnderTest,
) -> None:
    """PostgreSQL's sum of a bigint is a numeric: the report's totals came out as Decimals,
    which ``budget --json`` wrote as strings ("0.801") beside the numbers of SQLite."""
    async with await any_store.ledger(BUDGET, ManualClock()) as led:
        res = await _try(led, "s", "openai", 0.5)
        assert res is not None
        await led.settle(res.id, actual_usd=0.401, tokens_in=10, tokens_out=5, latency_ms=1)
        report = await led.report()

    def money(node: object, key: str = "") -> list[object]:
        """Every amount: a leaf under a key ending in ``usd`` (or inside one)."""
        if isinstance(node, dict):
            return [v for k, x in node.items() for v in money(x, k if "usd" in k else key)]
        if isinstance(node, list):
            return [v for x in node for v in money(x, key)]
        return [node] if key else []

    amounts = money(report)
    assert amounts and all(type(a) is float or a is None for a in amounts), amounts
    assert report["total"]["cost_usd"] == 0.401


async def test_the_cached_tokens_of_a_call_are_kept_on_both_stores(
    any_store: StoreUnderTest,
) -> None:
    """Of a call's tokens_in, those the provider's prompt cache read: in each call row a
    settlement, a release, a call recorded (and one written late, the team's) makes, and
    summed by the report in every group."""
    async with await any_store.ledger(BUDGET, ManualClock()) as led:
        a = await _try(led, "s", "anthropic", 0.5)
        b = await _try(led, "s", "deepseek", 0.5)
        assert a and b
        await led.settle(
            a.id,
            actual_usd=0.010045,
            tokens_in=100010,
            tokens_out=7,
            latency_ms=3,
            tokens_cached=100000,
        )
        await led.release(b.id, actual_usd=0.0001, tokens_in=900, tokens_cached=800)
        await led.record_call(
            session="s",
            role="r",
            model="m",
            provider="local",
            tokens_in=50,
            tokens_out=1,
            latency_ms=1,
            cost_usd=0.0,
            tokens_cached=20,
        )
        report = await led.report(session="s")
    assert (report["total"]["tokens_in"], report["total"]["tokens_cached"]) == (100960, 100820)
    cached = {r["provider"]: r["tokens_cached"] for r in report["by_provider"]}
    assert cached == {"anthropic": 100000, "deepseek": 800, "local": 20}
    assert [r["tokens_cached"] for r in report["by_day"]] == [100820]
    assert report["total"]["cost_usd"] == pytest.approx(0.010145, abs=1e-12)


async def test_settle_release_and_an_overrun_are_recorded_truthfully(
    any_store: StoreUnderTest,
) -> None:
    async with await any_store.ledger(BUDGET, ManualClock()) as led:
        a = await _try(led, "s", "openai", 1.0)
        b = await _try(led, "s", "openai", 1.0)
        c = await _try(led, "s", "openai", 1.0)
        assert a and b and c
        await led.settle(a.id, actual_usd=0.25, tokens_in=10, tokens_out=5, latency_ms=3)
        await led.release(b.id)
        # billed above its reservation: recorded as billed, and the cap then refuses more
        await led.settle(c.id, actual_usd=4.5, tokens_in=10, tokens_out=5, latency_ms=3)
        snap = await led.snapshot("s")
        assert snap.per_session.spent_usd == pytest.approx(4.75)
        assert snap.per_session.reserved_usd == 0.0
        assert (snap.calls, snap.failed) == (3, 1)  # the workbench's meter says so too
        assert await _try(led, "s", "openai", 0.5) is None
        await led.record_call(
            session="s",
            role="r",
            model="m",
            provider="local",
            tokens_in=1,
            tokens_out=1,
            latency_ms=1,
            cost_usd=0.0,
        )
        assert (await _try(led, "s", "local", 0.0)) is not None  # local is never blocked
        report = await led.report(session="s")
        assert report["total"]["calls"] == 4
        assert report["total"]["cost_usd"] == pytest.approx(4.75)
        # the released call did not come through, on either store
        assert report["total"]["failed"] == 1
        (openai,) = [r for r in report["by_provider"] if r["provider"] == "openai"]
        assert (openai["calls"], openai["failed"]) == (3, 1)


async def test_a_reservation_past_its_ttl_is_charged_in_full(any_store: StoreUnderTest) -> None:
    budget = Budget(session_usd=5.0, day_usd=20.0, reservation_ttl_s=0.3)
    clock = ManualClock()
    async with await any_store.ledger(budget, clock) as led:
        told: list[Reservation] = []

        async def hook(expired: Sequence[Reservation]) -> None:
            told.extend(expired)

        led.on_expired = hook
        res = await _try(led, "s", "openai", 2.0)
        assert res is not None
        if any_store.shared:
            await asyncio.sleep(0.5)  # the database's clock, never the caller's
        else:
            clock.advance(1)
        assert await led.expire_stale() == 1
        # the session audits each charge (it was charged with no line at all)
        assert [(r.id, r.session, r.model, r.amount_usd) for r in told] == [(res.id, "s", "m", 2.0)]
        assert await led.expire_stale() == 0 and len(told) == 1  # told once
        snap = await led.snapshot("s")
        assert (snap.per_session.spent_usd, snap.per_session.reserved_usd) == (2.0, 0.0)
        with pytest.raises(Exception, match="expired"):
            await led.settle(res.id, actual_usd=0.1, tokens_in=1, tokens_out=1, latency_ms=1)


async def test_a_reservation_renewed_while_its_call_is_in_flight_is_not_expired(
    any_store: StoreUnderTest,
) -> None:
    """Another process (machine) expired a call that outlasted the TTL while its holder
    waited for it, and the holder's settlement was then refused: the answer, billed, was
    thrown away (an audit, on the team store). A renewal is one TTL more; a holder that
    died renews nothing."""
    budget = Budget(session_usd=5.0, day_usd=20.0, reservation_ttl_s=1.0)
    clock = ManualClock()

    async def wait(seconds: float) -> None:
        if any_store.shared:
            await asyncio.sleep(seconds)  # the database's clock
        else:
            clock.advance(seconds)

    async with (
        await any_store.ledger(budget, clock) as holder,
        await any_store.ledger(budget, clock, user="bob") as other,
    ):
        res = await _try(holder, "s", "openai", 1.0)
        assert res is not None
        await wait(0.6)
        assert await holder.renew(res.id)
        await holder.flush()  # the renewal folded into the tables: a process that
        async with await any_store.ledger(budget, clock, user="carol") as later:
            await wait(0.6)  # past the first TTL, within the renewed one
            assert await later.expire_stale() == 0  # starts now reads it from them
        assert await other.expire_stale() == 0
        await holder.settle(res.id, actual_usd=0.25, tokens_in=10, tokens_out=5, latency_ms=3)
        assert not await holder.renew(res.id)  # settled: nothing to renew
        # a holder that renews no more (it died) is expired one TTL after
        dead = await _try(holder, "s", "openai", 1.0)
        assert dead is not None
        await wait(1.2)
        assert await other.expire_stale() == 1
        assert not await holder.renew(dead.id)
        snap = await other.snapshot("s")
        assert snap.per_session.spent_usd == pytest.approx(1.25)


async def test_reserving_tells_of_the_stale_reservations_it_charged_even_when_refused(
    any_store: StoreUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    """The request path charges a dead process's reservation on its way: told too. A
    hook that fails (the audit store gone) is logged; the charge and the new
    reservation stand."""
    budget = Budget(session_usd=5.0, day_usd=20.0, reservation_ttl_s=0.3)
    clock = ManualClock()
    async with await any_store.ledger(budget, clock) as led:
        told: list[str] = []

        async def hook(expired: Sequence[Reservation]) -> None:
            told.extend(r.id for r in expired)
            raise OSError("the audit store is gone")

        led.on_expired = hook
        dead = await _try(led, "s", "openai", 4.0)
        assert dead is not None
        if any_store.shared:
            await asyncio.sleep(0.5)
        else:
            clock.advance(1)
        assert await _try(led, "s", "openai", 1.5) is None  # over the cap: refused
        assert told == [dead.id]
        assert "charged by expiry were not audited: the audit store is gone" in caplog.text
        assert await _try(led, "s", "openai", 0.5) is not None
        assert told == [dead.id]


# ── random sequences against a reference model ────────────────────────────────────────────

SESSION_CAP, DAY_CAP = 100, 160  # cents
PROVIDER_CAPS = {"deepseek": 60, "openai": 120}
PROP_BUDGET = Budget(
    session_usd=SESSION_CAP / 100,
    day_usd=DAY_CAP / 100,
    reservation_ttl_s=3600,
    provider_day_usd={k: v / 100 for k, v in PROVIDER_CAPS.items()},
)
reserve_op = st.tuples(
    st.just("reserve"),
    st.sampled_from(("s1", "s2", "s3")),
    st.sampled_from(("deepseek", "openai", "moonshot")),
    st.integers(1, 60),
)
close_op = st.tuples(
    st.sampled_from(("settle", "release")), st.integers(0, 50), st.integers(0, 100)
)
ops = st.lists(st.one_of(reserve_op, reserve_op, close_op), min_size=8, max_size=30)


@dataclass
class Held:
    res: Reservation
    cents: int


async def _sequence(store: StoreUnderTest, steps: list[tuple[object, ...]]) -> None:
    spent: list[tuple[str, str, int]] = []
    live: list[Held] = []

    def used(session: str, provider: str) -> tuple[int, int, int]:
        rows = spent + [(h.res.session, h.res.provider, h.cents) for h in live]
        return (
            sum(c for s, _, c in rows if s == session),
            sum(c for _, _, c in rows),
            sum(c for _, p, c in rows if p == provider),
        )

    async with await store.ledger(PROP_BUDGET, ManualClock()) as led:
        for step in steps:
            if step[0] == "reserve":
                _, session, provider, cents = step
                assert isinstance(session, str) and isinstance(provider, str)
                assert isinstance(cents, int)
                s, d, p = used(session, provider)
                cap = PROVIDER_CAPS.get(provider)
                ok = s + cents <= SESSION_CAP and d + cents <= DAY_CAP
                ok = ok and (cap is None or p + cents <= cap)
                res = await _try(led, session, provider, cents / 100)
                assert (res is not None) == ok, step
                if res is not None:
                    live.append(Held(res, cents))
            elif live:
                kind, n, pct = step
                assert isinstance(n, int) and isinstance(pct, int)
                held = live.pop(n % len(live))
                cost = held.cents * pct // 100
                if kind == "settle":
                    await led.settle(
                        held.res.id, actual_usd=cost / 100, tokens_in=1, tokens_out=1, latency_ms=1
                    )
                else:
                    await led.release(held.res.id, actual_usd=cost / 100)
                spent.append((held.res.session, held.res.provider, cost))
            for session in ("s1", "s2", "s3"):
                snap = await led.snapshot(session)
                for u in (snap.per_session, snap.per_day, *snap.per_provider.values()):
                    if u.cap_usd is not None:
                        assert u.spent_usd + u.reserved_usd <= u.cap_usd + 1e-9


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=ops)
def test_random_sequences_match_the_reference_model(
    any_store: StoreUnderTest, steps: list[tuple[object, ...]]
) -> None:
    if any_store.shared:
        store = any_store.with_team(uuid.uuid4().hex)  # one database, a team per example
    else:
        store = StoreUnderTest(
            "sqlite", any_store.location.replace(".db", f"-{uuid.uuid4().hex}.db")
        )
    run_sync(_sequence(store, steps))


# ── PostgreSQL's own ─────────────────────────────────────────────────────────────────────


async def test_caps_are_per_team_per_user_and_per_provider(pg_url: str) -> None:
    from app.router.ledger.pg_ledger import PgBudgetLedger

    budget = Budget(
        session_usd=100.0,
        day_usd=3.0,
        user_day_usd=2.0,
        reservation_ttl_s=900,
        provider_day_usd={"openai": 2.5},
    )
    alice = await PgBudgetLedger.open(pg_url, budget, team="red", user="alice")
    bob = await PgBudgetLedger.open(pg_url, budget, team="red", user="bob")
    other = await PgBudgetLedger.open(pg_url, budget, team="blue", user="carol")
    try:
        assert await _try(alice, "a1", "deepseek", 2.0)
        with pytest.raises(CapExceeded) as caught:
            await alice.reserve(
                session="a2", provider="deepseek", role="r", model="m", amount_usd=0.5
            )
        assert caught.value.cap == "user:alice"
        assert await _try(bob, "b1", "openai", 1.0)
        with pytest.raises(CapExceeded) as caught:  # the team's day: 2 + 1 + 0.5 > 3
            await bob.reserve(session="b1", provider="openai", role="r", model="m", amount_usd=0.5)
        assert caught.value.cap == "day"
        assert await _try(other, "c1", "openai", 2.0)  # another team: its own totals
        dave = await PgBudgetLedger.open(pg_url, budget, team="blue", user="dave")
        with pytest.raises(CapExceeded) as caught:  # the team's openai day: 2 + 0.6 > 2.5
            await dave.reserve(session="d1", provider="openai", role="r", model="m", amount_usd=0.6)
        await dave.close()
        assert caught.value.cap == "provider:openai"
        snap = await bob.snapshot("b1")
        assert snap.team == "red" and snap.user == "bob"
        assert snap.per_day.reserved_usd == pytest.approx(3.0)
        assert snap.per_user is not None and snap.per_user.reserved_usd == pytest.approx(1.0)
    finally:
        for led in (alice, bob, other):
            await led.close()


async def test_the_check_constraint_refuses_any_write_past_the_cap(pg_url: str) -> None:
    from app.router.ledger.pg_ledger import PgBudgetLedger

    async with await PgBudgetLedger.open(pg_url, BUDGET, team="t", user="u") as led:
        assert await _try(led, "s", "openai", 4.0)
    conn = await asyncpg.connect(pg_url)
    try:
        with pytest.raises(asyncpg.CheckViolationError, match="never_over_cap"):
            await conn.execute(
                "UPDATE ledger_usage SET reserved_nusd = reserved_nusd + 2000000000"
                " WHERE scope = 'session'"
            )
    finally:
        await conn.close()


async def test_a_v1_team_ledger_migrates_and_each_team_expires_its_own(pg_url: str) -> None:
    """v2: expiry per team, returning what it charged. v1's charged every team's dead
    reservations in one call and said only how many, so none could be audited in its
    team's chain."""
    from app.router.ledger.pg_ledger import PgBudgetLedger
    from app.router.ledger.pg_schema import COMPONENT, MIGRATIONS
    from app.store.postgres import migrate

    conn = await asyncpg.connect(pg_url)
    try:
        await migrate(conn, COMPONENT, MIGRATIONS[:1], "team ledger")  # a v1 database
    finally:
        await conn.close()
    budget = Budget(session_usd=5.0, day_usd=20.0, reservation_ttl_s=0.3)
    told: dict[str, list[str]] = {"a": [], "b": []}

    def hook(team: str) -> Any:
        async def tell(expired: Sequence[Reservation]) -> None:
            told[team].extend(r.session for r in expired)

        return tell

    async with (
        await PgBudgetLedger.open(pg_url, budget, team="a", user="u") as a,
        await PgBudgetLedger.open(pg_url, budget, team="b", user="u") as b,
    ):
        a.on_expired, b.on_expired = hook("a"), hook("b")
        await _try(a, "sa", "openai", 1.0)
        await _try(b, "sb", "openai", 2.0)
        await asyncio.sleep(0.5)
        assert await a.expire_stale() == 1 and told == {"a": ["sa"], "b": []}
        assert (await b.snapshot("sb")).reserved_usd == 0.0  # b's own expiry, on its read
        assert told == {"a": ["sa"], "b": ["sb"]}
    conn = await asyncpg.connect(pg_url)
    try:
        version = await conn.fetchval(
            "SELECT version FROM switchyard_schema WHERE component = 'ledger'"
        )
    finally:
        await conn.close()
    assert version == len(MIGRATIONS) == 10


async def _set_version(pg_url: str, component: str, version: int) -> None:
    """The schema version on file for ``component``, as a newer Switchyard leaves it."""
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "UPDATE switchyard_schema SET version = $1 WHERE component = $2", version, component
        )
    finally:
        await conn.close()


async def test_a_newer_schema_is_refused_naming_both_versions(pg_url: str) -> None:
    from app.router.ledger.pg_ledger import PgBudgetLedger

    async with await PgBudgetLedger.open(pg_url, BUDGET, team="t", user="u"):
        pass
    from app.router.ledger.pg_schema import MIGRATIONS

    newer = len(MIGRATIONS) + 1
    await _set_version(pg_url, "ledger", newer)
    known = rf"schema version {newer} is newer .*\({len(MIGRATIONS)}\)"
    with pytest.raises(SchemaTooNew, match=known) as caught:
        await PgBudgetLedger.open(pg_url, BUDGET, team="t", user="u")
    assert caught.value.exit_code == 2


async def test_an_audit_log_newer_than_this_switchyard_stops_the_ledger_before_a_charge(
    pg_url: str,
) -> None:
    """`budget` opened the ledger (its schema known), charged a dead reservation, then
    could not open the newer audit log to tell it: charged, never audited (an audit)."""
    from app.audit.pg_log import PgAuditLog
    from app.router.ledger.pg_ledger import PgBudgetLedger

    async with await PgAuditLog.open(pg_url, team="t", user="u"):
        pass
    await _set_version(pg_url, "audit", 9)
    with pytest.raises(SchemaTooNew, match=r"team audit log .* schema version 9 is newer"):
        await PgBudgetLedger.open(pg_url, BUDGET, team="t", user="u")


async def test_a_looser_policy_cannot_raise_a_shared_cap_and_a_tighter_one_lowers_it(
    pg_url: str,
) -> None:
    """v3: a reservation wrote its own policy's cap over the team's row, so a laptop with
    another policy file (or none: the shipped $20 day) reserved past the team's $0.005
    day cap, unseen (an audit). A shared cap is now the lowest any member declared today."""
    from app.router.ledger.pg_ledger import PgBudgetLedger

    def budget(day: float) -> Budget:
        return Budget(session_usd=100.0, day_usd=day, reservation_ttl_s=900)

    alice = await PgBudgetLedger.open(pg_url, budget(3.0), team="t", user="alice")
    dave = await PgBudgetLedger.open(pg_url, budget(20.0), team="t", user="dave")
    carol = await PgBudgetLedger.open(pg_url, budget(2.0), team="t", user="carol")
    try:
        assert await _try(alice, "a1", "openai", 2.5)
        with pytest.raises(CapExceeded) as caught:  # 2.5 + 1 > 3: dave's $20 is no cap
            await dave.reserve(session="d1", provider="openai", role="r", model="m", amount_usd=1)
        assert caught.value.cap == "day" and caught.value.limit_usd == pytest.approx(3.0)
        assert (await dave.snapshot("d1")).per_day.cap_usd == pytest.approx(3.0)
        assert await _try(dave, "d1", "openai", 0.5)  # within the team's cap: granted
        # a tighter policy's refusal cannot lower a cap below what is already held
        with pytest.raises(CapExceeded) as caught:
            await carol.reserve(
                session="c1", provider="openai", role="r", model="m", amount_usd=0.1
            )
        assert caught.value.limit_usd == pytest.approx(2.0)
        assert (await alice.snapshot("a1")).per_day.cap_usd == pytest.approx(3.0)
        # in another team, a tighter policy's reservation lowers it for everyone today
        ann = await PgBudgetLedger.open(pg_url, budget(3.0), team="u", user="ann")
        cid = await PgBudgetLedger.open(pg_url, budget(2.0), team="u", user="cid")
        try:
            assert await _try(ann, "a2", "openai", 0.5)
            assert await _try(cid, "c2", "openai", 0.5)
            with pytest.raises(CapExceeded) as caught:  # 0.5 + 0.5 + 1.5 > cid's 2
                await ann.reserve(
                    session="a2", provider="openai", role="r", model="m", amount_usd=1.5
                )
            assert caught.value.limit_usd == pytest.approx(2.0)
            snap = await ann.snapshot("a2")
            assert snap.per_day.cap_usd == pytest.approx(2.0)
            assert snap.per_day.left_usd == pytest.approx(1.0)
            assert await ann.left_usd("a2", "openai") == pytest.approx(1.0)
        finally:
            await ann.close()
            await cid.close()
    finally:
        for led in (alice, dave, carol):
            await led.close()


async def test_a_statement_the_database_never_answers_ends_as_unavailable(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the connect had a time limit: a database that stopped answering held a
    gateway's requests until it came back (100 s in an audit), every pooled connection
    stuck. A statement now ends at STATEMENT_TIMEOUT_S as "unavailable" (fail closed),
    and the ledger works again once the database answers."""
    from app.router.ledger import LedgerError
    from app.router.ledger.pg_ledger import PgBudgetLedger
    from app.store import postgres

    monkeypatch.setattr(postgres, "STATEMENT_TIMEOUT_S", 0.5)
    async with await PgBudgetLedger.open(pg_url, BUDGET, team="t", user="u") as led:
        assert await _try(led, "s", "openai", 0.1)
        blocker = await asyncpg.connect(pg_url)
        try:
            hold = blocker.transaction()
            await hold.start()  # what a stopped server looks like from here: no answer
            await blocker.execute("LOCK TABLE ledger_usage IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(LedgerError, match="unavailable"):
                await led.reserve(session="s", provider="openai", role="r", model="m", amount_usd=1)
            await hold.rollback()
        finally:
            await blocker.close()
        assert await _try(led, "s", "openai", 0.1)
        # every pooled connection held (each by a statement the database never answers):
        # the wait for one ends too
        pool = led._pool
        assert pool is not None
        held = [await pool.acquire() for _ in range(pool.get_max_size())]
        try:
            with pytest.raises(LedgerError, match="unavailable"):
                await led.reserve(session="s", provider="openai", role="r", model="m", amount_usd=1)
        finally:
            for conn in held:
                await pool.release(conn)
        assert await _try(led, "s", "openai", 0.1)


async def test_a_database_migrated_to_v3_before_its_change_gets_the_function_again(
    pg_url: str,
) -> None:
    """v3 was edited after it shipped: a database a Switchyard of that window migrated
    kept v3's first function (every cap the lowest ever seen, the session's too), and a
    resumed session with a raised cap was refused what ``budget`` showed it had (an
    upgrade audit). v4 installs the function again."""
    import re

    import asyncpg

    from app.router.ledger.pg_ledger import PgBudgetLedger
    from app.router.ledger.pg_schema import COMPONENT, MIGRATIONS
    from app.store.postgres import migrate

    first_v3 = re.sub(
        r"CASE WHEN (\w+)\.s = 'session' THEN \1\.c ELSE (LEAST\([^)]*\)) END",
        r"\2",
        MIGRATIONS[2][0],
    )
    assert first_v3 != MIGRATIONS[2][0] and "CASE WHEN" not in first_v3
    conn = await asyncpg.connect(pg_url)
    try:
        await migrate(conn, COMPONENT, (*MIGRATIONS[:2], (first_v3,)), "team ledger")
    finally:
        await conn.close()

    def budget(session: float) -> Budget:
        return Budget(session_usd=session, day_usd=100.0, reservation_ttl_s=900)

    async with await PgBudgetLedger.open(pg_url, budget(1.0), team="t", user="u") as first:
        assert await _try(first, "S", "openai", 0.5)
    async with await PgBudgetLedger.open(pg_url, budget(5.0), team="t", user="u") as again:
        assert await _try(again, "S", "openai", 1.0)  # v3's first function refused it


async def test_a_resumed_session_takes_its_own_policys_cap_not_the_first_ones(
    pg_url: str,
) -> None:
    """v3 held a session's row to the lowest cap it was ever reserved under: a resumed
    session (ACP's session/load) whose policy raised it stayed at the first (a review)."""
    from app.router.ledger.pg_ledger import PgBudgetLedger

    def budget(session: float) -> Budget:
        return Budget(session_usd=session, day_usd=100.0, reservation_ttl_s=900)

    async with await PgBudgetLedger.open(pg_url, budget(1.0), team="t", user="u") as first:
        assert await _try(first, "S", "openai", 0.5)
    async with await PgBudgetLedger.open(pg_url, budget(5.0), team="t", user="u") as again:
        assert await _try(again, "S", "openai", 1.0)  # 0.5 + 1 > 1, < 5
        assert (await again.snapshot("S")).per_session.cap_usd == pytest.approx(5.0)
        assert await again.left_usd("S", "openai") == pytest.approx(3.5)


async def test_a_refusal_stands_when_the_expiry_after_it_fails(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused reservation has the stale ones expired after it; an expiry that failed
    raised the database's failure in place of the refusal, which database_fallback took
    for the database gone and granted on this machine's files (a review). The refusal
    stands, as a reservation made would."""
    from app.router.ledger.pg_ledger import PgBudgetLedger, _Gone
    from app.store.errors import StoreUnavailable

    async with await PgBudgetLedger.open(pg_url, BUDGET, team="t", user="u") as led:
        assert await _try(led, "s", "deepseek", 3.9)

        async def failing() -> int:
            raise _Gone("team ledger: connection refused")

        monkeypatch.setattr(led, "expire_stale", failing)
        with pytest.raises(CapExceeded) as caught:  # not StoreUnavailable
            await led.reserve(session="s", provider="deepseek", role="r", model="m", amount_usd=1)
        assert not isinstance(caught.value, StoreUnavailable)
        assert caught.value.cap == "provider:deepseek"
