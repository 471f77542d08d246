"""``REPO/.switchyard/``: a repository that ships one of its own (a link, a file, a link
inside it) is refused with one line; nothing is written, or read back, through a link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import app.cli.main as cli_main
from app.errors import ConfigError
from app.evidence.bundle import EvidenceBundle
from app.paths import repo_state_dir
from app.policy.schema import Policy
from app.stage0.engine import Stage0
from tests.integration.test_stage0_corpus import git, make_repo

MODULE = "app.cli.stage0_cmd"


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    if MODULE not in cli_main.COMMAND_MODULES:
        monkeypatch.setattr(cli_main, "COMMAND_MODULES", (*cli_main.COMMAND_MODULES, MODULE))


def _commit_all(repo: Path) -> None:
    git(repo, "add", "-A", "-f")
    git(repo, "commit", "-q", "-m", "ship a state dir")


def test_the_state_dir_is_made_once_with_its_ignore_rule(tmp_path: Path) -> None:
    state = repo_state_dir(tmp_path)
    assert state == tmp_path / ".switchyard" and state.is_dir()
    assert (state / ".gitignore").read_text().endswith("*\n")
    (state / ".gitignore").write_text("*\n# mine\n")
    assert repo_state_dir(tmp_path, "stage0") == state / "stage0"
    assert (state / "stage0").is_dir() and (state / ".gitignore").read_text() == "*\n# mine\n"


@pytest.mark.parametrize(
    ("plant", "where", "why"),
    [
        ("folder link", ".switchyard", "a symbolic link"),
        ("file", ".switchyard", "not a folder"),
        ("folder link", ".switchyard/stage0", "a symbolic link"),
        ("file link", ".switchyard/stage0/cache.sqlite", "a symbolic link"),
        ("file link", ".switchyard/.gitignore", "a symbolic link"),
    ],
)
def test_a_shipped_link_or_file_is_refused_and_nothing_goes_through_it(
    tmp_path: Path,
    policy: Policy,
    capsys: pytest.CaptureFixture[str],
    plant: str,
    where: str,
    why: str,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = make_repo(tmp_path, {"a.py": "def a():\n    return 1\n"})
    target = repo / where
    target.parent.mkdir(parents=True, exist_ok=True)
    if plant == "file":
        target.write_text("x\n")
    else:  # a file's link dangles: a write through it would create the file outside
        os.symlink(outside / "gone" if plant == "file link" else outside, target)
    _commit_all(repo)

    with pytest.raises(ConfigError) as caught:
        Stage0(repo, policy)
    assert str(caught.value).startswith(f"{target}: {why};")
    rc = cli_main.main(["stage0", "brief", "task", "--repo", str(repo)])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"switchyard: {target}: {why};")
    if where.count("/") < 2:  # the evidence writer checks the same way (it skips stage0/)
        with pytest.raises(ConfigError):
            EvidenceBundle.create(repo, "run-1")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    ("plant", "read"),
    [
        (".switchyard", "runs"),
        (".switchyard/runs", "runs"),
        (".switchyard/config.toml", "config"),
        (".switchyard", "config"),
        (".switchyard/worktrees", "worktree"),
    ],
)
def test_what_is_read_back_from_the_state_dir_is_never_read_through_a_link(
    tmp_path: Path, plant: str, read: str
) -> None:
    """Evidence runs, a worktree's record and config.toml (which picks the test command)
    were read through whatever link a repository shipped there."""
    from app.evidence.layout import runs_dir
    from app.workspace.testcmd import load_repo_config
    from app.workspace.worktree import Worktree

    repo = make_repo(tmp_path / "repo")
    outside = tmp_path / "outside"
    (outside / "runs").mkdir(parents=True)
    (outside / "worktrees").mkdir()
    (outside / "config.toml").write_text('test_command = "sh -c evil"\n')
    link = repo / plant
    link.parent.mkdir(parents=True, exist_ok=True)
    target = outside if plant == ".switchyard" else outside / Path(plant).name
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="a symbolic link"):
        if read == "runs":
            runs_dir(repo)
        elif read == "config":
            load_repo_config(repo)
        else:
            Worktree.open(repo, "20260101-120000-abc123")


def test_reading_a_state_dir_that_is_not_there_creates_nothing(tmp_path: Path) -> None:
    from app.evidence.layout import runs_dir
    from app.workspace.testcmd import load_repo_config

    repo = make_repo(tmp_path / "repo")
    assert runs_dir(repo) == repo / ".switchyard" / "runs"
    load_repo_config(repo)
    assert not (repo / ".switchyard").exists()


def test_a_bundle_folder_that_is_a_link_is_no_run(tmp_path: Path) -> None:
    """`.switchyard/runs/<id>` as a link was listed, resolved and read from where it
    pointed (evidence show, the workbench's evidence screen)."""
    from app.evidence.runs import UnknownRun, list_runs, resolve_run

    repo = make_repo(tmp_path / "repo")
    real = EvidenceBundle.create(repo, "20260101-120000-aaaaaa").path
    outside = tmp_path / "outside" / "20260101-120000-bbbbbb"
    outside.mkdir(parents=True)
    (real.parent / outside.name).symlink_to(outside)
    assert [r.run_id for r in list_runs(repo)] == ["20260101-120000-aaaaaa"]
    with pytest.raises(UnknownRun):
        resolve_run(repo, "20260101-120000-bbbbbb")


@pytest.mark.parametrize("kind", ["runs", "worktrees"])
def test_a_file_where_a_state_folder_goes_is_one_clear_line(tmp_path: Path, kind: str) -> None:
    """`.switchyard/runs` (or `worktrees`) as a file was a FileExistsError traceback when
    a run began."""
    from app.workspace.worktree import Worktree

    repo = make_repo(tmp_path / "repo")
    repo_state_dir(repo)
    (repo / ".switchyard" / kind).write_text("not a folder")
    with pytest.raises(ConfigError, match="not a folder"):
        if kind == "runs":
            EvidenceBundle.create(repo, "20260101-120000-aaaaaa")
        else:
            Worktree.create(repo, "20260101-120000-aaaaaa")


def test_a_repository_switchyard_cannot_write_in_says_so_not_move_it_away(
    tmp_path: Path,
) -> None:
    """A read-only repository was told that its state folder was a link to move away (a
    TUI audit): the system's own refusal, and that the repository must be writable."""
    import os

    if os.geteuid() == 0:
        # root writes through any mode: the refusal is made the way a read-only mount
        # makes it, with no folder to make the state's in (its parent a file)
        parent = tmp_path / "file"
        parent.write_text("")
        repo = parent
    else:
        repo = tmp_path / "repo"
        repo.mkdir()
        repo.chmod(0o555)
    with pytest.raises(ConfigError) as info:
        repo_state_dir(repo)
    text = str(info.value)
    assert "move it away" not in text and "must be writable by you" in text
