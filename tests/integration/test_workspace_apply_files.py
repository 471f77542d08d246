"""Worktree.apply_files and read_file (issue 16): the applier's whole new files, written
and committed as one attempt in a real repo; paths that leave the tree, reach .git or
the state dir, or go through a symlink are refused, and the checkout is never touched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.workspace.worktree import Worktree, checkout_fingerprint
from tests.integration.test_workspace_repo import git, make_repo


@pytest.fixture
def wt(tmp_path: Path) -> Worktree:
    return Worktree.create(make_repo(tmp_path), "run-1")


def test_files_are_written_from_the_base_committed_and_diffed(wt: Worktree) -> None:
    before = checkout_fingerprint(wt.repo)
    source = wt.read_file("calc.py")
    assert source is not None and "return a - b" in source
    fixed = source.replace("return a - b", "return a + b")
    result = wt.apply_files({"calc.py": fixed, "pkg/new.py": "X = 1\n"})
    assert result.ok and result.commit == wt.head() and result.files == ["calc.py", "pkg/new.py"]
    diff = wt.diff()
    assert "-    return a - b\n+    return a + b\n" in diff and "+++ b/pkg/new.py" in diff
    # the next attempt starts from the base again, not from this one
    again = wt.apply_files({"calc.py": source.replace("return a - b", "return b - a")})
    assert again.ok and "pkg/new.py" not in wt.changed_files()
    assert checkout_fingerprint(wt.repo) == before


def test_a_change_that_changes_nothing_is_not_an_attempt(wt: Worktree) -> None:
    same = wt.read_file("calc.py")
    assert same is not None
    result = wt.apply_files({"calc.py": same})
    assert not result.ok and result.reason == "the change changes nothing"
    assert wt.head() == wt.base


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("../outside.py", "inside the repository"),
        ("/etc/passwd", "inside the repository"),
        (".git/config", ".git/ is not part of the change"),
        (".switchyard/x", ".switchyard/ is not part of the change"),
    ],
)
def test_paths_out_of_the_tree_are_refused(wt: Worktree, path: str, needle: str) -> None:
    result = wt.apply_files({path: "x\n"})
    assert not result.ok and needle in result.reason and wt.head() == wt.base
    with pytest.raises(ValueError, match=r"not part of the change|inside the repository"):
        wt.read_file(path)


def test_symlinks_are_never_written_through(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, repo / "link")
    (repo / "calc_link.py").symlink_to("calc.py")
    git(repo, "add", "link", "calc_link.py")
    git(repo, "commit", "-qm", "symlinks")
    wt = Worktree.create(repo, "run-1")
    result = wt.apply_files({"link/evil.py": "x\n"})
    assert not result.ok and "leads out of the repository" in result.reason
    assert not (outside / "evil.py").exists()
    result = wt.apply_files({"calc_link.py": "x\n"})
    assert not result.ok and "not a regular file" in result.reason
    with pytest.raises(ValueError, match="not a regular file"):
        wt.read_file("calc_link.py")


def test_binary_and_missing_files_read_as_such(wt: Worktree) -> None:
    (wt.path / "blob.bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="not UTF-8 text"):
        wt.read_file("blob.bin")
    assert wt.read_file("nope.py") is None


def test_the_diff_shows_files_the_repository_calls_binary(wt: Worktree) -> None:
    """A model's ``.gitattributes`` (``*.py -diff``) made git show a source file's change
    as a binary blob: High-Risk lines went unclassified and a key in it unmasked to the
    Judge and the evidence. A file with a NUL is still one line, its bytes never shown."""
    bad = 'import ctypes\nKEY = "sk-ant-api03-FAKEANTHROPIC0987654321zyxw"\n'
    result = wt.apply_files(
        {".gitattributes": "*.py -diff\n*.txt binary\n", "util.py": bad, "n.txt": "plain\n"}
    )
    assert result.ok
    (wt.path / "blob.bin").write_bytes(b"PNG\x00\x01secret-bytes\n")
    git(wt.path, "add", "blob.bin")
    git(wt.path, "commit", "-qm", "a binary file", "--no-verify")
    diff = wt.diff()
    assert "+import ctypes\n" in diff and "+KEY = " in diff and "+plain\n" in diff
    assert "GIT binary patch" not in diff and "secret-bytes" not in diff and "\x00" not in diff
    assert "Binary files /dev/null and b/blob.bin differ\n" in diff
    from app.policy import load_policy
    from app.policy.highrisk import classify_diff

    assert classify_diff(diff, load_policy().policy.high_risk).high_risk
