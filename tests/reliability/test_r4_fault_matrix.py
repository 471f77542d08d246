"""R4: the backends' fault matrix, injected into the loopback fakes during a full
``switchyard run``.

Each fault hits the first chat request of one server: on the cloud side the Architect's
escalation to GPT-5.1 (the plan comes back at confidence 0.6), on the local side the
Architect's first draft on vLLM. Whatever the fault, the run ends in a retry, a fallback
(down the cloud chain, or down the local runtime chain to the llama.cpp server) or a
clear, audited stop: exit code 0 or 1, an audit line naming the fault, the run's own
closing line, evidence that verifies, and never a Python traceback.

The HTTP client's timeout is cut to 1 s (production: 120 s) so that a slow first byte
becomes a timeout within the CI budget, and the policy's backoffs to 50 ms.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

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

CLIENT_TIMEOUT_S = 1.0
#: seconds the slow first byte takes: past the client timeout
SLOW_S = 2.0
CHAT = "/v1/chat/completions"


@dataclass(frozen=True)
class Case:
    id: str
    server: str  # which fake gets the fault: openai | vllm
    fault: str
    times: int = 1
    opts: dict[str, Any] = field(default_factory=dict)
    #: the audit line that must show how the fault was handled: (kind, reason code)
    handled: tuple[str, str] = ("retry", "")
    #: who served the Architect's final plan: a cloud model id, or "local"
    served: str = "gpt-5.1-high"


CLOUD = [
    Case("429-retry-after", "openai", "429", opts={"retry_after": 1},
         handled=("retry", "RETRY_RATE_LIMITED")),
    Case("500", "openai", "500", handled=("retry", "RETRY_SERVER_ERROR")),
    Case("503", "openai", "503", handled=("retry", "RETRY_SERVER_ERROR")),
    Case("slow-first-byte", "openai", "slow_first_byte", opts={"seconds": SLOW_S},
         handled=("retry", "RETRY_TIMEOUT")),
    Case("cut-stream", "openai", "cut_stream", opts={"after": 2},
         handled=("retry", "RETRY_SERVER_ERROR")),
    Case("invalid-json", "openai", "invalid_json", opts={"after": 1},
         handled=("retry", "RETRY_BAD_OUTPUT")),
    Case("context-length", "openai", "context_length",
         handled=("skip", "ERR_CONTEXT_LENGTH"), served="deepseek-reasoner"),
    Case("500-every-time", "openai", "500", times=5,
         handled=("skip", "ERR_SERVER_ERROR"), served="deepseek-reasoner"),
    Case("reset", "openai", "reset", handled=("skip", "ERR_CONNECT"), served="deepseek-reasoner"),
]  # fmt: skip


@pytest.fixture
def env(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
) -> dict[str, Any]:
    import app.backends.http as http

    # the registry imports the factory when it first makes its client
    monkeypatch.setattr(
        http,
        "make_async_client_httpx2",
        functools.partial(
            http.make_async_client_httpx2,
            timeout=httpx2.Timeout(CLIENT_TIMEOUT_S, connect=1.0),
        ),
    )
    repo = make_repo(tmp_path)
    fix = fix_diff(repo)

    def local(body: dict[str, Any]) -> str:
        role = role_of(body)
        if role == "interrogate":
            return "Q: is it the loop bound? A: yes."
        if role == "architect":
            return plan_json(0.6)
        if role == "implementer":
            return impl_json(fix, 0.9)
        if role == "judge":
            return verdict_json()
        return '{"patterns": []}'

    def cloud(body: dict[str, Any]) -> str:
        return plan_json(0.9) if role_of(body) == "architect" else verdict_json()

    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS)
    vllm.script.respond_with(local)
    llamacpp = fake_openai_factory("llamacpp", models=["qwen3-14b", "qwen2.5-coder-32b"])
    llamacpp.script.respond_with(local)
    openai = fake_openai_factory("openai")
    openai.script.respond_with(cloud)
    deepseek = fake_openai_factory("deepseek")
    deepseek.script.respond_with(cloud)
    policy = policy_pointing(tmp_path, openai=openai.base_url, deepseek=deepseek.base_url)
    text = policy.read_text()
    for old in ("backoff_s = 0.5\n", "backoff_s = 1.0\n"):
        assert old in text
        text = text.replace(old, "backoff_s = 0.05\n")
    policy.write_text(text)
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", llamacpp.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-r4-openai-00000000000000000000")
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-r4-deepseek-000000000000000000")
    monkeypatch.setenv("COLUMNS", "200")
    return {
        "repo": repo,
        "policy": policy,
        "servers": {"vllm": vllm, "llamacpp": llamacpp, "openai": openai, "deepseek": deepseek},
    }


def run_pipeline(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    rc, out, err = run_json(
        [
            "run",
            TASK,
            "--repo",
            str(env["repo"]),
            "--policy",
            str(env["policy"]),
            "--approve",
            "allow",
            "--test-command",
            FAST_TEST,
        ],
        capsys,
    )
    no_traceback(err)
    assert rc in (0, 1), (rc, out, err)
    assert (rc == 0) == (out["outcome"] == "merge_ready"), out
    lines = [a for a in audit_lines() if a["run"] == out["run_id"]]
    # the run's closing line says how it ended (GR-005: no silent end)
    closing = [code for a in lines if a["kind"] == "run" for code in a["reason_codes"]]
    assert f"RUN_{out['outcome'].upper()}" in closing, closing
    # the evidence of a faulted run still verifies
    rc2, _, err2 = run_cli(
        ["evidence", "verify", out["run_id"], "--repo", str(env["repo"])], capsys
    )
    assert rc2 == 0, err2
    return {"rc": rc, "out": out, "lines": lines, "err": err}


def check_retry_after(case: Case, handled: list[dict[str, Any]]) -> None:
    """A 429's wait is the server's: retry-after-ms when sent, else Retry-After."""
    if case.fault != "429":
        return
    ms = case.opts.get("retry_after_ms")
    wanted = ms / 1000 if ms is not None else float(case.opts["retry_after"])
    assert handled[0]["values"]["delay_s"] == pytest.approx(wanted), handled[0]


def architect_served_by(lines: list[dict[str, Any]]) -> str:
    """Who answered the Architect's final call (the one that read the plan's signals)."""
    calls = [a for a in lines if a["kind"] == "call" and a["role"] == "architect"]
    last = str(calls[-1]["to"])
    return "local" if "@" in last else last


@pytest.mark.parametrize("case", CLOUD, ids=[c.id for c in CLOUD])
def test_cloud_fault_during_the_architect_escalation(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str], case: Case
) -> None:
    server: FakeOpenAIServer = env["servers"][case.server]
    server.fail_next(case.fault, case.times, path=CHAT, **case.opts)
    result = run_pipeline(env, capsys)
    lines = result["lines"]
    kind, code = case.handled
    handled = [a for a in lines if a["kind"] == kind and code in a["reason_codes"]]
    assert handled, [(a["kind"], a["reason_codes"], a["detail"]) for a in lines]
    assert all(a["role"] == "architect" for a in handled)
    check_retry_after(case, handled)
    assert architect_served_by(lines) == case.served
    if case.served != "gpt-5.1-high":  # the fallback was an escalation of its own
        escalations = [a["to"] for a in lines if a["kind"] == "escalation"]
        assert escalations[:2] == ["gpt-5.1-high", case.served], escalations
    assert result["out"]["outcome"] == "merge_ready", result["out"]


LOCAL = [
    # a failed local deployment is marked down at once and the runtime chain moves on
    Case("429-retry-after-ms", "vllm", "429", opts={"retry_after": 1, "retry_after_ms": 200},
         handled=("degradation", "ERR_RATE_LIMITED"), served="local"),
    Case("500", "vllm", "500", handled=("degradation", "ERR_SERVER_ERROR"), served="local"),
    Case("503", "vllm", "503", handled=("degradation", "ERR_SERVER_ERROR"), served="local"),
    Case("slow-first-byte", "vllm", "slow_first_byte", opts={"seconds": SLOW_S},
         handled=("degradation", "ERR_TIMEOUT"), served="local"),
    Case("cut-stream", "vllm", "cut_stream", opts={"after": 2},
         handled=("degradation", "ERR_SERVER_ERROR"), served="local"),
    # a malformed protocol message is a server fault: marked down like the others (the
    # content of a reply is GR-012's one owner's, app.router.structured, not the router's)
    Case("invalid-json", "vllm", "invalid_json", opts={"after": 1},
         handled=("degradation", "ERR_BAD_OUTPUT"), served="local"),
    Case("context-length", "vllm", "context_length",
         handled=("degradation", "ERR_CONTEXT_LENGTH"), served="local"),
    Case("500-every-time", "vllm", "500", times=20,
         handled=("degradation", "ERR_SERVER_ERROR"), served="local"),
]  # fmt: skip


@pytest.mark.parametrize("case", LOCAL, ids=[c.id for c in LOCAL])
def test_local_fault_during_the_architect_draft(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str], case: Case
) -> None:
    server: FakeOpenAIServer = env["servers"][case.server]
    server.fail_next(case.fault, case.times, path=CHAT, **case.opts)
    result = run_pipeline(env, capsys)
    lines = result["lines"]
    kind, code = case.handled
    handled = [a for a in lines if a["kind"] == kind and code in a["reason_codes"]]
    assert handled, [(a["kind"], a["reason_codes"], a["detail"]) for a in lines]
    assert handled[0]["role"] == "architect"
    if kind == "retry":
        check_retry_after(case, handled)
    draft = next(a for a in lines if a["kind"] == "call" and a["role"] == "architect")
    if kind == "degradation":  # vLLM marked down: the llama.cpp server took the role over
        fallback = next(a for a in lines if a["kind"] == "runtime_fallback")
        assert fallback["to"] == "qwen3-14b@llamacpp_server", fallback
        assert draft["to"] == "qwen3-14b@llamacpp_server"
        assert env["servers"]["llamacpp"].chat_requests
    else:  # served by vLLM after the retry
        assert draft["to"] == "qwen3-14b@vllm"
    assert result["out"]["outcome"] == "merge_ready", result["out"]


@pytest.mark.parametrize(
    ("fault", "opts"),
    [("429", {"retry_after": 1, "retry_after_ms": 200}), ("slow_first_byte", {"seconds": SLOW_S})],
    ids=["429-retry-after", "slow-first-byte"],
)
def test_a_slow_local_failure_falls_back_at_once(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str], fault: str, opts: dict[str, Any]
) -> None:
    env["servers"]["vllm"].fail_next(fault, path=CHAT, **opts)
    lines = run_pipeline(env, capsys)["lines"]
    local_retries = [a for a in lines if a["kind"] == "retry" and a["role"] == "architect"]
    assert local_retries == [], "a local runtime was retried instead of falling back"
    assert any(a["kind"] == "runtime_fallback" for a in lines)


def test_a_local_context_length_error_does_not_take_the_runtime_down(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    env["servers"]["vllm"].fail_next("context_length", path=CHAT)
    lines = run_pipeline(env, capsys)["lines"]
    implementer = [a for a in lines if a["kind"] == "call" and a["role"] == "implementer"]
    assert implementer and implementer[0]["to"] == "qwen2.5-coder-32b@vllm", implementer
    fallbacks = [a["detail"] for a in lines if a["kind"] == "runtime_fallback"]
    assert not any("unreachable" in d for d in fallbacks), fallbacks


# ── clear stops and the last fallback ────────────────────────────────────────────────────


def test_every_local_runtime_failing_is_a_clear_audited_stop(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.backends.llamacpp as llamacpp

    monkeypatch.setattr(llamacpp, "find_embedded_gguf", lambda *a, **k: None)  # no GGUF here
    env["servers"]["vllm"].fail_next("500", 20, path=CHAT)
    env["servers"]["llamacpp"].fail_next("context_length", 20, path=CHAT)
    result = run_pipeline(env, capsys)
    assert result["rc"] == 1 and result["out"]["outcome"] == "stopped"
    assert "architect" in result["out"]["reason"], result["out"]
    lines = result["lines"]
    codes = [c for a in lines if a["kind"] == "degradation" for c in a["reason_codes"]]
    assert "ERR_SERVER_ERROR" in codes and "ERR_CONTEXT_LENGTH" in codes, codes
    assert any(a["kind"] in ("refusal", "run") and a["role"] in ("architect", None) for a in lines)
    assert "RUN_STOPPED" in [c for a in lines if a["kind"] == "run" for c in a["reason_codes"]]
    # nothing was escalated on the way down: a health failure never goes to the cloud
    assert not [a for a in lines if a["kind"] == "escalation"]
    assert env["servers"]["openai"].chat_requests == []


def test_a_cloud_chain_that_fails_everywhere_falls_back_to_the_local_plan(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    env["servers"]["openai"].fail_next("401", 5, path=CHAT)
    env["servers"]["deepseek"].fail_next("context_length", 5, path="/chat/completions")
    result = run_pipeline(env, capsys)
    lines = result["lines"]
    skips = {
        (a["to"], code)
        for a in lines
        if a["kind"] == "skip"
        for code in a["reason_codes"]
        if code.startswith("ERR_")
    }
    assert ("gpt-5.1-high", "ERR_AUTH") in skips, skips
    assert ("deepseek-reasoner", "ERR_CONTEXT_LENGTH") in skips, skips
    assert architect_served_by(lines) == "local"
    # the run goes on with the local plan (the escalation loss is said, not hidden)
    assert "escalation was denied or unavailable" in result["err"]
    assert result["out"]["outcome"] == "merge_ready"
