"""A repo ``switchyard run`` finds no test command in stops before any model call, with
what to set and where (GR-006: the tests' exit code is the truth, so a run with nothing
to run has nothing to go on). It once reached the Implementer, having spent the
Architect's calls, and ended as an "internal error" naming the exception."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.paths import repo_state_dir
from app.workspace.worktree import checkout_fingerprint
from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration.test_stage0_corpus import make_repo
from tests.reliability.kit import (
    LOCAL_MODELS,
    audit_lines,
    closed_port,
    no_traceback,
    run_cli,
    run_json,
)

#: a repository with a bug and a test
CALC = {"calc.py": "def add(a, b):\n    return a - b\n", "test_calc.py": "def test(): pass\n"}


@pytest.fixture
def vllm(
    monkeypatch: pytest.MonkeyPatch, fake_openai_factory: Callable[..., FakeOpenAIServer]
) -> FakeOpenAIServer:
    """Every local role is served here, so any model call of the run would be seen."""
    server = fake_openai_factory("vllm", models=LOCAL_MODELS)
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", server.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    return server


def run_in(repo: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    before = checkout_fingerprint(repo)
    rc, out, err = run_json(["run", "fix add()", "--repo", str(repo), "--approve", "deny"], capsys)
    no_traceback(err)
    assert checkout_fingerprint(repo).differences(before) == []
    rc2, _, err2 = run_cli(["evidence", "verify", out["run_id"], "--repo", str(repo)], capsys)
    assert rc2 == 0, err2  # stopped early, the bundle is still sealed
    return rc, out, err


def test_no_test_command_stops_the_run_before_any_model_call(
    tmp_path: Path, vllm: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(
        tmp_path, {"calc.py": "def add(a, b):\n    return a - b\n", "README.md": "calc\n"}
    )
    rc, out, _ = run_in(repo, capsys)
    assert rc == 1 and out["outcome"] == "stopped"
    assert "no test command for" in out["reason"]
    assert f"set test_command in {repo / '.switchyard' / 'config.toml'}" in out["reason"]
    assert "internal error" not in out["reason"]
    assert vllm.chat_requests == []
    lines = [a for a in audit_lines() if a["run"] == out["run_id"]]
    assert not [a for a in lines if a["kind"] in ("route", "call")]
    (end,) = [a for a in lines if "RUN_STOPPED" in a["reason_codes"]]
    assert "no test command for" in end["detail"]


def test_a_broken_repo_config_is_a_usage_error_naming_the_file_before_any_run(
    tmp_path: Path, vllm: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """It started a run that stopped on it (exit 1): read before anything starts now."""
    repo = make_repo(tmp_path, {"calc.py": "x = 1\n", "test_calc.py": "def test(): pass\n"})
    (repo_state_dir(repo) / "config.toml").write_text("test_command = [\n")
    rc, _, err = run_cli(["run", "fix add()", "--repo", str(repo), "--approve", "deny"], capsys)
    no_traceback(err)
    assert rc == 2
    assert f"{repo / '.switchyard' / 'config.toml'}:2:1: toml syntax" in err
    assert not (repo / ".switchyard" / "runs").exists() and vllm.chat_requests == []


async def test_a_folder_that_is_no_git_repository_stops_the_run_before_anything(
    tmp_path: Path, vllm: FakeOpenAIServer
) -> None:
    """The workbench opens on any folder and runs the pipeline there: a run ended
    'internal error: NotAGitRepo(…)' in Stage0 (`switchyard run` refuses it itself)."""
    from app.config import load_settings
    from app.evidence.bundle import verify_bundle
    from app.pipeline.context import RunOptions
    from app.pipeline.runner import run_pipeline
    from app.policy import load_policy
    from app.router.approvals import DenyDecider
    from app.router.session import open_session

    folder = tmp_path / "plain"
    (folder / "tests").mkdir(parents=True)
    (folder / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    (folder / "tests" / "test_calc.py").write_text("def test(): pass\n")
    settings = load_settings()
    async with open_session(settings, load_policy().policy, decider=DenyDecider()) as session:
        outcome = await run_pipeline(session, "fix add()", RunOptions(repo=folder))
    assert outcome.outcome == "stopped"
    assert f"{folder} is not a git repository" in outcome.reason
    assert "internal error" not in outcome.reason
    assert vllm.chat_requests == []
    assert verify_bundle(outcome.bundle).ok  # stopped at once, and sealed


async def test_a_repository_with_no_commit_stops_the_run_before_any_model_call(
    tmp_path: Path, vllm: FakeOpenAIServer
) -> None:
    """Found only when the worktree was made: Stage0 and three Architect calls first,
    then 'internal error: NotAGitRepo(… no commit yet)' and no JSON on stdout."""
    from app.config import load_settings
    from app.pipeline.context import RunOptions
    from app.pipeline.runner import run_pipeline
    from app.policy import load_policy
    from app.router.approvals import DenyDecider
    from app.router.session import open_session
    from app.workspace.git import run_git

    folder = tmp_path / "fresh"
    (folder / "tests").mkdir(parents=True)
    (folder / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    (folder / "tests" / "test_calc.py").write_text("def test(): pass\n")
    await asyncio.to_thread(run_git, folder, "init", "-q")
    async with open_session(load_settings(), load_policy().policy, decider=DenyDecider()) as s:
        outcome = await run_pipeline(s, "fix add()", RunOptions(repo=folder))
    assert outcome.outcome == "stopped" and "internal error" not in outcome.reason
    assert f"{folder} has no commit yet" in outcome.reason
    assert vllm.chat_requests == []


async def test_a_stop_asked_before_the_architect_is_heard_before_its_first_call(
    tmp_path: Path, vllm: FakeOpenAIServer
) -> None:
    """Only the Implementer's loop read the stop: x pressed while Stage0 or the Architect
    worked went unheard, and the run ended for another reason with no word of it."""
    from app.config import load_settings
    from app.pipeline.context import RunOptions
    from app.pipeline.control import RunControl
    from app.pipeline.runner import run_pipeline
    from app.policy import load_policy
    from app.router.approvals import DenyDecider
    from app.router.session import open_session

    repo = make_repo(tmp_path, {"calc.py": "x = 1\n", "test_calc.py": "def test(): pass\n"})
    control = RunControl()
    control.request_stop()  # pressed while the brief was being made
    settings = load_settings()
    async with open_session(settings, load_policy().policy, decider=DenyDecider()) as session:
        outcome = await run_pipeline(session, "fix add()", RunOptions(repo=repo), control)
    assert outcome.outcome == "stopped" and outcome.reason == "stopped by the user"
    assert vllm.chat_requests == []  # the Architect was never asked


async def test_a_stop_asked_while_the_architect_works_is_heard_before_its_next_call(
    tmp_path: Path, vllm: FakeOpenAIServer
) -> None:
    """An ``x`` pressed during the Architect's draft was heard only when the stage ended:
    three more local calls, then two escalations and a second opinion (a user-audit in
    the workbench). Now the run's next model call or approval stops it."""
    from app.config import load_settings
    from app.pipeline.context import RunOptions
    from app.pipeline.control import RunControl
    from app.pipeline.runner import run_pipeline
    from app.policy import load_policy
    from app.router.approvals import DenyDecider
    from app.router.session import open_session
    from tests.reliability.kit import plan_json, role_of

    control = RunControl()
    asked: list[str] = []

    def reply(body: dict[str, Any]) -> str:
        asked.append(role_of(body))
        if role_of(body) == "architect":
            control.request_stop()  # x, pressed while the draft is written
            return plan_json(0.3)  # a draft that would go on to questions, then the cloud
        return '{"patterns": []}'

    vllm.script.respond_with(reply)
    repo = make_repo(tmp_path, CALC)
    settings = load_settings()
    async with open_session(settings, load_policy().policy, decider=DenyDecider()) as session:
        outcome = await run_pipeline(session, "fix add()", RunOptions(repo=repo), control)
        lines = await session.audit.lines(session=session.id)
    assert outcome.outcome == "stopped" and outcome.reason == "stopped by the user"
    assert asked.count("architect") == 1, asked  # no questions, no final plan
    assert not [ln for ln in lines if ln.kind in ("escalation", "approval", "denial", "advice")]
    assert not session.router.run_gates  # the run's gate went with it


async def test_e_pressed_while_a_draft_fails_is_heard_and_the_cloud_plans(
    tmp_path: Path,
    vllm: FakeOpenAIServer,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``e`` during the Architect's draft was read only before the draft: when the draft
    failed the run stopped "no valid plan", with no escalation, skip or denial line (a
    user-audit in the workbench)."""
    from app.config import load_settings
    from app.pipeline.context import RunOptions
    from app.pipeline.control import RunControl
    from app.pipeline.runner import run_pipeline
    from app.policy import load_policy
    from app.router.approvals import AllowDecider
    from app.router.session import open_session
    from tests.fakes.policy import policy_pointing
    from tests.reliability.kit import plan_json, role_of

    control = RunControl()

    def local(body: dict[str, Any]) -> str:
        if role_of(body) == "architect":
            control.request_escalation("architect")  # e, pressed while the draft is written
            return "I would look at calc.py."  # no plan: the draft and its repair fail
        return '{"patterns": []}'

    def cloud_plan(body: dict[str, Any]) -> str:
        control.request_stop()  # enough: the plan is what this test is about
        return plan_json(0.9)

    vllm.script.respond_with(local)
    cloud = fake_openai_factory("openai")
    cloud.script.respond_with(cloud_plan)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-openai-0000000000000000")
    policy = load_policy(policy_pointing(tmp_path, openai=cloud.base_url)).policy
    repo = make_repo(tmp_path, CALC)
    async with open_session(load_settings(), policy, decider=AllowDecider()) as session:
        outcome = await run_pipeline(session, "fix add()", RunOptions(repo=repo), control)
        lines = await session.audit.lines(session=session.id)
    escalations = [ln for ln in lines if ln.kind == "escalation" and ln.role == "architect"]
    assert escalations and "USER_REQUEST" in escalations[0].reason_codes, lines
    assert len(cloud.chat_requests) == 1
    # the cloud's plan was taken: the run went past the Architect, then heard the stop
    assert outcome.outcome == "stopped" and outcome.reason == "stopped by the user"
    assert "no valid plan" not in outcome.reason


async def test_a_cloud_draft_asked_for_is_not_asked_again_when_it_fails(
    tmp_path: Path,
    vllm: FakeOpenAIServer,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With --escalate architect the draft is the cloud's: when it fails, the request
    heard after a failed draft must not send the same prompt out again (paid twice; a
    review found it)."""
    from app.config import load_settings
    from app.pipeline.context import RunOptions
    from app.pipeline.runner import run_pipeline
    from app.policy import load_policy
    from app.router.approvals import AllowDecider
    from app.router.session import open_session
    from tests.fakes.policy import policy_pointing

    cloud = fake_openai_factory("openai")
    cloud.script.respond_with(lambda body: "no plan in here")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-openai-0000000000000000")
    policy = load_policy(policy_pointing(tmp_path, openai=cloud.base_url)).policy
    repo = make_repo(tmp_path, CALC)
    options = RunOptions(repo=repo, escalate=frozenset({"architect"}))
    async with open_session(load_settings(), policy, decider=AllowDecider()) as session:
        outcome = await run_pipeline(session, "fix add()", options)
    assert outcome.outcome == "stopped" and "no valid plan" in outcome.reason
    assert len(cloud.chat_requests) == 2  # the draft and its one repair, once


async def test_a_run_that_committed_nothing_leaves_no_branch_behind(
    tmp_path: Path, vllm: FakeOpenAIServer
) -> None:
    """Each stopped run left a ``switchyard/<run>`` branch with nothing on it (a
    user-audit): there is nothing to review or merge there."""
    from app.config import load_settings
    from app.pipeline.context import RunOptions
    from app.pipeline.control import RunControl
    from app.pipeline.runner import run_pipeline
    from app.policy import load_policy
    from app.router.approvals import DenyDecider
    from app.router.session import open_session
    from app.workspace.git import run_git
    from tests.reliability.kit import plan_json, role_of

    control = RunControl()

    def reply(body: dict[str, Any]) -> str:
        role = role_of(body)
        if role == "architect":
            return plan_json(0.9)
        if role == "implementer":
            control.request_stop()  # x, pressed during the first attempt
            return "no edit in here"
        return "Q: the bound? A: yes." if role == "interrogate" else '{"patterns": []}'

    vllm.script.respond_with(reply)
    repo = make_repo(tmp_path, CALC)
    async with open_session(load_settings(), load_policy().policy, decider=DenyDecider()) as s:
        outcome = await run_pipeline(s, "fix add()", RunOptions(repo=repo), control)
    assert outcome.outcome == "stopped" and outcome.bundle is not None
    branches = run_git(repo, "branch", "--list", "switchyard/*").stdout
    assert branches.strip() == "", branches
    manifest = json.loads((outcome.bundle / "manifest.json").read_text())
    assert manifest["branch"] is None and manifest["head"] == manifest["base"]
    from app.evidence.verify import verify_bundle

    assert verify_bundle(outcome.bundle).ok


def test_a_run_that_fails_inside_still_prints_its_object_with_the_sealed_bundle(
    tmp_path: Path,
    vllm: FakeOpenAIServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failure inside the run (here the brief: a store that broke, say) ends it
    ``failed`` with its bundle sealed: ``--json`` printed nothing, so a script could not
    tell which run it was or find its evidence; the failure's own line still says why."""
    from app.errors import SwitchyardError
    from app.pipeline import runner

    async def broken(ctx: Any) -> Any:
        raise SwitchyardError("the brief could not be written: disk full")

    monkeypatch.setattr(runner, "prepare_brief", broken)
    repo = make_repo(
        tmp_path, {"calc.py": "def add(a, b):\n    return a - b\n", "README.md": "calc\n"}
    )
    argv = ["run", "fix add()", "--repo", str(repo), "--approve", "deny"]
    rc, out, err = run_json([*argv, "--test-command", "python -c pass"], capsys)
    no_traceback(err)
    assert rc == 1
    assert err.strip().splitlines()[-1] == "switchyard: the brief could not be written: disk full"
    assert out["outcome"] == "failed"
    assert out["reason"].startswith("internal error: SwitchyardError(")
    bundle = Path(out["bundle"])
    assert bundle == repo_state_dir(repo, "runs") / out["run_id"]
    rc2, _, err2 = run_cli(["evidence", "verify", out["run_id"], "--repo", str(repo)], capsys)
    assert rc2 == 0, err2  # sealed
    assert vllm.chat_requests == []


@pytest.mark.parametrize(
    ("command", "said"),
    [
        # (a bare name found nowhere on the PATH is a usage error before any run:
        # tests/integration/test_run_cli_usage.py)
        ("./ci/run-tests.sh", "./ci/run-tests.sh is not there"),
        ("./calc.py", "./calc.py is not an executable file"),
        # there in the checkout, not in its last commit: the run's worktree has it not
        # (a git-ignored .venv's python: every loop failed on it, a user audit)
        ("./local.sh", "./local.sh is not in the repository's last commit"),
    ],
)
def test_a_test_command_that_cannot_start_stops_the_run_before_any_model_call(
    tmp_path: Path,
    vllm: FakeOpenAIServer,
    capsys: pytest.CaptureFixture[str],
    command: str,
    said: str,
) -> None:
    """Its every loop failed ("bwrap: execvp …: No such file or directory", exit 1) and
    the run went on: four Implementer attempts, two cloud calls, a second opinion, then
    "4 failed loops" (a user audit)."""
    repo = make_repo(tmp_path, CALC)
    untracked = repo / "local.sh"
    untracked.write_text("#!/bin/sh\nexit 0\n")
    untracked.chmod(0o755)
    argv = ["run", "fix add()", "--repo", str(repo), "--approve", "deny"]
    rc, out, err = run_json([*argv, "--test-command", command], capsys)
    no_traceback(err)
    assert rc == 1 and out["outcome"] == "stopped"
    assert f"the test command cannot start: {said}" in out["reason"]
    assert vllm.chat_requests == []
    lines = [a for a in audit_lines() if a["run"] == out["run_id"]]
    assert not [a for a in lines if a["kind"] in ("route", "call")]
