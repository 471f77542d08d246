"""The replay's pure parts: the role view that lets two policies share decide()'s answers,
the range filter, and how lines are grouped into requests."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.policy import load_policy
from app.policy.fingerprint import fingerprint
from app.policy.schema import Policy
from app.router.decide import decide, fired_triggers
from app.router.recorded import record_inputs
from app.router.simulate.picks import pick_of, role_view
from app.router.simulate.report import PolicyRef
from app.router.simulate.requests import collect
from app.router.simulate.simulation import (
    WHY_KEPT_LOCAL,
    WHY_OLD,
    WHY_SIDECAR_UNCHECKED,
    WHY_UNCHECKED,
    WHY_UNREADABLE,
    Filters,
    simulate,
)
from app.router.types import RouterState, Signals

SIGNALS = [
    Signals(),
    Signals(confidence=0.5, context_estimate=3000),
    Signals(failed_loops=2, context_estimate=120_000),
    Signals(context_estimate=150_000, tool_heavy=True),
    Signals(high_risk=True, interesting_failure=True, tier2_opt_in=True),
    Signals(user_request=True, output_tokens=500),
]
STATES = [
    RouterState(),
    RouterState(health={"runtime:vllm": False}, provider_left_usd={"openai": 0.001}),
    RouterState(local_only=True, approved=frozenset({"gpt-5.1-high"})),
    RouterState(denied=frozenset({"deepseek-reasoner"}), context_windows={"qwen3-14b": 4096}),
]


def _leaves(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in _leaves(v, (*path, k))]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in _leaves(v, (*path, i))]
    return [path]


def _perturb(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x"
    return 1 if value is None else value


SHIPPED = load_policy().policy
DATA = SHIPPED.model_dump(mode="json")
LEAVES = _leaves(DATA)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(LEAVES))
@example(path=("generation", "reasoning_high_tokens"))  # (left out of the views until #20)
def test_policies_with_equal_role_views_decide_alike(path: tuple[Any, ...]) -> None:
    """Whatever one field of the policy is changed to: where the role view stays equal,
    decide() answers the same; where it stays equal but for triggers and prices, it
    answers the same when no trigger fires under either (so reading one policy's recorded
    answers for another is safe)."""
    policy = SHIPPED
    mutated = copy.deepcopy(DATA)
    node = mutated
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = _perturb(node[path[-1]])
    try:
        other = Policy.model_validate(mutated)
    except ValidationError:
        assume(False)
        raise
    for role in policy.roles:
        same = role_view(policy, role) == role_view(other, role)
        if not same and role_view(policy, role, quiet=True) != role_view(other, role, quiet=True):
            continue
        for signals in SIGNALS:
            fires = fired_triggers(policy, role, signals) or fired_triggers(other, role, signals)
            if not same and fires:
                continue  # triggers and prices count where a trigger fires
            for state in STATES:
                a = pick_of(decide(policy, role, signals, state), policy)
                b = pick_of(decide(other, role, signals, state), other)
                assert a == b, (path, role, signals, state)


def test_a_change_decide_reads_changes_the_view(policy: Policy) -> None:
    data = policy.model_dump(mode="json")
    data["triggers"][0]["threshold"] = 0.8  # architect_low_confidence
    other = Policy.model_validate(data)
    assert role_view(policy, "architect") != role_view(other, "architect")
    assert role_view(policy, "implementer") == role_view(other, "implementer")
    data["models"]["gpt-5.1-high"]["price_out_usd_per_mtok"] = 99.0
    pricier = Policy.model_validate(data)
    assert role_view(other, "tutor") != role_view(pricier, "tutor")
    assert role_view(other, "tutor", quiet=True) == role_view(pricier, "tutor", quiet=True)
    assert role_view(policy, "architect", quiet=True) == role_view(other, "architect", quiet=True)
    # the thinking a reasoning model is billed for costs an escalation too
    data["generation"]["reasoning_high_tokens"] = 1
    thinner = Policy.model_validate(data)
    assert role_view(pricier, "architect") != role_view(thinner, "architect")
    quiet = role_view(thinner, "architect", quiet=True)
    assert role_view(pricier, "architect", quiet=True) == quiet
    escalating = Signals(confidence=0.5, context_estimate=3000)
    a = pick_of(decide(pricier, "architect", escalating, RouterState()), pricier)
    b = pick_of(decide(thinner, "architect", escalating, RouterState()), thinner)
    assert a != b  # (the estimate differs: the views must)


@pytest.mark.parametrize(
    ("filters", "ts", "inside"),
    [
        (Filters(since="2026-12-01"), "2026-12-01T00:00:00.000Z", True),
        (Filters(since="2026-12-01"), "2026-11-30T23:59:59.999Z", False),
        (Filters(until="2026-12-01"), "2026-12-01T23:59:59.999Z", True),
        (Filters(until="2026-12-01"), "2026-12-02T00:00:00.000Z", False),
        (Filters(until="2026-12-01T10:00:00.000Z"), "2026-12-01T10:00:00.001Z", False),
        (Filters(session="s2"), "2026-12-01T10:00:00.000Z", False),
    ],
)
def test_the_range_filter(filters: Filters, ts: str, inside: bool) -> None:
    assert filters.within(ts, "s1") is inside


def line(seq: int, kind: str, **kw: Any) -> dict[str, Any]:
    base = {
        "seq": seq,
        "ts": "2026-12-01T10:00:00.000Z",
        "session": "s1",
        "kind": kind,
        "role": "architect",
        "to": None,
        "values": {},
    }
    return {**base, **kw}


def test_grouping_old_lines_repairs_and_unreadable_inputs(policy: Policy) -> None:
    inputs = {"v": 1, "step": 0, "signals": {"confidence": 0.9, "context_estimate": 10}}
    lines = [
        # before the record: a route and a costed call, neither naming a request
        line(1, "route", to="qwen3-14b@vllm"),
        line(2, "call", to="gpt-5.1-high", values={"cost_usd": 0.25, "tokens_in": 1}),
        # today's: a local request, then a cloud repair's repeat naming it
        line(3, "route", to="qwen3-14b@vllm", values={"inputs": inputs}),
        line(4, "call", to="qwen3-14b@vllm", values={"req": 3, "tokens_in": 9}),
        line(5, "escalation", to="gpt-5.1-high", values={"req": 3}),
        # inputs from a version this reader does not know
        line(6, "route", to="qwen3-14b@vllm", values={"inputs": {**inputs, "v": 9}}),
    ]
    collected = collect(lines)
    assert [r.id for r in collected.requests] == [3, 6]
    first, unreadable = collected.requests
    assert [s.seq for s in first.steps] == [3] and [c.seq for c in first.calls] == [4]
    assert unreadable.unreadable and not unreadable.steps
    assert [c.seq for c in collected.loose_calls] == [2]
    assert [o.seq for o in collected.old] == [2]
    ref = PolicyRef(path="p", version=policy.version)
    report = simulate(collected, policy, policy, new_ref=ref, against_ref=ref)
    assert report.decisions == 1 and report.changed == 0
    assert report.unsimulated.reasons == {WHY_OLD: 1, WHY_UNREADABLE: 1}
    assert report.unsimulated.recorded_usd == 0.25


_SIGNAL_VALUES = {
    name: (
        st.booleans()
        if field.annotation is bool
        else st.lists(st.tuples(st.text(max_size=5), st.text(max_size=5)), max_size=2).map(tuple)
        if name == "grounds"
        else st.none() | st.floats(0, 1)
        if "confidence" in name
        else st.none() | st.integers(1, 10**6)
        if name == "output_tokens"
        else st.integers(0, 10**6)
        if name == "schema_tokens"
        else st.none() | st.integers(0, 10**6)
    )
    for name, field in Signals.model_fields.items()
}


@given(
    given_fields=st.fixed_dictionaries({}, optional=_SIGNAL_VALUES),
    copied=st.fixed_dictionaries({}, optional=_SIGNAL_VALUES),
    estimate=st.none() | st.integers(0, 10**6),
    schema=st.integers(0, 10**6),
)
def test_the_recorded_signals_are_model_dumps_without_the_defaults(
    given_fields: dict[str, Any], copied: dict[str, Any], estimate: int | None, schema: int
) -> None:
    # the signals as given (a default given explicitly too), copied with some changed (as
    # the second opinion and the librarian make theirs), and with the router's count
    signals = Signals(**given_fields)
    if copied:
        signals = signals.model_copy(update=copied)
    if estimate is not None or schema:
        signals = signals.with_estimate(estimate, None, schema)
    recorded = record_inputs(signals, RouterState(), 0, budget_read=False)["signals"]
    assert recorded == signals.model_dump(exclude_defaults=True)
    assert json.dumps(recorded, sort_keys=True) == json.dumps(
        signals.model_dump(exclude_defaults=True), sort_keys=True
    )


def test_a_refusal_another_writer_audited_is_no_old_decision() -> None:
    """A refusal line with no recorded inputs was counted "written before decisions
    recorded their inputs": the router's of an old log are, but the sandbox's and the
    Implementer's (edits outside an editor's folder) say what they refused in their
    values and are no decisions (a review: one made an empty range non-empty)."""

    def refusal(seq: int, values: dict[str, Any]) -> dict[str, Any]:
        return {
            "seq": seq,
            "ts": "2026-12-01T10:00:00.000Z",
            "session": "s",
            "run": None,
            "role": "implementer",
            "kind": "refusal",
            "to": None,
            "reason_codes": ["X"],
            "values": values,
        }

    collected = collect(
        [
            refusal(1, {}),  # the router's, before inputs were recorded
            refusal(2, {"attempt": 1, "within": "app", "outside": ["lib/b.py"]}),
            refusal(3, {"runner": None, "reason": "no sandbox", "local_only": True}),
        ]
    )
    assert [old.seq for old in collected.old] == [1]
    assert collected.requests == []


@pytest.mark.parametrize("trust", [True, False], ids=["read", "remade"])
def test_a_plan_check_replays_and_a_plan_without_one_is_unsimulated(
    policy: Policy, trust: bool
) -> None:
    """A ``check`` line (the Architect's decision on its final plan, no escalation made)
    is a request that asked no model: the policy it was made under ends it where it
    ended, read from its line or decided again, and a stricter bar escalates it. A run
    whose Implementer followed its Architect with no decision on the plan in the log
    (neither a check nor an escalation that read its confidence, nor the user's own
    request for the cloud) is from before the check: counted unsimulated where the
    architect triggers differ, never "0 changed"."""
    fp = fingerprint(policy)
    signals = Signals(confidence=0.95, plan_steps=1, context_estimate=1800)
    d = decide(policy, "architect", signals, RouterState())
    to = f"{d.target}@{d.runtime}"
    checked = record_inputs(signals, RouterState(), 0, budget_read=False, policy=fp)

    def inputs(**signals: Any) -> dict[str, Any]:
        return {"values": {"inputs": {"v": 1, "step": 0, "signals": signals, "policy": fp}}}

    draft = inputs(context_estimate=1500)
    impl = {"role": "implementer", "to": "qwen2.5-coder-32b@vllm", **inputs(failed_loops=0)}
    lines = [
        # a run of today: its draft, its check, its Implementer
        line(1, "route", run="a", to=to, **draft),
        line(2, "check", run="a", to=to, values={"inputs": checked}),
        line(3, "route", run="a", **impl),
        # one from before the check
        line(4, "route", run="b", to=to, **draft),
        line(5, "route", run="b", **impl),
        # the user asked for the cloud's plan (no check is made), and the Architect
        # that stopped without a plan
        line(6, "escalation", run="c", to="gpt-5.1-high", **inputs(user_request=True)),
        line(7, "route", run="c", **impl),
        line(8, "route", run="d", to=to, **draft),
    ]
    collected = collect(lines)
    assert [old.seq for old in collected.unchecked] == [4]
    assert [r.steps[0].kind for r in collected.requests if r.seq == 2] == ["check"]
    ref = PolicyRef(path="p", version=policy.version)
    same = simulate(collected, policy, policy, new_ref=ref, against_ref=ref, trust_record=trust)
    assert (same.decisions, same.changed, same.against_differs_from_recorded) == (8, 0, 0)
    assert same.unsimulated.count == 0  # the same triggers: it ended as it did
    data = policy.model_dump(mode="json")
    assert data["triggers"][0]["id"] == "architect_low_confidence"
    data["triggers"][0]["threshold"] = 0.99
    strict = Policy.model_validate(data)
    report = simulate(collected, strict, policy, new_ref=ref, against_ref=ref, trust_record=trust)
    assert report.unsimulated.reasons == {WHY_UNCHECKED: 1}
    assert (report.changed, report.against_differs_from_recorded) == (1, 0)
    [change] = report.biggest_changes
    assert (change.seq, change.kind, change.against) == (2, "escalation_added", f"{to} (local)")
    assert change.reasons == ["ARCHITECT_LOW_CONFIDENCE"] and change.estimated


def _first(signals: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"inputs": {"v": 1, "step": 0, "signals": signals, **more}}


def _with_sidecar(policy: Policy, threshold: float) -> Policy:
    data = policy.model_dump(mode="json")
    [bar] = [t for t in data["triggers"] if t["id"] == "second_opinion_low_confidence"]
    bar["threshold"] = threshold
    return Policy.model_validate(data)


@pytest.mark.parametrize("trust", [True, False], ids=["read", "remade"])
def test_a_second_opinion_check_replays_and_an_occasion_without_one_is_unsimulated(
    policy: Policy, trust: bool
) -> None:
    """The sidecar's gate decided no second opinion was needed (a plan at 0.6 under a 0.5
    bar): a ``check`` line with what decide() read, replayed as a refusal the same policy
    makes again and a higher bar turns into the second opinion. A run whose lines show an
    occasion for one (the Judge's High-Risk change, a fired plan the cloud did not serve,
    the Implementer's attempts spent, the escalated plan still low) with no decision of
    the sidecar's is from before that was recorded: counted unsimulated where the
    policies' second_opinion triggers differ, never "0 changed"."""
    lenient = _with_sidecar(policy, 0.5)
    fp = fingerprint(lenient)
    signals = Signals(confidence=0.6, context_estimate=900)
    d = decide(lenient, "second_opinion", signals, RouterState())
    assert d.action == "refuse" and d.refusal_code == "SIDECAR_NOT_REACHED" and not d.reasons
    checked = record_inputs(signals, RouterState(), 0, budget_read=False, policy=fp)
    so, judge = {"role": "second_opinion"}, {"role": "judge", "to": "gpt-5.1-high"}
    plan = _first({"confidence": 0.6, "context_estimate": 900})
    confident = _first({"confidence": 0.9, "context_estimate": 900})
    spent = "implementer: 4 failed loops in 4 attempts; no further progress is possible"
    lines = [
        # a: the plan's escalation denied, the sidecar's check that none was needed
        line(
            1,
            "escalation",
            run="a",
            to="gpt-5.1-high",
            values=plan,
            reason_codes=["ARCHITECT_LOW_CONFIDENCE"],
        ),
        line(
            2,
            "check",
            run="a",
            **so,
            values={"inputs": checked, "occasion": "x"},
            reason_codes=["SIDECAR_NOT_REACHED"],
        ),
        # b: a High-Risk change judged, and no sidecar line (before the check)
        line(
            3,
            "escalation",
            run="b",
            **judge,
            values=_first({"high_risk": True}),
            reason_codes=["JUDGE_HIGH_RISK"],
        ),
        # c: the plan's escalation served by the cloud planner: no occasion
        line(
            4,
            "escalation",
            run="c",
            to="gpt-5.1-high",
            values=plan,
            reason_codes=["ARCHITECT_LOW_CONFIDENCE"],
        ),
        line(5, "call", run="c", to="gpt-5.1-high", values={"req": 4, "cost_usd": 0.01}),
        # d: a plan that fired and was not served; nothing of the sidecar's
        line(
            6,
            "escalation",
            run="d",
            to="gpt-5.1-high",
            values=plan,
            reason_codes=["ARCHITECT_LOW_CONFIDENCE"],
        ),
        # e: the attempts spent (the run's end line), nothing of the sidecar's
        line(7, "run", run="e", role=None, values={"outcome": "failed"}, detail=spent),
        # f: the same, and the sidecar asked (its request's first line)
        line(8, "run", run="f", role=None, values={"outcome": "failed"}, detail=spent),
        line(
            9,
            "escalation",
            run="f",
            **so,
            to="claude-sonnet-4.6",
            values=_first({"failed_loops": 4}),
            reason_codes=["SECOND_OPINION_FAILURE"],
        ),
        # g: a stop for the calls cap is no occasion; a plan that fired no trigger neither
        line(
            10,
            "run",
            run="g",
            role=None,
            values={"outcome": "failed"},
            detail="implementer: 40 model calls made, the stage's cap is 40",
        ),
        line(11, "check", run="g", to="qwen3-14b@vllm", values=confident),
    ]
    collected = collect(lines)
    assert [o.seq for o in collected.unchecked_sidecar] == [3, 6, 7]
    assert [r.steps[0].kind for r in collected.requests if r.seq == 2] == ["refusal"]
    ref = PolicyRef(path="p", version=policy.version)

    def run(new: Policy, against: Policy) -> Any:
        return simulate(collected, new, against, new_ref=ref, against_ref=ref, trust_record=trust)

    same = run(lenient, lenient)
    assert same.unsimulated.count == 0  # the same triggers: none fires now either
    assert same.against_differs_from_recorded == 0
    stricter = run(policy, lenient)  # the shipped 0.75 bar
    assert stricter.unsimulated.reasons == {WHY_SIDECAR_UNCHECKED: 3}
    [change] = [c for c in stricter.biggest_changes if c.role == "second_opinion"]
    assert (change.seq, change.kind, change.against) == (2, "escalation_added", "refused")
    assert change.new == "claude-sonnet-4.6 (cloud)" and change.estimated
    assert change.reasons == ["SECOND_OPINION_LOW_CONFIDENCE"]


def test_skips_no_decision_followed_are_a_request_kept_local_before_its_check(
    policy: Policy,
) -> None:
    """A ``cloud_only`` request the router kept local at its first decision wrote its skip
    lines and left the decision to its caller: the caller's ``check`` names the skips'
    request and is read with them (their budget skips its own). Skips no decision line
    follows are from before the check (ACE's, the Librarian's): counted where the two
    policies decide the role or the budget differently, but those skipped for local_only
    alone (a replay keeps the recorded local_only: they stay local)."""
    data = policy.model_dump(mode="json")
    caps = data["budget"]["provider_day_usd"]
    caps["moonshot"] = caps["anthropic"] = 1e-6  # no escalation of ACE's fits
    tight = Policy.model_validate(data)
    fp = fingerprint(tight)
    ace, lib = {"role": "ace", "run": "r"}, {"role": "librarian", "run": "r"}
    codes = ["SKIP_BUDGET", "ACE_INTERESTING_FAILURE"]
    signals = Signals(interesting_failure=True, context_estimate=500)
    left = {"moonshot": 1e-6, "anthropic": 1e-6, "openai": 10.0, "deepseek": 5.0}
    state = RouterState(provider_left_usd=left)
    d = decide(tight, "ace", signals, state)
    assert d.action == "local" and d.reason_codes == ["ACE_INTERESTING_FAILURE"]
    checked = record_inputs(signals, state, 0, budget_read=True, policy=fp)
    budget = {"reason": "budget", "detail": ""}
    lines = [
        # today's: the skips, then the check naming their request
        line(1, "skip", **ace, to="kimi-k2-instruct", values=budget, reason_codes=codes),
        line(
            2,
            "skip",
            **ace,
            to="claude-sonnet-4.6",
            values={**budget, "req": 1},
            reason_codes=codes,
        ),
        line(
            3,
            "check",
            **ace,
            to=f"{d.target}@{d.runtime}",
            values={"inputs": checked, "req": 1},
            reason_codes=d.reason_codes,
        ),
        # before the check: ACE's skips, one request
        line(4, "skip", **ace, to="kimi-k2-instruct", values=budget, reason_codes=codes),
        line(
            5,
            "skip",
            **ace,
            to="claude-sonnet-4.6",
            values={**budget, "req": 4},
            reason_codes=codes,
        ),
        # the Librarian's, one line each, one after the other: one decision
        line(
            6,
            "skip",
            **lib,
            to="kimi-k2-instruct",
            values=budget,
            reason_codes=["SKIP_BUDGET", "LIBRARIAN_CONTEXT_LARGE"],
        ),
        line(
            7,
            "skip",
            **lib,
            to="claude-sonnet-4.6",
            values=budget,
            reason_codes=["SKIP_BUDGET", "LIBRARIAN_CONTEXT_LARGE"],
        ),
        # local_only alone: it would stay local under any policy
        line(
            8,
            "skip",
            **ace,
            to="kimi-k2-instruct",
            values={"reason": "local_only", "detail": ""},
            reason_codes=["SKIP_LOCAL_ONLY", "ACE_INTERESTING_FAILURE"],
        ),
        # from before decisions recorded their inputs: a skip, then its escalation line
        line(9, "skip", role="judge", to="gpt-5.1-high", values=budget),
        line(10, "escalation", role="judge", to="claude-opus"),
    ]
    collected = collect(lines)
    assert [(o.seq, o.role) for o in collected.kept_local] == [(4, "ace"), (6, "librarian")]
    [req] = collected.requests
    assert (req.id, req.seq, req.budget_skips) == (1, 3, ["kimi-k2-instruct", "claude-sonnet-4.6"])
    ref = PolicyRef(path="p", version=policy.version)
    same = simulate(collected, tight, tight, new_ref=ref, against_ref=ref)
    assert same.unsimulated.count == 0  # (10: no decision it can count, nor 9 with it)
    assert same.changed == 0 and same.against_differs_from_recorded == 0
    # the shipped caps: the checked request escalates; those from before are counted
    report = simulate(collected, policy, tight, new_ref=ref, against_ref=ref)
    assert report.unsimulated.reasons == {WHY_KEPT_LOCAL: 2}
    [change] = report.biggest_changes
    assert (change.seq, change.role, change.kind) == (3, "ace", "escalation_added")
    assert change.reasons == ["ACE_INTERESTING_FAILURE"]


def test_a_cloud_call_is_replayed_at_its_cache_prices(policy: Policy) -> None:
    """A recorded call's prompt, 100000 of its 100010 tokens read from the provider's
    cache, is priced in its parts by each policy (it was priced whole at the input price:
    ten times what Haiku bills), and a policy's own cache price is the one it pays."""
    fp = fingerprint(policy)
    signals = {"user_request": True, "context_estimate": 12}
    escalated = {"inputs": {"v": 1, "step": 0, "signals": signals, "policy": fp}}
    called = {
        "req": 1,
        "provider": "anthropic",
        "tokens_in": 100010,
        "tokens_cached": 100000,
        "tokens_out": 7,
        "cost_usd": 0.010045,
    }
    lines = [
        line(1, "escalation", role="tutor", to="claude-haiku-4.5", values=escalated),
        line(2, "call", role="tutor", to="claude-haiku-4.5", values=called),
    ]
    collected = collect(lines)
    [request] = collected.requests
    assert [(c.tokens_in, c.tokens_cached) for c in request.calls] == [(100010, 100000)]
    ref = PolicyRef(path="p", version=policy.version)
    same = simulate(collected, policy, policy, new_ref=ref, against_ref=ref)
    assert same.changed == 0
    # Haiku 4.5: 10 × $1 + 100000 × $0.10 + 7 × $5 per million
    assert same.cloud_usd_new == same.cloud_usd_against == 0.010045
    data = policy.model_dump(mode="json")
    data["models"]["claude-haiku-4.5"]["price_cache_read_usd_per_mtok"] = 0.2
    dearer = Policy.model_validate(data)
    report = simulate(collected, dearer, policy, new_ref=ref, against_ref=ref)
    assert (report.cloud_usd_new, report.cloud_usd_against) == (0.020045, 0.010045)
