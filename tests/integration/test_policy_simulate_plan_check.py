"""The Architect's decision on its final plan is a recorded decision, escalation or not.

A user audit: ``policy simulate --policy thr.toml`` (the architect's low-confidence bar
raised from 0.75 to 0.99) said "0 changed", nothing unsimulated, over 16 plans made at
0.95 that the stricter policy escalates (``route explain`` said so). A plan no trigger
fired on left no line: the route lines of the Architect's requests were decided before
the plan existed, without its confidence. Now that decision is a ``check`` line with the
inputs decide() read, replayed as any request; and a log from before it says it cannot
replay those plans, not "0 changed".

Whole ``switchyard run``s against loopback fakes (the pipeline, the sandboxed test loop,
the real audit chain), then ``switchyard policy simulate`` on their log.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.router.simulate.simulation import WHY_UNCHECKED
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policy import policy_pointing
from tests.reliability.kit import (
    FAST_TEST,
    LOCAL_MODELS,
    TASK,
    audit_lines,
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

BAR = 'threshold = 0.75\nseed = "§3 confidence <'
TRIGGER = "ARCHITECT_LOW_CONFIDENCE"


def _env(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    factory: Callable[..., FakeOpenAIServer],
    confidence: float,
) -> dict[str, Any]:
    repo = make_repo(tmp_path)
    fix = fix_diff(repo)

    def local(body: dict[str, Any]) -> str:
        role = role_of(body)
        if role == "interrogate":
            return "Q: is it the loop bound? A: yes."
        if role == "architect":
            return plan_json(confidence)
        if role == "implementer":
            return impl_json(fix, 0.9)
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
    text = policy.read_text(encoding="utf-8")
    assert text.count(BAR) == 1
    strict = tmp_path / "thr.toml"
    strict.write_text(text.replace(BAR, BAR.replace("0.75", "0.99")), encoding="utf-8")
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", llamacpp.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-plan-check-openai-000000000000")
    monkeypatch.setenv("COLUMNS", "200")
    return {"repo": repo, "policy": policy, "strict": strict}


def _run(env: dict[str, Any], capsys: pytest.CaptureFixture[str], *extra: str) -> list[Any]:
    argv = ["run", TASK, "--repo", str(env["repo"]), "--policy", str(env["policy"])]
    argv += ["--approve", "deny", "--test-command", FAST_TEST, *extra]
    rc, out, err = run_json(argv, capsys)
    no_traceback(err)
    assert rc == 0 and out["outcome"] == "merge_ready", (rc, out, err)
    return [a for a in audit_lines() if a["run"] == out["run_id"]]


def _simulate(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str], new: str, against: str = "policy"
) -> dict[str, Any]:
    argv = ["policy", "simulate", "--policy", str(env[new]), "--against", str(env[against])]
    rc, report, err = run_json(argv, capsys)
    assert rc == 0, err
    return dict(report)


def _firsts(lines: list[Any]) -> list[Any]:
    """The decision lines that open a request (what a simulation counts)."""
    return [a for a in lines if a["values"].get("inputs", {}).get("step") == 0]


def test_a_plan_no_trigger_fires_on_is_replayed_and_a_stricter_bar_escalates_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = _env(tmp_path, monkeypatch, fake_openai_factory, 0.95)
    lines = _run(env, capsys)
    assert not [a for a in lines if a["kind"] == "escalation"]
    [check] = [a for a in lines if a["kind"] == "check"]
    # a decision that no escalation was needed: no trigger's code, the local target
    assert check["role"] == "architect" and check["reason_codes"] == []
    assert str(check["to"]).endswith("@vllm")
    assert "no escalation needed" in check["detail"]
    assert "confidence 0.95" in check["detail"]
    signals = check["values"]["inputs"]["signals"]
    assert (signals["confidence"], signals["plan_steps"]) == (0.95, 1)
    # what an escalation of the plan would send: the final prompt's estimate, as the
    # router's escalation line records it
    assert signals["context_estimate"] > 0 and signals["schema_tokens"] > 0

    # under the policy it was made by: nothing changes, nothing is left out
    same = _simulate(env, capsys, "policy")
    assert same["decisions"] == len(_firsts(lines))
    assert same["changed"] == 0 and same["unsimulated"]["count"] == 0
    assert same["against_differs_from_recorded"] == 0

    # the auditor's thr.toml: the plan at 0.95 escalates under a 0.99 bar
    strict = _simulate(env, capsys, "strict")
    assert strict["unsimulated"]["count"] == 0
    assert strict["changed"] == 1
    [row] = [r for r in strict["roles"] if r["role"] == "architect"]
    assert row["escalations_added"] == 1 and row["approvals_new"] == 1
    [change] = strict["biggest_changes"]
    assert change["seq"] == check["seq"] and change["kind"] == "escalation_added"
    assert change["reasons"] == [TRIGGER]
    assert change["against"] == f"{check['to']} (local)"
    assert change["new"] == "gpt-5.1-high (cloud)" and change["estimated"] is True
    assert change["new_usd"] > 0
    rc, text, err = run_cli(
        ["policy", "simulate", "--policy", str(env["strict"]), "--against", str(env["policy"])],
        capsys,
    )
    assert rc == 0, err
    assert "1 changed: 1 escalation added" in text and f"[{TRIGGER}]" in text


def test_a_log_from_before_the_check_says_those_plans_are_unsimulated(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    import app.pipeline.architect as architect

    async def before_the_check(*_: Any) -> None:
        return None  # what the Architect wrote then: nothing

    env = _env(tmp_path, monkeypatch, fake_openai_factory, 0.95)
    monkeypatch.setattr(architect, "_record_check", before_the_check)
    lines = _run(env, capsys)
    assert not [a for a in lines if a["kind"] in ("check", "escalation")]

    strict = _simulate(env, capsys, "strict")
    # not "0 changed" over a plan the log cannot say was not escalated
    assert strict["unsimulated"] == {
        "count": 1,
        "reasons": {WHY_UNCHECKED: 1},
        "recorded_usd": 0.0,
    }
    assert strict["changed"] == 0
    # the same triggers would decide it as they did: nothing is missing
    same = _simulate(env, capsys, "policy")
    assert same["unsimulated"]["count"] == 0 and same["changed"] == 0


def test_a_low_plan_kept_local_by_local_only_is_recorded_with_its_trigger(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The trigger fires and the router keeps the plan local at once (GR-009): its skip
    lines said so, and no line held the decision's inputs."""
    env = _env(tmp_path, monkeypatch, fake_openai_factory, 0.6)
    lines = _run(env, capsys, "--local-only")
    [check] = [a for a in lines if a["kind"] == "check"]
    assert check["reason_codes"] == [TRIGGER]
    assert check["values"]["inputs"]["local_only"] is True
    assert check["values"]["inputs"]["signals"]["confidence"] == 0.6
    assert "stays local" in check["detail"] and "GR-009" in check["detail"]
    skips = [a for a in lines if a["kind"] == "skip" and a["seq"] < check["seq"]]
    assert skips and all("SKIP_LOCAL_ONLY" in a["reason_codes"] for a in skips)
    # read with them as one request: the check names the one its skips opened
    assert check["values"]["req"] == skips[0]["seq"]
    report = _simulate(env, capsys, "policy")
    assert report["decisions"] == len(_firsts(lines))
    assert report["changed"] == 0 and report["unsimulated"]["count"] == 0
    assert report["against_differs_from_recorded"] == 0
