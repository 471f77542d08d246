"""The XDG locations and the per-repo state dir, in one small module."""

from __future__ import annotations

import os
import stat
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


def repo_state_dir(repo: Path, *sub: str) -> Path:
    """``REPO/.switchyard/`` (or its folder ``sub``), created on first use and git-ignored
    by a ``*`` rule inside it.

    The rule lives in the state dir itself so the user's own .gitignore is never edited.

    A repository can ship a ``.switchyard`` of its own: a symbolic link there (or on
    ``.switchyard/stage0``, or on a file inside) would have Switchyard write its state,
    and read a planted cache back, wherever the link points. So every folder on the way
    must be a real folder and hold no link, checked before anything is written; else a
    :class:`ConfigError` (exit 2) names the path and why. Nothing is followed.
    """
    state = repo / STATE_DIR_NAME
    _state_folder(state)
    ignore = state / ".gitignore"
    try:
        # "x": never through a link, never over a file the repository put there
        with ignore.open("x", encoding="utf-8") as fh:
            fh.write("# Switchyard state: never committed\n*\n")
    except FileExistsError:
        pass
    except OSError as exc:
        raise _state_error(ignore, exc.strerror or str(exc)) from None
    path = state
    for part in sub:
        path = path / part
        _state_folder(path)
    return path


def state_path(repo: Path, *parts: str) -> Path:
    """``REPO/.switchyard/<parts…>`` for reading, nothing created: each component that
    exists must be no symbolic link (and every one but the last a folder), or the same
    :class:`ConfigError` as :func:`repo_state_dir`. For what is read back from the state
    dir (evidence runs, a worktree's record, the repository's config.toml, which picks
    the test command): a link planted there would have them read from anywhere."""
    path = repo / STATE_DIR_NAME
    for i, part in enumerate(("", *parts)):
        path = path / part if part else path
        try:
            st = path.lstat()
        except FileNotFoundError:
            break  # nothing further down exists either
        except OSError as exc:
            raise _state_error(path, exc.strerror or str(exc)) from None
        if stat.S_ISLNK(st.st_mode):
            raise _state_error(path, "a symbolic link", planted=True)
        if i < len(parts) and not stat.S_ISDIR(st.st_mode):
            raise _state_error(path, "not a folder", planted=True)
    return repo.joinpath(STATE_DIR_NAME, *parts)


def _state_folder(path: Path) -> None:
    """``path`` made if absent; ConfigError when it, or an entry in it, is a symbolic
    link, or when it is not a folder."""
    try:
        path.mkdir(exist_ok=True)
    except FileExistsError:  # something that is not a folder: a file or a link
        pass
    except OSError as exc:
        raise _state_error(path, exc.strerror or str(exc)) from None
    try:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            raise _state_error(path, "a symbolic link", planted=True)
        if not stat.S_ISDIR(st.st_mode):
            raise _state_error(path, "not a folder", planted=True)
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_symlink():
                    raise _state_error(Path(entry.path), "a symbolic link", planted=True)
    except OSError as exc:
        raise _state_error(path, exc.strerror or str(exc)) from None


def _state_error(path: Path, why: str, *, planted: bool = False) -> ConfigError:
    """``planted``: a link or a file where the state's folder goes (moved away, it is
    mended); else the system's refusal (a read-only disk, a folder not the user's), whose
    remedy is not to move anything (it was said to be, for a read-only mount: a TUI
    audit)."""
    if planted:
        return ConfigError(
            f"{path}: {why}; Switchyard keeps the repository's state in a real folder there "
            "and never follows a link (move it away)"
        )
    return ConfigError(
        f"{path}: {why}; Switchyard keeps the repository's state there (.switchyard, "
        "git-ignored): the repository must be writable by you"
    )


def ensure_dir(path: Path) -> Path:
    """``path`` made if it is not there, private to the user (0700). A folder that is
    already there is left as it is: it was chmodded to 0700 on every call, so a folder
    the user gave (``SWITCHYARD_DATA_DIR``, their own 755 or 555 one) changed under
    them without a word. A path that cannot be a folder (a file on the way, no
    permission) is a :class:`ConfigError` naming it: the data dir is a setting
    (``data_dir``, ``SWITCHYARD_DATA_DIR``)."""
    try:
        # only the folder itself is private: parents made on the way are like mkdir -p's
        path.mkdir(mode=0o700, parents=True)
    except OSError as exc:
        try:
            if path.is_dir():  # already there (whatever else mkdir said): not ours to change
                return path
        except OSError:  # (a name too long for the file system: a traceback, an audit)
            pass
        reason = exc.strerror or str(exc)
        if isinstance(exc, FileExistsError):  # mkdir's word for a file in the way
            reason = (
                "a link to nowhere is in the way" if path.is_symlink() else "a file is in the way"
            )
        raise ConfigError(f"cannot use the folder {path}: {reason} (see data_dir)") from None
    if os.name == "posix":
        try:
            path.chmod(0o700)  # made just now: 0700 whatever the umask took away
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(f"cannot use the folder {path}: {reason} (see data_dir)") from None
    return path
