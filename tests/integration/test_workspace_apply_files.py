"""Worktree.apply_files and read_file (issue 16): the applier's whole new files, written
and committed as one attempt in a real repo; paths that leave the tree, reach .git or
the state dir, or go through a symlink are refused, and the checkout is never touched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.workspace.worktree import Worktree, checkout_fingerprint
from tests.integration.test_workspace_repo import commit, git, make_repo


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


def test_the_commit_names_the_callers_attempt(wt: Worktree) -> None:
    """The implementer counts replies that landed no change too: its fourth attempt was
    committed as "attempt 2" (the calls of apply_files), where the evidence and the
    editor said attempt 4 (an ACP audit)."""
    source = wt.read_file("calc.py")
    assert source is not None
    result = wt.apply_files({"calc.py": source + "\n# four\n"}, attempt=4)
    assert result.ok and result.attempt == 4
    message = git(wt.path, "log", "-1", "--format=%s")
    assert message.strip() == "switchyard run run-1: attempt 4"
    unnumbered = wt.apply_files({"calc.py": source + "\n# next\n"})
    assert unnumbered.attempt == 2  # (without one: this method's calls, as before)


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


# ── paths git will not take (D3): refused as a result, nothing left half-applied ─────────


def _clean(wt: Worktree) -> bool:
    """The worktree is back at the base: no commit, no change, not even an ignored file."""
    status = git(wt.path, "status", "--porcelain", "--ignored", "--untracked-files=all")
    return wt.head() == wt.base and status == ""


@pytest.mark.parametrize("path", ["build/helper.py", ".env", "logs/debug.log", "debug.log"])
def test_ignored_paths_are_refused_and_not_left_behind(tmp_path: Path, path: str) -> None:
    """``git add`` refused an ignored path: a GitError ended the whole run, with a staged
    file and the ignored one written in the worktree. An ignored path is a build output
    or a secret (.env): refused, not forced in, and the rest of the change taken back."""
    repo = make_repo(tmp_path)
    commit(repo, {".gitignore": "build/\n.env\n*.log\n"}, "ignores")
    wt = Worktree.create(repo, "run-1")
    result = wt.apply_files({"calc.py": "def add(a, b):\n    return a + b\n", path: "x\n"})
    assert not result.ok and result.commit is None
    assert (
        f"ignored by git: {path} (" in result.reason and "not part of the change" in result.reason
    )
    assert result.files == sorted(["calc.py", path]) and _clean(wt)
    # the run goes on: the next attempt applies
    assert wt.apply_files({"calc.py": "def add(a, b):\n    return a + b\n"}).ok


def test_a_change_ignoring_its_own_new_file_is_refused(wt: Worktree) -> None:
    result = wt.apply_files({".gitignore": "gen/\n", "gen/out.py": "X = 1\n"})
    assert not result.ok and 'gen/out.py ("gen/" in .gitignore)' in result.reason
    assert _clean(wt) and not (wt.path / "gen").exists()


def test_an_ignored_file_in_the_worktree_is_not_overwritten(tmp_path: Path) -> None:
    """Ignored files survive the reset (build caches): one the change names is refused
    before anything is written, so its content is not lost."""
    repo = make_repo(tmp_path)
    commit(repo, {".gitignore": "build/\n"}, "ignores")
    wt = Worktree.create(repo, "run-1")
    cache = wt.path / "build" / "cache.txt"
    cache.parent.mkdir()
    cache.write_text("cached\n")
    result = wt.apply_files({"build/cache.txt": "model's\n", "README.md": "# new\n"})
    assert not result.ok and "ignored by git: build/cache.txt" in result.reason
    assert cache.read_text() == "cached\n" and (wt.path / "README.md").read_text() == "# demo\n"


def test_a_symlinked_folder_inside_the_repository_is_not_written_through(tmp_path: Path) -> None:
    """``sublink -> sub``: the file was written through the link into ``sub/new.py``,
    then ``git add`` failed ("beyond a symbolic link") and the run ended."""
    repo = make_repo(tmp_path)
    commit(repo, {"sub/a.py": "A = 1\n"}, "sub")
    os.symlink("sub", repo / "sublink")
    os.makedirs(repo / "pkg")
    os.symlink("../sub", repo / "pkg" / "deep")
    git(repo, "add", "sublink", "pkg/deep")
    git(repo, "commit", "-qm", "links")
    wt = Worktree.create(repo, "run-1")
    for path, link in (("sublink/new.py", "sublink"), ("pkg/deep/x/new.py", "pkg/deep")):
        result = wt.apply_files({"README.md": "# new\n", path: "x\n"})
        assert not result.ok, path
        assert f"{path}: {link} is a symbolic link" in result.reason
        assert path.replace(link, "sub") + " instead" in result.reason
        assert _clean(wt) and not (wt.path / "sub" / "new.py").exists()
        assert not (wt.path / "sub" / "x").exists()


@pytest.mark.parametrize(
    ("path", "part"),
    [
        (".GIT/config", ".GIT"),
        ("sub/.git/config", ".git"),
        ("pkg/.Git/hooks/pre-commit", ".Git"),
        (".git./x", ".git."),
        ("GIT~1/config", "GIT~1"),
    ],
)
def test_a_git_folder_in_any_case_or_place_is_refused_before_writing(
    wt: Worktree, path: str, part: str
) -> None:
    """``.GIT/config`` was written, then refused by ``git add`` (a GitError);
    ``sub/.git/config`` was written and silently not committed, though listed in files."""
    result = wt.apply_files({"README.md": "# new\n", path: "x\n"})
    assert not result.ok and f"{path}: {part}/ is not part of the change" in result.reason
    assert _clean(wt) and not (wt.path / path.split("/")[0]).exists()
    with pytest.raises(ValueError, match="not part of the change"):
        wt.read_file(path)


def test_a_submodule_is_not_part_of_the_change(tmp_path: Path) -> None:
    """A new file in a submodule path: ``git add`` failed ("is in submodule 'lib'")."""
    other = make_repo(tmp_path / "other")
    repo = make_repo(tmp_path / "main")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(other), "lib")
    git(repo, "commit", "-qm", "a submodule")
    wt = Worktree.create(repo, "run-1")
    filled = sorted((wt.path / "lib").iterdir())  # (checked out from the local objects)
    assert wt.path / "lib" / "calc.py" in filled
    for path in ("lib/new.py", "lib/sub/new.py", "lib"):
        result = wt.apply_files({"README.md": "# new\n", path: "x\n"})
        assert not result.ok, path
        assert f"{path}: lib is a submodule" in result.reason
        assert _clean(wt) and sorted((wt.path / "lib").iterdir()) == filled


def test_a_path_git_refuses_at_add_leaves_nothing_behind(wt: Worktree) -> None:
    """git's own path rules (here NTFS's ``.git:stream``) have the last word: its refusal
    is a result with git's message, and the attempt is taken back."""
    result = wt.apply_files({"README.md": "# new\n", ".git:x/y.py": "x\n"})
    assert not result.ok and result.reason.startswith("git refused the change:")
    assert "invalid path '.git:x/y.py'" in result.reason
    assert _clean(wt) and not (wt.path / ".git:x").exists()


def test_a_change_reaching_outside_its_folder_is_refused_whole(tmp_path: Path) -> None:
    """``within`` (an ACP editor's working directory, a sub-folder of the repository):
    one path outside it refuses the whole change, before anything is written, whatever
    the spelling (a ``./``, a ``..`` back in, a name that only starts like the folder, a
    symlinked folder inside it that leads out, an absolute path)."""
    repo = make_repo(tmp_path)
    commit(repo, {"app/a.py": "A = 1\n", "lib/b.py": "B = 1\n"}, "a monorepo")
    os.symlink("../lib", repo / "app" / "to_lib")
    git(repo, "add", "app/to_lib")
    git(repo, "commit", "-qm", "a link out of app")
    wt = Worktree.create(repo, "run-1")
    inside = {"app/a.py": "A = 2\n", "app/new/c.py": "C = 1\n"}
    for path, needle in (
        ("lib/b.py", "outside app/, the folder the change is kept to: lib/b.py"),
        ("./lib/b.py", "outside app/"),
        ("README.md", "outside app/"),
        ("app2/x.py", "outside app/"),
        ("app", "outside app/"),  # the folder itself is no file inside it
        ("app/../lib/b.py", "inside the repository"),
        (str(repo / "lib" / "b.py"), "inside the repository"),
        ("app/to_lib/b.py", "app/to_lib is a symbolic link"),
    ):
        result = wt.apply_files({**inside, path: "X = 1\n"}, within="app")
        assert not result.ok and needle in result.reason, (path, result.reason)
        assert _clean(wt), path
        assert not (wt.path / "app" / "new").exists() and wt.read_file("app/a.py") == "A = 1\n"
    assert wt.read_file("lib/b.py") == "B = 1\n"
    refused = wt.apply_files({**inside, "lib/b.py": "B = 2\n"}, within="app")
    assert refused.outside == ["lib/b.py"] and refused.files == [
        "app/a.py",
        "app/new/c.py",
        "lib/b.py",
    ]
    # inside it, deep or not, the change lands; with no folder, anywhere in the repository
    landed = wt.apply_files(inside, within="app")
    assert landed.ok and landed.outside == [] and wt.changed_files() == sorted(inside)
    assert wt.apply_files({"lib/b.py": "B = 2\n"}).ok
    assert wt.apply_files({"app/new/c.py": "C = 1\n"}, within="app/new").ok
