"""The merge gate: GR-002 (High-Risk needs the cloud Judge), GR-003, GR-006, human approval."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.policy.gate import GateInput, GateResult, VerdictRecord, merge_gate


def _v(
    verdict: str = "approve",
    *,
    model: str = "gpt-5.1-high",
    provider: str = "openai",
    local: bool = False,
    cited: bool = True,
) -> VerdictRecord:
    return VerdictRecord.model_validate(
        {
            "model": model,
            "provider": provider,
            "local": local,
            "verdict": verdict,
            "citations_resolved": cited,
        }
    )


CLOUD_APPROVE = _v()
OPUS_APPROVE = _v(model="claude-opus-4.7", provider="anthropic")
CLOUD_REJECT = _v("reject", model="claude-sonnet-4.6", provider="anthropic")
CLOUD_NEEDS_WORK = _v("needs_work", model="claude-sonnet-4.6", provider="anthropic")
CLOUD_APPROVE_UNCITED = _v(cited=False)
CLOUD_REJECT_UNCITED = _v("reject", cited=False)
LOCAL_APPROVE = _v(model="qwen3-14b", provider="local", local=True)
LOCAL_REJECT = _v("reject", model="qwen3-14b", provider="local", local=True)
# Labelled cloud, but the provider says local: still a local model.
MISLABELLED_LOCAL_APPROVE = _v(model="qwen3-14b", provider="local", local=False)


def _gate(
    *,
    verdicts: list[VerdictRecord],
    high_risk: bool = True,
    green: bool = True,
    human: bool = True,
    local_only: bool = False,
) -> GateResult:
    return merge_gate(
        GateInput(
            tests_green=green,
            high_risk=high_risk,
            verdicts=verdicts,
            human_approved=human,
            local_only=local_only,
        )
    )


def _codes(reasons: list[str]) -> set[str]:
    return {r.split(":", 1)[0] for r in reasons}


# (id, gate kwargs, ok, reason codes)
CASES: list[tuple[str, dict[str, object], bool, set[str]]] = [
    ("hr-local-approve", {"verdicts": [LOCAL_APPROVE]}, False, {"GR-002", "GR-003"}),
    (
        "hr-mislabelled-local",
        {"verdicts": [MISLABELLED_LOCAL_APPROVE]},
        False,
        {"GR-002", "GR-003"},
    ),
    ("hr-cloud-approve", {"verdicts": [CLOUD_APPROVE]}, True, set()),
    ("hr-cloud-approve-red", {"verdicts": [CLOUD_APPROVE], "green": False}, False, {"GR-006"}),
    ("hr-cloud-approve-no-human", {"verdicts": [CLOUD_APPROVE], "human": False}, False, {"HUMAN"}),
    (
        "hr-nothing-at-all",
        {"verdicts": [], "green": False, "human": False},
        False,
        {"GR-006", "HUMAN", "GR-002"},
    ),
    ("hr-approve-and-reject", {"verdicts": [CLOUD_APPROVE, CLOUD_REJECT]}, False, {"GR-002"}),
    (
        "hr-approve-and-needs-work",
        {"verdicts": [OPUS_APPROVE, CLOUD_NEEDS_WORK]},
        False,
        {"GR-002"},
    ),
    ("hr-uncited-approve", {"verdicts": [CLOUD_APPROVE_UNCITED]}, False, {"GR-002", "GR-007"}),
    ("hr-local-reject-is-advice", {"verdicts": [CLOUD_APPROVE, LOCAL_REJECT]}, True, set()),
    ("hr-local-only", {"verdicts": [], "local_only": True}, False, {"GR-002", "GR-009"}),
    (
        "hr-local-only-cloud-approve",
        {"verdicts": [CLOUD_APPROVE], "local_only": True},
        False,
        {"GR-002", "GR-009"},
    ),
    ("low-no-verdicts", {"verdicts": [], "high_risk": False}, True, set()),
    ("low-local-approve", {"verdicts": [LOCAL_APPROVE], "high_risk": False}, True, set()),
    ("low-cloud-approve", {"verdicts": [CLOUD_APPROVE], "high_risk": False}, True, set()),
    ("low-cloud-reject", {"verdicts": [CLOUD_REJECT], "high_risk": False}, False, {"JUDGE"}),
    (
        "low-cloud-needs-work",
        {"verdicts": [CLOUD_APPROVE, CLOUD_NEEDS_WORK], "high_risk": False},
        False,
        {"JUDGE"},
    ),
    ("low-uncited-reject", {"verdicts": [CLOUD_REJECT_UNCITED], "high_risk": False}, True, set()),
    ("low-no-human", {"verdicts": [], "high_risk": False, "human": False}, False, {"HUMAN"}),
    ("low-red", {"verdicts": [], "high_risk": False, "green": False}, False, {"GR-006"}),
]


@pytest.mark.parametrize(
    ("kwargs", "ok", "codes"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_gate_table(kwargs: dict[str, object], ok: bool, codes: set[str]) -> None:
    result = _gate(**kwargs)  # type: ignore[arg-type]
    assert result.ok is ok, result.reasons
    assert _codes(result.reasons) == codes
    assert result.ok == (not result.reasons)
    for reason in result.reasons + result.notes:
        assert re.match(r"^[A-Z0-9-]+: \S", reason), reason


def test_local_approve_on_high_risk_gives_both_reasons_verbatim() -> None:
    result = _gate(verdicts=[LOCAL_APPROVE])
    assert not result.ok
    assert result.approving_verdict is None
    assert "GR-002: High-Risk change needs an approving cloud Judge verdict" in result.reasons
    assert any(r.startswith("GR-003:") and "qwen3-14b" in r for r in result.reasons)


def test_cloud_approve_green_and_human_is_ok() -> None:
    result = _gate(verdicts=[LOCAL_REJECT, CLOUD_APPROVE, OPUS_APPROVE])
    assert result.ok
    assert result.reasons == []
    assert result.approving_verdict == CLOUD_APPROVE  # the first that counts
    # the local verdict is recorded, as advice
    assert any(n.startswith("GR-003:") for n in result.notes)


def test_all_failing_reasons_are_listed_in_a_stable_order() -> None:
    result = _gate(verdicts=[LOCAL_APPROVE, CLOUD_REJECT], green=False, human=False)
    assert [r.split(":", 1)[0] for r in result.reasons] == [
        "GR-006",
        "HUMAN",
        "GR-002",  # the cloud reject
        "GR-002",  # no approving cloud verdict
        "GR-003",  # why the local approve did not count
    ]


def test_ignored_verdicts_are_noted_not_failed_when_low_risk() -> None:
    result = _gate(verdicts=[LOCAL_APPROVE, CLOUD_REJECT_UNCITED], high_risk=False)
    assert result.ok
    assert _codes(result.notes) == {"GR-003", "GR-007"}


# ── properties ──────────────────────────────────────────────────────────────────────────

_verdict_kind = st.sampled_from(["approve", "reject", "needs_work"])
_local_verdicts = st.builds(
    VerdictRecord,
    model=st.sampled_from(["qwen3-14b", "qwen2.5-coder-32b", "llama-3.1-8b"]),
    provider=st.sampled_from(["local", "openai", "anthropic"]),  # even a wrong provider label
    local=st.just(True),
    verdict=_verdict_kind,
    citations_resolved=st.booleans(),
)
_any_verdicts = st.builds(
    VerdictRecord,
    model=st.sampled_from(["gpt-5.1-high", "claude-opus-4.7", "qwen3-14b"]),
    provider=st.sampled_from(["local", "openai", "anthropic", "deepseek"]),
    local=st.booleans(),
    verdict=_verdict_kind,
    citations_resolved=st.booleans(),
)


@settings(max_examples=50)
@given(
    verdicts=st.lists(_local_verdicts, max_size=6),
    green=st.booleans(),
    human=st.booleans(),
    local_only=st.booleans(),
)
def test_local_verdicts_never_pass_a_high_risk_change(
    verdicts: list[VerdictRecord], green: bool, human: bool, local_only: bool
) -> None:
    result = _gate(
        verdicts=verdicts, high_risk=True, green=green, human=human, local_only=local_only
    )
    assert not result.ok
    assert result.approving_verdict is None
    assert "GR-002" in _codes(result.reasons)


@settings(max_examples=50)
@given(
    verdicts=st.lists(_any_verdicts, max_size=6),
    high_risk=st.booleans(),
    green=st.booleans(),
    local_only=st.booleans(),
)
def test_no_human_approval_never_passes(
    verdicts: list[VerdictRecord], high_risk: bool, green: bool, local_only: bool
) -> None:
    result = _gate(
        verdicts=verdicts, high_risk=high_risk, green=green, human=False, local_only=local_only
    )
    assert not result.ok
    assert "HUMAN" in _codes(result.reasons)


@settings(max_examples=50)
@given(
    verdicts=st.lists(_any_verdicts, max_size=6),
    high_risk=st.booleans(),
    green=st.booleans(),
    human=st.booleans(),
    local_only=st.booleans(),
)
def test_ok_implies_every_rule(
    verdicts: list[VerdictRecord], high_risk: bool, green: bool, human: bool, local_only: bool
) -> None:
    result = _gate(
        verdicts=verdicts, high_risk=high_risk, green=green, human=human, local_only=local_only
    )
    assert result.ok == (not result.reasons)
    if not result.ok:
        return
    assert green and human
    counting = [v for v in verdicts if not v.is_local and v.citations_resolved and not local_only]
    assert all(v.verdict == "approve" for v in counting)
    if high_risk:
        assert result.approving_verdict is not None
        assert not result.approving_verdict.is_local
        assert result.approving_verdict.citations_resolved


# ── the catalogue, not the record's labels, says which verdicts are a cloud Judge's ─────


def test_catalogued_keeps_cloud_verdicts_and_relabels_the_rest(policy) -> None:  # type: ignore[no-untyped-def]
    from app.policy.gate import catalogued

    dressed_up = _v(model="qwen3-14b", provider="openai")  # a local model labelled cloud
    unknown = _v(model="my-judge", provider="anthropic")
    honest_local = LOCAL_APPROVE
    wrong_provider = _v(model="claude-opus-4.7", provider="openai")
    out, notes = catalogued(
        [CLOUD_APPROVE, dressed_up, unknown, honest_local, wrong_provider], policy
    )
    assert out[0] == CLOUD_APPROVE
    assert out[1].is_local and out[1].provider == "local"
    assert out[2].is_local and out[2].provider == "unknown"
    assert out[3] == honest_local
    assert not out[4].is_local and out[4].provider == "anthropic"
    # a note for each record whose labels claimed a cloud Judge; none for the honest ones
    assert len(notes) == 2 and all(n.startswith("GR-003: verdict.json names") for n in notes)
    assert "qwen3-14b is a local model in the policy's catalogue" in notes[0]
    assert "my-judge is not in the policy's catalogue" in notes[1]
    gate = merge_gate(
        GateInput(tests_green=True, high_risk=True, verdicts=out[1:4], human_approved=True)
    )
    assert not gate.ok and gate.approving_verdict is None


def test_the_local_only_reason_names_the_run_not_this_session() -> None:
    """It said "cannot merge in this session" when a later, cloud-enabled session
    reviewed a run made with --local-only (a user-audit)."""
    result = merge_gate(
        GateInput(
            tests_green=True, high_risk=True, verdicts=[], human_approved=True, local_only=True
        )
    )
    (said,) = [r for r in result.reasons if r.startswith("GR-009")]
    assert "the run was made under local_only" in said and "this session" not in said


@settings(max_examples=50)
@given(
    verdicts=st.lists(st.sampled_from([CLOUD_APPROVE, CLOUD_REJECT, LOCAL_APPROVE]), max_size=3),
    green=st.booleans(),
    human=st.booleans(),
    local_only=st.booleans(),
)
def test_a_run_never_classified_is_held_to_the_high_risk_gate_and_told_so(
    verdicts: list[VerdictRecord], green: bool, human: bool, local_only: bool
) -> None:
    """A run that changed nothing has no highrisk.json and is held as High-Risk (safe);
    the refusal said "High-Risk change needs…", as a fact (a user-audit). The decision is
    the classified High-Risk one; only the GR-002 words differ."""

    def gate(classified: bool) -> GateResult:
        return merge_gate(
            GateInput(
                tests_green=green,
                high_risk=True,
                verdicts=verdicts,
                human_approved=human,
                local_only=local_only,
                high_risk_classified=classified,
            )
        )

    known, unknown = gate(True), gate(False)
    assert unknown.ok == known.ok and _codes(unknown.reasons) == _codes(known.reasons)
    assert unknown.approving_verdict == known.approving_verdict
    assert unknown.notes == known.notes
    said = [r for r in unknown.reasons if "needs an approving cloud Judge verdict" in r]
    assert len(said) == (0 if known.approving_verdict else 1)
    for reason in said:
        assert reason.startswith("GR-002: the run was never classified as High-Risk or not")
        assert "High-Risk change" not in reason
