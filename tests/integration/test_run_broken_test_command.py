"""A test command that cannot run at all stops ``switchyard run`` on its baseline (loop 0,
the run's base before any change), before any model is asked.

``--test-command "python3 -m pytest --no-such-option"`` failed every loop ("error:
unrecognized arguments", exit 4), and the run asked the Architect, four Implementer
attempts, DeepSeek twice and GPT-5.1 for a second opinion twice: four paid calls for a
command that could never pass. ``test_memory_mb = 1`` (the sandbox cannot load the
program: exit 127) looped the same way (a user audit). Tests that fail are the bug, and
the loops run as before; so does a baseline that collects no tests (exit 5: the task may
be to write the first ones); and a loop after a change that breaks the test setup is that
change's failed loop.

The pipeline runs for real (worktree, sandboxed test loops, audit chain, evidence); the
models are loopback fakes that count what they were asked.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.paths import repo_state_dir
from app.pipeline.edits.render import block, reply, whole_file
from app.workspace.worktree import checkout_fingerprint
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policy import policy_pointing
from tests.integration.test_stage0_corpus import make_repo as make_small_repo
from tests.reliability.kit import (
    LOCAL_MODELS,
    TASK,
    audit_lines,
    git,
    make_repo,
    no_traceback,
    plan_json,
    role_of,
    run_cli,
    run_json,
    verdict_json,
)

PYTEST = f"{sys.executable} -m pytest -q -p no:cacheprovider"
LOOP = "    for i in range(len(tokens) - 1):\n"
FIXED = "    for i in range(len(tokens)):\n"


@pytest.fixture
def env(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
) -> dict[str, Any]:
    """Local models that would plan at confidence 0.6 (an Architect escalation) and write
    a change that fixes nothing (two failed loops: DeepSeek, a second opinion), and cloud
    models the run may reach: every call of the run would be seen."""
    replies: list[str] = []

    def local(body: dict[str, Any]) -> str:
        role = role_of(body)
        if role == "interrogate":
            return "Q: is it the loop bound? A: yes."
        if role == "architect":
            return plan_json(0.6)
        if role == "implementer":
            if replies:
                return replies.pop(0)
            return reply([block("parser.py", "from __future__ import annotations\n", "")])
        if role == "judge":
            return verdict_json()
        return json.dumps({"patterns": []})

    def cloud(body: dict[str, Any]) -> str:
        return plan_json(0.9) if role_of(body) == "architect" else verdict_json()

    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS)
    vllm.script.respond_with(local)
    openai = fake_openai_factory("openai")
    openai.script.respond_with(cloud)
    deepseek = fake_openai_factory("deepseek")
    deepseek.script.respond_with(local)
    policy = policy_pointing(tmp_path, openai=openai.base_url, deepseek=deepseek.base_url)
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", vllm.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-broken-openai-000000000000000000")
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-broken-deepseek-0000000000000000")
    return {
        "tmp": tmp_path,
        "policy": policy,
        "replies": replies,
        "servers": {"vllm": vllm, "openai": openai, "deepseek": deepseek},
    }


def run(
    env: dict[str, Any], repo: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any]]:
    before = checkout_fingerprint(repo)
    argv = ["run", TASK, "--repo", str(repo), "--policy", str(env["policy"])]
    rc, out, err = run_json([*argv, "--approve", "allow", "--test-command", command], capsys)
    no_traceback(err)
    assert checkout_fingerprint(repo).differences(before) == []
    rc2, _, err2 = run_cli(["evidence", "verify", out["run_id"], "--repo", str(repo)], capsys)
    assert rc2 == 0, err2  # sealed
    return rc, out


def asked(env: dict[str, Any]) -> dict[str, list[str]]:
    """Each server's requests, by role."""
    return {
        name: [role_of(body) for body in server.chat_requests]
        for name, server in env["servers"].items()
    }


def loops_in(out: dict[str, Any]) -> list[str]:
    return sorted(p.name for p in (Path(out["bundle"]) / "tests").glob("loop-*.log"))


def assert_stopped_on_the_baseline(
    env: dict[str, Any], rc: int, out: dict[str, Any], said: str
) -> dict[str, Any]:
    """Stopped as a command that cannot start is (exit 1, "stopped", the reason in the
    run's closing audit line and its manifest), with no model asked; the audit line of
    the stop holds the output's tail, and the loop's log all of it. Returns that line."""
    assert rc == 1 and out["outcome"] == "stopped", out
    reason = out["reason"]
    assert reason.startswith("the test command cannot run on the base, before any change ("), reason
    assert said in reason and "\n" not in reason
    assert "nothing was asked of any model (its output: tests/loop-0.log)" in reason
    assert asked(env) == {"vllm": [], "openai": [], "deepseek": []}
    lines = [a for a in audit_lines() if a["run"] == out["run_id"]]
    assert not [a for a in lines if a["kind"] in ("route", "call", "escalation", "advice")]
    (stop,) = [a for a in lines if "TEST_COMMAND_BROKEN" in a["reason_codes"]]
    assert stop["detail"] == reason and stop["values"]["loop"] == 0
    (end,) = [a for a in lines if "RUN_STOPPED" in a["reason_codes"]]
    assert end["detail"] == reason and end["seq"] > stop["seq"]
    bundle = Path(out["bundle"])
    assert json.loads((bundle / "manifest.json").read_text())["reason"] == reason
    assert loops_in(out) == ["loop-0.log"]
    assert not (bundle / "TASK_BRIEF.md").exists()  # Stage0 never ran either
    return stop


@pytest.mark.parametrize("where", ["command line", "addopts"])
def test_pytest_refusing_its_command_line_stops_the_run_before_any_model_call(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str], where: str
) -> None:
    repo = make_repo(env["tmp"])
    command = f"{PYTEST} --no-such-option"
    if where == "addopts":  # (a plugin's option, the plugin not installed: --cov)
        pyproject = repo / "pyproject.toml"
        text = pyproject.read_text().replace(
            'testpaths = ["tests"]', 'testpaths = ["tests"]\naddopts = "--no-such-option"'
        )
        pyproject.write_text(text)
        git(repo, "commit", "-qam", "addopts")
        command = PYTEST
    rc, out = run(env, repo, command, capsys)
    said = "pytest refused its command line (unrecognized arguments: --no-such-option)"
    stop = assert_stopped_on_the_baseline(env, rc, out, said)
    assert any("unrecognized arguments" in line for line in stop["values"]["output_tail"])
    log = (Path(out["bundle"]) / "tests" / "loop-0.log").read_text()
    assert "error: unrecognized arguments: --no-such-option" in log


@pytest.mark.parametrize("how", ["a script exiting 127", "test_memory_mb = 1"])
def test_a_test_command_the_sandbox_cannot_run_stops_the_run_before_any_model_call(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str], how: str
) -> None:
    repo = make_repo(env["tmp"])
    command = PYTEST
    said = "exit 127 (a program not found, or one the sandbox could not load): "
    if how == "test_memory_mb = 1":
        # the real limit: the loader cannot map libc ("failed to map segment", exit 127)
        (repo_state_dir(repo) / "config.toml").write_text("test_memory_mb = 1\n")
    else:
        script = repo / "run-tests.sh"
        script.write_text("#!/bin/sh\necho 'run-tests.sh: 4: tox: not found' >&2\nexit 127\n")
        script.chmod(0o755)
        git(repo, "add", "run-tests.sh")
        git(repo, "commit", "-qm", "tests by tox")
        command = "./run-tests.sh"
        said += "run-tests.sh: 4: tox: not found"
    rc, out = run(env, repo, command, capsys)
    assert_stopped_on_the_baseline(env, rc, out, said)
    if how == "test_memory_mb = 1":
        assert "the memory limit is 1 MB (test_memory_mb in" in out["reason"]


def test_a_failing_test_on_the_baseline_is_the_bug_and_the_loops_run(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """pytest's exit 1 on the base: the Implementer is asked, and its fix goes green."""
    env["replies"][:] = [reply([block("parser.py", LOOP, FIXED)], 0.9)]
    repo = make_repo(env["tmp"])
    _rc, out = run(env, repo, PYTEST, capsys)
    assert out["tests_green"], out
    assert env["replies"] == []
    assert "implementer" in asked(env)["vllm"]
    assert loops_in(out) == ["loop-0.log", "loop-1.log"]
    assert "2 failed, 1 passed" in (Path(out["bundle"]) / "tests" / "loop-0.log").read_text()


def test_a_baseline_that_collects_no_tests_runs_the_loops_to_write_the_first_ones(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """pytest's exit 5 (no tests collected) is no broken command: the task may be to
    write the first tests, and the Implementer's first test file goes green."""
    test = "from calc import add\n\n\ndef test_add() -> None:\n    assert add(1, 2) == 3\n"
    env["replies"][:] = [reply([whole_file("test_calc.py", test)], 0.9)]
    repo = make_small_repo(env["tmp"], {"calc.py": "def add(a, b):\n    return a + b\n"})
    _rc, out = run(env, repo, PYTEST, capsys)
    log = (Path(out["bundle"]) / "tests" / "loop-0.json").read_text()
    assert json.loads(log)["exit_code"] == 5
    assert out["tests_green"], out
    assert env["replies"] == []


def test_a_change_that_breaks_the_test_setup_is_its_own_failed_loop(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """After a change, pytest refusing its command line is the change's doing (an
    addopts it wrote): a failed loop as any, and the next attempt is asked."""
    breaks = reply(
        [
            block(
                "pyproject.toml",
                'testpaths = ["tests"]\n',
                'testpaths = ["tests"]\naddopts = "--no-such-option"\n',
            )
        ]
    )
    env["replies"][:] = [breaks, reply([block("parser.py", LOOP, FIXED)], 0.9)]
    repo = make_repo(env["tmp"])
    _rc, out = run(env, repo, PYTEST, capsys)
    assert out["tests_green"], out
    assert env["replies"] == [], "the attempt after the broken setup was never asked for"
    loop1 = json.loads((Path(out["bundle"]) / "tests" / "loop-1.json").read_text())
    assert loop1["exit_code"] == 4
    lines = [a for a in audit_lines() if a["run"] == out["run_id"]]
    codes = [c for a in lines for c in a["reason_codes"]]
    assert "IMPLEMENTER_TESTS_FAILED" in codes and "TEST_COMMAND_BROKEN" not in codes
