"""GR011_CAP_CROSSED is written once for each cap crossed, by the call whose charge carried
the spend past it, also when other processes' settlements land meanwhile (a user's audit
of the team store: 4 processes billed past the deepseek day cap, no line; each read a
snapshot after its settlement that held the others' too, and found the cap crossed
before its own). On both stores: two ledgers (and two routers) on one store, their
settlements interleaved by events, never by timing. An expiry's charge is a write like
a settlement, and says a cap it carried the spend past the same way."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from app.audit.types import AuditLine
from app.backends.base import BackendError, ChatRequest, ChatResult, Delta, Message, Usage
from app.clock import ManualClock
from app.policy.schema import Budget, Policy
from app.router.approvals import AllowDecider, ApprovalBroker
from app.router.cost import cost_usd
from app.router.ledger import Reservation
from app.router.ledger.records import Expired, crossed_by
from app.router.routed import request_tokens
from app.router.service import RouteFailed, Router
from app.router.stores import audit_expiries
from app.router.types import Signals
from tests.integration.test_router_service import ALL_UP, Resolver, ScriptedBackend
from tests.pg import StoreUnderTest, expire_all_now

BUDGET = Budget(
    session_usd=5.0, day_usd=20.0, reservation_ttl_s=900, provider_day_usd={"deepseek": 4.0}
)


async def _reserve(led: Any, session: str, usd: float) -> Reservation:
    res: Reservation = await led.reserve(
        session=session, provider="deepseek", role="implementer", model="m", amount_usd=usd
    )
    return res


async def _settle(led: Any, res: Reservation, usd: float) -> list[str]:
    totals = await led.settle(res.id, actual_usd=usd, tokens_in=1, tokens_out=1, latency_ms=1)
    return [c.cap for c in crossed_by(totals)]


# ── the ledger: each write's own totals ───────────────────────────────────────────────


async def test_of_overruns_settled_by_two_ledgers_exactly_one_crosses_the_cap(
    any_store: StoreUnderTest,
) -> None:
    """Three calls reserved within the deepseek day cap ($4) from two ledgers (two
    processes), each billed past its reservation: the settlement that carries the spend
    past $4 is the one that says so, whichever ledger made it and whatever landed after."""
    clock = ManualClock()
    async with (
        await any_store.ledger(BUDGET, clock) as a,
        await any_store.ledger(BUDGET, clock, user="bob") as b,
    ):
        first, second = await _reserve(a, "s1", 1.0), await _reserve(b, "s2", 1.0)
        third = await _reserve(a, "s3", 1.0)
        assert await _settle(a, first, 3.0) == []  # $3 of $4
        assert await _settle(b, second, 3.0) == ["deepseek day"]  # $6: this one
        assert await _settle(a, third, 1.5) == []  # past already: not said again
        # a release that bills past, and a call recorded apart, are writes like any
        fourth = await _reserve(b, "s4", 0.0)
        totals = await b.release(fourth.id, actual_usd=0.5)
        assert [t.cap for t in totals] == ["deepseek day"] and crossed_by(totals) == []
        recorded = await a.record_call(
            session="s5",
            role="implementer",
            model="m",
            provider="deepseek",
            tokens_in=1,
            tokens_out=1,
            latency_ms=1,
            cost_usd=13.0,
        )
        # its session's $13 of $5, the day's $21 of $20 (the provider's was crossed before)
        assert [c.cap for c in crossed_by(recorded)] == ["session", "day"]
        snap = await a.snapshot("s1")
        assert snap.per_provider["deepseek"].spent_usd == pytest.approx(21.0)


async def test_a_settlement_within_its_reservation_after_anothers_overrun_crosses(
    any_store: StoreUnderTest,
) -> None:
    """One call overran while another was in flight (the spend still under the cap, the
    reservations past it); the other then settled within its own reservation, and its
    settlement is the one that carried the spend past the cap: it says so."""
    clock = ManualClock()
    async with (
        await any_store.ledger(BUDGET, clock) as a,
        await any_store.ledger(BUDGET, clock, user="bob") as b,
    ):
        held, over = await _reserve(a, "s1", 2.0), await _reserve(b, "s2", 1.0)
        assert await _settle(b, over, 3.5) == []  # $3.5 of $4 spent, $2 still reserved
        assert await _settle(a, held, 1.0) == ["deepseek day"]  # within its $2: $4.5


async def test_the_usual_settlement_returns_nothing(any_store: StoreUnderTest) -> None:
    async with await any_store.ledger(BUDGET, ManualClock()) as led:
        res = await _reserve(led, "s1", 1.0)
        totals = await led.settle(res.id, actual_usd=0.5, tokens_in=1, tokens_out=1, latency_ms=1)
        assert totals == ()


async def test_the_team_stores_user_day_cap_is_named_as_the_snapshot_names_it(
    pg_url: str,
) -> None:
    store = StoreUnderTest("postgres", pg_url)
    budget = BUDGET.model_copy(update={"user_day_usd": 2.0})
    async with await store.ledger(budget, ManualClock()) as led:
        res = await _reserve(led, "s1", 1.0)
        assert await _settle(led, res, 2.5) == ["user day"]


async def _past_ttl(store: StoreUnderTest, *clocks: ManualClock) -> None:
    """Every live reservation past its TTL: by the ledgers' ``clocks`` on SQLite; on the
    team store by the database's clock, which its expiry reads (set, not waited for)."""
    if store.shared:
        await expire_all_now(store.location)
    for clock in clocks:
        clock.advance(BUDGET.reservation_ttl_s + 1)


async def test_an_expiry_that_carries_the_spend_past_a_cap_says_so(
    any_store: StoreUnderTest,
) -> None:
    """A reservation whose process died is charged in full by the next writer (here its
    reservation finds it stale). Another call's overrun had left the spend just under the
    cap while it was held, and its charge carried the spend past: it was charged with its
    RESERVATION_EXPIRED line and no GR011 line, which a settlement of it would have had."""
    clock = ManualClock()
    audit = await any_store.audit(clock)
    try:
        async with (
            await any_store.ledger(BUDGET, clock) as a,
            await any_store.ledger(BUDGET, clock, user="bob") as b,
        ):
            b.on_expired = audit_expiries(audit)
            await _reserve(a, "s1", 1.0)  # (its process dies holding it)
            over = await _reserve(b, "s2", 1.0)
            assert await _settle(b, over, 3.5) == []  # $3.5 of $4 spent, $1 still reserved
            await _past_ttl(any_store, clock)
            await _reserve(b, "s3", 0.0)  # finds it stale, and charges it: $4.5
            lines = [ln for ln in await audit.lines(session="s1") if ln.kind == "budget"]
    finally:
        await audit.close()
    assert [ln.reason_codes for ln in lines] == [
        ["RESERVATION_EXPIRED", "SETTLED_AT_ESTIMATE"],
        ["GR011_CAP_CROSSED"],
    ]
    line = lines[1]
    assert (line.to, line.role) == ("m", "implementer")
    assert line.values == {
        "caps": [{"cap": "deepseek day", "cap_usd": 4.0, "spent_usd": 4.5}],
        "cost_usd": 1.0,
    }
    assert line.detail == (
        "m was charged its reservation in full at its expiry: past the deepseek day cap "
        "($4.50 of $4.00)"
    )


async def test_of_expiries_charged_at_once_exactly_one_crosses_the_cap(
    any_store: StoreUnderTest,
) -> None:
    """Two dead reservations whose charges together carry the spend past the cap, expired
    by two writers at once (on the team store each may take one, or one both): the one
    charge that carried it past says so, whichever writer charged it and with what."""
    clock = ManualClock()
    told: list[Expired] = []

    async def hook(expired: Sequence[Expired]) -> None:
        told.extend(expired)

    async with (
        await any_store.ledger(BUDGET, clock) as a,
        await any_store.ledger(BUDGET, clock, user="bob") as b,
    ):
        a.on_expired = b.on_expired = hook
        await _reserve(a, "s1", 0.5)
        await _reserve(b, "s2", 0.5)
        recorded = await b.record_call(
            session="s3",
            role="implementer",
            model="m",
            provider="deepseek",
            tokens_in=1,
            tokens_out=1,
            latency_ms=1,
            cost_usd=3.2,
        )
        assert crossed_by(recorded) == []  # $3.2 of $4 spent, $1 reserved
        await _past_ttl(any_store, clock)
        charged = await asyncio.gather(a.expire_stale(), b.expire_stale())
        assert sum(charged) == 2 and sorted(r.session for r in told) == ["s1", "s2"]
        said = [(r.session, crossed_by(r.caps)) for r in told if crossed_by(r.caps)]
        assert len(said) == 1, told
        (cap,) = said[0][1]
        assert cap.cap == "deepseek day" and cap.spent_usd == pytest.approx(4.2)
        snap = await a.snapshot("s1")
        assert snap.per_provider["deepseek"].spent_usd == pytest.approx(4.2)


# ── the router: one line per cap crossed, by the call that crossed it ─────────────────

#: a short question (the repro's ``ask … q``): a small estimate
QUESTION = ChatRequest(messages=[Message(role="user", content="q")], max_tokens=64)
#: what the fake provider bills for it: far more prompt than was counted
BILLED = Usage(tokens_in=100_000, tokens_out=64)


class Billing(ScriptedBackend):
    """deepseek-reasoner billing ``BILLED``; ``hold``: its answer waits for the event."""

    def __init__(self, hold: asyncio.Event | None = None) -> None:
        super().__init__("deepseek-reasoner", "cloud", [])
        self.usage = BILLED
        self.hold = hold
        self.in_call = asyncio.Event()

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        self.in_call.set()  # (reserved for: the call is made)
        if self.hold is not None:
            await self.hold.wait()
        async for item in super().stream(request):
            yield item


def _prices(policy: Policy) -> tuple[float, float]:
    """The call's estimate (its prompt, its output cap) and what it is billed."""
    m = policy.model("deepseek-reasoner")
    est = cost_usd(m, request_tokens(QUESTION), QUESTION.max_tokens)
    return est, cost_usd(m, BILLED.tokens_in, BILLED.tokens_out)


class Instance:
    """One process of the repro: its own ledger, audit log, session and router."""

    def __init__(self, router: Router, ledger: Any, audit: Any, resolver: Resolver) -> None:
        self.router, self.ledger, self.audit, self.resolver = router, ledger, audit, resolver

    @classmethod
    async def on(
        cls, store: StoreUnderTest, policy: Policy, session: str, backend: Billing
    ) -> Instance:
        clock = ManualClock()
        ledger = await store.ledger(policy.budget, clock, user=session)
        if store.shared:
            from app.audit.pg_log import PgAuditLog

            audit: Any = await PgAuditLog.open(
                store.location,
                team=store.team,
                user=session,
                host="box",
                clock=clock,
                policy_version=policy.version,
            )
        else:
            from app.audit.log import AuditLog

            path = Path(store.location).with_name("audit.db")
            audit = await AuditLog.open(path, clock=clock, policy_version=policy.version)
        resolver = Resolver(up=ALL_UP)
        resolver.made[("deepseek-reasoner", "cloud")] = backend

        async def no_sleep(s: float) -> None:
            pass

        broker = ApprovalBroker(AllowDecider(), audit=audit, timeout_s=5, clock=clock)
        router = Router(
            policy,
            session=session,
            audit=audit,
            ledger=ledger,
            approvals=broker,
            backends=resolver,
            clock=clock,
            sleep=no_sleep,
        )
        return cls(router, ledger, audit, resolver)

    async def ask(self, request: ChatRequest = QUESTION) -> Any:
        return await self.router.complete("implementer", request, Signals(failed_loops=2))

    async def crossed(self) -> list[AuditLine]:
        lines = await self.audit.lines(session=self.router.session)
        return [ln for ln in lines if "GR011_CAP_CROSSED" in ln.reason_codes]

    async def close(self) -> None:
        await self.audit.close()
        await self.ledger.close()


def _deepseek_capped(policy: Policy, cap: float) -> Policy:
    budget = policy.budget.model_copy(
        update={"provider_day_usd": {**policy.budget.provider_day_usd, "deepseek": cap}}
    )
    return policy.model_copy(update={"budget": budget})


@pytest.mark.parametrize("crossing", ["first", "second"])
async def test_calls_settling_at_once_write_one_line_per_cap_crossed(
    any_store: StoreUnderTest, policy: Policy, crossing: str
) -> None:
    """Two processes' calls, both reserved within the deepseek day cap and each billed
    past it; the second settles after the first's settlement and before the first's
    lines. The cap is crossed by the ``first`` settlement (then neither said it: each
    found it crossed before its own), or by the ``second`` (then both said it). Now the
    one whose settlement carried the spend past says it, once."""
    est, billed = _prices(policy)
    cap = billed / 2 if crossing == "first" else billed * 1.5
    assert 2 * est <= cap  # (both reservations fit)
    tight = _deepseek_capped(policy, round(cap, 9))
    go = asyncio.Event()
    a = await Instance.on(any_store, tight, "s1", Billing())
    b = await Instance.on(any_store, tight, "s2", b_backend := Billing(hold=go))
    try:
        b_call = asyncio.create_task(b.ask())
        await b_backend.in_call.wait()  # b has reserved, and waits
        settle = a.ledger.settle

        async def then_b(rid: str, **kw: Any) -> Any:
            totals = await settle(rid, **kw)
            go.set()  # b answers, settles and writes its lines before a writes its own
            await b_call
            return totals

        a.ledger.settle = then_b
        await a.ask()
        a_lines, b_lines = await a.crossed(), await b.crossed()
        assert len(a_lines) + len(b_lines) == 1, (a_lines, b_lines)
        (line,) = a_lines if crossing == "first" else b_lines
        assert [c["cap"] for c in line.values["caps"]] == ["deepseek day"]
        assert line.values["cost_usd"] == pytest.approx(billed, abs=1e-9)
        assert line.detail.startswith("deepseek-reasoner cost more than its reservation: past")
        snap = await a.ledger.snapshot("s1")
        assert snap.per_provider["deepseek"].spent_usd == pytest.approx(2 * billed, abs=1e-8)
    finally:
        await a.close()
        await b.close()


async def test_calls_one_after_another_still_say_the_cap_once(
    any_store: StoreUnderTest, policy: Policy
) -> None:
    """The single process's behaviour as before: the call that crosses says it, with
    the cap and what was spent against it; the call after it does not again."""
    _, billed = _prices(policy)
    tight = _deepseek_capped(policy, round(billed * 1.5, 9))
    a = await Instance.on(any_store, tight, "s1", Billing())
    try:
        await a.ask()
        assert await a.crossed() == []
        await a.ask()
        (line,) = await a.crossed()
        assert line.kind == "budget" and line.to == "deepseek-reasoner"
        cap = line.values["caps"][0]
        assert cap["cap_usd"] == pytest.approx(billed * 1.5, abs=1e-9)
        assert cap["spent_usd"] == pytest.approx(2 * billed, abs=1e-9)
        assert line.detail.startswith(
            "deepseek-reasoner cost more than its reservation: past the deepseek day cap ($"
        )
        with contextlib.suppress(RouteFailed):  # (nothing left under the cap for it)
            await a.ask()
        assert len(await a.crossed()) == 1
    finally:
        await a.close()


async def test_a_call_settled_within_its_reservation_after_anothers_overrun_says_it(
    any_store: StoreUnderTest, policy: Policy
) -> None:
    """b's call overran while a's was in flight, leaving the spend just under the cap;
    a's settlement, within its own reservation, carried it past: a's line says so, and
    does not say a cost more than reserved (it did not)."""
    _, billed = _prices(policy)
    go = asyncio.Event()
    a_backend = Billing(hold=go)
    a_backend.usage = Usage(tokens_in=1, tokens_out=1)
    small = cost_usd(policy.model("deepseek-reasoner"), 1, 1)
    tight = _deepseek_capped(policy, round(billed + small / 2, 9))
    a = await Instance.on(any_store, tight, "s1", a_backend)
    b = await Instance.on(any_store, tight, "s2", Billing())
    try:
        a_call = asyncio.create_task(a.ask())
        await a_backend.in_call.wait()
        await b.ask()
        assert await b.crossed() == []
        go.set()
        await a_call
        (line,) = await a.crossed()
        assert [c["cap"] for c in line.values["caps"]] == ["deepseek day"]
        assert line.detail.startswith(
            "deepseek-reasoner was settled within its reservation, after calls that cost more"
        )
        call = next(ln for ln in await a.audit.lines(session="s1") if ln.kind == "call")
        assert "over_estimate" not in call.values
    finally:
        await a.close()
        await b.close()


class CutThenRefused(Billing):
    """deepseek-reasoner: its first try streams a long reply and is cut (billed), its
    retry is refused before any reply (not billed): the step fails."""

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        self.calls += 1
        if self.calls == 1:
            yield Delta(text="word " * 40_000)
            raise BackendError("server_error", "connection reset mid-reply")
        raise BackendError("auth", "key revoked")


async def test_a_failed_call_whose_cut_tries_cross_a_cap_says_it(
    tmp_path: Path, policy: Policy
) -> None:
    """A release charged with the tries cut short before it (billed past the
    reservations): any write past a reservation can cross a cap, and this one's line
    was never written."""
    store = StoreUnderTest("sqlite", str(tmp_path / "ledger.db"))
    est, _ = _prices(policy)
    tight = _deepseek_capped(policy, round(4 * est, 9))
    a = await Instance.on(store, tight, "s1", CutThenRefused())
    try:
        with contextlib.suppress(RouteFailed):  # (whether another model answered)
            await a.ask()
        (line,) = await a.crossed()
        assert [c["cap"] for c in line.values["caps"]] == ["deepseek day"]
        assert line.detail.startswith("deepseek-reasoner failed after tries cut short, billed")
        skip = next(ln for ln in await a.audit.lines(session="s1") if ln.kind == "skip")
        assert line.values["cost_usd"] == pytest.approx(skip.values["cut_short_cost_usd"])
    finally:
        await a.close()


@pytest.mark.parametrize("crossing", ["expiry", "late settlement"])
async def test_a_call_expired_meanwhile_and_settled_late_says_the_cap_once(
    any_store: StoreUnderTest, policy: Policy, crossing: str
) -> None:
    """a's call outlived its reservation: another process (b) charged it by expiry at its
    estimate, then a's settlement came, refused, and what the call cost past the estimate
    is a row apart. The cap is crossed by that row (a says so), or by the expiry itself,
    after a call b recorded meanwhile left the spend just under the cap (b's expiry says
    so: it said nothing); once either way, never by both."""
    est, billed = _prices(policy)
    cap = billed * 1.5 if crossing == "expiry" else billed / 2
    recorded = cap - est / 2 if crossing == "expiry" else 0.0
    assert est <= cap and (recorded + est > cap) == (crossing == "expiry")
    tight = _deepseek_capped(policy, round(cap, 9))
    go = asyncio.Event()
    a = await Instance.on(any_store, tight, "s1", a_backend := Billing(hold=go))
    b = await Instance.on(any_store, tight, "s2", Billing())
    b.ledger.on_expired = audit_expiries(b.audit)
    try:
        a_call = asyncio.create_task(a.ask())
        await a_backend.in_call.wait()  # a has reserved, and waits
        if recorded:
            await b.ledger.record_call(
                session="s2",
                role="implementer",
                model="deepseek-reasoner",
                provider="deepseek",
                tokens_in=1,
                tokens_out=1,
                latency_ms=1,
                cost_usd=recorded,
            )
        b_clock = b.router.clock
        assert isinstance(b_clock, ManualClock)
        await _past_ttl(any_store, b_clock)
        assert await b.ledger.expire_stale() == 1
        go.set()
        await a_call
        # (one audit file on SQLite; on the team store, each process's own chain)
        readers = [a.audit, b.audit] if any_store.shared else [a.audit]
        lines = [
            ln
            for audit in readers
            for ln in await audit.lines(session="s1")
            if "GR011_CAP_CROSSED" in ln.reason_codes
        ]
        (line,) = lines
        assert [c["cap"] for c in line.values["caps"]] == ["deepseek day"]
        if crossing == "expiry":
            assert line.values["cost_usd"] == pytest.approx(est, abs=1e-9)
            assert line.detail.startswith(
                "deepseek-reasoner was charged its reservation in full at its expiry: past"
            )
        else:
            assert line.values["cost_usd"] == pytest.approx(billed, abs=1e-9)
            assert line.detail.startswith("deepseek-reasoner cost more than its reservation")
        snap = await a.ledger.snapshot("s1")
        spent = snap.per_provider["deepseek"].spent_usd
        assert spent == pytest.approx(recorded + billed, abs=1e-8)
    finally:
        await a.close()
        await b.close()
