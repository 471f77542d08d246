"""A repository another user owns: git refuses it ("dubious ownership"), and every face
says so in one line with git's own remedy, where they said "not a git repository" and
advised ``git init`` (an audit)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from app.cli.main import main
from app.git_says import git_says

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("git") is None, reason="chown to another user needs root"
)


def test_git_says_one_line() -> None:
    said = (
        "fatal: detected dubious ownership in repository at '/r'\n"
        "To add an exception for this directory, call:\n\n"
        "\tgit config --global --add safe.directory /r\n"
    )
    line = git_says(said, "/r")
    assert "\n" not in line and "belongs to another user" in line
    assert line.endswith("git config --global --add safe.directory /r")
    assert git_says("fatal: bad revision 'x'\nhint: more\n", "/r") == "bad revision 'x'"
    assert git_says("", "/r") == "git gave no reason"


@pytest.fixture
def owned(tmp_path: Path) -> Path:
    repo = tmp_path / "theirs"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q",
         "--allow-empty", "-m", "x"],
        check=True,
    )  # fmt: skip
    subprocess.run(["chown", "-R", "nobody", str(repo)], check=True)
    return repo


@needs_root
@pytest.mark.parametrize(
    "argv", [["stage0", "query", "parser"], ["merge", "run-1"]], ids=["stage0", "merge"]
)
def test_a_repository_of_another_user_is_named_as_such(
    owned: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert main([*argv, "--repo", str(owned)]) == 2
    err = capsys.readouterr().err
    (line,) = err.strip().splitlines()
    assert "belongs to another user" in line and "safe.directory" in line
    assert "git init" not in err
