"""The corpus: git's view of the working tree or of a commit; skips counted by reason.

The helpers here (a real git repo in a temp dir) are shared by the other Stage0 tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from app.policy.schema import Policy
from app.stage0.corpus import (
    NotAGitRepo,
    RepoDirs,
    check_repo,
    git_blob_id,
    list_worktree,
    read_blobs,
    read_worktree,
    scan_tree,
)
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


def test_a_path_through_a_symlinked_folder_is_skipped_never_read(
    tmp_path: Path, policy: Policy
) -> None:
    """The index still lists lib/x.py after ``rm -rf lib && ln -s ../outside lib``: the
    file behind the link, outside the repository, once went to the model as lib/x.py."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.py").write_text('def outside_secret_fn():\n    return "LEAKED"\n')
    repo = make_repo(
        tmp_path,
        {
            "lib/x.py": "def inner_fn():\n    return 1\n",
            "alias/y.py": "def alias_fn():\n    return 2\n",
            "pkg/z.py": "def alias_fn():\n    return 'through a link inside'\n",
        },
    )
    shutil.rmtree(repo / "lib")
    os.symlink("../outside", repo / "lib")  # out of the repository
    shutil.rmtree(repo / "alias")
    os.symlink("pkg", repo / "alias")  # inside it: still a link, still not followed
    with Stage0(repo, policy) as s0:
        report = s0.refresh()
        result = s0.query("outside secret inner alias fn")
    # each tracked file behind a link, plus the links themselves (untracked files now)
    assert report.skipped["symlinked_dir"] == 2 and report.skipped["not_a_file"] == 2
    assert {r.path for r in s0.index.refs} == {"pkg/z.py"}
    assert not any("LEAKED" in c.text for c in result.selected)
    # the reader of contents the scan did not read checks the same way
    leaked = (outside / "x.py").read_bytes()
    assert read_worktree(repo, [("lib/x.py", git_blob_id(leaked))], 1_000_000) == {}


def test_each_folder_is_looked_at_once_per_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    real_lstat = os.lstat

    def counting(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        seen.append(str(path))
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr("app.stage0.corpus.os.lstat", counting)
    dirs = RepoDirs(tmp_path)
    for name in ("a.py", "b.py", "c.py"):
        assert dirs.skip(f"src/pkg/{name}") is None
    assert dirs.skip("src/../etc/passwd") == "not_a_file"
    assert seen == [str(tmp_path / "src"), str(tmp_path / "src" / "pkg")]


def test_a_file_name_that_is_not_utf8_is_indexed_under_a_readable_name(
    tmp_path: Path, policy: Policy
) -> None:
    """``caf\\xe9.py`` (Latin-1) once crashed every Stage0 command: its name, decoded with
    surrogateescape, could not be stored in SQLite."""
    repo = make_repo(tmp_path, {"main.py": "X = 1\n"})
    raw = os.path.join(os.fsencode(repo), b"caf\xe9.py")
    with open(raw, "wb") as fh:
        fh.write(b"def weird_name_fn():\n    return 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "latin-1 name")
    backdate(repo)
    with Stage0(repo, policy) as s0:
        hit = s0.query("weird name fn").chunks[0]
    assert hit.path == "caf\\xe9.py" and "weird_name_fn" in hit.text
    json.dumps(hit.model_dump(mode="json"), ensure_ascii=False).encode("utf-8")
    with Stage0(repo, policy) as s0:  # warm: the stat row is found again, nothing read
        assert s0.refresh().read == []
        assert s0.query("weird name fn").chunks[0].path == "caf\\xe9.py"
    # new chunker settings: the content is read again through its name on disk
    wider = policy.stage0.model_copy(update={"chunk_lines": 30, "chunk_overlap": 5})
    with Stage0(repo, policy.model_copy(update={"stage0": wider})) as s0:
        report = s0.refresh()
        assert "caf\\xe9.py" in report.read and report.unread == []
        assert s0.query("weird name fn").chunks[0].symbol == "weird_name_fn"
