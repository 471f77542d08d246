"""What git reads as configuration around a run's worktree, watched across a test run
that a weaker runner let write outside the worktree (GR-010).

Under the opt-in ``rlimit`` runner (and ``unshare`` before it confined writes too) the
tests can write anywhere the user can:
a ``[filter "x"] smudge = <program>`` in the repository's ``.git/config`` with
``* filter=x`` in ``.git/info/attributes`` had Switchyard's next ``git reset`` run that
program outside the sandbox (a review found it; naming the git dir and switching off
core.fsmonitor do not cover filters, textconv or other drivers). So each file git reads
as configuration or attributes is read before the run; after it, one that changed is put
back as it was before any git call, and the run stops (the caller audits it).
Under bwrap and unshare the root is read-only and only the worktree (its .git file
read-only too) is writable: nothing here can change.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from app.subprocess_env import git_env


def watched_files(common_dir: Path, git_dir: Path) -> list[Path]:
    """The files git reads as configuration or attributes for the worktree: the
    repository's, the worktree's own, the user's (as git's environment finds them) and
    the system's."""
    env = git_env()
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    xdg = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
    files = [
        common_dir / "config",
        common_dir / "info" / "attributes",
        git_dir / "config.worktree",
        git_dir / "info" / "attributes",
        Path(env["GIT_CONFIG_GLOBAL"]) if env.get("GIT_CONFIG_GLOBAL") else home / ".gitconfig",
        xdg / "git" / "config",
        xdg / "git" / "attributes",
        Path(env["GIT_CONFIG_SYSTEM"]) if env.get("GIT_CONFIG_SYSTEM") else Path("/etc/gitconfig"),
        Path("/etc/gitattributes"),
    ]
    return list(dict.fromkeys(files))


#: what a path held: no file, or a file's bytes (read through a link), and the link's
#: target when it was one (dotfiles are often links into a repository of their own)
State = tuple[str | None, bytes | None]


@dataclass(frozen=True)
class Snapshot:
    held: dict[Path, State]

    @classmethod
    def take(cls, files: list[Path]) -> Snapshot:
        return cls({f: _state(f) for f in files})

    def put_back(self) -> list[Path]:
        """Every file that changed since, put back as it was; the ones that were."""
        changed: list[Path] = []
        for path, before in self.held.items():
            if _state(path) == before:
                continue
            changed.append(path)
            link, data = before
            if data is not None and data.startswith(b"<") and data.endswith(b"Error>"):
                continue  # it was no file to put back (a directory, unreadable)
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            if link is not None:
                os.symlink(link, path)
            if data is not None:
                path.write_bytes(data)  # through the link, when it was one
        return changed


def _state(path: Path) -> State:
    link = os.readlink(path) if path.is_symlink() else None
    try:
        return link, path.read_bytes()
    except FileNotFoundError:
        return link, None
    except OSError as exc:  # a directory, unreadable: what it is, to compare
        return link, f"<{type(exc).__name__}>".encode()
