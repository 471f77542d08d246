"""Decisions that sent nothing to the cloud are recorded, so ``policy simulate`` replays them.

After the Architect's plan (test_policy_simulate_plan_check.py), the same gap elsewhere:
the second opinion's gate found no trigger firing and wrote nothing, and ACE's and the
Librarian's escalations kept local at their first decision left no line holding what
that decision read (the router leaves it to its caller). A policy that would ask (a
lower bar, a trigger the log's policy lacked, a budget that fits) simulated as "0
changed". Each is now a ``check`` line with decide()'s inputs; a log from before it says
what it cannot replay.

Whole ``switchyard run``s (and a Librarian job in a real session) against loopback
fakes, the real audit chain and ledger, then ``switchyard policy simulate`` on the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.config import load_settings
from app.pipeline.librarian import condense
from app.policy import load_policy
from app.router.session import open_session
from app.router.simulate.simulation import WHY_KEPT_LOCAL, WHY_SIDECAR_UNCHECKED
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policy import policy_pointing
from tests.integration.test_librarian_fakes import big_sources, notes_for
from tests.reliability.kit import (
    FAST_TEST,
    LOCAL_MODELS,
    TASK,
    audit_lines,
    diff_of,
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

#: the second opinion's bar on a plan's confidence, as shipped (0.75)
SIDECAR_BAR = 'threshold = 0.75\nseed = "§2 escalation-only second opinion: confidence'
ACE_TRIGGER = """[[triggers]]
id = "ace_interesting_failure"
role = "ace"
reason = "ACE_INTERESTING_FAILURE"
signal = "interesting_failure"
op = "is_true"
target = "kimi-k2-instruct"
seed = "§1 escalate only for interesting failures"
"""
TIGHT = "[budget.provider_day_usd]\nopenai = 10.0\nanthropic = 10.0\ndeepseek = 5.0\nmoonshot = 5.0"


def _rewrite(policy: Path, name: str, old: str, new: str) -> Path:
    text = policy.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    out = policy.with_name(name)
    out.write_text(text.replace(old, new), encoding="utf-8")
    return out


def _env(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    factory: Callable[..., FakeOpenAIServer],
    confidence: float,
    impl: list[str] | None = None,
) -> dict[str, Any]:
    """A run's fakes: the local planner at ``confidence``; the Implementer's diffs in
    turn (``wrong``: applies, tests stay red; ``fix``); ACE's local reflection keeps no
    lesson. The shipped policy, and variants of it beside it."""
    repo = make_repo(tmp_path)
    fix = fix_diff(repo)
    wrong = diff_of(repo, '"""Split ``text``', '"""Split the ``text``')
    diffs = {"wrong": wrong, "fix": fix}
    attempts = [diffs[k] for k in (impl or ["fix"])]

    def local(body: dict[str, Any]) -> str:
        role = role_of(body)
        if role == "interrogate":
            return "Q: is it the loop bound? A: yes."
        if role == "architect":
            return plan_json(confidence)
        if role == "implementer":
            return impl_json(attempts.pop(0) if attempts else fix, 0.9)
        if role == "judge":
            return verdict_json()
        return '{"patterns": []}'

    vllm = factory("vllm", models=LOCAL_MODELS)
    vllm.script.respond_with(local)
    llamacpp = factory("llamacpp", models=["qwen3-14b", "qwen2.5-coder-32b"])
    llamacpp.script.respond_with(local)
    openai = factory("openai")
    openai.script.respond_with(lambda body: plan_json(0.99))
    policy = policy_pointing(tmp_path, openai=openai.base_url)
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", llamacpp.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-checks-openai-0000000000000000")
    monkeypatch.setenv("COLUMNS", "200")
    return {"repo": repo, "policy": policy}


def _run(
    env: dict[str, Any],
    policy: str,
    capsys: pytest.CaptureFixture[str],
    outcome: str = "merge_ready",
) -> list[Any]:
    argv = ["run", TASK, "--repo", str(env["repo"]), "--policy", str(env[policy])]
    argv += ["--approve", "deny", "--test-command", FAST_TEST]
    rc, out, err = run_json(argv, capsys)
    no_traceback(err)
    assert rc == (0 if outcome == "merge_ready" else 1) and out["outcome"] == outcome, out
    return [a for a in audit_lines() if a["run"] == out["run_id"]]


def _simulate(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str], new: str, against: str
) -> dict[str, Any]:
    argv = ["policy", "simulate", "--policy", str(env[new]), "--against", str(env[against])]
    rc, report, err = run_json(argv, capsys)
    assert rc == 0, err
    return dict(report)


def _row(report: dict[str, Any], role: str) -> dict[str, Any]:
    [row] = [r for r in report["roles"] if r["role"] == role]
    return dict(row)


def _unchanged(report: dict[str, Any]) -> None:
    assert report["changed"] == 0 and report["unsimulated"]["count"] == 0
    assert report["against_differs_from_recorded"] == 0


# ── the second opinion's gate ────────────────────────────────────────────────────────


def _sidecar_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, factory: Callable[..., FakeOpenAIServer]
) -> dict[str, Any]:
    """A plan at 0.6 (the Architect's escalation, denied) under a policy whose second
    opinion asks below 0.5 only: its gate is consulted and fires nothing."""
    env = _env(tmp_path, monkeypatch, factory, 0.6)
    env["lenient"] = _rewrite(
        env["policy"], "lenient.toml", SIDECAR_BAR, SIDECAR_BAR.replace("0.75", "0.5")
    )
    return env


def test_the_second_opinions_gate_is_a_check_and_a_higher_bar_asks_for_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = _sidecar_env(tmp_path, monkeypatch, fake_openai_factory)
    lines = _run(env, "lenient", capsys)
    assert [a["kind"] for a in lines if a["role"] == "architect" and a["kind"] == "denial"]
    assert not [a for a in lines if a["kind"] == "advice"]  # nobody was asked
    [check] = [a for a in lines if a["kind"] == "check" and a["role"] == "second_opinion"]
    # a decision that no second opinion was needed: decide()'s refusal code, no trigger's
    assert check["reason_codes"] == ["SIDECAR_NOT_REACHED"] and check["to"] is None
    assert check["detail"].startswith("the plan at confidence 0.60 (")
    assert check["detail"].endswith("fires no trigger: no second opinion needed")
    assert check["values"]["occasion"] == "low_confidence"
    signals = check["values"]["inputs"]["signals"]
    assert signals["confidence"] == 0.6
    # what asking would send: the prompt's estimate, as the router's lines record it
    assert signals["context_estimate"] > 0 and signals["schema_tokens"] > 0

    # the policy it was made under: nothing changes, nothing is left out
    _unchanged(_simulate(env, capsys, "lenient", "lenient"))
    # the shipped 0.75 bar: the plan at 0.6 gets its second opinion
    shipped = _simulate(env, capsys, "policy", "lenient")
    assert shipped["unsimulated"]["count"] == 0 and shipped["changed"] == 1
    row = _row(shipped, "second_opinion")
    assert row["escalations_added"] == 1 and row["approvals_new"] == 1
    [change] = shipped["biggest_changes"]
    assert (change["seq"], change["kind"]) == (check["seq"], "escalation_added")
    assert change["against"] == "refused" and change["new"] == "claude-sonnet-4.6 (cloud)"
    assert change["reasons"] == ["SECOND_OPINION_LOW_CONFIDENCE"] and change["estimated"]


def test_a_log_from_before_the_gates_check_says_that_occasion_is_unsimulated(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    import app.pipeline.second_opinion as second_opinion

    async def before_the_check(*_: Any, **__: Any) -> None:
        return None  # what the gate wrote then: nothing

    env = _sidecar_env(tmp_path, monkeypatch, fake_openai_factory)
    monkeypatch.setattr(second_opinion, "_record_no_trigger", before_the_check)
    lines = _run(env, "lenient", capsys)
    assert not [a for a in lines if a["role"] == "second_opinion"]

    shipped = _simulate(env, capsys, "policy", "lenient")
    # not "0 changed" over a plan whose second opinion the log cannot say was not due
    assert shipped["unsimulated"] == {
        "count": 1,
        "reasons": {WHY_SIDECAR_UNCHECKED: 1},
        "recorded_usd": 0.0,
    }
    assert shipped["changed"] == 0
    # the same triggers would decide it as they did: nothing is missing
    _unchanged(_simulate(env, capsys, "lenient", "lenient"))


def test_the_gate_on_spent_attempts_is_a_check_and_a_run_from_before_it_is_unsimulated(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every attempt fails (4 loops) under a policy asking for a second opinion from 5:
    the gate's check. A second run like it, from before the check, leaves only its end
    line ("implementer: 4 failed loops in 4 attempts"), which says the gate was asked."""
    import app.pipeline.second_opinion as second_opinion

    env = _env(tmp_path, monkeypatch, fake_openai_factory, 0.95, ["wrong"] * 8)
    bar = 'threshold = 2\nseed = "§2 escalation-only second opinion: repeated failures'
    env["lenient"] = _rewrite(env["policy"], "lenient.toml", bar, bar.replace("= 2", "= 5"))
    lines = _run(env, "lenient", capsys, "stopped")
    [check] = [a for a in lines if a["kind"] == "check" and a["role"] == "second_opinion"]
    assert check["values"]["occasion"] == "failure"
    assert check["values"]["inputs"]["signals"]["failed_loops"] == 4
    assert check["detail"] == (
        "the Implementer's 4 failed loops fires no trigger: no second opinion needed"
    )

    async def before_the_check(*_: Any, **__: Any) -> None:
        return None

    monkeypatch.setattr(second_opinion, "_record_no_trigger", before_the_check)
    older = _run(env, "lenient", capsys, "stopped")
    assert not [a for a in older if a["role"] == "second_opinion"]

    _unchanged(_simulate(env, capsys, "lenient", "lenient"))
    shipped = _simulate(env, capsys, "policy", "lenient")  # a second opinion from 2 loops
    assert shipped["unsimulated"]["reasons"] == {WHY_SIDECAR_UNCHECKED: 1}
    assert shipped["changed"] == 1
    [change] = shipped["biggest_changes"]
    assert (change["seq"], change["role"]) == (check["seq"], "second_opinion")
    assert change["reasons"] == ["SECOND_OPINION_FAILURE"]


# ── ACE's escalation, kept local at its first decision ───────────────────────────────


def test_aces_escalation_kept_local_with_no_trigger_is_a_check_the_trigger_escalates(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two failed loops, then green: an interesting failure the local reflection learned
    nothing from, under a policy without ACE's trigger. The router keeps the cloud_only
    request local at once (RouteStaysLocal) and ACE records the decision."""
    env = _env(tmp_path, monkeypatch, fake_openai_factory, 0.95, ["wrong", "wrong", "fix"])
    env["no_ace"] = _rewrite(env["policy"], "no-ace.toml", ACE_TRIGGER, "")
    lines = _run(env, "no_ace", capsys)
    [check] = [a for a in lines if a["kind"] == "check" and a["role"] == "ace"]
    assert check["reason_codes"] == [] and str(check["to"]).endswith("@vllm")
    assert check["detail"].endswith("fires no trigger: no escalation needed")
    assert check["values"]["inputs"]["signals"]["interesting_failure"] is True
    assert not [a for a in lines if a["role"] == "ace" and a["kind"] == "escalation"]

    _unchanged(_simulate(env, capsys, "no_ace", "no_ace"))
    shipped = _simulate(env, capsys, "policy", "no_ace")
    assert shipped["unsimulated"]["count"] == 0 and shipped["changed"] == 1
    assert _row(shipped, "ace")["escalations_added"] == 1
    [change] = shipped["biggest_changes"]
    assert (change["seq"], change["kind"]) == (check["seq"], "escalation_added")
    assert change["against"] == f"{check['to']} (local)"
    assert change["new"] == "kimi-k2-instruct (cloud)"
    assert change["reasons"] == ["ACE_INTERESTING_FAILURE"]


# ── the Librarian's escalation, kept local at its first decision ─────────────────────


@pytest.fixture
def librarian(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
) -> dict[str, Any]:
    """A job over 100k tokens (the Librarian's context trigger) under a policy whose
    Moonshot and Anthropic caps fit no escalation of it: every cloud step is skipped for
    the budget before anyone is asked."""
    vllm = fake_openai_factory(
        "vllm", models=["meta-llama/Llama-3.1-8B-Instruct"], max_model_len=32768
    )
    vllm.script.respond_with(lambda body: notes_for(body, label="local"))
    kimi = fake_openai_factory("moonshot")
    kimi.script.respond_with(lambda body: notes_for(body, label="kimi", confidence=0.95))
    policy = policy_pointing(tmp_path, moonshot=kimi.base_url)
    tight = TIGHT.replace("anthropic = 10.0", "anthropic = 0.000001")
    tight = tight.replace("moonshot = 5.0", "moonshot = 0.000001")
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", vllm.base_url)
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-checks-moonshot-00000000000000")
    monkeypatch.setenv("COLUMNS", "200")
    return {
        "policy": policy,
        "tight": _rewrite(policy, "tight.toml", TIGHT, tight),
        "kimi": kimi,
    }


async def _condense(env: dict[str, Any]) -> list[Any]:
    policy = load_policy(env["tight"]).policy
    async with open_session(load_settings(), policy, approve="allow") as session:
        result = await condense(session.router, "what limits apply?", big_sources(), 2000)
        lines = await session.audit.lines(session=session.id)
    assert not result.escalated and env["kimi"].chat_requests == []
    assert "LIBRARIAN_ESCALATION_UNAVAILABLE" in result.reason_codes
    return [ln.model_dump(mode="json", by_alias=True) for ln in lines]


def test_the_librarians_escalation_kept_local_by_the_budget_is_a_check(
    librarian: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    lines = asyncio.run(_condense(librarian))
    skips = [a for a in lines if a["kind"] == "skip"]
    assert skips and all("SKIP_BUDGET" in a["reason_codes"] for a in skips)
    [check] = [a for a in lines if a["kind"] == "check"]
    # the trigger fired; the decision kept the job local, and says why
    assert check["role"] == "librarian" and str(check["to"]).endswith("@vllm")
    assert check["reason_codes"] == ["LIBRARIAN_CONTEXT_LARGE"]
    assert "; it stays local: " in check["detail"]
    inputs = check["values"]["inputs"]
    assert inputs["signals"]["context_estimate"] > 100_000 and inputs["left"]["moonshot"] < 1e-5
    # one request with its skips: the first skip's seq names it
    first = skips[0]["seq"]
    assert check["values"]["req"] == first
    assert all(a["values"].get("req") == first for a in skips[1:])

    _unchanged(_simulate(librarian, capsys, "tight", "tight"))
    shipped = _simulate(librarian, capsys, "policy", "tight")
    assert shipped["unsimulated"]["count"] == 0 and shipped["changed"] == 1
    assert _row(shipped, "librarian")["escalations_added"] == 1
    [change] = shipped["biggest_changes"]
    assert (change["seq"], change["kind"]) == (check["seq"], "escalation_added")
    assert change["new"] == "kimi-k2-instruct (cloud)"
    assert change["reasons"] == ["LIBRARIAN_CONTEXT_LARGE"]


def test_a_log_from_before_the_librarians_check_says_that_job_is_unsimulated(
    librarian: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import app.pipeline.librarian.escalation as escalation

    async def before_the_check(*_: Any, **__: Any) -> None:
        return None  # what the Librarian wrote then: its skips alone

    monkeypatch.setattr(escalation, "_record", before_the_check)
    lines = asyncio.run(_condense(librarian))
    assert [a["kind"] for a in lines if a["kind"] in ("skip", "check")] == ["skip"] * 4
    shipped = _simulate(librarian, capsys, "policy", "tight")
    assert shipped["unsimulated"] == {
        "count": 1,
        "reasons": {WHY_KEPT_LOCAL: 1},
        "recorded_usd": 0.0,
    }
    assert shipped["changed"] == 0
    _unchanged(_simulate(librarian, capsys, "tight", "tight"))


def test_simulate_prints_the_reason(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """(the text report names the triggers of a second opinion it adds)"""
    env = _sidecar_env(tmp_path, monkeypatch, fake_openai_factory)
    _run(env, "lenient", capsys)
    argv = ["policy", "simulate", "--policy", str(env["policy"]), "--against", str(env["lenient"])]
    rc, text, err = run_cli(argv, capsys)
    assert rc == 0, err
    assert "1 changed: 1 escalation added" in text
    assert "[SECOND_OPINION_LOW_CONFIDENCE]" in text
