"""Real git repos for the workspace tests, and the checkout fingerprint they rely on.

The helpers here (``make_repo``, ``git``, ``commit``) are imported by the other
workspace, evidence and merge tests.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from app.workspace.worktree import checkout_fingerprint, dirty_paths

__all__ = ["commit", "git", "make_repo"]


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str = "change") -> str:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    git(repo, "add", "--", *files)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_repo(root: Path, files: dict[str, str] | None = None) -> Path:
    """A repo on branch ``main`` with one commit and a local identity."""
    repo = root / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Test User")
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "config", "commit.gpgsign", "false")
    commit(
        repo,
        files
        or {
            "calc.py": "def add(a, b):\n    return a - b\n",
            "tests/test_calc.py": (
                "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
            ),
            "README.md": "# demo\n",
        },
        "initial",
    )
    return repo


def _stage(repo: Path, name: str, text: str) -> None:
    (repo / name).write_text(text)
    git(repo, "add", name)


# ── the fingerprint itself ───────────────────────────────────────────────────────────────


def test_fingerprint_is_stable_and_reads_nothing_into_the_index(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    index = repo / ".git" / "index"
    mtime = index.stat().st_mtime_ns
    a = checkout_fingerprint(repo)
    b = checkout_fingerprint(repo)
    assert a == b and a.head == git(repo, "rev-parse", "HEAD")
    assert a.head_ref == "refs/heads/main"
    assert index.stat().st_mtime_ns == mtime  # no index refresh, no write-tree


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: (r / "calc.py").write_text("x = 1\n"), "status"),
        (lambda r: (r / "new.txt").write_text("untracked\n"), "status"),
        (lambda r: (r / "README.md").unlink(), "status"),
        (lambda r: _stage(r, "README.md", "# staged\n"), "index"),
        (lambda r: commit(r, {"more.txt": "m\n"}), "head"),
        (lambda r: git(r, "checkout", "-q", "-b", "other"), "head_ref"),
    ],
)
def test_fingerprint_sees_each_kind_of_change(tmp_path: Path, change, field) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path)
    before = checkout_fingerprint(repo)
    change(repo)
    assert field in before.differences(checkout_fingerprint(repo))


def test_fingerprint_sees_a_dirty_file_changing_again(tmp_path: Path) -> None:
    # Status alone ("M calc.py") would not change; the content hash does.
    repo = make_repo(tmp_path)
    (repo / "calc.py").write_text("first edit\n")
    (repo / "scratch.txt").write_text("one\n")
    before = checkout_fingerprint(repo)
    (repo / "scratch.txt").write_text("two\n")
    assert before.differences(checkout_fingerprint(repo)) == ["content"]


def test_fingerprint_ignores_ignored_state(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    before = checkout_fingerprint(repo)
    (repo / ".switchyard").mkdir()
    (repo / ".switchyard" / ".gitignore").write_text("*\n")
    (repo / ".switchyard" / "anything").write_text("state\n")
    assert checkout_fingerprint(repo) == before


def test_dirty_paths(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    assert dirty_paths(repo) == []
    (repo / "calc.py").write_text("x\n")
    (repo / "new.txt").write_text("n\n")
    git(repo, "mv", "README.md", "READ.md")
    assert sorted(dirty_paths(repo)) == ["READ.md", "calc.py", "new.txt"]
    assert sorted(dirty_paths(repo, untracked=False)) == ["READ.md", "calc.py"]
