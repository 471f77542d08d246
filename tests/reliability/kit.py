"""Shared pieces of the reliability suite: the demo repository, scripted role replies,
a fast test command, the CLI run without a traceback, and the audit read back.

The pipeline runs for real (git worktree, sandboxed test loops, audit chain, ledger,
evidence bundle); only the models are loopback fakes. The test command is a one-line
Python check instead of the demo's pytest run, so a whole run costs about two seconds.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from app.audit import AuditLog
from app.cli.main import main
from app.config import load_settings
from tests.fakes.demo_repo import diff_of as diff_of  # re-exported for the R tests
from tests.fakes.demo_repo import git as git
from tests.fakes.demo_repo import make_repo as make_repo
from tests.ports import closed_port as closed_port  # re-exported for the R tests

TASK = "Make the failing parser test pass: parse() drops the last token."
#: exits 0 once parse() keeps the last token (GR-006: this exit code is the truth)
FAST_TEST = (
    f"{sys.executable} -c \"import sys; sys.exit('len(tokens) - 1' in open('parser.py').read())\""
)
LOCAL_MODELS = [
    "Qwen/Qwen3-14B-AWQ",
    "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ",
    "meta-llama/Llama-3.1-8B-Instruct",
    "Qwen/Qwen2.5-Coder-7B-Instruct",
]
CLOUD_KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "MOONSHOT_API_KEY")


def only_keys(monkeypatch: pytest.MonkeyPatch, **keys: str) -> None:
    """The provider key variables set to ``keys`` alone (``OPENAI_API_KEY="sk-…"``), the
    others unset: what a test masks is exactly what it set."""
    for name in CLOUD_KEY_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in keys.items():
        monkeypatch.setenv(name, value)


def sigterm_mid_call(proc: Any, server: Any, *, twice: bool = False) -> str:
    """SIGTERM ``proc`` (a ``subprocess.Popen``) once its model call is under way (a
    request reached the fake ``server`` and a few words of the reply were sent; a
    second signal soon after when ``twice``), and its stderr once it ended. It is
    killed if it has not ended by then."""
    import signal
    import time

    try:
        deadline = time.monotonic() + 60
        while not server.chat_requests and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.05)
        time.sleep(0.3)  # a few of the reply's words are on their way
        proc.send_signal(signal.SIGTERM)
        if twice:
            time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        return str(err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def fix_diff(repo: Path) -> str:
    return diff_of(repo, "range(len(tokens) - 1)", "range(len(tokens))")


def new_files_diff(paths: Iterable[str]) -> str:
    """A diff that adds one small file per path (applies anywhere; fixes nothing)."""
    out = []
    for p in paths:
        out.append(
            f"diff --git a/{p} b/{p}\nnew file mode 100644\n--- /dev/null\n+++ b/{p}\n"
            "@@ -0,0 +1 @@\n+X = 1\n"
        )
    return "".join(out)


def plan_json(
    confidence: float, *, steps: int = 1, files_per_step: int = 1, questions: int = 0
) -> str:
    return json.dumps(
        {
            "goal": "parse() keeps every token",
            "steps": [
                {
                    "title": f"step {i}: fix the loop bound in parse()",
                    "files": ["parser.py"]
                    + [f"pkg{i}/mod{j}.py" for j in range(files_per_step - 1)],
                    "rationale": "range stops one short",
                }
                for i in range(steps)
            ],
            "risks": [],
            "acceptance_tests": ["tests/test_parser.py"],
            "confidence": confidence,
            "open_questions": [f"question {i}?" for i in range(questions)],
        }
    )


def impl_json(diff: str, check: float = 0.8) -> str:
    return json.dumps({"diff": diff, "self_check_confidence": check, "notes": ""})


def verdict_json(verdict: str = "approve") -> str:
    return json.dumps(
        {
            "verdict": verdict,
            "summary": "the loop bound is fixed and the check passes",
            "findings": [
                {"severity": "info", "message": "loop covers every token", "cite": "parser.py:21"}
            ],
        }
    )


def system_of(body: dict[str, Any]) -> str:
    return str(body["messages"][0]["content"])


def role_of(body: dict[str, Any]) -> str:
    """Which pipeline role sent this chat request (by its system prompt)."""
    system = system_of(body)
    for marker, role in (
        ("Socratic", "interrogate"),
        ("Architect", "architect"),
        ("Implementer", "implementer"),
        ("Judge", "judge"),
    ):
        if marker in system:
            return role
    return "other"


def green_reply(fix: str) -> Callable[[dict[str, Any]], str]:
    """The local models' replies for a run that goes green: the loop bound asked about, a
    confident plan, ``fix`` as the Implementer's diff, the Judge's approval."""

    def local(body: dict[str, Any]) -> str:
        role = role_of(body)
        if role == "interrogate":
            return "Q: is it the loop bound? A: yes."
        if role == "architect":
            return plan_json(0.9)
        if role == "implementer":
            return impl_json(fix, 0.9)
        if role == "judge":
            return verdict_json()
        return '{"patterns": []}'

    return local


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``switchyard ARGV`` in-process: (exit code, stdout, stderr). Any exception that
    escapes ``main`` is what a user would see as a traceback: the test fails with it."""
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code if isinstance(exc.code, int) else 2
    except BaseException:
        captured = capsys.readouterr()
        pytest.fail(
            f"switchyard {' '.join(argv[:2])} raised (a traceback for the user):\n"
            f"{traceback.format_exc()}\nstderr: {captured.err[-2000:]}"
        )
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    rc, out, err = run_cli([*argv, "--json"], capsys)
    try:
        data = json.loads(out)
    except ValueError:
        pytest.fail(f"not JSON (rc {rc}): {out[-2000:]!r}\nstderr: {err[-2000:]}")
    return rc, data, err


def audit_lines() -> list[dict[str, Any]]:
    """Every line of the audit DB of the test's data dir, as dicts, in seq order."""
    db = load_settings().audit_db

    async def read() -> list[dict[str, Any]]:
        async with AuditLog.open(db) as log:
            assert (await log.verify()).ok
            return [line.model_dump(mode="json", by_alias=True) for line in await log.lines()]

    return asyncio.run(read())


def no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback (most recent call last)" not in text, text[-3000:]
