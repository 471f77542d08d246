"""The demo repository as a real git repo in a temp dir, and real diffs against it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from app.resources import data_dir


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)
    return out.stdout


def make_repo(tmp_path: Path) -> Path:
    dest = tmp_path / "parser-bug"
    shutil.copytree(data_dir("examples") / "parser-bug", dest)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "config", "user.name", "Test")
    git(dest, "config", "user.email", "test@example.invalid")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "demo")
    return dest


def diff_of(repo: Path, old: str, new: str, path: str = "parser.py") -> str:
    """A real unified diff, made by git on a scratch copy."""
    scratch = repo.parent / "scratch"
    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(repo, scratch)
    target = scratch / path
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new, 1))
    out = git(scratch, "diff")
    shutil.rmtree(scratch)
    return out
