"""What leaves the machine is masked: every cloud call's messages lose their secrets
before the backend sees them, on every try, and the call (or skip) line says how many;
a local runtime gets the text as it is."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from app.audit.log import AuditLog
from app.audit.masking import REDACTED
from app.backends.base import BackendError, ChatRequest, ChatResult, Delta, Message, Usage
from app.clock import ManualClock
from app.policy.schema import Policy
from app.router.calling import mask_request
from app.router.ledger.budget_ledger import BudgetLedger
from app.router.routed import RoutedResult
from app.router.types import Signals
from tests.integration.test_router_service import ALL_UP, Resolver, make_router
from tests.unit.test_remembered import digests_counted

AWS_ID = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch) -> str:
    value = f"canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("DEEPSEEK_API_KEY", value)
    return value


def brief_request(canary: str) -> ChatRequest:
    return ChatRequest(
        messages=[
            Message(role="system", content="You are the Architect."),
            Message(
                role="user",
                content=(
                    "## Code context\n```python\n"
                    f'DEEPSEEK_KEY = "{canary}"\nAWS_ID = "{AWS_ID}"\n```\n'
                    f"## Test output\nAPP_SECRET=s3cr3t-value-42\nsaw {canary}\n"
                ),
            ),
        ],
        max_tokens=64,
    )


class HeldCloud:
    """Every cloud model of a resolver as one backend whose call waits until the test
    sets ``answer`` (never: it waits to be cancelled), then answers with ``usage``."""

    def __init__(self, resolver: Resolver, usage: tuple[int, int] = (10, 5)) -> None:
        self.entered, self.answer, self.usage = asyncio.Event(), asyncio.Event(), usage
        plain = resolver.backend
        resolver.backend = lambda m, rt: self._Call(self, m) if rt == "cloud" else plain(m, rt)  # type: ignore[method-assign]

    class _Call:
        def __init__(self, held: HeldCloud, model_id: str) -> None:
            self.held, self.model_id, self.runtime = held, model_id, "cloud"

        async def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
            held = self.held
            held.entered.set()
            await held.answer.wait()
            yield ChatResult(
                text="a plan", usage=Usage(tokens_in=held.usage[0], tokens_out=held.usage[1]),
                finish_reason="stop", model=self.model_id,
            )  # fmt: skip


@asynccontextmanager
async def expired_mid_call(
    tmp_path: Path, policy: Policy, canary: str, usage: tuple[int, int] = (10, 5)
) -> AsyncIterator[tuple[HeldCloud, asyncio.Task[RoutedResult], AuditLog, BudgetLedger]]:
    """An escalated call in flight whose reservation another process, its clock 20
    minutes ahead, has just charged by expiry: the held backend, the call, the stores."""
    resolver = Resolver(up=ALL_UP)
    held = HeldCloud(resolver, usage)
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    ahead = ManualClock(ledger._clock.now() + timedelta(minutes=20))  # type: ignore[attr-defined]
    other = await BudgetLedger.open(tmp_path / "ledger.db", policy.budget, clock=ahead)
    try:
        call = asyncio.create_task(
            router.complete("architect", brief_request(canary), Signals(confidence=0.5))
        )
        await asyncio.wait_for(held.entered.wait(), 10)
        assert await other.expire_stale() == 1
        yield held, call, audit, ledger
    finally:
        await other.close()
        await audit.close()
        await ledger.close()


def test_mask_request_counts_and_leaves_a_clean_request_as_it_is(canary: str) -> None:
    request = brief_request(canary)
    masked, count = mask_request(request)
    assert count == 4
    sent = "".join(m.content for m in masked.messages)
    assert canary not in sent and AWS_ID not in sent and "s3cr3t-value-42" not in sent
    assert sent.count(REDACTED) == 4
    assert masked.max_tokens == request.max_tokens
    assert canary in request.messages[1].content  # the caller's request is not changed
    clean = ChatRequest(messages=[Message(role="user", content="plan the fix")])
    assert mask_request(clean) == (clean, 0)


async def test_a_cloud_call_is_masked_and_the_count_audited(
    tmp_path: Path, policy: Policy, canary: str
) -> None:
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    request = brief_request(canary)
    result = await router.complete("architect", request, Signals(confidence=0.5))
    assert result.escalated
    sent = resolver.sent((result.model, "cloud"))
    assert len(sent) == 1
    body = sent[0].model_dump_json()
    assert canary not in body and AWS_ID not in body and "s3cr3t-value-42" not in body
    assert REDACTED in body
    call = result.audit[-1]
    assert call.kind == "call" and call.values["secrets_masked"] == 4
    # the escalation and the call name the same input (the caller's request)
    escalation = next(line for line in result.audit if line.kind == "escalation")
    assert call.provenance["input_hash"] == escalation.provenance["input_hash"]
    await audit.close()
    await ledger.close()


async def test_a_routed_request_digests_each_long_text_once(
    tmp_path: Path, policy: Policy, canary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The router's count, the escalation's hash and the call's masking share the
    request's digests: a long text is digested once (a coding agent's conversation comes
    again with every turn), and what leaves is masked all the same."""
    made = digests_counted(monkeypatch)
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    request = brief_request(canary)
    long = request.messages[1].content + "## Plan\n" + "- read the parser, then its test\n" * 8
    request = request.model_copy(
        update={"messages": [request.messages[0], Message(role="user", content=long)]}
    )
    try:
        result = await router.complete("architect", request, Signals(confidence=0.5))
    finally:
        await audit.close()
        await ledger.close()
    assert result.escalated and made == [long.encode()]
    assert canary not in resolver.sent((result.model, "cloud"))[0].model_dump_json()


async def test_every_try_and_a_failed_step_send_the_masked_request(
    tmp_path: Path, policy: Policy, canary: str
) -> None:
    resolver = Resolver(up=ALL_UP)
    resolver.scripts[("deepseek-reasoner", "cloud")] = [
        BackendError("server_error", "503", status=503),
        BackendError("server_error", "503", status=503),
    ]
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    result = await router.complete("implementer", brief_request(canary), Signals(failed_loops=2))
    assert result.model == "deepseek-chat"
    tries = resolver.sent(("deepseek-reasoner", "cloud")) + resolver.sent(
        ("deepseek-chat", "cloud")
    )
    assert len(tries) == 3
    assert not [r for r in tries if canary in r.model_dump_json()]
    lines = await audit.lines(session="s1")
    skip = next(line for line in lines if line.kind == "skip")
    call = next(line for line in lines if line.kind == "call")
    assert skip.values["secrets_masked"] == call.values["secrets_masked"] == 4
    await audit.close()
    await ledger.close()


async def test_a_local_runtime_gets_the_text_as_it_is(
    tmp_path: Path, policy: Policy, canary: str
) -> None:
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    result = await router.complete("architect", brief_request(canary))
    assert not result.escalated
    (sent,) = resolver.sent((result.model, result.runtime))
    assert canary in sent.messages[1].content and AWS_ID in sent.messages[1].content
    assert "secrets_masked" not in result.audit[-1].values
    await audit.close()
    await ledger.close()


def test_the_clients_tools_schema_stop_strings_and_headers_are_masked_too(canary: str) -> None:
    """On the gateway these are the client's: a key in a tool's description, a schema or
    a stop string reached three providers (an audit found it)."""
    from app.backends.base import ToolSpec

    request = ChatRequest(
        messages=[Message(role="user", content="hello")],
        tools=[
            ToolSpec(
                name="deploy",
                description=f"the deepseek key is {canary}",
                parameters={
                    "type": "object",
                    "properties": {"env": {"type": "string", "description": f"{canary}"}},
                },
            ),
            ToolSpec(name="clean", description="nothing in here"),
        ],
        json_schema={"type": "object", "description": f"use {canary}"},
        stop=[canary, "END"],
        passthrough_headers={"anthropic-beta": f"x-{canary}"},
    )
    masked, count = mask_request(request)
    assert count == 5
    assert canary not in masked.model_dump_json()
    assert masked.tools[0].description == f"the deepseek key is {REDACTED}"
    assert masked.tools[0].parameters["properties"]["env"]["description"] == REDACTED
    assert masked.tools[1] == request.tools[1] and masked.stop[1] == "END"
    assert masked.json_schema == {"type": "object", "description": f"use {REDACTED}"}
    assert masked.messages == request.messages
    # nothing to mask: the very request back
    clean = request.model_copy(
        update={"tools": [request.tools[1]], "json_schema": None, "stop": ["END"]}
    ).model_copy(update={"passthrough_headers": {}})
    assert mask_request(clean) == (clean, 0)


def test_a_key_in_a_calls_id_or_a_tools_name_is_replaced_whole_and_still_pairs(
    canary: str,
) -> None:
    """A client's ids and names are its own text: a key in a call's id reached two
    providers as it was (an audit). Each is replaced by one id the protocols take, the
    same wherever it stands: the call, its result and the tool it names still pair."""
    from app.backends.base import ToolCall, ToolSpec

    request = ChatRequest(
        messages=[
            Message(role="user", content="deploy it"),
            Message(
                role="assistant",
                tool_calls=[
                    ToolCall(id=f"call_{canary}", name=f"t_{canary}", arguments="{}"),
                    ToolCall(id="call_plain", name="clean", arguments="{}"),
                ],
            ),
            Message(role="tool", tool_call_id=f"call_{canary}", content="done"),
            Message(role="tool", tool_call_id="call_plain", content="done"),
        ],
        tools=[ToolSpec(name=f"t_{canary}"), ToolSpec(name="clean")],
        tool_choice=f"t_{canary}",
    )
    masked, count = mask_request(request)
    assert canary not in masked.model_dump_json()
    call, plain = masked.messages[1].tool_calls
    assert re.fullmatch(r"redacted_[0-9a-f]{24}", call.id) and plain.id == "call_plain"
    assert masked.messages[2].tool_call_id == call.id != call.name
    assert masked.tools[0].name == call.name == masked.tool_choice
    assert masked.messages[3] == request.messages[3] and masked.tools[1].name == "clean"
    assert count == 5
    # the same values masked again (the next turn, a retry): the same ids
    assert mask_request(request)[0] == masked


async def test_a_cloud_call_that_outlasts_the_ttl_keeps_its_reservation(
    tmp_path: Path, policy: Policy, canary: str
) -> None:
    """Another process expired a call that outlasted the TTL while this one waited for
    it; the settlement was refused and the billed answer thrown away (an audit, on the
    team store). The cloud step renews the reservation while its call is in flight."""
    budget = policy.budget.model_copy(update={"reservation_ttl_s": 0.06})
    short = policy.model_copy(update={"budget": budget})
    resolver = Resolver(up=ALL_UP)
    held = HeldCloud(resolver)
    router, audit, ledger = await make_router(tmp_path, short, resolver)
    clock = ledger._clock
    other = await BudgetLedger.open(tmp_path / "ledger.db", budget, clock=clock)
    try:
        call = asyncio.create_task(
            router.complete("architect", brief_request(canary), Signals(confidence=0.5))
        )
        await asyncio.wait_for(held.entered.wait(), 10)
        clock.advance(0.04)  # type: ignore[attr-defined]
        await asyncio.sleep(0.1)  # a renewal is due every 0.02 s of the loop's time
        clock.advance(0.04)  # type: ignore[attr-defined]  # past the first TTL
        assert await other.expire_stale() == 0
        held.answer.set()
        result = await asyncio.wait_for(call, 10)
        assert result.escalated and result.audit[-1].kind == "call"
        lines = await audit.lines(session="s1")
        assert not [ln for ln in lines if "RESERVATION_EXPIRED" in ln.reason_codes]
    finally:
        await other.close()
        await audit.close()
        await ledger.close()


@pytest.mark.parametrize("usage", [(10, 5), (400_000, 100_000)], ids=["within", "past"])
async def test_a_call_expired_by_a_clock_ahead_still_gets_its_call_line(
    tmp_path: Path, policy: Policy, canary: str, usage: tuple[int, int]
) -> None:
    """Another process whose clock runs 20 minutes ahead charged the reservation by
    expiry while the call was in flight: the settlement was refused, the answer (streamed
    whole) ended in an error and no call line was written (a chaos audit). The charge
    stands at the estimate; the call line says so and the answer is given."""
    async with expired_mid_call(tmp_path, policy, canary, usage) as (held, call, audit, ledger):
        held.answer.set()
        result = await asyncio.wait_for(call, 10)
        assert result.escalated and result.text == "a plan"
        (escalation,) = [ln for ln in await audit.lines(session="s1") if ln.kind == "escalation"]
        line = result.audit[-1]
        assert line.kind == "call" and line.values["reservation_expired"] is True
        # at the estimate when it cost no more; the rest recorded apart when it did
        assert line.values.get("settled_at_estimate", False) is (usage[0] <= 10_000)
        # charged at the estimate by the expiry, and what it cost past it besides: the
        # line and the ledger say the larger of the two
        est = escalation.values["est_cost_usd"]
        assert (line.values["cost_usd"] > est) == (usage[0] > 10_000)
        assert line.values["cost_usd"] >= est
        total = (await ledger.report(session="s1"))["total"]["cost_usd"]
        assert total == pytest.approx(line.values["cost_usd"])


async def test_a_call_cancelled_after_another_process_expired_it_says_so(
    tmp_path: Path, policy: Policy, canary: str
) -> None:
    """The cancel's settlement met the expiry's charge: ReservationClosed replaced the
    cancel and no closing line was written (a review). The cancel goes on, said."""
    async with expired_mid_call(tmp_path, policy, canary) as (_, call, audit, _ledger):
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        lines = await audit.lines(session="s1")
        assert [ln.reason_codes for ln in lines if ln.kind == "budget"][-1] == [
            "CALL_CANCELLED",
            "SETTLED_AT_ESTIMATE",
        ]


async def test_an_approval_names_who_waits_on_the_run(
    tmp_path: Path, policy: Policy, canary: str
) -> None:
    """A gateway request's run names its client (router.run_origins): the approval the
    human is asked carries it, and a run nobody named carries none."""
    from app.router.approvals import ApprovalDecision, ApprovalRequest

    asked: list[ApprovalRequest] = []

    class Recording:
        async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
            asked.append(req)
            return ApprovalDecision(decision="allow_once", decided_by="test")

    router, audit, ledger = await make_router(
        tmp_path, policy, Resolver(up=ALL_UP), decider=Recording()
    )
    try:
        router.run_origins["gw-1"] = "codex_exec/0.171.0"
        for run in ("gw-1", "r-2"):
            await router.complete(
                "architect", brief_request(canary), Signals(confidence=0.5), run=run
            )
        assert [(r.run, r.origin) for r in asked] == [
            ("gw-1", "codex_exec/0.171.0"),
            ("r-2", ""),
        ]
    finally:
        await audit.close()
        await ledger.close()
