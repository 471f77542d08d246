"""decide(): the acceptance cases of the router issue, and its properties (GR-004)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.cli.main import main
from app.policy.schema import Policy
from app.router.decide import decide
from app.router.types import RouterState, Signals

FREE = RouterState()


def test_architect_below_threshold_escalates_to_first_cloud_fallback(policy: Policy) -> None:
    d = decide(policy, "architect", Signals(confidence=0.74), FREE)
    assert d.action == "escalate"
    assert d.target == policy.chain("architect")[0] == "gpt-5.1-high"
    assert d.reason_codes == ["ARCHITECT_LOW_CONFIDENCE"]
    (reason,) = d.reasons
    assert (reason.value, reason.threshold, reason.op) == (0.74, 0.75, "lt")
    assert "0.74 < 0.75" in reason.text
    assert d.needs_approval
    assert d.est_cost_usd > 0
    assert d.local is not None and d.local.model == "qwen3-14b"  # where it goes if denied


def test_architect_at_threshold_stays_local(policy: Policy) -> None:
    d = decide(policy, "architect", Signals(confidence=0.75), FREE)
    assert d.action == "local"
    assert d.target == "qwen3-14b" and d.runtime == "vllm"
    assert d.reasons == []


def test_implementer_two_failed_loops_escalates_to_deepseek_reasoner(policy: Policy) -> None:
    d = decide(policy, "implementer", Signals(failed_loops=2), FREE)
    assert d.action == "escalate"
    assert d.target == "deepseek-reasoner" and d.provider == "deepseek"
    assert d.reason_codes == ["IMPLEMENTER_FAILED_LOOPS"]


def test_implementer_low_self_check_picks_deepseek_chat(policy: Policy) -> None:
    d = decide(policy, "implementer", Signals(self_check_confidence=0.3), FREE)
    assert d.target == "deepseek-chat"


def test_the_implementers_user_request_enters_at_deepseek_chat(policy: Policy) -> None:
    """The user's request took the chain's first step, the reasoner the policy keeps for
    stuck loops (a conformance audit): the Implementer's own user_request trigger takes
    the place of the "*" one, once, with its own target."""
    d = decide(policy, "implementer", Signals(user_request=True), FREE)
    assert d.target == "deepseek-chat" and d.reason_codes == ["USER_REQUEST"]
    # stuck loops and a request: the first trigger in file order picks, as before
    d = decide(policy, "implementer", Signals(user_request=True, failed_loops=2), FREE)
    assert d.target == "deepseek-reasoner"
    assert d.reason_codes == ["IMPLEMENTER_FAILED_LOOPS", "USER_REQUEST"]
    # every other role still has the "*" trigger
    assert [t.id for t in policy.triggers_for("tutor")] == ["user_request"]


def test_librarian_exactly_100k_stays_local_and_one_more_escalates(policy: Policy) -> None:
    assert decide(policy, "librarian", Signals(context_estimate=100_000), FREE).action != (
        "escalate"
    )
    assert decide(policy, "librarian", Signals(context_estimate=100_001), FREE).target == (
        "kimi-k2-instruct"
    )


def test_librarian_large_context_escalates_to_kimi(policy: Policy) -> None:
    d = decide(policy, "librarian", Signals(context_estimate=120_000), FREE)
    assert d.action == "escalate"
    assert d.target == "kimi-k2-instruct"
    assert d.reason_codes == ["LIBRARIAN_CONTEXT_LARGE"]


def test_librarian_tool_heavy_picks_thinking_variant(policy: Policy) -> None:
    d = decide(policy, "librarian", Signals(tool_heavy=True), FREE)
    assert d.target == "kimi-k2-thinking"


@pytest.mark.parametrize(
    ("role", "signals"),
    [
        ("architect", Signals(confidence=0.74)),
        ("implementer", Signals(failed_loops=2)),
        ("librarian", Signals(context_estimate=120_000)),
        ("judge", Signals(high_risk=True)),
        ("tutor", Signals(user_request=True)),
    ],
)
def test_local_only_never_leaves_the_machine(policy: Policy, role: str, signals: Signals) -> None:
    d = decide(policy, role, signals, RouterState(local_only=True))
    assert d.action == "local"
    assert d.provider == "local"
    assert d.reasons, "the trigger is still recorded"
    assert any("GR-009" in n for n in d.notes)
    assert {s.reason for s in d.skipped if s.runtime == "cloud"} == {"local_only"}


def test_librarian_over_every_local_window_condenses_locally(policy: Policy) -> None:
    d = decide(policy, "librarian", Signals(context_estimate=120_000), RouterState(local_only=True))
    assert d.local is not None and d.local.condense


def test_cv_camera_is_refused_with_its_reason(policy: Policy) -> None:
    d = decide(policy, "cv", Signals(user_request=True), FREE)
    assert d.action == "refuse" and d.refusal_code == "CV_NOT_LLM_ROLE"
    assert "scheduled separately" in d.notes[0]


def test_stage0_and_unknown_roles_are_refused(policy: Policy) -> None:
    assert decide(policy, "stage0", Signals(), FREE).refusal_code == "STAGE0_DETERMINISTIC"
    assert decide(policy, "nope", Signals(), FREE).refusal_code == "UNKNOWN_ROLE"


def test_judge_without_trigger_runs_on_local_stand_in(policy: Policy) -> None:
    d = decide(policy, "judge", Signals(), FREE)
    assert d.action == "local" and d.target == "qwen3-14b"
    assert any("GR-003" in n for n in d.notes)
    cloud = decide(policy, "judge", Signals(high_risk=True), FREE)
    assert cloud.target == "gpt-5.1-high" and cloud.reason_codes == ["JUDGE_HIGH_RISK"]


@pytest.mark.parametrize(
    "state",
    [FREE.model_copy(update={"local_only": True}), FREE.model_copy(update={"session_left_usd": 0})],
    ids=["local_only", "no budget left"],
)
def test_a_high_risk_judge_kept_local_says_its_verdict_is_advice(
    policy: Policy, state: RouterState
) -> None:
    """The GR-003 note was given only when no trigger fired: a High-Risk change whose cloud
    Judge was blocked got a local Judge with no word that its verdict cannot merge."""
    d = decide(policy, "judge", Signals(high_risk=True), state)
    assert d.action == "local" and d.reason_codes == ["JUDGE_HIGH_RISK"]
    assert any("advisory" in n and "GR-003" in n for n in d.notes)
    tier2 = decide(policy, "tier2", Signals(tier2_opt_in=True), state)
    assert any("advisory" in n for n in tier2.notes)
    assert not any("GR-003" in n for n in tier2.notes)  # Tier2 approves nothing


def test_runtime_fallback_to_embedded_model_names_the_substitution(policy: Policy) -> None:
    state = RouterState(health={"runtime:vllm": False, "runtime:llamacpp_server": False})
    d = decide(policy, "implementer", Signals(), state)
    assert d.action == "local"
    assert (d.target, d.runtime) == ("smollm2-135m", "llamacpp_inprocess")
    assert d.local is not None and d.local.substituted_for == "qwen2.5-coder-32b on vllm"
    assert [s.reason for s in d.skipped] == ["unhealthy", "unhealthy"]


def test_failed_cloud_steps_move_down_the_chain(policy: Policy) -> None:
    state = RouterState(
        unavailable={"gpt-5.1-high": "no key: OPENAI_API_KEY not set"},
    )
    d = decide(policy, "architect", Signals(confidence=0.1), state)
    # DeepSeek is escalation-only for the Implementer: reached only after the step before it
    # failed, which is what happened here.
    assert d.target == "deepseek-reasoner"
    assert [(s.model, s.reason) for s in d.skipped] == [("gpt-5.1-high", "unavailable")]


def test_escalation_only_model_is_not_entered_first_from_another_role(policy: Policy) -> None:
    denied = RouterState(denied=frozenset({"gpt-5.1-high"}))
    d = decide(policy, "architect", Signals(confidence=0.1), denied)
    assert d.target == "deepseek-reasoner"  # reached after the denial of the step before
    assert d.needs_approval, "a new model needs its own approval"


def test_budget_and_context_skips(policy: Policy) -> None:
    poor = RouterState(session_left_usd=0.0001)
    d = decide(policy, "implementer", Signals(failed_loops=3), poor)
    assert d.action == "local"
    assert {s.reason for s in d.skipped if s.runtime == "cloud"} == {"budget"}
    big = decide(policy, "implementer", Signals(failed_loops=3, context_estimate=150_000), FREE)
    reasons = {s.model: s.reason for s in big.skipped if s.runtime == "cloud"}
    assert reasons["deepseek-reasoner"] == "context_too_small"
    assert big.target == "claude-sonnet-4.6"


def test_session_approval_removes_the_prompt(policy: Policy) -> None:
    state = RouterState(approved=frozenset({"gpt-5.1-high"}))
    assert not decide(policy, "architect", Signals(confidence=0.5), state).needs_approval


# ── properties ──────────────────────────────────────────────────────────────────────────

unit = st.none() | st.floats(min_value=0, max_value=1, allow_nan=False)
count = st.none() | st.integers(min_value=0, max_value=300_000)
signals_st = st.builds(
    Signals,
    confidence=unit,
    plan_steps=count,
    files_touched=count,
    open_questions=count,
    failed_loops=count,
    self_check_confidence=unit,
    modules_touched=count,
    tool_calls=count,
    context_estimate=count,
    contradictions_detected=st.booleans(),
    tool_heavy=st.booleans(),
    full_sweep=st.booleans(),
    local_synth_confidence=unit,
    interesting_failure=st.booleans(),
    high_risk=st.booleans(),
    tier2_opt_in=st.booleans(),
    user_request=st.booleans(),
)
HEALTH_KEYS = [
    "runtime:vllm",
    "runtime:llamacpp_server",
    "runtime:llamacpp_inprocess",
    "gpt-5.1-high",
    "deepseek-reasoner",
    "kimi-k2-instruct",
    "bge-m3",
]
state_st = st.builds(
    RouterState,
    local_only=st.booleans(),
    session_left_usd=st.floats(min_value=0, max_value=10, allow_nan=False),
    health=st.dictionaries(st.sampled_from(HEALTH_KEYS), st.booleans()),
    approved=st.frozensets(st.sampled_from(["gpt-5.1-high", "deepseek-reasoner"])),
    denied=st.frozensets(st.sampled_from(["gpt-5.1-high", "deepseek-chat", "kimi-k2-instruct"])),
)
ROLES = [
    "architect",
    "implementer",
    "librarian",
    "tutor",
    "judge",
    "tier2",
    "stage0",
    "ace",
    "embeddings",
    "cv",
]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(role=st.sampled_from(ROLES), signals=signals_st, state=state_st)
def test_decide_is_deterministic_and_total(
    policy: Policy, role: str, signals: Signals, state: RouterState
) -> None:
    a = decide(policy, role, signals, state)
    b = decide(policy, role, signals, state)
    assert a == b
    assert json.dumps(a.model_dump(mode="json"), sort_keys=True) == json.dumps(
        b.model_dump(mode="json"), sort_keys=True
    )
    if a.action == "escalate":
        assert not state.local_only
        assert a.target is not None and policy.is_cloud(a.target)
        assert a.reasons, "an escalation always has a trigger"
        assert a.target not in state.denied
        assert a.est_cost_usd <= state.budget_left(a.provider or "")
    if state.local_only:
        assert a.action != "escalate"


no_trigger = dict(
    confidence=None,
    plan_steps=None,
    files_touched=None,
    open_questions=None,
    failed_loops=None,
    self_check_confidence=None,
    modules_touched=None,
    tool_calls=None,
    contradictions_detected=False,
    tool_heavy=False,
    full_sweep=False,
    local_synth_confidence=None,
    interesting_failure=False,
    high_risk=False,
    tier2_opt_in=False,
    user_request=False,
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    role=st.sampled_from(ROLES),
    # at most the librarian's 100k: a larger context is a trigger of its own, not health
    ctx=st.none() | st.integers(min_value=0, max_value=100_000),
    state=state_st,
)
def test_a_health_failure_alone_never_yields_a_cloud_target(
    policy: Policy, role: str, ctx: int | None, state: RouterState
) -> None:
    d = decide(policy, role, Signals(context_estimate=ctx, **no_trigger), state)
    assert d.action != "escalate"
    assert d.target is None or not policy.is_cloud(d.target)


def test_route_explain_cli_acceptance(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["route", "explain", "--role", "architect", "--signal", "confidence=0.74", "--json"])
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["action"] == "escalate" and data["reason_codes"] == ["ARCHITECT_LOW_CONFIDENCE"]
    assert data["reasons"][0]["value"] == 0.74 and data["reasons"][0]["threshold"] == 0.75

    assert main(["route", "explain", "--role", "architect", "--signal", "confidence=0.75"]) == 0
    assert "LOCAL" in capsys.readouterr().out


def test_route_explain_json_says_the_targets_key_is_missing_as_the_text_does(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The text said "note no key: ... at call time this step is skipped"; the JSON said
    nothing, and a script could not tell (an audit)."""
    argv = ["route", "explain", "--role", "architect", "--signal", "confidence=0.5", "--json"]
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["target"] == "gpt-5.1-high"
    assert data["target_key_missing"] == "no key: OPENAI_API_KEY not set"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789abcdefghij")
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["target_key_missing"] is None

    assert (
        main(
            [
                "route",
                "explain",
                "--role",
                "implementer",
                "--signal",
                "failed_loops=2",
                "--local-only",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "GR-009" in out and "LOCAL" in out

    assert main(["route", "explain", "--role", "cv"]) == 0
    assert "CV_NOT_LLM_ROLE" in capsys.readouterr().out


def test_route_explain_says_what_happens_to_a_prompt_over_every_local_window(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["route", "explain", "--role", "implementer", "--signal", "context_estimate=50000"]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    # nothing condenses a gateway request: the note says so, as the gateway answers it
    assert "exceeds every local window" in out and "fails as too long" in out
    assert "before this model reads it" not in out


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        return int(exc.code or 0)


@pytest.mark.parametrize(
    "argv",
    [
        ["route", "explain", "--role", "architect", "--signal", "confidence"],
        ["route", "explain", "--role", "architect", "--signal", "confidence=high"],
        ["route", "explain", "--role", "architect", "--signal", "nope=1"],
        # a NaN confidence compared false with 0.75: the escalation never fired
        ["route", "explain", "--role", "architect", "--signal", "confidence=nan"],
        ["route", "explain", "--role", "architect", "--signal", "confidence=1.5"],
        ["route", "explain", "--role", "architect", "--signal", "confidence=-1"],
        ["route", "explain", "--role", "architect", "--budget-left", "nan"],
        ["route", "explain", "--role", "architect", "--budget-left", "-5"],
        ["route", "explain", "--role", "wizard"],
        ["route", "explain"],
    ],
)
def test_route_explain_usage_errors_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip()
    assert "pydantic" not in err and len(err.splitlines()) <= 6  # no validation dump


def test_route_explain_names_a_bad_signal_value_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["route", "explain", "--role", "implementer", "--signal", "failed_loops=-3"]
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [
        "switchyard: --signal failed_loops=-3: Input should be greater than or equal to 0"
    ]


@settings(max_examples=200, deadline=None)
@given(signals_st, st.integers(min_value=0, max_value=10**7))
def test_with_estimate_is_model_copy_with_the_estimate(signals: Signals, tokens: int) -> None:
    """The router's once-per-request copy (issue 20) is what model_copy would make: the
    same fields, fields set, dump, equality and hash; the original untouched."""
    # as callers give them: only some fields set, the estimate not among them
    sparse = Signals(**signals.model_dump(exclude_defaults=True, exclude={"context_estimate"}))
    for given_ in (signals, sparse):
        before = given_.model_dump()
        lean = given_.with_estimate(tokens)
        copied = given_.model_copy(update={"context_estimate": tokens})
        assert lean == copied and hash(lean) == hash(copied)
        assert lean.model_fields_set == copied.model_fields_set
        assert "context_estimate" in lean.model_fields_set
        assert lean.model_dump(exclude_unset=True) == copied.model_dump(exclude_unset=True)
        assert lean.model_dump(exclude_defaults=True) == copied.model_dump(exclude_defaults=True)
        assert lean.model_dump_json() == copied.model_dump_json()
        assert given_.model_dump() == before and lean is not given_
        with pytest.raises(ValueError):  # still frozen
            lean.confidence = 0.1  # type: ignore[misc]


def test_what_decide_works_out_from_a_policy_follows_the_policy_it_is_given(
    policy: Policy,
) -> None:
    """decide() remembers each role's runtime walk and cloud steps per policy object
    (issue 20): another policy, even a copy with one window or price changed, is worked
    out afresh, and going back to the first gives the first's answers again."""
    signals = Signals(confidence=0.5, context_estimate=20_000)
    first = decide(policy, "architect", signals, FREE)
    assert first.action == "escalate" and first.target == "gpt-5.1-high"
    assert first.local is not None and first.local.runtime == "vllm"

    def changed(model_id: str, **update: object) -> Policy:
        models = dict(policy.models)
        models[model_id] = models[model_id].model_copy(update=update)
        return policy.model_copy(update={"models": models})

    # the local model's window too small for the prompt on every runtime: the walk
    # condenses on the first, with the new window
    small = changed("qwen3-14b", context_window=8_000)
    d = decide(small, "architect", signals, FREE)
    assert d.local is not None and d.local.context_window == 8_000 and d.local.condense
    # the first cloud step's window too small: the next step serves
    narrow = changed("gpt-5.1-high", context_window=1_000)
    d = decide(narrow, "architect", signals, FREE)
    assert d.target != "gpt-5.1-high"
    assert [s.reason for s in d.skipped] == ["context_too_small"]
    # a dearer first step costs more
    dear = changed("gpt-5.1-high", price_in_usd_per_mtok=1_000.0)
    assert decide(dear, "architect", signals, FREE).est_cost_usd > first.est_cost_usd
    # and the first policy again: its own answers
    assert decide(policy, "architect", signals, FREE) == first


# (the fixture's one policy object across every example is the point: what decide()
# remembers of it builds up role after role)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.tuples(st.sampled_from(ROLES), signals_st, state_st), min_size=2, max_size=12))
def test_one_policy_decides_every_role_as_a_fresh_copy_of_it_does(
    policy: Policy, asked: list[tuple[str, Signals, RouterState]]
) -> None:
    """What decide() remembers of a policy is kept per role and per entry: the same policy
    object asked for role after role answers each as a copy of it (nothing remembered).
    Also with a model two roles' chains enter at escalation-only for one of them."""
    policies = (policy, _judge_only(policy))
    for role, signals, state in asked:
        for shared in policies:
            fresh = shared.model_copy()
            assert decide(shared, role, signals, state) == decide(fresh, role, signals, state)


_VARIANTS: dict[int, tuple[Policy, Policy]] = {}


def _judge_only(policy: Policy) -> Policy:
    """``policy`` with gpt-5.1-high escalation-only for the Judge (one object per policy)."""
    if id(policy) not in _VARIANTS:
        models = dict(policy.models)
        gpt = models["gpt-5.1-high"].model_copy(update={"escalation_only_roles": ["judge"]})
        models["gpt-5.1-high"] = gpt
        _VARIANTS[id(policy)] = (policy, policy.model_copy(update={"models": models}))
    return _VARIANTS[id(policy)][1]


def test_roles_entering_the_same_model_keep_their_own_chains(policy: Policy) -> None:
    """The Architect and the Judge both enter at gpt-5.1-high and go on down different
    chains: asked one after the other on one policy object, each walks its own."""
    shared = policy.model_copy()  # (nothing remembered of it yet)
    denied = RouterState(denied=frozenset({"gpt-5.1-high"}))
    asked = [
        ("architect", Signals(confidence=0.5)),
        ("judge", Signals(high_risk=True)),
        ("tier2", Signals(tier2_opt_in=True)),
        ("second_opinion", Signals(high_risk=True)),
        ("architect", Signals(confidence=0.5)),
    ]
    for shared_policy in (shared, _judge_only(shared)):
        for role, signals in asked:
            for state in (FREE, denied):
                got = decide(shared_policy, role, signals, state)
                assert got == decide(shared_policy.model_copy(), role, signals, state)
    assert decide(shared, "architect", Signals(confidence=0.5), denied).target == (
        "deepseek-reasoner"
    )
    assert decide(shared, "judge", Signals(high_risk=True), denied).target == "claude-opus-4.7"


def test_with_estimate_on_a_subclass_keeps_what_model_copy_keeps() -> None:
    from pydantic import ConfigDict, PrivateAttr

    class Noted(Signals):
        model_config = ConfigDict(frozen=True, extra="allow")
        _note: str = PrivateAttr(default="kept")

    given_ = Noted(confidence=0.4, origin="acp")  # type: ignore[call-arg]
    made = given_.with_estimate(12)
    assert made == given_.model_copy(update={"context_estimate": 12})
    assert made._note == "kept" and made.model_extra == {"origin": "acp"}
    assert type(made) is Noted and made.context_estimate == 12


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["confidence=0.5", "confidence=0.9"], "--signal confidence: given twice"),
        (["confidence=\uff10.\uff15"], "expected ASCII digits"),  # full-width "0.5"
    ],
)
def test_a_signal_given_twice_or_in_other_digits_is_a_usage_error(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last of two kept silently; full-width digits were read as 0.5 (an audit)."""
    args = [a for pair in argv for a in ("--signal", pair)]
    assert main(["route", "explain", "--role", "architect", *args]) == 2
    assert said in capsys.readouterr().err


def test_a_value_just_under_its_threshold_is_not_shown_as_the_threshold(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``confidence=0.7499999`` read "confidence 0.75 < 0.75" in route explain and in the
    escalation's audit line (a user audit)."""
    argv = ["route", "explain", "--role", "architect", "--signal", "confidence=0.7499999"]
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "confidence 0.7499999 < 0.75" in data["reasons"][0]["text"], data["reasons"]
    assert main([*argv[:-1], "confidence=0.5", "--json"]) == 0
    assert "confidence 0.5 < 0.75" in json.loads(capsys.readouterr().out)["reasons"][0]["text"]


def test_an_escalations_estimate_is_in_nano_dollars_as_the_ledger_holds_it(
    policy: Policy,
) -> None:
    """decide() wrote the float sum unrounded: the escalation and approval lines said
    0.00011675999999999999 beside the call line's 0.00011676 and the ledger's nano-dollars.
    Every estimate is a whole number of nano-dollars, spelled with 9 places at most."""
    noisy = 0
    for prompt in range(200, 400):
        signals = Signals(failed_loops=2, context_estimate=prompt, output_tokens=98)
        d = decide(policy, "implementer", signals, FREE)
        assert d.target == "deepseek-reasoner"
        model = policy.model("deepseek-reasoner")
        thinking = policy.generation.reasoning_tokens(model.reasoning_effort)
        usd = (prompt * 0.28 + (98 + thinking) * 0.42) / 1e6
        noisy += repr(usd) != repr(round(usd, 9))  # (the float sum's noise, unrounded)
        assert d.est_cost_usd == round(usd, 9), prompt
        exponent = Decimal(repr(d.est_cost_usd)).as_tuple().exponent
        assert isinstance(exponent, int) and exponent >= -9, d.est_cost_usd
    assert noisy  # the prompts above do meet the float sum's noise
