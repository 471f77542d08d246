"""Property: no sequence of reserve/settle/release/clock moves lets a cap be crossed, and
the ledger grants exactly what a simple reference model of the caps would grant."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from app.clock import ManualClock
from app.policy.schema import Budget
from app.router.ledger import BudgetLedger, CapExceeded, Reservation

# In cents, so the reference model is exact.
SESSION_CAP, DAY_CAP = 100, 160
PROVIDER_CAPS = {"deepseek": 60, "openai": 120}
TTL_S = 300
BUDGET = Budget(
    session_usd=SESSION_CAP / 100,
    day_usd=DAY_CAP / 100,
    reservation_ttl_s=TTL_S,
    provider_day_usd={k: v / 100 for k, v in PROVIDER_CAPS.items()},
)
SESSIONS = ("s1", "s2", "s3")
PROVIDERS = ("deepseek", "openai", "moonshot", "local")

reserve = st.tuples(
    st.just("reserve"),
    st.sampled_from(SESSIONS),
    st.sampled_from(PROVIDERS),
    st.integers(0, 60),
)
# Settle/release the n-th live reservation, billing a fraction (in %) of what it reserved.
settle = st.tuples(st.just("settle"), st.integers(0, 50), st.integers(0, 100))
release = st.tuples(st.just("release"), st.integers(0, 50), st.integers(0, 100))
advance = st.tuples(st.just("advance"), st.sampled_from([10, 200, 301, 3600, 43_200]))
# Reserves outnumber the rest so that most sequences run into a cap.
ops = st.lists(
    st.one_of(reserve, reserve, reserve, settle, release, advance), min_size=8, max_size=40
)


@dataclass
class Held:
    res: Reservation
    cents: int
    day: str
    expires_at: float


class Model:
    """What the ledger should hold: spend per (session, day, provider), live reservations."""

    def __init__(self) -> None:
        self.spent: list[tuple[str, str, str, int]] = []
        self.live: list[Held] = []

    def expire(self, now: float) -> None:
        for h in [h for h in self.live if h.expires_at <= now]:
            self.live.remove(h)
            self.spent.append((h.res.session, h.day, h.res.provider, h.cents))

    def used(self, session: str, day: str, provider: str) -> tuple[int, int, int]:
        rows = self.spent + [(h.res.session, h.day, h.res.provider, h.cents) for h in self.live]
        return (
            sum(c for s, _, _, c in rows if s == session),
            sum(c for _, d, _, c in rows if d == day),
            sum(c for _, d, p, c in rows if d == day and p == provider),
        )

    def allows(self, session: str, day: str, provider: str, cents: int) -> bool:
        if cents == 0:
            return True
        s, d, p = self.used(session, day, provider)
        cap = PROVIDER_CAPS.get(provider)
        return (
            s + cents <= SESSION_CAP and d + cents <= DAY_CAP and (cap is None or p + cents <= cap)
        )


def _assert_caps_hold(path: Path) -> None:
    """Straight from the file: settled + live never above a cap, for every day."""
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT session, day, provider, cost_nusd FROM calls UNION ALL"
            " SELECT session, day, provider, amount_nusd FROM reservations WHERE status = 'live'"
        ).fetchall()
    per_session: dict[str, int] = {}
    per_day: dict[str, int] = {}
    per_provider: dict[tuple[str, str], int] = {}
    for session, day, provider, nusd in rows:
        per_session[session] = per_session.get(session, 0) + nusd
        per_day[day] = per_day.get(day, 0) + nusd
        per_provider[(day, provider)] = per_provider.get((day, provider), 0) + nusd
    cents = 10_000_000  # nano-dollars per cent
    assert all(v <= SESSION_CAP * cents for v in per_session.values())
    assert all(v <= DAY_CAP * cents for v in per_day.values())
    for (_, provider), v in per_provider.items():
        if provider in PROVIDER_CAPS:
            assert v <= PROVIDER_CAPS[provider] * cents


async def _run(path: Path, steps: list[tuple[object, ...]]) -> None:
    clock = ManualClock()
    model = Model()
    async with await BudgetLedger.open(path, BUDGET, clock=clock) as led:
        for step in steps:
            now = clock.now()
            model.expire(now.timestamp())
            if step[0] == "reserve":
                _, session, provider, cents = step
                assert isinstance(session, str) and isinstance(provider, str)
                assert isinstance(cents, int)
                cents = 0 if provider == "local" else cents
                day = now.date().isoformat()
                expected = model.allows(session, day, provider, cents)
                try:
                    res = await led.reserve(
                        session=session,
                        provider=provider,
                        role="r",
                        model="m",
                        amount_usd=cents / 100,
                    )
                except CapExceeded:
                    assert not expected, step
                else:
                    assert expected, step
                    model.live.append(Held(res, cents, day, now.timestamp() + TTL_S))
            elif step[0] in ("settle", "release") and model.live:
                _, n, pct = step
                assert isinstance(n, int) and isinstance(pct, int)
                held = model.live.pop(n % len(model.live))
                # Billing never above the reservation here: an overrun is the one way past
                # a cap, recorded truthfully and tested on its own.
                cost = held.cents * pct // 100
                if step[0] == "settle":
                    await led.settle(
                        held.res.id, actual_usd=cost / 100, tokens_in=1, tokens_out=1, latency_ms=1
                    )
                else:
                    await led.release(held.res.id, actual_usd=cost / 100)
                model.spent.append((held.res.session, held.day, held.res.provider, cost))
            elif step[0] == "advance":
                assert isinstance(step[1], int)
                clock.advance(step[1])
            _assert_caps_hold(path)
            for session in SESSIONS:
                snap = await led.snapshot(session)
                for u in (snap.per_session, snap.per_day, *snap.per_provider.values()):
                    if u.cap_usd is not None:
                        assert u.spent_usd + u.reserved_usd <= u.cap_usd + 1e-9
                        assert u.left_usd is not None and u.left_usd >= 0
                assert round(snap.reserved_usd * 100) == sum(
                    h.cents
                    for h in model.live
                    if h.res.session == session and h.expires_at > clock.now().timestamp()
                )


@settings(max_examples=25, deadline=None)
@given(ops)
def test_random_sequences_never_cross_a_cap(steps: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_run(Path(tmp) / "ledger.db", steps))
