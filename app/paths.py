"""The XDG locations and the per-repo state dir, in one small module."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from app.errors import ConfigError

APP = "switchyard"
STATE_DIR_NAME = ".switchyard"


def user_config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP))


def user_config_file() -> Path:
    return user_config_dir() / "config.toml"


def user_data_dir() -> Path:
    """User-wide databases (audit chain, budget ledger, memory) live here."""
    return Path(platformdirs.user_data_dir(APP))


def repo_state_dir(repo: Path) -> Path:
    """``REPO/.switchyard/``, created on first use and git-ignored by a ``*`` rule inside it.

    The rule lives in the state dir itself so the user's own .gitignore is never edited.
    """
    state = repo / STATE_DIR_NAME
    state.mkdir(parents=True, exist_ok=True)
    ignore = state / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# Switchyard state: never committed\n*\n", encoding="utf-8")
    return state


def ensure_dir(path: Path) -> Path:
    """``path`` made (private to the user) if it is not there. A path that cannot be a
    folder (a file on the way, no permission) is a :class:`ConfigError` naming it: the
    data dir is a setting (``data_dir``, ``SWITCHYARD_DATA_DIR``)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.name == "posix":
            path.chmod(0o700)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, FileExistsError):  # mkdir's word for a file in the way
            reason = "a file is in the way"
        raise ConfigError(f"cannot use the folder {path}: {reason} (see data_dir)") from None
    return path
