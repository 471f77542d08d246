"""The demo repository: the shipped examples/parser-bug copied into a scratch git repo."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from app.paths import ensure_dir
from app.resources import data_dir
from app.subprocess_env import git_env

DEMO = "parser-bug"
DEMO_TASK = "Make the failing parser test pass: parse() drops the last token."


def prepare_demo_repo(root: Path) -> Path:
    """A fresh git repo at ``root/parser-bug`` with the demo's one commit (recreated)."""
    src = data_dir("examples") / DEMO
    dest = ensure_dir(root) / DEMO  # a data dir that cannot be a folder: one clear line
    env = git_env()  # an allowlist: no provider key reaches git (GR-009)
    if dest.exists():
        subprocess.run(
            ["git", "worktree", "prune"], cwd=dest, check=False, capture_output=True, env=env
        )
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    env_cfg = ["-c", "user.name=Switchyard demo", "-c", "user.email=demo@switchyard.invalid"]
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        [*env_cfg, "commit", "-q", "-m", "parser-bug: the demo repository"],
    ):
        subprocess.run(["git", *args], cwd=dest, check=True, capture_output=True, env=env)
    subprocess.run(["git", "config", "user.name", "Switchyard demo"], cwd=dest, check=True, env=env)
    subprocess.run(
        ["git", "config", "user.email", "demo@switchyard.invalid"], cwd=dest, check=True, env=env
    )
    return dest
