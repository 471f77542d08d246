"""GR-011 on the rare paths of a cloud call (an audit of where money went uncharged or a
cap was crossed): the retries' reservations let go only after the settlement, the tries
cut short charged when another process expired the reservation, a cancellation during
the settlement, a repair priced as itself, the schema counted, a try the provider opened
and then lost, and a reservation whose maker was cancelled. Real SQLite stores, scripted
backends (tests/integration/test_router_service.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.backends.base import BackendError, ChatRequest, ChatResult, Delta, Message, Usage
from app.policy.schema import Policy
from app.router.cost import cost_usd
from app.router.ledger import BudgetLedger
from app.router.ledger.errors import CapExceeded, LedgerError
from app.router.routed import request_tokens, schema_tokens
from app.router.structured import complete_structured, schema_parser
from app.router.types import Signals
from app.tokens import count_text
from tests.integration.test_router_service import (
    ALL_UP,
    Resolver,
    ScriptedBackend,
    make_router,
)

BIG = ChatRequest(messages=[Message(role="user", content="plan the fix")], max_tokens=50_000)
#: what a try cut short had streamed before the cut
WORDS = "word " * 40_000


def capped(policy: Policy, **caps: Any) -> Policy:
    return policy.model_copy(update={"budget": policy.budget.model_copy(update=caps)})


def estimate(policy: Policy, model: str, request: ChatRequest) -> float:
    """decide()'s estimate of ``request`` on ``model``: its prompt, its schema's note,
    its output cap and the model's thinking."""
    m = policy.model(model)
    thinking = policy.generation.reasoning_tokens(m.reasoning_effort)
    prompt = request_tokens(request) + schema_tokens(request)
    return cost_usd(m, prompt, request.max_tokens + thinking)


def answered(model: str, tokens_in: int, tokens_out: int) -> list[Delta | ChatResult]:
    """What a backend streams for an answer "ok" that the provider bills as ``tokens_in``
    and ``tokens_out``."""
    usage = Usage(tokens_in=tokens_in, tokens_out=tokens_out)
    return [
        Delta(text="ok"),
        ChatResult(text="ok", usage=usage, finish_reason="stop", model=model, latency_ms=1.0),
    ]


async def spent(ledger: BudgetLedger) -> float:
    return float((await ledger.report(session="s1"))["total"]["cost_usd"])


class CutThenAnswer(ScriptedBackend):
    """deepseek-reasoner: its first try streams ``WORDS`` and is cut; then it answers,
    using its whole output cap."""

    def __init__(self) -> None:
        super().__init__("deepseek-reasoner", "cloud", [])

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        self.calls += 1
        if self.calls == 1:
            yield Delta(text=WORDS)
            raise BackendError("server_error", "connection reset mid-reply")
        for item in answered(self.model_id, 30, request.max_tokens):
            yield item


async def test_the_retries_reservations_are_let_go_after_the_settlement(
    tmp_path: Path, policy: Policy
) -> None:
    """They were freed first, in the gap before the settlement charged both tries: another
    process reserved in it, and the day was charged 40 % past its cap."""
    est = estimate(policy, "deepseek-reasoner", BIG)
    tight = capped(policy, day_usd=round(2 * est + 1e-6, 6), session_usd=100.0)
    resolver = Resolver(up=ALL_UP)
    resolver.made[("deepseek-reasoner", "cloud")] = CutThenAnswer()
    router, audit, ledger = await make_router(tmp_path, tight, resolver)
    other = await BudgetLedger.open(tmp_path / "ledger.db", tight.budget, clock=router.clock)
    order: list[str] = []
    refused: list[BaseException] = []
    settle, release = ledger.settle, ledger.release

    async def settling(rid: str, **kw: Any) -> None:
        order.append("settle")
        await settle(rid, **kw)

    async def releasing(rid: str, outcome: str = "failed", **kw: Any) -> None:
        order.append(f"release:{outcome}")
        await release(rid, outcome, **kw)
        if outcome == "retry":  # another process reserves the moment it is let go
            try:
                await other.reserve(
                    session="s2",
                    provider="deepseek",
                    role="implementer",
                    model="deepseek-reasoner",
                    amount_usd=est,
                )
            except CapExceeded as exc:
                refused.append(exc)

    ledger.settle, ledger.release = settling, releasing  # type: ignore[method-assign]
    try:
        result = await router.complete("implementer", BIG, Signals(failed_loops=2))
        assert result.model == "deepseek-reasoner"
        assert order == ["settle", "release:retry"]
        assert refused, "the other process reserved against a settlement not yet made"
        assert await spent(other) <= tight.budget.day_usd
    finally:
        await audit.close()
        await ledger.close()
        await other.close()


class ExpiresMeanwhile(ScriptedBackend):
    """deepseek-reasoner: both tries stream ``WORDS`` and are cut; during the second the
    first reservation passes its TTL and another request's ledger expires it (charged at
    its estimate). ``hang``: the second try then waits, to be cancelled."""

    def __init__(self, router: Any, ledger: BudgetLedger, hang: bool) -> None:
        super().__init__("deepseek-reasoner", "cloud", [])
        self.router, self.ledger, self.hang = router, ledger, hang
        self.expired = asyncio.Event()

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        self.calls += 1
        yield Delta(text=WORDS)
        if self.calls == 1:
            self.router.clock.advance(600)
            raise BackendError("server_error", "reset mid-reply")
        self.router.clock.advance(400)  # the first reservation (TTL 900 s) is past it
        assert await self.ledger.expire_stale() == 1
        self.expired.set()
        if self.hang:
            await asyncio.Event().wait()
        raise BackendError("server_error", "reset mid-reply again")


@pytest.mark.parametrize("how", ["cancelled", "failed"])
async def test_the_tries_cut_short_are_charged_when_the_reservation_expired_meanwhile(
    tmp_path: Path, policy: Policy, how: str
) -> None:
    """Expired by another process, the reservation stands at its estimate: the cancelled
    path dropped what the tries cut short cost besides, and the failed path raised
    instead of moving down the chain (a charge lost, and no skip line)."""
    est = estimate(policy, "deepseek-reasoner", BIG)
    cut = cost_usd(policy.model("deepseek-reasoner"), request_tokens(BIG), count_text(WORDS))
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    backend = ExpiresMeanwhile(router, ledger, hang=how == "cancelled")
    resolver.made[("deepseek-reasoner", "cloud")] = backend
    try:
        task = asyncio.create_task(router.complete("implementer", BIG, Signals(failed_loops=2)))
        if how == "cancelled":
            await backend.expired.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # the estimate (the expiry's charge) and the try cut short before it
            assert await spent(ledger) == pytest.approx(est + cut, abs=1e-9)
            budget = [ln for ln in await audit.lines(session="s1") if ln.kind == "budget"]
            assert budget[-1].values["cut_short_cost_usd"] == round(cut, 9)
            # the line's figures add up to the ledger's charge, to the nano-dollar (the
            # estimate was rounded to six places: the audit could not rebuild the ledger)
            said = budget[-1].values["est_cost_usd"] + budget[-1].values["cut_short_cost_usd"]
            assert said == pytest.approx(await spent(ledger), abs=1e-9)
        else:
            result = await task  # moved down the chain: deepseek-chat served
            assert result.model == "deepseek-chat"
            skip = next(
                ln
                for ln in await audit.lines(session="s1")
                if ln.kind == "skip" and ln.to == "deepseek-reasoner"
            )
            assert skip.values["tries_cut_short"] == 2
            # both tries cut short (more than the estimate the expiry charged), and the call
            assert await spent(ledger) == pytest.approx(2 * cut + result.cost_usd, abs=1e-9)
        assert (await ledger.snapshot("s1")).reserved_usd == 0
    finally:
        await audit.close()
        await ledger.close()


class Overrun(ScriptedBackend):
    """gpt-5.1-high: answers with a provider's usage far past what was counted; before it
    answers, another coroutine takes the ledger's lock for a while (a report, a fold), so
    the settlement waits for it."""

    def __init__(self, ledger: BudgetLedger) -> None:
        super().__init__("gpt-5.1-high", "cloud", [])
        self.ledger = ledger

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        async def busy() -> None:
            async with self.ledger._lock:
                await asyncio.sleep(0.3)

        self.busy = asyncio.get_running_loop().create_task(busy())
        await asyncio.sleep(0)
        for item in answered(self.model_id, 200_000, 4000):
            yield item


async def test_a_call_cancelled_while_its_settlement_waits_is_settled_and_written(
    tmp_path: Path, policy: Policy
) -> None:
    """The client went away while the settlement waited for the ledger: the reservation
    was left to expire at its estimate (the provider's bill past it lost) and the call
    had no line. Now what is left of closing the call is done, and the cancellation goes
    on."""
    req = ChatRequest(messages=[Message(role="user", content="design it")], max_tokens=4096)
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    backend = resolver.made[("gpt-5.1-high", "cloud")] = Overrun(ledger)
    settling = asyncio.Event()
    settle = ledger.settle

    async def waits(rid: str, **kw: Any) -> None:
        settling.set()
        await settle(rid, **kw)  # (the lock is another's for 0.3 s)

    ledger.settle = waits  # type: ignore[method-assign]
    try:
        task = asyncio.create_task(router.complete("architect", req, Signals(confidence=0.5)))
        await settling.wait()
        await asyncio.sleep(0)  # (the settlement is waiting for the lock)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await backend.busy  # (the task's cancel was raised once the shielded rest ended)
        billed = cost_usd(policy.model("gpt-5.1-high"), 200_000, 4000)
        assert await spent(ledger) == pytest.approx(billed, abs=1e-9)
        lines = await audit.lines(session="s1")
        call = next(ln for ln in lines if ln.kind == "call")
        assert call.values["over_estimate"] is True
        assert call.values["cost_usd"] == pytest.approx(billed, abs=1e-9)
        assert (await ledger.snapshot("s1")).reserved_usd == 0
    finally:
        await audit.close()
        await ledger.close()


async def test_a_call_that_cost_past_a_cap_is_flagged_and_the_cap_named(
    tmp_path: Path, policy: Policy
) -> None:
    """A provider's usage past the estimate is charged in full (the reservation held the
    estimate, not the bill): the call line says it cost more than reserved, and a budget
    line names each cap it carried past."""
    req = ChatRequest(messages=[Message(role="user", content="design it")], max_tokens=4096)
    est = estimate(policy, "gpt-5.1-high", req)
    tight = capped(policy, session_usd=round(est * 1.2, 6))
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, tight, resolver)
    resolver.made[("gpt-5.1-high", "cloud")] = backend = Overrun(ledger)
    try:
        await router.complete("architect", req, Signals(confidence=0.5))
        await backend.busy
        lines = await audit.lines(session="s1")
        call = next(ln for ln in lines if ln.kind == "call")
        assert call.values["over_estimate"] is True
        assert call.values["reserved_usd"] == pytest.approx(est, abs=1e-9)
        crossed = next(ln for ln in lines if ln.kind == "budget")
        assert crossed.reason_codes == ["GR011_CAP_CROSSED"]
        assert [c["cap"] for c in crossed.values["caps"]] == ["session"]
        assert "session cap" in crossed.detail
    finally:
        await audit.close()
        await ledger.close()


async def test_a_call_within_its_estimate_says_nothing_more(tmp_path: Path, policy: Policy) -> None:
    """The usual call costs less than reserved: no flag, no budget line, no read."""
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    try:
        await router.complete("implementer", BIG, Signals(failed_loops=2))
        lines = await audit.lines(session="s1")
        call = next(ln for ln in lines if ln.kind == "call")
        assert "over_estimate" not in call.values
        assert not [ln for ln in lines if ln.kind == "budget"]
    finally:
        await audit.close()
        await ledger.close()


SCHEMA = {
    "type": "object",
    "properties": {f"field_{i}": {"type": "string", "description": "x" * 40} for i in range(40)},
    "required": ["field_0"],
}


async def test_the_schema_a_cloud_model_is_sent_is_counted_in_its_estimate(
    tmp_path: Path, policy: Policy
) -> None:
    """Every cloud provider is sent the schema as a message of its own; the estimate left
    it out (a 300-field schema priced at 11 tokens and sent as 16k). A local runtime takes
    it as a grammar: the prompt's count, its window checks, are the messages' alone."""
    bare = ChatRequest(messages=[Message(role="user", content="plan the fix")], max_tokens=64)
    with_schema = bare.model_copy(update={"json_schema": SCHEMA})
    assert request_tokens(with_schema) == request_tokens(bare)
    extra = schema_tokens(with_schema)
    assert extra > count_text(str(SCHEMA)) // 2 and schema_tokens(bare) == 0
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    try:
        for request in (bare, with_schema):
            await router.complete("implementer", request, Signals(failed_loops=2))
        lines = await audit.lines(session="s1")
        first, second = (ln.values["est_cost_usd"] for ln in lines if ln.kind == "escalation")
        price_in = policy.model("deepseek-reasoner").price_in_usd_per_mtok
        assert second - first == pytest.approx(extra * price_in / 1e6, rel=1e-6)
    finally:
        await audit.close()
        await ledger.close()


class TruncatedThenRepaired(ScriptedBackend):
    """deepseek-reasoner: its first reply is cut at max_tokens (no JSON), the repair
    answers; both use their whole output cap."""

    def __init__(self) -> None:
        super().__init__("deepseek-reasoner", "cloud", [])

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        self.calls += 1
        self.requests.append(request)
        text = '{"field_0": "' + "x" * 300 if self.calls == 1 else '{"field_0": "y"}'
        yield Delta(text=text)
        yield ChatResult(
            text=text,
            finish_reason="length" if self.calls == 1 else "stop",
            model=self.model_id,
            usage=Usage(tokens_in=request_tokens(request), tokens_out=request.max_tokens),
            latency_ms=1.0,
        )


async def test_a_cloud_repair_is_reserved_for_its_own_request(
    tmp_path: Path, policy: Policy
) -> None:
    """A structured repair carries the rejected reply and, after a cut-off, a larger
    output cap; it was reserved at the first request's estimate and settled at twice it,
    past the day's cap. Priced as itself, it is stopped before anyone is asked."""
    req = BIG.model_copy(update={"json_schema": SCHEMA})
    est = estimate(policy, "deepseek-reasoner", req)
    tight = capped(policy, day_usd=round(2 * est + 1e-6, 6), session_usd=100.0)
    resolver = Resolver(up=ALL_UP)
    resolver.made[("deepseek-reasoner", "cloud")] = backend = TruncatedThenRepaired()
    router, audit, ledger = await make_router(tmp_path, tight, resolver)
    try:
        answer = await complete_structured(
            router, "implementer", req, schema_parser(SCHEMA), Signals(failed_loops=2)
        )
        assert answer.value is None  # (the repair was refused: no valid reply)
        lines = await audit.lines(session="s1")
        estimates = [ln.values["est_cost_usd"] for ln in lines if ln.kind == "escalation"]
        assert len(estimates) == 2 and estimates[1] > 1.9 * estimates[0]
        assert [ln.kind for ln in lines][-1] == "budget_stop"
        assert backend.calls == 1  # the repair was not sent
        assert await spent(ledger) <= tight.budget.day_usd
    finally:
        await audit.close()
        await ledger.close()


class TimesOutThinking(ScriptedBackend):
    """gpt-5.1-high: its first try's stream opens and then times out before any text
    (the model was thinking, unseen); the second answers."""

    def __init__(self) -> None:
        super().__init__("gpt-5.1-high", "cloud", [])

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        self.calls += 1
        if self.calls == 1:
            raise BackendError("timeout", "timed out mid-stream", started=True)
        for item in answered(self.model_id, 1000, 3000):
            yield item


async def test_a_try_the_provider_opened_and_then_lost_is_billed(
    tmp_path: Path, policy: Policy
) -> None:
    """A reasoning model's try that timed out while it thought was retried under the same
    reservation and charged nothing; one that had shown a single character first was
    charged its estimate. Either way the provider bills its thinking: a try that timed
    out after the provider took it is settled at its estimate, on a row of its own, and
    its retry reserved for."""
    req = ChatRequest(messages=[Message(role="user", content="design it")], max_tokens=4096)
    est = estimate(policy, "gpt-5.1-high", req)
    resolver = Resolver(up=ALL_UP)
    resolver.made[("gpt-5.1-high", "cloud")] = TimesOutThinking()
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    try:
        result = await router.complete("architect", req, Signals(confidence=0.5))
        lines = await audit.lines(session="s1")
        call = next(ln for ln in lines if ln.kind == "call")
        assert call.values["tries_timed_out"] == 1 and "tries_cut_short" not in call.values
        (timed,) = [ln for ln in lines if ln.kind == "budget"]
        assert timed.reason_codes == ["CALL_TIMED_OUT", "SETTLED_AT_ESTIMATE"]
        assert timed.values["cost_usd"] == pytest.approx(est, abs=1e-9)
        # the try that timed out at its estimate, and the call that answered
        assert result.cost_usd == pytest.approx(
            cost_usd(policy.model("gpt-5.1-high"), 1000, 3000), abs=1e-9
        )
        assert await spent(ledger) == pytest.approx(est + result.cost_usd, abs=1e-9)
        assert (await ledger.snapshot("s1")).reserved_usd == 0
    finally:
        await audit.close()
        await ledger.close()


async def test_a_reservation_whose_maker_was_cancelled_is_let_go(
    tmp_path: Path, policy: Policy
) -> None:
    """The ledger finishes a spool write once begun, and then raises the cancellation:
    the reservation it made reached nobody, and held its amount until its expiry
    charged it in full, for a call never made."""
    ledger = await BudgetLedger.open(tmp_path / "ledger.db", policy.budget)
    other = await BudgetLedger.open(tmp_path / "ledger.db", policy.budget)
    try:
        sp = other._spooled
        assert sp is not None
        sp.appends.acquire(blocking=True)  # another process holds the spool's lock
        task = asyncio.create_task(
            ledger.reserve(
                session="s1", provider="openai", role="architect", model="gpt-5.1", amount_usd=0.5
            )
        )
        for _ in range(500):  # until it waits for the lock, on a thread
            if ledger._lock.locked():
                break
            await asyncio.sleep(0.01)
        assert ledger._lock.locked()
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.sleep(0.1)
        sp.appends.release()
        with pytest.raises(asyncio.CancelledError):
            await task
        snap = await ledger.snapshot("s1")
        assert snap.reserved_usd == 0 and snap.per_session.spent_usd == 0
    finally:
        await ledger.close()
        await other.close()


async def test_a_failed_settlement_still_lets_the_retries_reservations_go(
    tmp_path: Path, policy: Policy
) -> None:
    """The settlement raised (a store that did not answer): the retries' reservations
    were held, renewed for as long as the process lived and then charged in full, for
    tries already paid (a review)."""
    resolver = Resolver(up=ALL_UP)
    resolver.made[("deepseek-reasoner", "cloud")] = CutThenAnswer()
    router, audit, ledger = await make_router(tmp_path, policy, resolver)

    async def down(rid: str, **kw: Any) -> None:
        raise LedgerError("the budget ledger did not answer")

    ledger.settle = down  # type: ignore[method-assign]
    try:
        with pytest.raises(LedgerError):
            await router.complete("implementer", BIG, Signals(failed_loops=2))
        assert not router.in_flight._since  # nothing renewed any more
        snap = await ledger.snapshot("s1")
        # the call's own reservation stands (its settlement is what failed), alone
        assert snap.reserved_usd == pytest.approx(estimate(policy, "deepseek-reasoner", BIG))
    finally:
        await audit.close()
        await ledger.close()


async def test_a_call_cancelled_while_its_line_waits_still_has_its_line(
    tmp_path: Path, policy: Policy
) -> None:
    """Settled, then cancelled while the call line waited for the audit's lock (another
    request's line, a fold): the resumed close skipped the line, as begun (a review). An
    append, once called, ends before a cancel is raised."""
    req = ChatRequest(messages=[Message(role="user", content="design it")], max_tokens=4096)
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    settled = asyncio.Event()
    settle = ledger.settle
    held: list[asyncio.Task[None]] = []

    async def busy() -> None:
        async with audit._lock:
            await asyncio.sleep(0.3)

    async def settling(rid: str, **kw: Any) -> None:
        await settle(rid, **kw)
        held.append(asyncio.get_running_loop().create_task(busy()))
        await asyncio.sleep(0)  # (the lock is another's now)
        settled.set()

    ledger.settle = settling  # type: ignore[method-assign]
    try:
        task = asyncio.create_task(router.complete("architect", req, Signals(confidence=0.5)))
        await settled.wait()
        await asyncio.sleep(0)  # the call line waits for the lock
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await held[0]
        kinds = [ln.kind for ln in await audit.lines(session="s1")]
        assert kinds[-1] == "call" and kinds.count("call") == 1
    finally:
        await audit.close()
        await ledger.close()


class ExpiredOverrun(ScriptedBackend):
    """gpt-5.1-high: its reservation expires while it answers (another process charges
    the estimate), and the provider's usage is far past it."""

    def __init__(self, router: Any, ledger: BudgetLedger) -> None:
        super().__init__("gpt-5.1-high", "cloud", [])
        self.router, self.ledger = router, ledger

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        self.router.clock.advance(1000)
        assert await self.ledger.expire_stale() == 1
        for item in answered(self.model_id, 200_000, 4000):
            yield item


async def test_the_row_past_an_expired_estimate_is_written_once_whatever_cancels(
    tmp_path: Path, policy: Policy
) -> None:
    """The row for what an expired call cost past its estimate was written, then the
    cancel raised (a write ends once begun), and the resumed close wrote it again: the
    excess charged twice (a review)."""
    req = ChatRequest(messages=[Message(role="user", content="design it")], max_tokens=4096)
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    resolver.made[("gpt-5.1-high", "cloud")] = ExpiredOverrun(router, ledger)
    recorded = asyncio.Event()
    record = ledger.record_call

    async def recording(**kw: Any) -> None:
        await record(**kw)
        recorded.set()
        await asyncio.sleep(0.2)  # (written; the cancel comes now)

    ledger.record_call = recording  # type: ignore[method-assign]
    try:
        task = asyncio.create_task(router.complete("architect", req, Signals(confidence=0.5)))
        await recorded.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        billed = cost_usd(policy.model("gpt-5.1-high"), 200_000, 4000)
        assert await spent(ledger) == pytest.approx(billed, abs=1e-9)
    finally:
        await audit.close()
        await ledger.close()


async def test_a_retry_release_the_store_refuses_does_not_hold_the_others(
    tmp_path: Path, policy: Policy
) -> None:
    """The first retry's release raised: the others were neither released nor taken out
    of the renewals (a review). Each is let go of, and the call's answer stands."""
    resolver = Resolver(up=ALL_UP)
    resolver.made[("deepseek-reasoner", "cloud")] = CutShortTwice()
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    release = ledger.release
    refused: list[str] = []

    async def releasing(rid: str, outcome: str = "failed", **kw: Any) -> None:
        if outcome == "retry" and not refused:
            refused.append(rid)
            raise LedgerError("the budget ledger did not answer")
        await release(rid, outcome, **kw)

    ledger.release = releasing  # type: ignore[method-assign]
    try:
        result = await router.complete("implementer", BIG, Signals(failed_loops=2))
        assert result.model == "deepseek-reasoner" and len(refused) == 1
        assert not router.in_flight._since
        # the one refused stands; the other was let go
        est = estimate(policy, "deepseek-reasoner", BIG)
        assert (await ledger.snapshot("s1")).reserved_usd == pytest.approx(est)
    finally:
        await audit.close()
        await ledger.close()


class CutShortTwice(CutThenAnswer):
    """deepseek-reasoner: two tries cut short (two retries reserved for), then it answers."""

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        if self.calls < 2:
            self.calls += 1
            yield Delta(text="a few words ")
            # (an error event mid-stream: rate_limited is retried twice, server_error once)
            raise BackendError("rate_limited", "rate limited mid-reply")
        self.calls += 1
        for item in answered(self.model_id, 30, 100):
            yield item


async def test_a_call_within_its_reservations_is_not_flagged_for_its_cut_tries(
    tmp_path: Path, policy: Policy
) -> None:
    """A call's tries cut short were each reserved for: its cost past its own estimate
    (its tries' included) is not past what was reserved (every such call was flagged and
    read the ledger twice: a review)."""
    resolver = Resolver(up=ALL_UP)
    resolver.made[("deepseek-reasoner", "cloud")] = CutThenAnswer()
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    try:
        await router.complete("implementer", BIG, Signals(failed_loops=2))
        call = next(ln for ln in await audit.lines(session="s1") if ln.kind == "call")
        assert call.values["cost_usd"] > estimate(policy, "deepseek-reasoner", BIG)
        assert "over_estimate" not in call.values
    finally:
        await audit.close()
        await ledger.close()
