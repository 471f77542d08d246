"""R1 (GR-009): a whole scripted session under local_only, with every §3 trigger firing,
makes zero non-loopback connection attempts, and the audit shows each trigger skipped.

The session is one ``switchyard run --local-only --full-sweep --synth`` on the demo
repository, grown past 100k tokens in many files, against a loopback vLLM fake; every
trigger fires from what the pipeline saw, none from ``ask --signal`` (issue 17):

* Architect: a plan at 0.6 with a large, ambiguous scope (its grounded confidence);
* Implementer: two failed loops with a low self-check across four modules, and the
  files the plan names read for it (tool-heavy);
* Librarian: the whole-repository sweep (full sweep, > 100k tokens, tool-heavy: the
  files it reads), and its own notes (contradictions, a low confidence);
* ACE: the failed loops, after its local reflection learned nothing;
* Tier2: the session's opt-in; the Judge and the second opinion: a High-Risk spec;
* the user's explicit escalation request for the Architect, Implementer and Judge.

Cloud keys are set and the cloud providers keep their real, non-loopback addresses: only
local_only stands between the session and the network, and the socket guard records any
attempt to get past it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.policy import load_policy
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.spec import seed_spec
from tests.reliability.kit import (
    CLOUD_KEY_VARS,
    FAST_TEST,
    LOCAL_MODELS,
    TASK,
    audit_lines,
    closed_port,
    fix_diff,
    git,
    impl_json,
    make_repo,
    new_files_diff,
    no_traceback,
    plan_json,
    role_of,
    run_json,
    verdict_json,
)
from tests.socket_guard import SocketGuard

# a spec the §8 linter accepts (run --spec lints first), the Judge exercised, High-Risk
# left to the classifier: the fix adds a settings.py (public_api). (An HR = YES spec under
# local_only is refused by the lint before any model call: it could never be merge-ready.)
SPEC = seed_spec(hr="YES/NO")

#: the Librarian's notes on the sweep: sources that disagree, and little confidence
NOTES = {
    "points": [{"text": "parse() drops the last token", "sources": []}],
    "contradictions": ["README.md says every token is kept; parser.py drops the last"],
    "confidence": 0.3,
}


def grow(repo: Path) -> None:
    """The small files the plan names (pkg{i}/mod0.py: read for the Implementer), and past
    100k tokens in 60 more (read by the Librarian's sweep)."""
    for i in range(9):
        path = repo / f"pkg{i}" / "mod0.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"LIMIT_{i} = {i}\n")
    for k in range(60):
        path = repo / "bulk" / f"part{k}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "".join(f"def helper_{k}_{j}(value):\n    return value + {j}\n" for j in range(300))
        )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a larger repository")


@pytest.fixture
def session_env(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
) -> dict[str, Any]:
    repo = make_repo(tmp_path)
    high_risk_fix = fix_diff(repo) + new_files_diff(["settings.py"])
    grow(repo)
    # four modules, a low self-check, tests still red: three implementer triggers in turn
    wide = impl_json(new_files_diff(f"mod{i}/extra.py" for i in range(4)), check=0.3)
    implementer = [wide, wide]

    def local(body: dict[str, Any]) -> str:
        role = role_of(body)
        if role == "interrogate":
            return "Q: is it the loop bound? A: yes."
        if role == "architect":  # 9 steps, 13+ files, 3 open questions, confidence 0.6
            return plan_json(0.6, steps=9, files_per_step=2, questions=3)
        if role == "implementer":
            return implementer.pop(0) if implementer else impl_json(high_risk_fix, 0.9)
        if role == "judge":
            return verdict_json()
        if "Librarian" in str(body["messages"][0]["content"]):
            return json.dumps(NOTES)
        return "A short local answer."

    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS)
    vllm.script.respond_with(local)
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    for var in CLOUD_KEY_VARS:  # a key everywhere: only local_only may keep the cloud away
        monkeypatch.setenv(var, f"sk-r1-{var.lower()}-0123456789abcdef")
    spec = tmp_path / "spec.md"
    spec.write_text(SPEC)
    return {"repo": repo, "vllm": vllm, "spec": spec, "implementer": implementer, "wide": wide}


def test_a_full_local_only_session_never_leaves_the_machine(
    socket_guard: SocketGuard,
    session_env: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy = load_policy().policy
    # the cloud stays where it really is: any leak would be a non-loopback attempt
    assert all(
        "127.0.0.1" not in (p.base_url or "") and "localhost" not in (p.base_url or "")
        for name, p in policy.providers.items()
        if name != "local"
    )
    escalate = [a for r in ("architect", "implementer", "judge") for a in ("--escalate", r)]
    rc, out, err = run_json(
        [
            "run",
            TASK,
            "--repo",
            str(session_env["repo"]),
            "--spec",
            str(session_env["spec"]),
            "--local-only",
            "--approve",
            "allow",
            "--test-command",
            FAST_TEST,
            "--full-sweep",
            "--synth",
            *escalate,
        ],
        capsys,
    )
    no_traceback(err)
    # High-Risk needs the cloud Judge, which local_only forbids: a clear, audited stop
    assert rc == 1 and out["outcome"] == "stopped", out
    assert out["tests_green"] and out["high_risk"]
    assert "cloud" in out["reason"].lower() or "judge" in out["reason"].lower(), out["reason"]
    # a second run whose every attempt fails: the failure asks for a second opinion
    session_env["implementer"].extend([session_env["wide"]] * 4)
    argv = ["run", TASK, "--repo", str(session_env["repo"]), "--local-only"]
    rc, out, err = run_json([*argv, "--approve", "allow", "--test-command", FAST_TEST], capsys)
    no_traceback(err)
    assert rc == 1 and not out["tests_green"], out

    # ── zero non-loopback attempts, at the socket level ─────────────────────────────
    socket_guard.assert_no_attempts()
    assert socket_guard.allowed, "the session did talk to the loopback fakes"

    # ── the audit: every trigger fired, and every escalation was a GR-009 skip ──────
    lines = audit_lines()
    # a sidecar's trigger shows on its refusal: it has no local route to take instead;
    # a request that stays local when its trigger fires (cloud_only: the Architect's
    # final plan, ACE, the Librarian) shows it on the cloud steps it skipped
    fired = {
        code
        for line in lines
        if line["kind"] in ("route", "skip")
        or (line["kind"] == "refusal" and policy.roles[line["role"]].sidecar)
        for code in line["reason_codes"]
    }
    wanted = {t.reason for t in policy.triggers}
    assert wanted <= fired, f"triggers that never fired: {sorted(wanted - fired)}"
    skipped_roles = {
        line["role"]
        for line in lines
        if line["kind"] == "skip" and "SKIP_LOCAL_ONLY" in line["reason_codes"]
    }
    assert {t.role for t in policy.triggers if t.role != "*"} <= skipped_roles
    for line in lines:
        if line["kind"] == "skip" and "SKIP_LOCAL_ONLY" in line["reason_codes"]:
            assert policy.is_cloud(line["to"]) and "GR-009" in line["detail"], line
    kinds = {line["kind"] for line in lines}
    assert not kinds & {"escalation", "approval", "local_only_refusal"}, kinds
    calls = [line for line in lines if line["kind"] == "call"]
    assert calls and all(str(line["to"]).endswith("@vllm") for line in calls)
    # the vLLM fake served every call; nothing reached for a cloud model's name
    served = {r["model"] for r in session_env["vllm"].chat_requests}
    assert served <= set(LOCAL_MODELS)


def test_the_guard_is_live_without_local_only(
    socket_guard: SocketGuard,
    session_env: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The control: the same escalation without local_only does try to reach the cloud
    (the guard blocks it, so nothing leaves), and the router takes that as a failed step."""
    rc, data, err = run_json(
        [
            "ask",
            "--role",
            "architect",
            "--signal",
            "confidence=0.5",
            "--approve",
            "allow",
            "--max-tokens",
            "16",
            "plan it",
        ],
        capsys,
    )
    no_traceback(err)
    assert rc == 0 and data["runtime"] == "vllm", data
    hosts = {a.host for a in socket_guard.attempts}
    assert "api.openai.com" in hosts, socket_guard.attempts
    skips = [a for a in data["audit"] if a["kind"] == "skip"]
    assert any("SKIP_FAILED" in a["reason_codes"] for a in skips), skips
