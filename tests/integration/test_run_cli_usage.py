"""``switchyard run``'s usage errors: exit 2 before any run, bundle or model call."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli.main import main
from tests.integration.test_workspace_repo import make_repo


@pytest.mark.parametrize("task", ["", "   ", "\n\t "])
def test_a_blank_task_is_a_usage_error_and_starts_no_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str
) -> None:
    """A whitespace-only task was taken: a run was created and sealed, and with tests in
    the repo the whole pipeline would have planned an empty task."""
    repo = make_repo(tmp_path)
    assert main(["run", task, "--repo", str(repo), "--approve", "deny"]) == 2
    assert capsys.readouterr().err.splitlines() == ["switchyard: a TASK is required (or --demo)"]
    assert not (repo / ".switchyard" / "runs").exists()


def test_an_empty_test_command_is_a_usage_error_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--test-command ''`` started a run that stopped (exit 1) with a sealed bundle."""
    repo = make_repo(tmp_path)
    argv = ["run", "fix", "--repo", str(repo), "--approve", "deny", "--test-command"]
    assert main([*argv, ""]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "switchyard: --test-command: the test command is empty"
    ]
    assert main([*argv, 'pytest "-k']) == 2
    assert capsys.readouterr().err.splitlines() == [
        "switchyard: --test-command: cannot be split as a shell command (No closing quotation)"
    ]
    assert not (repo / ".switchyard").exists()


@pytest.mark.parametrize(
    ("command", "said"),
    [
        ("nonexistent-test-runner --x", "nonexistent-test-runner is not found on PATH"),
        # run as argv, no shell: a shell's words name no program (unless one is there)
        (
            "FOO=1 pytest -q",
            "FOO=1 is not found on PATH (it runs as a program with its arguments, not "
            "through a shell: sh -c '...')",
        ),
        (
            "cd tests && pytest",
            "cd is not found on PATH (it runs as a program with its arguments, not through "
            "a shell: sh -c '...')",
        ),
    ],
)
def test_a_test_command_found_nowhere_on_the_path_is_a_usage_error_and_writes_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    said: str,
) -> None:
    """It started a run that stopped before any model call (exit 1) and sealed a bundle
    for a typo in the command line."""
    import shutil

    repo = make_repo(tmp_path)
    folder = _bin(tmp_path, "sh")
    git = shutil.which("git")
    assert git is not None
    (folder / "git").symlink_to(git)  # (what a run needs first: it got as far as its bundle)
    monkeypatch.setenv("PATH", str(folder))
    argv = ["run", "fix", "--repo", str(repo), "--approve", "deny", "--test-command", command]
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [f"switchyard: --test-command: {said}"]
    assert not (repo / ".switchyard").exists()
    assert not data_dir().exists()  # (no session, no audit line)


@pytest.mark.parametrize(
    "command",
    [
        "sh -c 'cd tests && FOO=1 pytest'",  # (a shell's words, given to a shell)
        "cd tests",  # (a program of that name is on the PATH)
        "./ci/run-tests.sh",  # (a path: looked up in the worktree, by the run)
        "/nowhere/run-tests",
    ],
)
def test_a_test_command_that_may_start_is_left_to_the_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    """Only a program certainly found nowhere is refused: the usage error here is the
    next check's (``--repo``), made after the test command's."""
    monkeypatch.setenv("PATH", str(_bin(tmp_path, "sh", "cd")))
    missing = tmp_path / "nowhere"
    assert main(["run", "fix", "--repo", str(missing), "--test-command", command]) == 2
    assert capsys.readouterr().err.splitlines() == [f"switchyard: --repo {missing}: no such folder"]


def _bin(tmp_path: Path, *names: str) -> Path:
    """A folder holding an executable of each of ``names``: the PATH of a test."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for name in names:
        program = folder / name
        program.write_text("#!/bin/sh\nexit 0\n")
        program.chmod(0o755)
    return folder


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "# the tests\ntest_command = 'pytest -q'\ntest_timeout_s = -1\n",
            ":3: test_timeout_s: Input should be greater than 0",
        ),
        # checked as the file is read: an unbalanced quote was a traceback from inside the
        # run, and an empty command a run stopped with no line (a CLI audit)
        (
            "# the tests\ntest_command = 'pytest \"-k'\n",
            ":2: test_command: cannot be split as a shell command (No closing quotation)",
        ),
        ("test_command = ''\n", ":1: test_command: the test command is empty"),
        # prlimit refused a limit past 64 bits: every test loop failed on it
        (
            "test_memory_mb = 1000000000000000\n",
            ":1: test_memory_mb: Input should be less than or equal to 16777216",
        ),
        ("test_command = []\n", ":1: test_command: the test command is empty"),
        # a value of neither type: "test_command.str: Input should be a valid string", the
        # union's branch name leaked (a user audit); what the key accepts is said instead
        (
            "# the tests\ntest_command = [1, 2]\n",
            ":2: test_command: expected a string or a list of strings (got [1, 2])",
        ),
        (
            "test_command = ['pytest', 3]\n",
            ":1: test_command: expected a string or a list of strings (got ['pytest', 3])",
        ),
        ("test_command = 5\n", ":1: test_command: expected a string or a list of strings (got 5)"),
        (
            "test_comand = 'pytest -q'\n",
            ":1: test_comand: unknown key (known: test_command, test_timeout_s, test_memory_mb)",
        ),
    ],
)
def test_a_mistake_in_the_repositorys_config_is_a_usage_error_naming_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, said: str
) -> None:
    """It started a run that stopped on it (exit 1, no line); a misspelt key was ignored
    and another test command detected (an audit)."""
    repo = make_repo(tmp_path)
    config = repo / ".switchyard" / "config.toml"
    config.parent.mkdir()
    config.write_text(text)
    assert main(["run", "fix", "--repo", str(repo), "--approve", "deny"]) == 2
    assert capsys.readouterr().err.splitlines() == [f"switchyard: {config}{said}"]
    assert not (repo / ".switchyard" / "runs").exists()


def test_a_missing_repo_is_said_as_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    assert main(["run", "fix", "--repo", str(missing)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"switchyard: --repo {missing}: no such folder"]


def test_a_repository_with_no_commit_is_a_usage_error_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It started a run that stopped on it (exit 1) and sealed a bundle for nothing."""
    import subprocess

    repo = tmp_path / "fresh"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "a.py").write_text("x = 1\n")
    assert main(["run", "fix", "--repo", str(repo), "--approve", "deny"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"switchyard: --repo {repo}: the repository has no commit yet: a run branches from "
        "one (commit, and start again)"
    ]
    assert not (repo / ".switchyard").exists()


def test_a_deleted_working_folder_is_one_line_for_every_command_that_resolves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``cd x; rmdir ../x; switchyard run fix``: FileNotFoundError from resolving "."."""
    gone = tmp_path / "x"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    line = "switchyard: the current folder no longer exists; cd to one that does"
    for argv in (
        ["run", "fix"],
        ["merge", "abc"],
        ["evidence", "show", "abc"],
        ["memory", "harvest", "--no-embed"],
    ):
        assert main(argv) == 2, argv
        assert capsys.readouterr().err.splitlines() == [line], argv


def data_dir() -> Path:
    import os

    return Path(os.environ["SWITCHYARD_DATA_DIR"])


def test_demo_arguments_are_checked_before_the_last_demo_is_replaced(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``run --demo --spec nope.md`` exited 2 after deleting and recreating the demo
    repository (the previous demo run's evidence with it); ``--repo`` was ignored."""
    earlier = data_dir() / "demo" / "parser-bug" / ".switchyard" / "runs" / "r1" / "run.json"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("{}")
    assert main(["run", "--demo", "--spec", "nope.md"]) == 2
    assert capsys.readouterr().err.splitlines() == ["switchyard: nope.md: no such spec file"]
    assert main(["run", "--demo", "--repo", "."]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "switchyard: --demo runs on a fresh copy of the example repository: drop --repo"
    ]
    assert main(["run", "--demo", "  "]) == 2
    assert capsys.readouterr().err.splitlines() == ["switchyard: a TASK is required (or --demo)"]
    assert earlier.read_text() == "{}"
    assert sorted(p.name for p in earlier.parents[3].iterdir()) == [".switchyard"]


def test_the_runs_last_lines_are_whole_at_80_columns(tmp_path: Path) -> None:
    """`make demo` headless printed "evidence: " and the bundle's path on the next lines,
    broken at column 80: it could not be pasted."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from app.cli.run_cmd import print_outcome

    bundle = tmp_path / ("deep-folder-" * 6) / ".switchyard" / "runs" / "20261205-031300-6a7094"
    outcome = SimpleNamespace(
        outcome="merge_ready", run_id="20261205-031300-6a7094", reason="tests green", bundle=bundle
    )
    text = io.StringIO()
    print_outcome(outcome, tmp_path / ("repo-" * 12), Console(file=text, width=80))
    lines = text.getvalue().splitlines()
    assert f"evidence: {bundle}" in lines
    assert (
        f"merge with: switchyard merge {outcome.run_id} --repo {tmp_path / ('repo-' * 12)}" in lines
    )


def test_the_printed_merge_command_is_quoted_for_a_shell(tmp_path: Path) -> None:
    """A repository path with spaces was printed as it is: pasted, it failed."""
    import io
    import shlex
    from types import SimpleNamespace

    from rich.console import Console

    from app.cli.run_cmd import print_outcome

    repo = tmp_path / "my répo ü"
    outcome = SimpleNamespace(
        outcome="merge_ready", run_id="20261205-031300-6a7094", reason="ok", bundle=tmp_path
    )
    text = io.StringIO()
    print_outcome(outcome, repo, Console(file=text, width=200))
    (line,) = [ln for ln in text.getvalue().splitlines() if ln.startswith("merge with: ")]
    assert shlex.split(line.removeprefix("merge with: ")) == [
        "switchyard", "merge", outcome.run_id, "--repo", str(repo),
    ]  # fmt: skip
