"""R1 (GR-009): a whole scripted session under local_only, with every §3 trigger firing,
makes zero non-loopback connection attempts, and the audit shows each trigger skipped.

The session: ``switchyard run --local-only`` on the demo repository against a loopback
vLLM fake (plan at 0.6 with a large, ambiguous scope; two failed implementation loops
with a low self-check across four modules; a High-Risk spec for the Judge; the user's
explicit escalation request for every pipeline role), then ``switchyard ask --local-only``
for the roles and signals a pipeline run does not produce (Librarian, Tutor, ACE, Tier2,
a tool-heavy Implementer). Cloud keys are set and the cloud providers keep their real,
non-loopback addresses: only local_only stands between the session and the network, and
the socket guard records any attempt to get past it.
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

# a spec the §8 linter accepts (run --spec lints first): High-Risk, the Judge exercised
SPEC = seed_spec(hr="YES")

# (role, signals) for the asks: together with the run they fire every trigger in the policy
ASKS: list[tuple[str, list[str]]] = [
    (
        "librarian",
        [
            "context_estimate=120000",
            "contradictions_detected=true",
            "tool_heavy=true",
            "full_sweep=true",
            "local_synth_confidence=0.3",
            "user_request=true",
        ],
    ),
    ("tutor", ["user_request=true"]),
    ("ace", ["interesting_failure=true"]),
    ("tier2", ["tier2_opt_in=true"]),
    ("implementer", ["tool_calls=25"]),
]


@pytest.fixture
def session_env(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
) -> dict[str, Any]:
    repo = make_repo(tmp_path)
    fix = fix_diff(repo)
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
            return implementer.pop(0) if implementer else impl_json(fix, 0.9)
        if role == "judge":
            return verdict_json()
        return "A short local answer."

    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS)
    vllm.script.respond_with(local)
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    for var in CLOUD_KEY_VARS:  # a key everywhere: only local_only may keep the cloud away
        monkeypatch.setenv(var, f"sk-r1-{var.lower()}-0123456789abcdef")
    spec = tmp_path / "spec.md"
    spec.write_text(SPEC)
    return {"repo": repo, "vllm": vllm, "spec": spec}


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
            *escalate,
        ],
        capsys,
    )
    no_traceback(err)
    # High-Risk needs the cloud Judge, which local_only forbids: a clear, audited stop
    assert rc == 1 and out["outcome"] == "stopped", out
    assert out["tests_green"] and out["high_risk"]
    assert "cloud" in out["reason"].lower() or "judge" in out["reason"].lower(), out["reason"]

    for role, signals in ASKS:
        argv = ["ask", "--role", role, "--local-only", "--approve", "allow", "--max-tokens", "16"]
        for s in signals:
            argv += ["--signal", s]
        rc, data, err = run_json([*argv, "a question for the local model"], capsys)
        no_traceback(err)
        assert rc == 0, (role, data, err)
        assert data["runtime"] == "vllm", (role, data)
    # the second-opinion sidecar has no local stand-in: under local_only it is refused
    for signal in ("failed_loops=2", "confidence=0.5"):
        argv = ["ask", "--role", "second_opinion", "--local-only", "--approve", "allow"]
        rc, data, err = run_json([*argv, "--signal", signal, "a question"], capsys)
        no_traceback(err)
        assert rc == 1 and "SIDECAR_NOT_REACHED" in json.dumps(data), (signal, data, err)

    # ── zero non-loopback attempts, at the socket level ─────────────────────────────
    socket_guard.assert_no_attempts()
    assert socket_guard.allowed, "the session did talk to the loopback fakes"

    # ── the audit: every trigger fired, and every escalation was a GR-009 skip ──────
    lines = audit_lines()
    # a sidecar's trigger shows on its refusal: it has no local route to take instead
    fired = {
        code
        for line in lines
        if line["kind"] == "route"
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
