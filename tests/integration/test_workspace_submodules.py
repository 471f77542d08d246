"""A run's worktree with the user's submodules, in real repos with real submodules: filled
from this machine's objects only, their ``.git`` files out of the sandboxed tests' reach
(GR-010), and never followed by Switchyard's own git calls."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.workspace.sandbox import SandboxError, probe_sandbox, run_sandboxed
from app.workspace.worktree import Worktree, checkout_fingerprint
from tests.ci import missing
from tests.integration.test_workspace_repo import commit, git, make_repo

PROBE = probe_sandbox()
SUB = "vendor/lib"


def lib_commit(lib: Path, text: str) -> str:
    (lib / "data.txt").write_text(text)
    git(lib, "add", "data.txt")
    git(lib, "-c", "user.name=L", "-c", "user.email=l@example.com", "commit", "-q", "-m", text)
    return git(lib, "rev-parse", "HEAD")


@pytest.fixture
def sub(tmp_path: Path) -> dict[str, object]:
    """A repo whose base records commit ``c1`` of a submodule at vendor/lib; the user's
    checkout has it initialised, its objects (c1 and c2) in .git/modules/vendor/lib."""
    lib = tmp_path / "lib"
    lib.mkdir()
    git(lib, "init", "-q", "-b", "main")
    c1 = lib_commit(lib, "one\n")
    c2 = lib_commit(lib, "two\n")
    repo = make_repo(tmp_path)
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), SUB)
    git(repo / SUB, "checkout", "-q", c1)
    git(repo, "add", SUB)
    git(repo, "commit", "-q", "-m", "the submodule at c1")
    store = repo / ".git" / "modules" / SUB
    assert store.is_dir()
    return {"repo": repo, "lib": lib, "c1": c1, "c2": c2, "store": store}


def pointer_diff(old: str, new: str) -> str:
    return (
        f"diff --git a/{SUB} b/{SUB}\nindex {old[:12]}..{new[:12]} 160000\n"
        f"--- a/{SUB}\n+++ b/{SUB}\n@@ -1 +1 @@\n-Subproject commit {old}\n"
        f"+Subproject commit {new}\n"
    )


def test_an_initialised_submodule_is_filled_at_the_commit_the_base_records(
    sub: dict[str, object],
) -> None:
    repo, c1 = Path(str(sub["repo"])), str(sub["c1"])
    git(repo / SUB, "checkout", "-q", str(sub["c2"]))  # the user's own is elsewhere now
    before = checkout_fingerprint(repo)
    store_refs = git(Path(str(sub["store"])), "for-each-ref")
    wt = Worktree.create(repo, "run-1")
    folder = wt.path / SUB
    assert (folder / "data.txt").read_text() == "one\n"  # the base's c1, not the user's c2
    assert [s.path for s in wt.submodules] == [SUB] and wt.submodules[0].commit == c1
    own = wt.git_dir / "modules" / SUB  # outside the worktree: read-only in the sandbox
    assert (folder / ".git").read_bytes() == f"gitdir: {own}\n".encode()
    assert not own.is_relative_to(wt.path)
    assert not [n for n in wt.notes if "submodule" in n], wt.notes
    # a person's git finds it through the .git file, as with git submodule update
    assert git(folder, "rev-parse", "HEAD") == c1 and git(folder, "status", "--porcelain") == ""
    assert wt.pinned() == [f"{SUB}/.git"] and wt.broken_pointers() == []
    assert own / "config" in wt.config_files()
    assert Worktree.open(repo, "run-1").submodules == wt.submodules
    # the user's checkout and their submodule's store are as they were
    assert checkout_fingerprint(repo) == before
    assert git(Path(str(sub["store"])), "for-each-ref") == store_refs
    wt.remove(delete_branch=True)
    assert not wt.path.exists() and not wt.git_dir.exists()
    assert "run-1" not in git(repo, "worktree", "list")
    assert checkout_fingerprint(repo) == before


def test_a_commit_not_on_this_machine_is_said_and_never_fetched(
    sub: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, lib, store = Path(str(sub["repo"])), Path(str(sub["lib"])), Path(str(sub["store"]))
    c3 = lib_commit(lib, "three\n")  # at the submodule's URL, never fetched into the store
    git(repo, "update-index", "--cacheinfo", f"160000,{c3},{SUB}")
    git(repo, "commit", "-q", "-m", "the submodule at c3")
    # a configuration that would let any fetch from that local URL through
    config = tmp_path / "gitconfig"
    config.write_text(
        '[protocol "file"]\n\tallow = always\n[submodule]\n\trecurse = true\n'
        "[fetch]\n\trecurseSubmodules = true\n"
    )
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    wt = Worktree.create(repo, "run-missing")
    assert wt.submodules == ()
    said = [n for n in wt.notes if "submodule" in n]
    assert said == [
        "1 submodule left empty in the run's worktree, whose recorded commit is not in this "
        "machine's objects, and nothing is fetched (git submodule update in your checkout "
        f"brings it): {SUB} at {c3[:12]}"
    ]
    assert list((wt.path / SUB).iterdir()) == []
    assert not (wt.git_dir / "modules").exists()  # nothing of it left for git to trip on
    # nothing came from the URL: the store still lacks c3, and nothing was fetched
    probe = subprocess.run(["git", f"--git-dir={store}", "cat-file", "-e", c3], check=False)
    assert probe.returncode != 0 and not (store / "FETCH_HEAD").exists()
    wt.remove(delete_branch=True)
    assert not wt.path.exists() and not wt.git_dir.exists()


def test_a_submodule_the_checkout_has_not_initialised_is_left_empty_and_said(
    sub: dict[str, object],
) -> None:
    repo = Path(str(sub["repo"]))
    git(repo, "submodule", "deinit", "-q", SUB)
    wt = Worktree.create(repo, "run-deinit")
    assert wt.submodules == () and list((wt.path / SUB).iterdir()) == []
    assert [n for n in wt.notes if "submodule" in n] == [
        "1 submodule left empty in the run's worktree, not initialised in your checkout "
        f"(git submodule update --init): {SUB}"
    ]


# ── the sandbox ─────────────────────────────────────────────────────────────────────────

#: every way a test could put a .git file of its own where git would find it
ATTACKS = """
import os
def attempt(what, how):
    try:
        how()
        print("WROTE", what)
    except OSError as exc:
        print("refused", what, exc.errno)
open("forged", "w").write("gitdir: /elsewhere\\n")
attempt("write", lambda: open("vendor/lib/.git", "w").write("gitdir: /elsewhere\\n"))
attempt("replace", lambda: os.replace("forged", "vendor/lib/.git"))
attempt("unlink", lambda: os.unlink("vendor/lib/.git"))
attempt("rename the submodule", lambda: os.rename("vendor/lib", "vendor/moved"))
attempt("rename its parent", lambda: os.rename("vendor", "moved"))
attempt("remove the submodule", lambda: os.rmdir("vendor/lib"))
open("vendor/lib/new.txt", "w").write("a test may write in a submodule")
print(open("vendor/lib/data.txt").read().strip())
"""


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


@pytest.mark.parametrize("runner", ["bwrap", "unshare"])
async def test_a_sandboxed_test_cannot_touch_a_submodules_git_file(
    sub: dict[str, object], runner: str
) -> None:
    if runner == "bwrap" and PROBE.runners.get("bwrap") != "ok":
        missing(f"bubblewrap does not run here: {PROBE.runners.get('bwrap')}")
    if runner == "unshare" and PROBE.runners.get("unshare") != "ok":
        pytest.skip(f"unshare does not work here: {PROBE.runners.get('unshare')}")
    repo = Path(str(sub["repo"]))
    wt = Worktree.create(repo, f"run-{runner}")
    want = (wt.path / SUB / ".git").read_bytes()
    result = await run_sandboxed(
        py(ATTACKS),
        cwd=wt.path,
        runner=runner,  # type: ignore[arg-type]
        pinned=wt.pinned(),
        readonly_paths=(repo,),
        timeout_s=60,
    )
    assert result.exit_code == 0, result.output
    assert "WROTE" not in result.output and result.output.count("refused") == 6, result.output
    assert result.output.rstrip().endswith("one")  # the submodule's file, read inside
    assert (wt.path / SUB / ".git").read_bytes() == want and wt.broken_pointers() == []
    assert (wt.path / SUB / "new.txt").exists()  # the rest of it is writable


async def test_without_binds_a_rewritten_git_file_is_found_after_the_run(
    sub: dict[str, object],
) -> None:
    """rlimit binds nothing: the check after the test command is what stops the run."""
    wt = Worktree.create(Path(str(sub["repo"])), "run-rlimit")
    result = await run_sandboxed(
        py(ATTACKS), cwd=wt.path, runner="rlimit", pinned=wt.pinned(), allow_unsandboxed=True
    )
    assert "WROTE write" in result.output, result.output
    assert wt.broken_pointers() == [SUB]


async def test_a_git_file_behind_a_link_cannot_be_pinned_and_nothing_runs(
    sub: dict[str, object], tmp_path: Path
) -> None:
    wt = Worktree.create(Path(str(sub["repo"])), "run-link")
    os.symlink(wt.path / SUB, wt.path / "link")
    marker = tmp_path / "ran"
    with pytest.raises(SandboxError, match="GR-010"):
        await run_sandboxed(
            ["touch", str(marker)], cwd=wt.path, runner="rlimit", pinned=["link/.git"],
            allow_unsandboxed=True,
        )  # fmt: skip
    assert not marker.exists()


# ── Switchyard's own git calls ──────────────────────────────────────────────────────────


def forge_pointer(wt: Worktree, store: Path, c1: str, marker: Path) -> None:
    """What a test that got past the sandbox would leave: the submodule's .git naming a git
    dir of its making, whose config runs a program for git (filter, external diff)."""
    hook = marker.parent / "hook.sh"
    hook.write_text(f"#!/bin/sh\necho escaped >> {marker}\ncat\n")
    hook.chmod(0o755)
    evil = wt.path / ".evil" / "modules" / SUB  # (where git itself would keep one)
    for d in ("objects/info", "info", "refs"):
        (evil / d).mkdir(parents=True, exist_ok=True)
    (evil / "objects" / "info" / "alternates").write_text(f"{store / 'objects'}\n")
    (evil / "HEAD").write_text(f"{c1}\n")
    (evil / "config").write_text(
        f"[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tworktree = {wt.path / SUB}\n"
        f'[filter "x"]\n\tsmudge = {hook}\n\tclean = {hook}\n[diff]\n\texternal = {hook}\n'
    )
    (evil / "info" / "attributes").write_text("* filter=x\n")
    (wt.path / SUB / ".git").write_text(f"gitdir: {evil}\n")


def test_switchyards_git_never_follows_a_submodules_git_file(
    sub: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, store = Path(str(sub["repo"])), Path(str(sub["store"]))
    c1, c2 = str(sub["c1"]), str(sub["c2"])
    wt = Worktree.create(repo, "run-forged")
    moved = wt.apply_diff(pointer_diff(c1, c2))  # the run moves the submodule's pointer
    assert moved.ok, moved.reason
    marker = tmp_path / "escaped"
    forge_pointer(wt, store, c1, marker)
    # the user's configuration asks git to go into submodules wherever it can
    config = tmp_path / "gitconfig"
    config.write_text(
        "[submodule]\n\trecurse = true\n[diff]\n\tsubmodule = diff\n\tignoreSubmodules = none\n"
        "[status]\n\tsubmoduleSummary = true\n"
    )
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    # sanity: a git that follows the .git file runs the planted program
    subprocess.run(
        ["git", "-C", str(wt.path), "diff", f"{wt.base}", "HEAD"], capture_output=True, check=False
    )
    assert marker.exists(), "the planted config did not take: the test proves nothing"
    marker.unlink()
    shown, changed = wt.diff(), wt.changed_files()
    assert not marker.exists(), "the run's diff went into the submodule"
    assert f"+Subproject commit {c2}" in shown and changed == [SUB]
    forged = (wt.path / SUB / ".git").read_text()
    wt.reset()
    # git's recursing reset read the planted git dir, then pointed the .git file back
    # (and moved the submodule's HEAD): Switchyard's never goes into the submodule at all
    assert (wt.path / SUB / ".git").read_text() == forged, "the reset went into the submodule"
    assert wt.apply_diff(pointer_diff(c1, c2)).ok
    assert wt.apply_files({"calc.py": "def add(a, b):\n    return a + b\n"}).ok
    wt.head()
    assert not marker.exists(), marker.read_text()


def test_a_change_inside_a_submodule_is_refused_and_writes_nothing_there(
    sub: dict[str, object],
) -> None:
    wt = Worktree.create(Path(str(sub["repo"])), "run-inside")
    new_file = f"--- /dev/null\n+++ b/{SUB}/new.py\n@@ -0,0 +1 @@\n+X = 1\n"
    result = wt.apply_diff(new_file)
    assert not result.ok and f"{SUB} is a submodule" in result.reason, result.reason
    assert not (wt.path / SUB / "new.py").exists()  # git apply wrote it there, then failed
    assert not wt.apply_files({f"{SUB}/new.py": "X = 1\n"}).ok


def test_the_runs_change_holds_a_submodules_pointer_never_what_tests_wrote_in_it(
    sub: dict[str, object],
) -> None:
    c1, c2 = str(sub["c1"]), str(sub["c2"])
    wt = Worktree.create(Path(str(sub["repo"])), "run-pointer")
    assert wt.apply_diff(pointer_diff(c1, c2)).ok
    # what the tests can write: the submodule's files, and a .gitmodules that hides it
    (wt.path / SUB / "data.txt").write_text("changed by a test\n")
    git(wt.path, "config", "-f", ".gitmodules", f"submodule.{SUB}.ignore", "all")
    assert f"-Subproject commit {c1}\n+Subproject commit {c2}" in wt.diff()
    assert wt.changed_files() == [SUB]
    # a later attempt commits its files only: nothing of the submodule's content
    done = wt.apply_files({"calc.py": "def add(a, b):\n    return a + b\n"})
    assert done.ok and wt.changed_files() == ["calc.py"]
    assert "Subproject" not in wt.diff() and "changed by a test" not in wt.diff()
    assert git(wt.path, "show", "--format=", "--name-only", "HEAD") == "calc.py"


def test_a_repo_without_submodules_is_as_before(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    commit(repo, {".gitmodules": ""}, "an empty .gitmodules")
    wt = Worktree.create(repo, "run-plain")
    assert wt.submodules == () and wt.pinned() == [] and wt.notes == ()


# ── what the tests leave in a submodule ─────────────────────────────────────────────────


def plant(wt: Worktree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a test can leave in the filled submodule for a later loop to pass on: its
    tracked file rewritten at the same size with its old mtime (under a user config that
    trusts mtimes only), a new module, and a folder that ignores itself and what is in it;
    the index written after the file's mtime, so git cannot take it for a racy one."""
    config = tmp_path / "gitconfig"
    config.write_text("[core]\n\ttrustctime = false\n\tcheckStat = minimal\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    data = wt.path / SUB / "data.txt"
    old = data.stat().st_mtime - 100
    os.utime(data, (old, old))
    own = wt.submodules[0].git_dir
    git(wt.path, f"--git-dir={own}", f"--work-tree={wt.path / SUB}", "update-index", "-q",
        "--refresh")  # fmt: skip
    data.write_text("ONE\n")  # (as long as "one\n")
    os.utime(data, (old, old))
    (wt.path / SUB / "evil.py").write_text("PATCHED = True\n")
    (wt.path / SUB / "cache").mkdir()
    (wt.path / SUB / "cache" / ".gitignore").write_text("*\n")
    (wt.path / SUB / "cache" / "sitecustomize.py").write_text("PATCHED = True\n")


def test_what_a_test_wrote_in_a_submodule_is_gone_at_the_next_reset(
    sub: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, store = Path(str(sub["repo"])), Path(str(sub["store"]))
    store_refs = git(store, "for-each-ref")
    wt = Worktree.create(repo, "run-patched")
    pointer = (wt.path / SUB / ".git").read_bytes()
    plant(wt, tmp_path, monkeypatch)
    # a user's git, through the .git file and their config, sees nothing of the rewrite
    assert git(wt.path / SUB, "status", "--porcelain", "--untracked-files=no") == ""
    found = wt.submodule_drift()
    assert sorted(found[SUB]) == [
        "cache/.gitignore", "cache/sitecustomize.py", "data.txt", "evil.py"
    ], found  # fmt: skip
    folder = wt.path / SUB
    for _ in range(2):  # (the second time with no check first: the reset alone)
        wt.reset()
        assert (folder / "data.txt").read_text() == "one\n"
        assert sorted(p.name for p in folder.iterdir()) == [".git", "data.txt"]
        assert (folder / ".git").read_bytes() == pointer and wt.broken_pointers() == []
        plant(wt, tmp_path, monkeypatch)
    wt.reset()
    assert wt.submodule_drift() == {}
    assert git(store, "for-each-ref") == store_refs  # the user's store untouched
    # the next attempt starts from it as recorded, and its change is its files only
    assert wt.apply_files({"calc.py": "def add(a, b):\n    return a + b\n"}).ok
    assert (folder / "data.txt").read_text() == "one\n" and wt.changed_files() == ["calc.py"]


def test_what_a_test_wrote_in_a_submodules_own_submodule_folder_is_gone(
    sub: dict[str, object],
) -> None:
    """A submodule's own submodules are never filled, and git neither cleans nor lists
    what is in their folders."""
    repo, lib, c1 = Path(str(sub["repo"])), Path(str(sub["lib"])), str(sub["c1"])
    git(lib, "update-index", "--add", "--cacheinfo", f"160000,{c1},inner")
    git(lib, "-c", "user.name=L", "-c", "user.email=l@example.com", "commit", "-q", "-m", "in")
    c3 = git(lib, "rev-parse", "HEAD")
    git(repo / SUB, "fetch", "-q", "origin")
    git(repo / SUB, "checkout", "-q", c3)
    git(repo, "commit", "-q", "-am", "the submodule at c3")
    wt = Worktree.create(repo, "run-nested")
    assert [s.commit for s in wt.submodules] == [c3]
    inner = wt.path / SUB / "inner"
    assert inner.is_dir() and list(inner.iterdir()) == []
    (inner / "evil.py").write_text("PATCHED = True\n")
    assert wt.submodule_drift() == {SUB: ["inner/evil.py"]}
    wt.reset()
    assert list(inner.iterdir()) == [] and wt.submodule_drift() == {}


def test_what_a_test_wrote_in_a_submodule_left_empty_is_gone_at_the_next_reset(
    sub: dict[str, object],
) -> None:
    repo = Path(str(sub["repo"]))
    git(repo, "submodule", "deinit", "-q", SUB)
    wt = Worktree.create(repo, "run-empty")
    assert wt.submodules == ()
    (wt.path / SUB / "evil.py").write_text("PATCHED = True\n")
    (wt.path / SUB / "pkg").mkdir()
    assert wt.submodule_drift() == {SUB: ["evil.py", "pkg"]}
    wt.reset()
    assert list((wt.path / SUB).iterdir()) == [] and wt.submodule_drift() == {}


def test_a_submodule_whose_git_file_changed_is_left_alone_by_the_reset(
    sub: dict[str, object],
) -> None:
    """A .git file not the one written is never followed: the reset leaves that
    submodule as it is, and the check says so (the test loop then stops the run)."""
    wt = Worktree.create(Path(str(sub["repo"])), "run-moved-pointer")
    (wt.path / SUB / "evil.py").write_text("PATCHED = True\n")
    (wt.path / SUB / ".git").write_text("gitdir: /elsewhere\n")
    wt.reset()
    assert (wt.path / SUB / "evil.py").exists()
    assert wt.submodule_drift() == {SUB: [".git (not the file written for it)"]}


# ── what .gitmodules and the user's checkout can say ────────────────────────────────────


def test_an_unsafe_path_in_gitmodules_leaves_only_that_one_out(
    sub: dict[str, object], tmp_path: Path
) -> None:
    repo = Path(str(sub["repo"]))
    git(repo, "config", "-f", ".gitmodules", "submodule.bad.path", "../outside")
    git(repo, "config", "-f", ".gitmodules", "submodule.bad.url", str(sub["lib"]))
    git(repo, "config", "submodule.bad.url", str(sub["lib"]))
    git(repo, "commit", "-q", "-am", "a submodule path outside the repository")
    wt = Worktree.create(repo, "run-unsafe")
    assert [s.path for s in wt.submodules] == [SUB]
    assert (wt.path / SUB / "data.txt").read_text() == "one\n"
    said = [n for n in wt.notes if "submodule" in n]
    assert said == [
        "1 submodule left empty in the run's worktree, whose name or path in .gitmodules "
        "is not a safe one: '../outside'"
    ]
    assert str(tmp_path) not in " ".join(wt.notes)


def test_a_linked_checkout_borrows_the_main_checkouts_submodules(
    sub: dict[str, object], tmp_path: Path
) -> None:
    """Initialised in the main checkout only: a linked worktree of the user's has the URL
    (the config is shared) and no git dir of its own for it."""
    repo, c1 = Path(str(sub["repo"])), str(sub["c1"])
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "--detach", str(linked), "HEAD")
    assert list((linked / SUB).iterdir()) == []
    wt = Worktree.create(linked, "run-linked")
    assert [(s.path, s.commit) for s in wt.submodules] == [(SUB, c1)]
    assert (wt.path / SUB / "data.txt").read_text() == "one\n"
    assert not [n for n in wt.notes if "submodule" in n], wt.notes
    wt.remove(delete_branch=True)


def test_a_submodule_with_no_git_dir_anywhere_says_to_update_it_there(
    sub: dict[str, object], tmp_path: Path
) -> None:
    repo, store = Path(str(sub["repo"])), Path(str(sub["store"]))
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "--detach", str(linked), "HEAD")
    store.rename(tmp_path / "elsewhere")
    wt = Worktree.create(linked, "run-no-store")
    assert wt.submodules == ()
    assert [n for n in wt.notes if "submodule" in n] == [
        "1 submodule left empty in the run's worktree, not checked out in your checkout: no "
        "git dir of theirs under .git/modules (git submodule update --init, in that "
        f"checkout): {SUB}"
    ]


def test_a_submodule_whose_git_dir_is_inside_its_folder_says_absorbgitdirs(
    sub: dict[str, object],
) -> None:
    repo, store = Path(str(sub["repo"])), Path(str(sub["store"]))
    (repo / SUB / ".git").unlink()
    store.rename(repo / SUB / ".git")
    git(repo, "config", "-f", str(repo / SUB / ".git" / "config"), "--unset", "core.worktree")
    assert git(repo / SUB, "status", "--porcelain") == ""  # a checkout git still reads
    wt = Worktree.create(repo, "run-embedded")
    assert wt.submodules == ()
    assert [n for n in wt.notes if "submodule" in n] == [
        "1 submodule left empty in the run's worktree, whose git dir lies inside their "
        f"folder in your checkout, not under .git/modules (git submodule absorbgitdirs): {SUB}"
    ]


# ── a failure while the worktree is made ────────────────────────────────────────────────


def made_for(repo: Path, run_id: str) -> list[str]:
    """What a worktree of ``run_id`` left: its worktree, branch, folder, meta."""
    left = [line for line in git(repo, "worktree", "list").splitlines() if run_id in line]
    left += git(repo, "branch", "--list", f"switchyard/{run_id}").split()
    state = repo / ".switchyard" / "worktrees"
    left += [p.name for p in state.glob(f"{run_id}*")] if state.is_dir() else []
    left += [p.name for p in (repo / ".git" / "worktrees").glob(f"{run_id}*")]
    return left


def test_a_failure_after_the_worktree_is_added_takes_it_back(
    sub: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.workspace import worktree as worktree_mod

    repo = Path(str(sub["repo"]))
    before = checkout_fingerprint(repo)

    def fails(*_: object) -> bool:
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(worktree_mod, "_lock_held", fails)
    with pytest.raises(RuntimeError, match="the disk is full"):
        Worktree.create(repo, "run-broken")
    assert made_for(repo, "run-broken") == []
    assert checkout_fingerprint(repo) == before


@pytest.mark.parametrize("where", ["_fill", "_declared"])
def test_any_failure_filling_submodules_is_a_note_and_leaves_them_empty(
    sub: dict[str, object], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    from app.workspace import submodules

    def fails(*_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(submodules, where, fails)
    wt = Worktree.create(Path(str(sub["repo"])), "run-boom")
    assert wt.submodules == () and list((wt.path / SUB).iterdir()) == []
    assert not (wt.git_dir / "modules").exists()
    said = [n for n in wt.notes if "submodule" in n]
    assert len(said) == 1 and "RuntimeError: boom" in said[0], said
