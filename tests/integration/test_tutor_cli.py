"""`switchyard tutor` end to end: a loopback vLLM fake serves the tutor, a loopback
Anthropic fake serves its cloud fallback, real SQLite holds the audit chain and ledger."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.cli.main import main
from app.resources import default_policy_path
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.demo_repo import make_repo
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policy import policy_pointing
from tests.ports import closed_port
from tests.reliability.kit import audit_lines, sigterm_mid_call

QWEN = "Qwen/Qwen2.5-Coder-7B-Instruct"


def turn(n: int) -> str:
    return json.dumps(
        {
            "questions": [f"What does step {n} do?", f"Which input breaks step {n}?"],
            "hint": f"look at line {n}",
            "answer": f"the answer of turn {n}",
        }
    )


class Terminal(io.StringIO):
    """Lines typed at a terminal (stdin that says it is a TTY)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _runtimes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    monkeypatch.setenv("SWITCHYARD_N_THREADS", "1")
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def vllm(
    monkeypatch: pytest.MonkeyPatch, fake_openai_factory: Callable[..., FakeOpenAIServer]
) -> FakeOpenAIServer:
    server = fake_openai_factory("vllm", replies=[turn(n) for n in range(1, 10)], models=[QWEN])
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", server.base_url)
    return server


def capped_policy(tmp_path: Path, max_turns: int) -> Path:
    text = default_policy_path().read_text(encoding="utf-8")
    head, sep, tail = text.partition("[roles.tutor]\n")
    assert sep and "max_turns = 6\n" in tail
    path = tmp_path / "capped.toml"
    path.write_text(head + sep + tail.replace("max_turns = 6\n", f"max_turns = {max_turns}\n", 1))
    return path


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    rc = main(["tutor", *argv, "--json"])
    return rc, json.loads(capsys.readouterr().out)


def test_one_turn_as_json_holds_the_answer_back(
    vllm: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, data = run_json(["why does parse drop the last token?"], capsys)
    assert rc == 0 and data["ok"] is True and data["error"] is None
    assert data["questions"] == ["What does step 1 do?", "Which input breaks step 1?"]
    assert data["hint"] == "look at line 1"
    assert (data["answer"], data["answer_withheld"]) == (None, True)
    assert (data["turn"], data["max_turns"], data["turns_left"]) == (1, 6, 5)
    assert (data["model"], data["runtime"], data["escalated"]) == (
        "qwen2.5-coder-7b",
        "vllm",
        False,
    )
    assert [a["kind"] for a in data["audit"]] == ["route", "call", "tutor"]
    assert data["audit"][-1]["reason_codes"] == ["TUTOR_TURN"]
    sent = vllm.chat_requests[0]
    assert sent["messages"][-1]["content"] == "why does parse drop the last token?"
    assert sent["structured_outputs"]["json"]["required"] == ["questions"]  # GR-012


def test_reveal_prints_the_questions_first_and_the_answer_after(
    vllm: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tutor", "what is a closure?", "--reveal"]) == 0
    out = capsys.readouterr().out
    assert "turn 1/6 · qwen2.5-coder-7b (vllm)" in out
    first, hint, answer = (
        out.index("1. What does step 1 do?"),
        out.index("hint: look at line 1"),
        out.index("answer: the answer of turn 1"),
    )
    assert first < hint < answer
    assert main(["tutor", "what is a closure?"]) == 0
    out = capsys.readouterr().out
    assert "the answer of turn" not in out and "--reveal prints it" in out


def test_reveal_of_a_turn_with_no_answer_says_so(
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--reveal printed the questions and nothing after them: no sign that there was no
    answer to print."""
    questions_only = json.dumps({"questions": ["What is a scope?"], "hint": "", "answer": ""})
    server = fake_openai_factory("vllm", replies=[questions_only], models=[QWEN])
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", server.base_url)
    assert main(["tutor", "what is a closure?", "--reveal"]) == 0
    out = capsys.readouterr().out
    assert "1. What is a scope?" in out
    assert out.index("1. What is a scope?") < out.index(
        "the tutor gave no answer this turn: it wants you to try"
    )


def test_escalate_asks_approval_then_the_cloud_fallback_serves(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    vllm: FakeOpenAIServer,
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cloud = fake_anthropic_factory(replies=[turn(7)])
    policy = policy_pointing(tmp_path, anthropic=cloud.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    argv = ["explain closures", "--escalate", "--approve", "allow", "--policy", str(policy)]
    rc, data = run_json(argv, capsys)
    assert rc == 0, data["error"]
    assert (data["model"], data["escalated"], data["escalate_requested"]) == (
        "claude-haiku-4.5",
        True,
        True,
    )
    assert data["questions"][0] == "What does step 7 do?"
    kinds = [a["kind"] for a in data["audit"]]
    assert kinds[:2] == ["escalation", "approval"] and kinds[-1] == "tutor"
    assert data["audit"][0]["values"]["user_request"] is True
    assert vllm.chat_requests == [] and len(cloud.message_requests) == 1

    # denied: the same request stays on the machine
    argv[argv.index("allow")] = "deny"
    rc, data = run_json(argv, capsys)
    assert rc == 0 and (data["model"], data["escalated"]) == ("qwen2.5-coder-7b", False)
    assert "denial" in [a["kind"] for a in data["audit"]]
    assert len(cloud.message_requests) == 1


def test_interactive_carries_the_conversation_until_the_cap(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    vllm: FakeOpenAIServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    typed = "what is a closure?\n/reveal\na function with its scope\nmore?\n"
    monkeypatch.setattr("sys.stdin", Terminal(typed))
    assert main(["tutor", "--policy", str(capped_policy(tmp_path, 2))]) == 0
    out = capsys.readouterr().out
    assert "up to 2 turns" in out
    assert out.index("turn 1/2") < out.index("answer: the answer of turn 1")  # /reveal
    assert "answer: the answer of turn 2" in out  # a reply shows the next answer
    assert "that was the last of the 2 turns the policy allows" in out
    assert len(vllm.chat_requests) == 2  # "more?" was never sent
    second = vllm.chat_requests[1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[1]["content"] == "what is a closure?"
    assert json.loads(second[2]["content"])["answer"] == "the answer of turn 1"


def test_interactive_ends_on_an_empty_line_and_escalates_per_line(
    monkeypatch: pytest.MonkeyPatch, vllm: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    typed = "/escalate what is a closure?\n\nnever sent\n"
    monkeypatch.setattr("sys.stdin", Terminal(typed))
    # a key, so the escalation is asked for (and denied); a model without one is skipped
    # before anyone is asked
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-tutor-test-0123456789abcdef")
    assert main(["tutor", "--approve", "deny"]) == 0
    out = capsys.readouterr().out
    assert "escalation requested: it stayed local" in out
    # and why: it said "local_only, denied, unavailable or over budget" of every case
    said = next(ln for ln in out.splitlines() if "escalation requested" in ln)
    assert "denied" in said and "(local_only, denied, unavailable" not in said, said
    assert "audit #" in out and "denial" in out
    assert len(vllm.chat_requests) == 1


def test_a_malformed_reply_is_one_clear_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = fake_openai_factory("vllm", replies=["no JSON here", "still none"], models=[QWEN])
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", server.base_url)
    assert main(["tutor", "what is a closure?"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("switchyard: tutor: no usable reply")
    assert "did not use a turn" in captured.err and "Traceback" not in captured.err


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        ([], io.StringIO(""), "a QUESTION is required"),
        (["--json"], Terminal(""), "--json needs a QUESTION"),
        (["  "], io.StringIO(""), "the QUESTION is empty"),
        (["q", "--repo", "/no/such/dir"], io.StringIO(""), "no such directory"),
        (["q", "--approve", "maybe"], io.StringIO(""), "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_one_clear_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    stdin: io.StringIO,
    message: str,
) -> None:
    monkeypatch.setattr("sys.stdin", stdin)
    try:
        rc = main(["tutor", *argv])
    except SystemExit as exc:  # argparse's own usage errors
        rc = int(exc.code or 0)
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_folder_that_is_not_a_repo_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tutor", "q", "--repo", str(tmp_path)]) == 2
    assert "not a git repository" in capsys.readouterr().err


def test_repo_grounds_the_tutor(
    tmp_path: Path, vllm: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path)
    rc, data = run_json(["why does parse drop a token?", "--repo", str(repo)], capsys)
    assert rc == 0
    assert any(s.startswith("parser.py:") for s in data["grounded_in"])
    assert "def parse" in vllm.chat_requests[0]["messages"][0]["content"]


def test_a_subfolder_of_the_repo_grounds_the_tutor_in_the_whole_repo(
    tmp_path: Path, vllm: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """--repo repo/tests grounded the tutor in tests/ alone (and made a .switchyard/ there)."""
    repo = make_repo(tmp_path)
    rc, data = run_json(["why does parse drop a token?", "--repo", str(repo / "tests")], capsys)
    assert rc == 0
    assert any(s.startswith("parser.py:") for s in data["grounded_in"])
    assert not (repo / "tests" / ".switchyard").exists()


def test_a_sigterm_mid_turn_of_the_interactive_tutor_settles_the_call_and_exits_143(
    tmp_path: Path, fake_openai_factory: Callable[..., FakeOpenAIServer]
) -> None:
    """The interactive loop took a SIGTERM as a kill: the call in flight had no closing
    line and the session was not closed. Now it does what one turn does (exit 143, the
    call recorded as cancelled)."""
    vllm = fake_openai_factory("vllm", replies=["word " * 200], models=[QWEN], event_delay=0.2)
    env = {
        **os.environ,
        "SWITCHYARD_VLLM_URL": vllm.base_url,
        "SWITCHYARD_LLAMACPP_SERVER_URL": f"http://127.0.0.1:{closed_port()}/v1",
        "SWITCHYARD_N_THREADS": "1",
    }
    leader, follower = pty.openpty()  # the interactive tutor needs a terminal on stdin
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "tutor"],
        env=env,
        stdin=follower,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(follower)
    try:
        os.write(leader, b"what is a closure?\n")
        err = sigterm_mid_call(proc, vllm)
    finally:
        os.close(leader)
    assert proc.returncode == 143, err
    assert "switchyard: stopped (SIGTERM)" in err and "Traceback" not in err
    lines = [ln for ln in audit_lines() if ln["kind"] in ("route", "call")]
    assert [ln["kind"] for ln in lines][-2:] == ["route", "call"]
    assert lines[-1]["reason_codes"] == ["CALL_CANCELLED"]
