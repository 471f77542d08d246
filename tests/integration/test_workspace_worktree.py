"""Worktrees per run, in real repos: the user's checkout is never touched."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.errors import UsageError
from app.workspace.git import NotAGitRepo
from app.workspace.sandbox import run_sandboxed
from app.workspace.testcmd import detect_test_command
from app.workspace.worktree import WorkspaceError, Worktree, checkout_fingerprint
from tests.integration.test_workspace_repo import commit, git, make_repo

FIX = """\
--- a/calc.py
+++ b/calc.py
@@ -1,2 +1,2 @@
 def add(a, b):
-    return a - b
+    return a + b
"""

# Wrong hunk counts, as models write them: --recount makes it apply all the same.
FIX_MISCOUNTED = FIX.replace("@@ -1,2 +1,2 @@", "@@ -1,5 +1,7 @@")

DOES_NOT_APPLY = """\
--- a/calc.py
+++ b/calc.py
@@ -1,2 +1,2 @@
 def add(a, b):
-    return a * b
+    return a + b
"""

NEW_FILE = """\
--- /dev/null
+++ b/notes/new.txt
@@ -0,0 +1 @@
+hello
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


def test_create_apply_test_remove_leaves_the_checkout_untouched(repo: Path) -> None:
    before = checkout_fingerprint(repo)
    wt = Worktree.create(repo, "run-1")
    assert wt.path == repo / ".switchyard" / "worktrees" / "run-1"
    assert wt.branch == "switchyard/run-1"
    assert wt.base == before.head and wt.notes == () and wt.user_dirty == ()
    assert (wt.path / "calc.py").read_text() == (repo / "calc.py").read_text()
    assert checkout_fingerprint(repo) == before

    result = wt.apply_diff(FIX)
    assert result.ok, result.reason
    assert result.attempt == 1 and result.files == ["calc.py"] and result.parent == wt.base
    assert result.commit == wt.head() != wt.base
    assert git(repo, "rev-parse", "switchyard/run-1") == result.commit
    assert "return a + b" in wt.diff() and wt.changed_files() == ["calc.py"]
    assert checkout_fingerprint(repo) == before
    assert (repo / "calc.py").read_text().endswith("a - b\n")

    cmd = detect_test_command(wt.path, repo=repo, python=sys.executable)
    res = asyncio.run(run_sandboxed(cmd.argv, cwd=wt.path, timeout_s=120))
    assert res.exit_code == 0, res.output
    assert checkout_fingerprint(repo) == before

    wt.remove(delete_branch=True)
    assert not wt.path.exists()
    assert "switchyard/run-1" not in git(repo, "branch", "--list")
    assert "run-1" not in git(repo, "worktree", "list")
    assert checkout_fingerprint(repo) == before


def test_a_diff_that_does_not_apply_fails_with_gits_reason(repo: Path) -> None:
    wt = Worktree.create(repo, "run-2")
    result = wt.apply_diff(DOES_NOT_APPLY)
    assert not result.ok and result.commit is None
    assert "patch does not apply" in result.reason and "calc.py" in result.reason
    assert wt.head() == wt.base
    assert git(wt.path, "status", "--porcelain") == ""


def test_garbage_empty_and_noop_diffs_fail(repo: Path) -> None:
    wt = Worktree.create(repo, "run-3")
    assert wt.apply_diff("").reason == "the diff is empty"
    garbage = wt.apply_diff("this is not a diff\n")
    assert not garbage.ok and garbage.reason
    assert wt.attempts == 2
    assert wt.head() == wt.base


def test_miscounted_hunks_still_apply(repo: Path) -> None:
    wt = Worktree.create(repo, "run-4")
    result = wt.apply_diff(FIX_MISCOUNTED)
    assert result.ok, result.reason
    assert (wt.path / "calc.py").read_text().endswith("a + b\n")


def test_attempts_start_from_the_base_unless_stacked(repo: Path) -> None:
    wt = Worktree.create(repo, "run-5")
    first = wt.apply_diff(FIX)
    assert first.ok
    (wt.path / "leftover.txt").write_text("untracked junk from a test run\n")
    again = wt.apply_diff(FIX)  # a whole diff against the base again
    assert again.ok and again.parent == wt.base and again.attempt == 2
    assert not (wt.path / "leftover.txt").exists()
    stacked = wt.apply_diff(NEW_FILE, from_base=False)
    assert stacked.ok and stacked.parent == again.commit
    assert sorted(wt.changed_files()) == ["calc.py", "notes/new.txt"]
    wt.reset()
    assert wt.head() == wt.base and wt.changed_files() == []


def test_a_diff_into_the_state_dir_is_refused(repo: Path) -> None:
    wt = Worktree.create(repo, "run-6")
    sneaky = NEW_FILE.replace("notes/new.txt", ".switchyard/runs/x/manifest.json")
    result = wt.apply_diff(sneaky)
    assert not result.ok and "state dir" in result.reason
    assert wt.head() == wt.base


def test_a_diff_escaping_the_tree_is_refused_by_git(repo: Path) -> None:
    wt = Worktree.create(repo, "run-7")
    result = wt.apply_diff(NEW_FILE.replace("b/notes/new.txt", "b/../../escape.txt"))
    assert not result.ok
    assert not (repo / ".switchyard" / "escape.txt").exists()


def test_dirty_checkout_is_not_carried_over_and_is_said(repo: Path) -> None:
    (repo / "calc.py").write_text("def add(a, b):\n    return 0  # wip\n")
    (repo / "scratch.txt").write_text("notes\n")
    before = checkout_fingerprint(repo)
    wt = Worktree.create(repo, "run-8")
    assert set(wt.user_dirty) == {"calc.py", "scratch.txt"}
    assert "2 uncommitted changes" in wt.notes[0] and "does not carry them over" in wt.notes[0]
    assert (wt.path / "calc.py").read_text().endswith("a - b\n")
    assert not (wt.path / "scratch.txt").exists()
    assert wt.apply_diff(FIX).ok
    wt.remove()
    assert checkout_fingerprint(repo) == before


def test_hooks_never_run(repo: Path) -> None:
    marker = repo.parent / "hook-ran"
    hooks = repo / ".git" / "hooks"
    for name in ("post-checkout", "pre-commit", "commit-msg", "post-commit"):
        hook = hooks / name
        hook.write_text(f"#!/bin/sh\necho {name} >> {marker}\n")
        hook.chmod(0o755)
    wt = Worktree.create(repo, "run-9")
    assert wt.apply_diff(FIX).ok
    assert not marker.exists()


def test_commits_without_a_configured_identity(
    repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    git(repo, "config", "--unset", "user.name")
    git(repo, "config", "--unset", "user.email")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-global"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("EMAIL", "")
    wt = Worktree.create(repo, "run-10")
    result = wt.apply_diff(FIX)
    assert result.ok, result.reason
    assert git(wt.path, "log", "-1", "--format=%an <%ae>") == "Switchyard <switchyard@localhost>"


def test_run_ids_are_unique_and_safe(repo: Path) -> None:
    Worktree.create(repo, "run-11")
    with pytest.raises(WorkspaceError, match="already exists"):
        Worktree.create(repo, "run-11")
    for bad in ("../x", "a/b", "-x", "a..b", "x.lock", ""):
        with pytest.raises(UsageError):
            Worktree.create(repo, bad)


def test_open_finds_the_worktree_again(repo: Path) -> None:
    wt = Worktree.create(repo, "run-12")
    assert wt.apply_diff(FIX).ok
    again = Worktree.open(repo / "tests", "run-12")  # from a subdirectory, too
    assert (again.path, again.branch, again.base) == (wt.path, wt.branch, wt.base)
    assert again.head() == wt.head()
    wt.remove()
    with pytest.raises(WorkspaceError):
        Worktree.open(repo, "run-12")
    wt.remove()  # twice is fine


def test_not_a_repo_and_no_commit(tmp_path: Path) -> None:
    with pytest.raises(NotAGitRepo):
        Worktree.create(tmp_path, "run-13")
    empty = tmp_path / "empty"
    empty.mkdir()
    subprocess.run(["git", "init", "-q", str(empty)], check=True)
    with pytest.raises(NotAGitRepo, match="no commit"):
        Worktree.create(empty, "run-13")


def test_git_location_variables_do_not_leak_in(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As inside a git hook of another repository.
    other = make_repo(repo.parent / "other")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    before = checkout_fingerprint(repo)
    wt = Worktree.create(repo, "run-14")
    assert wt.apply_diff(FIX).ok
    assert wt.base == before.head
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_INDEX_FILE")
    assert checkout_fingerprint(repo) == before
    assert git(other, "branch", "--list", "switchyard/*") == ""


def test_removing_read_only_build_output(repo: Path) -> None:
    wt = Worktree.create(repo, "run-15")
    cache = wt.path / "build" / "ro"
    cache.mkdir(parents=True)
    (cache / "f").write_text("x")
    os.chmod(cache / "f", 0o444)
    os.chmod(cache, 0o555)
    wt.remove()
    assert not wt.path.exists()


def test_user_commits_after_creation_do_not_disturb_the_run(repo: Path) -> None:
    wt = Worktree.create(repo, "run-16")
    commit(repo, {"README.md": "# changed by the user\n"}, "user work")
    assert wt.apply_diff(FIX).ok
    assert (wt.path / "README.md").read_text() == "# demo\n"


def plant_git_dir(wt: Worktree, marker: Path) -> None:
    """What a hostile test can do where writes are not confined (an audit found it): point
    the worktree's .git at a git dir of its own whose config runs a program when git
    checks a file out (a smudge filter for every path), and leave a file to check out.
    (core.fsmonitor, the audit's first plant, is off on every call Switchyard makes.)"""
    evil = wt.path / ".x"
    (evil / "objects" / "info").mkdir(parents=True)
    (evil / "info").mkdir()
    (evil / "refs").mkdir()
    common = Path(git(wt.repo, "rev-parse", "--path-format=absolute", "--git-common-dir"))
    (evil / "objects" / "info" / "alternates").write_text(f"{common / 'objects'}\n")
    (evil / "HEAD").write_text(f"{wt.base}\n")
    hook = evil / "hook.sh"
    hook.write_text(f"#!/bin/sh\necho escaped >> {marker}\ncat\n")
    hook.chmod(0o755)
    (evil / "config").write_text(
        f'[core]\n\trepositoryformatversion = 0\n\tbare = false\n[filter "x"]\n\tsmudge = {hook}\n'
    )
    (evil / "info" / "attributes").write_text("* filter=x\n")
    (wt.path / ".git").write_text(f"gitdir: {evil}\n")
    (wt.path / "calc.py").write_text("changed by the tests\n")  # for a reset to check out


def test_a_planted_git_dir_is_never_read_and_the_dot_git_is_restored(
    repo: Path, tmp_path: Path
) -> None:
    wt = Worktree.create(repo, "run-evil")
    want = (wt.path / ".git").read_text()
    marker = tmp_path / "escaped"
    plant_git_dir(wt, marker)
    # sanity: git finding its dir through the .git file runs the planted program
    saved = (wt.path / "calc.py").read_text()
    subprocess.run(
        ["git", "-C", str(wt.path), "checkout", "HEAD", "--", "calc.py"],
        capture_output=True,
        check=False,
    )
    assert marker.exists(), "the planted config did not take: the test proves nothing"
    marker.unlink()
    (wt.path / "calc.py").write_text(saved)
    # everything Switchyard does in the worktree names its own git dir
    wt.reset()
    assert wt.apply_diff(FIX).ok
    assert "return a + b" in wt.diff() and wt.changed_files() == ["calc.py"]
    assert wt.apply_files({"notes.txt": "hi\n"}).ok
    assert not marker.exists(), marker.read_text()
    assert Worktree.open(repo, "run-evil").git_dir == wt.git_dir
    # and the worktree's .git is put back as git wrote it (the person's git reads it)
    plant_git_dir_again = wt.path / ".git"
    plant_git_dir_again.write_text("gitdir: /elsewhere\n")
    assert wt.restore_dotgit() and plant_git_dir_again.read_text() == want
    assert not wt.restore_dotgit()
    plant_git_dir_again.unlink()
    plant_git_dir_again.mkdir()
    assert wt.restore_dotgit() and plant_git_dir_again.read_text() == want
    subprocess.run(["git", "-C", str(wt.path), "status"], capture_output=True, check=True)
    assert not marker.exists()


def test_the_worktrees_of_runs_that_died_are_pruned_and_a_live_runs_kept(tmp_path: Path) -> None:
    """A run SIGKILLed mid-way left its worktree (a full checkout) and its branch for
    good; later runs swept only its live marker (a user audit). Its worktree goes, its
    branch too when it holds no commit of the run's; a live run's is left alone."""
    from app.evidence import live
    from app.evidence.layout import runs_dir
    from app.workspace.worktree import PRUNE_AFTER_S, prune_dead

    repo = make_repo(tmp_path)
    bundles = runs_dir(repo)
    for run_id in ("dead-empty", "dead-commit", "alive"):
        (bundles / run_id).mkdir(parents=True)
        Worktree.create(repo, run_id)
    committed = Worktree.open(repo, "dead-commit")
    assert committed.apply_diff(FIX).ok
    held = live.hold(bundles / "alive")
    assert held is not None
    try:
        # not before PRUNE_AFTER_S: a run that could not hold its marker reads as dead
        assert prune_dead(repo) == []
        long_ago = time.time() - PRUNE_AFTER_S - 60
        for meta in (repo / ".switchyard" / "worktrees").glob("*.json"):
            os.utime(meta, (long_ago, long_ago))
        assert prune_dead(repo) == ["dead-commit", "dead-empty"]
        assert not (repo / ".switchyard" / "worktrees" / "dead-empty").exists()
        assert not (repo / ".switchyard" / "worktrees" / "dead-commit").exists()
        assert (repo / ".switchyard" / "worktrees" / "alive").is_dir()
        branches = git(repo, "branch", "--list", "switchyard/*").split()
        assert "switchyard/dead-empty" not in branches
        assert "switchyard/dead-commit" in branches  # what it made stays to be looked at
        assert "switchyard/alive" in branches
        assert prune_dead(repo) == []  # (nothing more)
    finally:
        live.let_go(bundles / "alive", held)


#: a run as ``switchyard run`` starts one: its bundle (which holds the live marker), then
#: its worktree and branch; then it waits to be killed
_KILLED_RUN = """
import sys
from pathlib import Path
from app.evidence.bundle import EvidenceBundle
from app.workspace.worktree import Worktree
repo, run_id = Path(sys.argv[1]), sys.argv[2]
bundle = EvidenceBundle.create(repo, run_id, task="fix add()")
Worktree.create(repo, run_id)
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_killed_runs_worktree_and_branch_go_at_the_next_run_at_once(tmp_path: Path) -> None:
    """A SIGKILLed run's worktree and branch stayed six hours (PRUNE_AFTER_S), though no
    process held its live marker any more (a user audit). It held the lock, so the lock
    found free says it is gone: the next run prunes them at once. Its unsealed bundle is
    evidence, and stays."""
    from app.evidence.bundle import EvidenceBundle
    from app.evidence.layout import MANIFEST, runs_dir
    from app.workspace.worktree import prune_dead

    repo = make_repo(tmp_path)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    holder = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(repo), "killed"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        assert prune_dead(repo) == []  # alive: kept
    finally:
        holder.kill()  # SIGKILL: no finalizer, no seal; the kernel lets go of the lock
        holder.wait()
    worktree = repo / ".switchyard" / "worktrees" / "killed"
    assert worktree.is_dir() and "switchyard/killed" in git(repo, "branch", "--list")
    EvidenceBundle.create(repo, "next-run", task="next")  # (its marker sweeps the dead one)
    # made on another machine (a shared filesystem, where a lock held there may read free
    # here): this machine's free lock proves nothing, and it waits its grace (a review)
    meta = repo / ".switchyard" / "worktrees" / "killed.json"
    said = json.loads(meta.read_text())
    meta.write_text(json.dumps({**said, "machine": "another-host/0000"}))
    assert prune_dead(repo) == []
    meta.write_text(json.dumps(said))
    assert prune_dead(repo) == ["killed"]
    assert not worktree.exists()
    assert git(repo, "branch", "--list", "switchyard/*") == ""
    assert git(repo, "worktree", "list").count("\n") == 0  # the main checkout alone
    bundle = runs_dir(repo) / "killed"
    assert bundle.is_dir() and not (bundle / MANIFEST).exists()  # evidence stays as it is


def test_when_a_dead_runs_worktree_goes_is_decided_by_what_its_lock_proves() -> None:
    from app.workspace.worktree import PRUNE_AFTER_S, prune_due

    assert prune_due(age_s=0, lock_held=True, sealed=False)  # killed: at once
    assert not prune_due(age_s=0, lock_held=False, sealed=False)  # no lock: may be at work
    assert not prune_due(age_s=0, lock_held=True, sealed=True)  # its own end removes it
    assert prune_due(age_s=PRUNE_AFTER_S, lock_held=False, sealed=False)
    assert prune_due(age_s=PRUNE_AFTER_S, lock_held=True, sealed=True)
