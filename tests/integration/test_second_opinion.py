"""The escalation-only second opinion (§2) through the real router, audit chain and
ledger: asked only on its triggers, served by the cloud with an approval, never a stand-in,
never under local_only, and recorded as advice whatever happens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.evidence.read import read_sidecars
from app.pipeline.second_opinion import AdviceRecord, ask_second_opinion, occasion_signals
from app.policy.schema import Policy
from app.router.approvals import DenyDecider
from app.router.decide import decide
from app.router.types import RouterState, Signals
from tests.integration.test_router_service import ALL_UP, Resolver, make_router

NO_KEY = "no key: ANTHROPIC_API_KEY not set"

ADVICE = json.dumps(
    {
        "assessment": "the loop bound in parse() still stops one short",
        "likely_causes": ["range(len(tokens) - 1)"],
        "risks": [],
        "suggestions": ["iterate over every token"],
        "confidence": 0.8,
    }
)


@pytest.mark.parametrize(
    ("occasion", "value", "code"),
    [
        ("failure", 2.0, "SECOND_OPINION_FAILURE"),
        ("high_risk", None, "SECOND_OPINION_HIGH_RISK"),
        ("low_confidence", 0.6, "SECOND_OPINION_LOW_CONFIDENCE"),
        ("user_request", None, "USER_REQUEST"),
    ],
)
def test_each_occasion_fires_the_sidecars_trigger(
    policy: Policy, occasion: str, value: float | None, code: str
) -> None:
    signals = occasion_signals(occasion, value=value, user=False)  # type: ignore[arg-type]
    d = decide(policy, "second_opinion", signals, RouterState())
    assert d.action == "escalate" and d.target == "claude-sonnet-4.6" and d.needs_approval
    assert code in d.reason_codes


def test_without_a_trigger_there_is_no_second_opinion_and_no_stand_in(policy: Policy) -> None:
    for signals in (Signals(), Signals(failed_loops=1), Signals(confidence=0.9)):
        d = decide(policy, "second_opinion", signals, RouterState())
        assert d.action == "refuse" and d.refusal_code == "SIDECAR_NOT_REACHED", d
        assert d.target is None
    d = decide(policy, "second_opinion", Signals(high_risk=True), RouterState(local_only=True))
    assert d.action == "refuse" and d.refusal_code == "SIDECAR_NOT_REACHED"
    assert {s.reason for s in d.skipped} == {"local_only"}


async def test_a_triggered_second_opinion_is_served_by_the_cloud_and_recorded_as_advice(
    tmp_path: Path, policy: Policy
) -> None:
    resolver = Resolver(up=ALL_UP)
    resolver.scripts[("claude-sonnet-4.6", "cloud")] = [ADVICE]
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    record = await ask_second_opinion(
        router, "failure", "fix parse()", "attempt 1: tests failed", run="r1", value=2
    )
    assert record.opinion is not None and record.model == "claude-sonnet-4.6"
    assert record.advisory is True and record.skipped is None
    lines = await audit.lines(session="s1")
    assert [line.kind for line in lines] == ["escalation", "approval", "call", "advice"]
    advice = lines[-1]
    assert advice.role == "second_opinion" and advice.to == "claude-sonnet-4.6"
    assert advice.reason_codes == ["SECOND_OPINION_FAILURE", "ADVISORY_ONLY"]
    assert "never decides" in advice.detail
    # the prompt told the sidecar what it is, and carried the failure
    (asked,) = resolver.made.values()
    assert asked.calls == 1
    assert (await ledger.snapshot("s1")).by_provider["anthropic"] > 0
    await audit.close()
    await ledger.close()


async def test_a_denied_second_opinion_is_skipped_audited_and_raises_nothing(
    tmp_path: Path, policy: Policy
) -> None:
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver, decider=DenyDecider())
    record = await ask_second_opinion(
        router, "high_risk", "fix parse()", "diff --git a/x b/x", run="r1"
    )
    assert record.opinion is None and record.model is None
    assert record.skipped is not None and "SIDECAR_NOT_REACHED" in record.skipped
    assert record.outcome == "denied"
    assert record.passed_over == ["claude-sonnet-4.6: denied", "gpt-5.1-high: denied"]
    kinds = [line.kind for line in await audit.lines(session="s1")]
    # each cloud step asked and denied, then the refusal, then the advice line saying so
    assert kinds == ["escalation", "denial", "escalation", "denial", "refusal", "advice"]
    last = (await audit.lines(session="s1"))[-1]
    assert last.reason_codes == ["SECOND_OPINION_HIGH_RISK", "SECOND_OPINION_SKIPPED"]
    assert resolver.made == {}  # nothing was called, local or cloud
    await audit.close()
    await ledger.close()


async def test_a_malformed_second_opinion_is_kept_as_skipped(
    tmp_path: Path, policy: Policy
) -> None:
    resolver = Resolver(up=ALL_UP)
    resolver.scripts[("claude-sonnet-4.6", "cloud")] = ["not json", '{"verdict": "reject"}']
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    record = await ask_second_opinion(router, "failure", "t", "s", run="r1", value=3)
    # a verdict is not something the sidecar may give: the schema has no such field
    assert record.opinion is None and record.model == "claude-sonnet-4.6"
    assert record.skipped is not None and "SecondOpinion" in record.skipped
    # approved, called twice (the reply and its repair) and paid for: the record says so
    assert record.outcome == "malformed" and record.calls == 2
    assert record.cost_usd is not None and record.cost_usd > 0
    spent = (await ledger.snapshot("s1")).by_provider["anthropic"]
    assert record.cost_usd == pytest.approx(spent)
    # ... and so does `evidence show` (an audit: it read "denied or unavailable")
    (line,) = sidecars_of(tmp_path, record)
    assert line.startswith(
        "no second opinion on the failure: claude-sonnet-4.6 was approved and paid ("
    )
    assert "for 2 calls), but its reply was rejected as malformed: reply does not fit " in line
    assert "SecondOpinion after one repair" in line
    assert "denied" not in line and "unavailable" not in line
    await audit.close()
    await ledger.close()


def sidecars_of(tmp_path: Path, *records: AdviceRecord) -> list[str]:
    """The sidecar lines `evidence show` (and the TUI) make of these records."""
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "second_opinion.json").write_text(
        json.dumps({"advisory": True, "opinions": [r.model_dump() for r in records]})
    )
    return read_sidecars(bundle)


@pytest.mark.parametrize(
    ("case", "outcome", "said"),
    [
        (
            "denied",
            "denied",
            "no second opinion on the high risk: the escalation was denied "
            "(claude-sonnet-4.6: denied; gpt-5.1-high: denied)",
        ),
        (
            "no_key",
            "unavailable",
            "no second opinion on the high risk: the cloud model is unavailable "
            f"(claude-sonnet-4.6: unavailable: {NO_KEY}; gpt-5.1-high: unavailable: {NO_KEY})",
        ),
        (
            "local_only",
            "local_only",
            "no second opinion on the high risk: local_only forbids every cloud call (GR-009)",
        ),
        (
            "budget",
            "over_budget",
            "no second opinion on the high risk: refused by the GR-011 budget",
        ),
        ("mixed", "refused", "no second opinion on the high risk: no cloud step could serve"),
    ],
)
async def test_each_refusal_says_its_own_reason_in_the_evidence(
    tmp_path: Path, policy: Policy, case: str, outcome: str, said: str
) -> None:
    unavailable = {"claude-sonnet-4.6": NO_KEY, "gpt-5.1-high": NO_KEY}
    if case == "mixed":
        unavailable = {"gpt-5.1-high": NO_KEY}
    resolver = Resolver(up=ALL_UP, unavailable=unavailable if case in ("no_key", "mixed") else {})
    if case == "budget":
        budget = policy.budget.model_copy(update={"session_usd": 0.000001})
        policy = policy.model_copy(update={"budget": budget})
    router, audit, ledger = await make_router(
        tmp_path,
        policy,
        resolver,
        decider=DenyDecider() if case in ("denied", "mixed") else None,
        local_only=case == "local_only",
    )
    record = await ask_second_opinion(router, "high_risk", "t", "diff", run="r1")
    assert record.opinion is None and record.outcome == outcome
    assert record.calls is None and record.cost_usd is None  # nothing came back
    (line,) = sidecars_of(tmp_path, record)
    assert line.startswith(said), line
    if case == "mixed":
        assert line.endswith(f"(claude-sonnet-4.6: denied; gpt-5.1-high: unavailable: {NO_KEY})")
    if case == "budget":
        assert "claude-sonnet-4.6: budget" in line
    assert "denied or unavailable" not in line
    await audit.close()
    await ledger.close()


def test_sidecar_lines_for_the_other_outcomes_and_older_records(tmp_path: Path) -> None:
    failed = AdviceRecord(occasion="failure", skipped="second_opinion: timed out", outcome="failed")
    none = AdviceRecord(occasion="user_request", skipped="x", outcome="no_trigger")
    # a record written before outcomes were kept says what it recorded
    older_bad = AdviceRecord(
        occasion="high_risk",
        model="claude-sonnet-4.6",
        skipped="second_opinion reply does not fit SecondOpinion after one repair (GR-012): x",
    )
    older_refused = AdviceRecord(occasion="high_risk", skipped="second_opinion: DENIED: no")
    assert sidecars_of(tmp_path, failed, none, older_bad, older_refused) == [
        "no second opinion on the failure: the call failed: second_opinion: timed out",
        "no second opinion on the user request: no trigger fired",
        "no second opinion on the high risk: claude-sonnet-4.6 was called (its cost is not in "
        "this record), but its reply was rejected as malformed: reply does not fit "
        "SecondOpinion after one repair (GR-012): x",
        "no second opinion on the high risk: second_opinion: DENIED: no",
    ]


def test_the_pipeline_asks_only_when_the_policy_trigger_fires(policy: Policy) -> None:
    from app.pipeline.second_opinion import triggered

    assert not triggered(policy, "low_confidence", value=0.8, user=False)
    assert triggered(policy, "low_confidence", value=0.6, user=False)
    assert not triggered(policy, "failure", value=1, user=False)
    assert triggered(policy, "failure", value=2, user=False)
    assert triggered(policy, "high_risk", value=None, user=False)
    assert triggered(policy, "low_confidence", value=0.9, user=True)  # the user asked
    older = policy.model_copy(
        update={"roles": {k: v for k, v in policy.roles.items() if k != "second_opinion"}}
    )
    assert not triggered(older, "high_risk", value=None, user=True)  # a policy without it


@pytest.mark.parametrize(
    ("occasion", "value", "basis", "about"),
    [
        ("failure", 1.0, "", "the Implementer's 1 failed loop"),
        (
            "low_confidence",
            0.8,
            "self 0.90, capped",
            "the plan at confidence 0.80 (self 0.90, capped)",
        ),
        ("high_risk", None, "", "the High-Risk change"),
    ],
)
async def test_an_occasion_no_trigger_fires_on_is_a_check_line_and_nothing_is_asked(
    tmp_path: Path, policy: Policy, occasion: str, value: float | None, basis: str, about: str
) -> None:
    """The gate's decision that no second opinion is needed was no line at all, so a
    policy that would ask (a lower bar) simulated as "0 changed": it is a ``check`` with
    decide()'s inputs, in the form the Architect's is, and the occasion its signals say
    is the one ``policy simulate`` reads them as."""
    from types import SimpleNamespace

    from app.pipeline.second_opinion import advise
    from app.router.simulate.requests import sidecar_occasion

    if occasion == "high_risk":  # a policy that asks for no second opinion on it
        data = policy.model_dump(mode="json")
        data["triggers"] = [t for t in data["triggers"] if t["id"] != "second_opinion_high_risk"]
        policy = Policy.model_validate(data)
    resolver = Resolver(up=ALL_UP)
    router, audit, ledger = await make_router(tmp_path, policy, resolver)
    ctx = SimpleNamespace(
        policy=policy,
        router=router,
        task="fix parse()",
        run_id="r1",
        advice=[],
        wants_escalation=lambda role: False,
    )
    await advise(ctx, occasion, "the subject", value, basis=basis)  # type: ignore[arg-type]
    [check] = await audit.lines(session="s1")
    assert (check.kind, check.role, check.run, check.to) == ("check", "second_opinion", "r1", None)
    assert check.reason_codes == ["SIDECAR_NOT_REACHED"]
    assert check.detail == f"{about} fires no trigger: no second opinion needed"
    assert check.values["occasion"] == occasion
    assert sidecar_occasion(check.values["inputs"]["signals"]) == occasion
    assert resolver.made == {} and ctx.advice == []  # nobody was asked, nothing recorded
    # a policy without the sidecar: no decision to make, no line
    older = policy.model_copy(
        update={"roles": {k: v for k, v in policy.roles.items() if k != "second_opinion"}}
    )
    ctx.policy = older
    await advise(ctx, occasion, "the subject", value, basis=basis)  # type: ignore[arg-type]
    assert len(await audit.lines(session="s1")) == 1
    await audit.close()
    await ledger.close()
