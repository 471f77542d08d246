"""A test run that says its command cannot run at all, told apart from tests that fail
(app/workspace/broken_command.py): read on the baseline, where it stops the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.workspace.broken_command import broken_command
from app.workspace.pytest_summary import usage_error
from app.workspace.sandbox import SandboxResult

PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]


def result(code: int, output: str, **kw: Any) -> SandboxResult:
    fields: dict[str, Any] = {
        "argv": ["x"],
        "cwd": "/w",
        "exit_code": code,
        "output": output,
        "timed_out": False,
        "runner": "bwrap",
        "degraded": False,
        "reason": "",
        "duration_s": 0.1,
        "timeout_s": 600.0,
        "memory_mb": 4096,
    }
    return SandboxResult(**(fields | kw))


def run_pytest(folder: Path, *flags: str) -> tuple[int, str]:
    done = subprocess.run([*PYTEST, *flags], capture_output=True, text=True, cwd=folder)
    return done.returncode, done.stdout + done.stderr


def test_pytest_refusing_an_option_is_a_broken_command(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text("def test(): pass\n")
    code, out = run_pytest(tmp_path, "--no-such-option")
    assert code == 4
    assert usage_error(out) == "unrecognized arguments: --no-such-option"
    why = broken_command([*PYTEST, "--no-such-option"], result(code, out))
    assert why == "pytest refused its command line (unrecognized arguments: --no-such-option)"


def test_an_unknown_option_in_the_projects_addopts_is_one_too(tmp_path: Path) -> None:
    """A plugin's option in addopts with the plugin not installed (``--cov``)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --no-such-plugin-option\n")
    (tmp_path / "test_x.py").write_text("def test(): pass\n")
    code, out = run_pytest(tmp_path)
    assert code == 4
    assert broken_command(PYTEST, result(code, out)) == (
        "pytest refused its command line (unrecognized arguments: --no-such-plugin-option)"
    )


@pytest.mark.parametrize(
    ("files", "flags", "code"),
    [
        # the task may be to mend what the conftest imports (pytest exits 4 on it too)
        ({"conftest.py": "import calc\n", "calc.py": "def add(:\n"}, (), 4),
        # a path the task may create (its first tests)
        ({}, ("tests/test_new.py",), 4),
        # no tests collected: the task may be to write the first ones
        ({"calc.py": "x = 1\n"}, (), 5),
        # tests that fail: the bug
        ({"test_x.py": "def test(): assert 0\n"}, (), 1),
    ],
)
def test_what_a_change_may_mend_is_no_broken_command(
    tmp_path: Path, files: dict[str, str], flags: tuple[str, ...], code: int
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    got, out = run_pytest(tmp_path, *flags)
    assert got == code, out
    assert broken_command([*PYTEST, *flags], result(got, out)) is None


def test_a_usage_line_from_a_program_that_is_not_pytest_is_its_own_verdict() -> None:
    out = "ERROR: usage: x [options]\nx: error: unrecognized arguments: --y\n"
    assert broken_command(["make", "test"], result(4, out)) is None


@pytest.mark.parametrize(
    ("code", "output", "said"),
    [
        (127, "tox: not found\n", "exit 127 (a program not found, or one the sandbox could"),
        (126, "./run.sh: Permission denied\n", "exit 126 (a program that cannot be executed): "),
        (127, "", "exit 127 (a program not found, or one the sandbox could not load): it "),
    ],
)
def test_126_and_127_are_a_command_that_cannot_run(code: int, output: str, said: str) -> None:
    why = broken_command(["./run.sh"], result(code, output, runner="unshare"))
    assert why is not None and why.startswith(said)


def test_a_memory_limit_the_loader_cannot_live_under_is_named() -> None:
    out = (
        "bwrap: error while loading shared libraries: libc.so.6: failed to map segment "
        "from shared object\n"
    )
    why = broken_command(["python3", "-m", "pytest"], result(127, out, memory_mb=1))
    assert why == (
        "exit 127 (a program not found, or one the sandbox could not load): "
        + out.strip()
        + "; the memory limit is 1 MB "
        "(test_memory_mb in .switchyard/config.toml)"
    )


def test_bwrap_refusing_to_start_the_program_is_a_command_that_cannot_run() -> None:
    out = "bwrap: execvp ./ci/tests: No such file or directory\n"
    why = broken_command(["./ci/tests"], result(1, out))
    assert why == f"the sandbox could not start it (exit 1): {out.strip()}"
    # a program that printed that line itself, with more, under bwrap, or under another
    # runner, is the tests' own verdict
    assert broken_command(["t"], result(1, out + "FAILED test_x\n")) is None
    assert broken_command(["t"], result(1, out, runner="unshare")) is None
    assert broken_command(["t"], result(1, "")) is None


def test_a_pass_or_a_timeout_is_never_a_broken_command() -> None:
    assert broken_command(["t"], result(0, "tox: not found\n")) is None
    assert broken_command(["t"], result(127, "", timed_out=True)) is None


def test_a_long_last_line_is_cut() -> None:
    why = broken_command(["t"], result(127, "x" * 1000 + "\n"))
    assert why is not None and why.endswith("…") and len(why) < 300
