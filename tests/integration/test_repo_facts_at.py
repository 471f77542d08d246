"""A plan is grounded in the files its run's worktree will have: the commit the run works
on, read through git, not the user's uncommitted or untracked files (a user audit: the
brief and the grounding read the working tree while the run worked on the last commit)."""

from __future__ import annotations

from pathlib import Path

from app.pipeline.repo_facts import repo_facts
from tests.fakes.demo_repo import git, make_repo


def test_the_facts_of_a_commit_are_its_files_not_the_checkouts(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    clean = repo_facts(repo)
    assert repo_facts(repo, "HEAD") == clean  # a clean checkout: the same facts either way
    (repo / "scratch.py").write_text("def untracked_helper_xyz():\n    pass\n")
    (repo / "parser.py").write_text((repo / "parser.py").read_text() + "\nwip_name_xyz = 1\n")
    walked, committed = repo_facts(repo), repo_facts(repo, "HEAD")
    assert "scratch.py" in walked.files and "untracked_helper_xyz" in walked.identifiers
    assert "scratch.py" not in committed.files
    assert "untracked_helper_xyz" not in committed.identifiers
    assert "wip_name_xyz" not in committed.identifiers
    assert committed == clean
    # from a folder of the repository: that folder's part of the tree, paths relative to it
    sub = repo_facts(repo / "tests", "HEAD")
    assert sub.files == {p.removeprefix("tests/") for p in clean.files if p.startswith("tests/")}
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "wip")
    assert "scratch.py" in repo_facts(repo, "HEAD").files


def test_a_commits_switchyard_folder_is_not_the_projects(tmp_path: Path) -> None:
    """Stage0 at a commit (a run's brief) left out Switchyard's own folder as the working
    tree's scan does: a commit holding one (a config force-added, a planted "evidence")
    went into the brief and to the models (a review)."""
    from app.stage0.corpus import scan_tree

    repo = make_repo(tmp_path)
    state = repo / ".switchyard"
    state.mkdir()
    (state / "notes.md").write_text("PLANTED_NOTE\n")
    git(repo, "add", "-f", ".switchyard/notes.md")
    git(repo, "commit", "-q", "-m", "state")
    scan = scan_tree(repo, "HEAD", 1_000_000)
    assert [e.path for e in scan.entries if e.path.startswith(".switchyard")] == []
    assert scan.skipped["state_dir"] == 1 and "parser.py" in {e.path for e in scan.entries}
