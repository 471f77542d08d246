"""git's configuration, put back as it was when a test run changed it (GR-010)."""

from __future__ import annotations

import os
from pathlib import Path

from app.workspace.git_config_guard import Snapshot, watched_files


def test_what_changed_is_put_back_and_named(tmp_path: Path) -> None:
    config, attributes, absent = tmp_path / "config", tmp_path / "attributes", tmp_path / "new"
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    (dotfiles / "gitconfig").write_text("[user]\n\tname = Ana\n")
    linked, other = tmp_path / ".gitconfig", tmp_path / "elsewhere"
    os.symlink(dotfiles / "gitconfig", linked)
    other.write_text("[filter]\n")
    config.write_text("[core]\n\tbare = false\n")
    attributes.write_text("*.png binary\n")
    held = Snapshot.take([config, attributes, absent, linked])
    assert held.put_back() == []  # nothing changed: nothing touched

    config.write_text('[core]\n[filter "x"]\n\tsmudge = /tmp/evil\n')
    absent.write_text("* filter=x\n")
    (dotfiles / "gitconfig").write_text("[filter]\n")  # through the link
    assert held.put_back() == [config, absent, linked]
    assert config.read_text() == "[core]\n\tbare = false\n" and not absent.exists()
    assert linked.is_symlink() and (dotfiles / "gitconfig").read_text() == "[user]\n\tname = Ana\n"

    linked.unlink()
    os.symlink(other, linked)  # the link pointed elsewhere
    attributes.unlink()
    assert held.put_back() == [attributes, linked]
    assert os.readlink(linked) == str(dotfiles / "gitconfig")
    assert attributes.read_text() == "*.png binary\n"


def test_the_files_watched_are_the_repositorys_the_worktrees_and_the_users(
    tmp_path: Path,
) -> None:
    common, admin = tmp_path / "repo" / ".git", tmp_path / "repo" / ".git" / "worktrees" / "r1"
    files = watched_files(common, admin)
    assert common / "config" in files and common / "info" / "attributes" in files
    assert admin / "config.worktree" in files
    assert any(f.name == ".gitconfig" for f in files) and Path("/etc/gitconfig") in files
