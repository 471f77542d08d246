"""The corpus: git's view of the working tree or of a commit; skips counted by reason.

The helpers here (a real git repo in a temp dir) are shared by the other Stage0 tests.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from app.policy.schema import Policy
from app.stage0.corpus import NotAGitRepo, check_repo, list_worktree, read_blobs, scan_tree
from app.stage0.engine import Stage0

_GIT = ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]

LEDGER = textwrap.dedent(
    '''\
    """The budget ledger: reserve before a call, settle after it."""

    import sqlite3


    class BudgetLedger:
        """Holds reservations against a cap."""

        def reserve(self, session, amount_usd):
            """Reserve an amount for a session before a cloud call."""
            if amount_usd < 0:
                raise ValueError("negative reservation")
            return self._insert(session, amount_usd)

        def settle(self, reservation_id, actual_usd):
            """Settle a reservation with the actual cost from the usage."""
            return self._update(reservation_id, actual_usd)

        def release(self, reservation_id):
            """Release a reservation after a failed call."""
            return self._delete(reservation_id)
    '''
)
PARSER = textwrap.dedent(
    '''\
    def tokenize_expression(text):
        """Split an arithmetic expression into number and operator tokens."""
        return [t for t in text.split() if t]


    def parse_tokens(tokens):
        """Parse tokens into a syntax tree; raises on an unbalanced parenthesis."""
        depth = 0
        for token in tokens:
            depth += token == "("
        return depth
    '''
)
HTTP = textwrap.dedent(
    '''\
    class HTTPClient:
        def send_request(self, url, retries=3):
            """Send a GET request with retry and exponential backoff."""
            return self.retry_backoff(url, retries)

        def retry_backoff(self, url, retries):
            delay = 0.5
            for _ in range(retries):
                delay *= 2
            return delay
    '''
)
GUIDE = "# Guide\n\nThe budget ledger reserves money before each cloud call and settles it.\n"

FILES: dict[str, str | bytes] = {
    "pkg/__init__.py": "",
    "pkg/ledger.py": LEDGER,
    "pkg/parser.py": PARSER,
    "pkg/http_client.py": HTTP,
    "docs/guide.md": GUIDE,
    "CONSTITUTION.md": "# Constitution\n\nCompile and tests are truth.\n",
    ".gitignore": "ignored/\n*.log\n",
}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run([*_GIT, "-C", str(repo), *args], capture_output=True, check=True)
    return done.stdout.decode()


def write(repo: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def make_repo(root: Path, files: dict[str, str | bytes] | None = None) -> Path:
    """A git repo with ``files`` committed, every mtime an hour in the past (so the
    stat cache trusts them: see corpus.RACY_NS)."""
    repo = root / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    write(repo, FILES if files is None else files)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    backdate(repo)
    return repo


def backdate(repo: Path, *paths: str, seconds: int = 3600) -> None:
    """Set mtimes an hour back: of ``paths``, or of every file of the working tree."""
    past = time.time() - seconds
    if paths:
        for rel in paths:
            os.utime(repo / rel, (past, past))
        return
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = [d for d in dirnames if d not in {".git", ".switchyard"}]
        for name in filenames:
            os.utime(Path(dirpath) / name, (past, past))


def small_files_policy(policy: Policy, max_file_bytes: int) -> Policy:
    stage0 = policy.stage0.model_copy(update={"max_file_bytes": max_file_bytes})
    return policy.model_copy(update={"stage0": stage0})


def test_ignored_files_are_left_out_and_untracked_ones_are_in(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    write(repo, {"ignored/secret.py": "TOKEN = 1\n", "run.log": "x\n", "new_module.py": "X = 1\n"})
    paths = list_worktree(repo)
    assert "new_module.py" in paths and "pkg/ledger.py" in paths
    assert not any(p.startswith("ignored/") or p.endswith(".log") for p in paths)


def test_the_state_dir_is_never_indexed(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        s0.refresh()
        assert (repo / ".switchyard" / "stage0" / "cache.sqlite").exists()
        assert not any(r.path.startswith(".switchyard") for r in s0.index.refs)
    assert not any(p.startswith(".switchyard") for p in list_worktree(repo))


def test_binaries_big_files_and_deleted_files_are_skipped_and_counted(
    tmp_path: Path, policy: Policy
) -> None:
    repo = make_repo(tmp_path)
    write(repo, {"logo.png": b"\x89PNG\r\n\x00\x00binary", "big.txt": "word " * 1000})
    (repo / "pkg" / "parser.py").unlink()  # tracked, deleted in the working tree
    os.symlink("pkg/ledger.py", repo / "link.py")
    with Stage0(repo, small_files_policy(policy, 2048)) as s0:
        report = s0.refresh()
    assert dict(report.skipped) == {"binary": 1, "too_large": 1, "missing": 1, "not_a_file": 1}
    paths = {r.path for r in s0.index.refs}
    assert "pkg/ledger.py" in paths
    assert not paths & {"logo.png", "big.txt", "pkg/parser.py", "link.py"}


def test_a_committed_tree_is_read_through_git_without_a_checkout(
    tmp_path: Path, policy: Policy
) -> None:
    repo = make_repo(tmp_path)
    first = git(repo, "rev-parse", "HEAD").strip()
    write(repo, {"pkg/parser.py": PARSER.replace("tokens", "items")})
    git(repo, "commit", "-q", "-am", "rename")
    scan = scan_tree(repo, first, 1_000_000)
    by_path = {e.path: e for e in scan.entries}
    blob = by_path["pkg/parser.py"].blob
    assert read_blobs(repo, [blob])[blob].decode() == PARSER
    with Stage0(repo, policy, rev=first, cache_dir=tmp_path / "cache") as s0:
        texts = s0.query("parse tokens syntax tree").chunks
    assert texts[0].symbol == "parse_tokens" and "tokens" in texts[0].text
    assert (repo / "pkg" / "parser.py").read_text() != PARSER  # working tree untouched


def test_a_plain_directory_is_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(NotAGitRepo, match="not a git repository"):
        check_repo(tmp_path)
    with pytest.raises(NotAGitRepo, match="no such directory"):
        check_repo(tmp_path / "nope")
    assert not (tmp_path / ".switchyard").exists()
