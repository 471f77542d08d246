"""§8 applied: `run --spec` lints the spec first (what it rejects stops the run before any
model call, exit 2 with FILE:LINE) and applies what it accepts, for that run, recorded in
the evidence. The pipeline runs for real against a loopback vLLM fake."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.cli.main import main
from app.policy import load_policy
from app.policy.spec import find_block
from app.policy.spec_lint import lint_text
from app.policy.spec_overrides import BudgetCap, RoleModel, Threshold, parse_override
from app.resources import default_policy_path
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.spec import seed_spec
from tests.reliability.kit import (
    FAST_TEST,
    LOCAL_MODELS,
    TASK,
    audit_lines,
    closed_port,
    fix_diff,
    impl_json,
    make_repo,
    no_traceback,
    plan_json,
    role_of,
    run_cli,
    run_json,
    verdict_json,
)


@pytest.fixture
def world(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
) -> dict[str, Any]:
    repo = make_repo(tmp_path)
    fix = fix_diff(repo)
    seen: list[str] = []

    def local(body: dict[str, Any]) -> str:
        role = role_of(body)
        seen.append(role)
        if role == "interrogate":
            return "Q: is it the loop bound? A: yes."
        if role == "architect":
            return plan_json(0.8)
        if role == "implementer":
            return impl_json(fix, 0.9)
        if role == "judge":
            return verdict_json()
        return "A short local answer."

    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS)
    vllm.script.respond_with(local)
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    return {"repo": repo, "vllm": vllm, "roles": seen, "tmp": tmp_path}


def run_with(world: dict[str, Any], spec: str, capsys: pytest.CaptureFixture[str]) -> Any:
    path = world["tmp"] / "spec.md"
    path.write_text(spec)
    argv = ["run", TASK, "--repo", str(world["repo"]), "--spec", str(path)]
    argv += ["--approve", "deny", "--test-command", FAST_TEST]
    rc, out, err = run_cli([*argv, "--json"], capsys)
    no_traceback(out, err)
    return rc, out, err, path


def bundle_of(out: str) -> Path:
    return Path(json.loads(out)["bundle"])


# ── what lint rejects stops the run, before any model call ──────────────────────────────


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("(version: 1.0.0)", "(version: 2.0.0)", "policy"),
        ("- Tutor: NO", "- Tutor: NO\n- Oracle: YES", "roles.Oracle"),
        ("- none", "- judge: gpt-9-ultra", "overrides"),
        ("- HR = NO", "- HR = MAYBE", "high_risk.HR"),
        ("- none", "- temperature: 0.1", "overrides"),
    ],
)
def test_a_spec_lint_rejects_stops_the_run_with_file_and_line(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str], old: str, new: str, field: str
) -> None:
    spec = seed_spec()
    assert old in spec
    rc, out, err, path = run_with(world, spec.replace(old, new, 1), capsys)
    assert rc == 2, (out, err)
    changed = spec.replace(old, new, 1).splitlines()
    last = new.splitlines()[-1]
    bad_line = next(i for i, ln in enumerate(changed, 1) if last in ln)
    assert f"{path}:{bad_line}: {field}" in err, err
    assert world["vllm"].chat_requests == []  # no model was called
    assert not any(line["kind"] == "run" for line in audit_lines_or_none())


def audit_lines_or_none() -> list[dict[str, Any]]:
    from app.config import load_settings

    return audit_lines() if load_settings().audit_db.exists() else []


def test_a_spec_without_the_implementer_cannot_run(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    spec = seed_spec(roles={"Implementer/Rust Ace": "NO"})
    rc, _, err, path = run_with(world, spec, capsys)
    line = spec.splitlines().index("- Implementer/Rust Ace: NO") + 1
    assert rc == 2 and f"{path}:{line}: roles.Implementer/Rust Ace" in err
    assert world["vllm"].chat_requests == []


def test_hr_yes_in_a_run_made_local_only_by_the_environment_stops_before_any_call(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SWITCHYARD_LOCAL_ONLY forbids the cloud Judge an HR = YES spec needs: the run could
    never be merge-ready, so it stops at the lint, as under a local_only policy."""
    monkeypatch.setenv("SWITCHYARD_LOCAL_ONLY", "1")
    rc, out, err, path = run_with(world, seed_spec(hr="YES"), capsys)
    assert rc == 2, (out, err)
    assert "GR-009" in err and f"{path}:" in err
    assert world["vllm"].chat_requests == []


# ── what lint accepts is applied, and recorded ──────────────────────────────────────────


def test_a_threshold_override_changes_the_escalation_for_this_run(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The plan says 0.8: below the spec's 0.9 the Architect escalates (denied here)."""
    spec = seed_spec(overrides=["architect escalation: confidence < 0.9"])
    rc, out, err, _ = run_with(world, spec, capsys)
    assert rc == 0, (out, err)
    lines = audit_lines()
    applied = [ln for ln in lines if "SPEC_OVERRIDES_APPLIED" in ln["reason_codes"]]
    assert len(applied) == 1
    assert any("0.75 → 0.9" in c for c in applied[0]["values"]["changes"])
    escalations = [ln for ln in lines if ln["kind"] == "escalation" and ln["role"] == "architect"]
    assert escalations and "ARCHITECT_LOW_CONFIDENCE" in escalations[0]["reason_codes"]
    assert "< 0.9" in escalations[0]["detail"]
    recorded = json.loads((bundle_of(out) / "spec_overrides.json").read_text())
    assert (
        recorded["thresholds"][0]["threshold"] == 0.9 and recorded["thresholds"][0]["was"] == 0.75
    )


def test_an_override_that_turns_the_escalation_off_is_said_by_the_run(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """`confidence < 0` is accepted (a spec may keep a run local) but never fires: the run
    says so on stderr, with the spec's line, where it said nothing (an earlier note)."""
    spec = seed_spec(overrides=["architect escalation: confidence < 0"])
    rc, out, err, path = run_with(world, spec, capsys)
    assert rc == 0, (out, err)
    line = spec.splitlines().index("- architect escalation: confidence < 0") + 1
    assert f"switchyard: {path}:{line}: warning: overrides: architect" in err
    assert "turns that escalation off" in err
    assert not [ln for ln in audit_lines() if ln["kind"] == "escalation"]


def test_without_the_override_the_same_plan_stays_local(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err, _ = run_with(world, seed_spec(), capsys)
    assert rc == 0, (out, err)
    assert not [ln for ln in audit_lines() if ln["kind"] == "escalation"]


def test_roles_marked_no_are_not_asked(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    spec = seed_spec(roles={"Architect/Planner": "NO", "Auditor/Judge": "NO"}, hr="NO")
    rc, out, err, _ = run_with(world, spec, capsys)
    assert rc == 0, (out, err)
    assert "architect" not in world["roles"] and "judge" not in world["roles"]
    assert "implementer" in world["roles"]
    codes = {c for ln in audit_lines() for c in ln["reason_codes"]}
    assert {"SPEC_ARCHITECT_NOT_EXERCISED", "SPEC_JUDGE_NOT_EXERCISED"} <= codes
    plan = json.loads((bundle_of(out) / "plan.json").read_text())
    assert plan["goal"] == TASK and len(plan["steps"]) == 1


def test_hr_yes_needs_the_judge_and_a_high_risk_change_gets_one_anyway(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # lint: HR = YES with the Judge marked NO is a contradiction, refused before running
    spec = seed_spec(roles={"Auditor/Judge": "NO"}, hr="YES")
    rc, _, err, _ = run_with(world, spec, capsys)
    assert rc == 2 and "high_risk.HR" in err and world["vllm"].chat_requests == []


# ── the one reader behind both ──────────────────────────────────────────────────────────


def test_parse_override_reads_each_kind_and_names_what_it_cannot() -> None:
    policy = load_policy().policy
    judge = parse_override("judge: claude-opus-4.7 for this spec (approved by the lead)", 9, policy)
    assert isinstance(judge, RoleModel) and judge.model == "claude-opus-4.7"
    loops = parse_override("implementer escalation: 3 failed compile/test loops", 9, policy)
    assert isinstance(loops, Threshold) and loops.threshold == 3
    ctx = parse_override("librarian escalation: context_estimate > 60k", 9, policy)
    assert isinstance(ctx, Threshold) and ctx.threshold == 60_000
    cap = parse_override("budget: session $2", 9, policy)
    assert isinstance(cap, BudgetCap) and cap.usd == 2
    assert "only lower" in str(parse_override("budget: session $500", 9, policy))
    assert "local role" in str(parse_override("architect: gpt-5.1-high", 9, policy))
    assert "comparison" in str(parse_override("architect escalation: confidence > 0.5", 9, policy))
    assert "unknown override" in str(parse_override("temperature: 0.1", 9, policy))


@pytest.mark.parametrize(
    ("override", "said"),
    [
        # read as 1 and as 100 (the Kimi trigger would fire on nearly every request)
        ("librarian escalation: context_estimate > 1e5", "plain number"),
        ("librarian escalation: context_estimate > 100_000", "plain number"),
        ("librarian escalation: context_estimate > 1e400", "plain number"),
        # a model that cannot serve the role's kind
        ("tutor: bge-m3", "tutor is a role of kind llm: 'bge-m3' serves embedding"),
        ("librarian: yolo-trt", "serves vision"),
        ("cv: qwen3-14b", "cv is a role of kind vision: 'qwen3-14b' serves llm"),
        # two rules on one line: the run took the first, whatever the reader took
        ("architect escalation: confidence < 0.8 (or < 0.5 on weekends)", "more than one"),
        ("implementer escalation: 3 failed compile/test loops (5 in CI)", "more than one"),
        # an escalation-only model as a default: the router skipped it, the override unseen
        ("judge: deepseek-r2", "is escalation-only"),
        ("tier2: kimi-k2-thinking-turbo", "is escalation-only"),
    ],
)
def test_an_override_lint_once_called_compliant_is_named(override: str, said: str) -> None:
    found = parse_override(override, 9, load_policy().policy)
    assert isinstance(found, str) and said in found, found
    assert isinstance(
        parse_override("librarian escalation: context_estimate > 100,000", 9, load_policy().policy),
        Threshold,
    )


@pytest.mark.parametrize(
    "override",
    [
        "none",
        "judge: claude-opus-4.7",
        "architect escalation: confidence < 0.8",
        "budget: day $3",
        "tutor: qwen2.5-coder-7b",
        "architect: gpt-5.1-high",
        "budget: session $9999",
        "implementer escalation: 0 failed compile/test loops",
        "random words",
    ],
)
def test_lint_accepts_exactly_what_the_run_applies(override: str) -> None:
    from app.policy.loader import load_policy as load
    from app.policy.spec_overrides import spec_overrides

    loaded = load(default_policy_path())
    text = seed_spec(overrides=[override])
    report = lint_text(text, "spec.md", loaded)
    block = find_block(text, "spec.md")
    if report.compliant:
        applied = spec_overrides(block, loaded.policy)  # never raises on an accepted spec
        changed = applied.models or applied.thresholds or applied.budgets
        assert bool(changed) is (override != "none")
    else:
        with pytest.raises(ValueError, match=r"spec\.md:"):
            spec_overrides(block, loaded.policy)


def test_spec_lint_command_and_run_agree_on_a_rejected_override(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "spec.md"
    path.write_text(seed_spec(overrides=["temperature: 0.1"]))
    rc, data, _ = run_json(["spec", "lint", str(path)], capsys)
    report = data[0] if isinstance(data, list) else data
    assert rc == 1 and report["compliant"] is False
    assert main(["spec", "lint", str(path)]) == 1
