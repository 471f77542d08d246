"""The one way this package runs ``git``: argv only, an allowlisted environment, no hooks.

Hooks are switched off for every call. The worktree's commits carry code a model wrote,
and a hook (pre-commit, post-checkout, …) would run it outside the sandbox (GR-010); the
merge keeps them off too, so a hook cannot leave a half-merged checkout behind.

The environment is built, not inherited (:func:`app.subprocess_env.git_env`): HOME and
git's own configuration variables, so the user's identity and settings apply; never a
provider key, never a variable that points git at another repository or at a remote.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from app import subprocess_env
from app.errors import SwitchyardError
from app.git_says import OWNED_BY_ANOTHER, git_says

#: Config given to every call: no hooks, no pager, no prompts for credentials, and no
#: fsmonitor: ``core.fsmonitor`` names a program git runs on status, reset, add and clean,
#: so a config the tests could plant would run it outside the sandbox (GR-010).
_BASE_CONFIG = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.pager=cat",
    "-c",
    "core.fsmonitor=false",
)


class GitError(SwitchyardError):
    """A git command failed. ``message`` is git's own text (stderr, else stdout)."""

    def __init__(self, args: Sequence[str], returncode: int, message: str) -> None:
        self.args_ = list(args)
        self.returncode = returncode
        self.message = message.strip()
        super().__init__(f"git {' '.join(args[:2])} failed: {self.message or returncode}")


class NotAGitRepo(SwitchyardError):
    """The path is not inside a git work tree (or has no commit yet)."""

    exit_code = 2


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every git call (see :mod:`app.subprocess_env`), plus ``extra``."""
    return subprocess_env.git_env(extra)


def run_git(
    cwd: Path,
    *args: str,
    check: bool = True,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
    config: Sequence[str] = (),
    own_session: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``git -C cwd ARGS``; raise :class:`GitError` on a non-zero exit when ``check``.
    ``own_session``: out of the terminal's process group, so that a Ctrl-C meant for
    Switchyard does not kill git half way (Switchyard decides what the stop does)."""
    try:
        proc = subprocess.run(
            _argv(cwd, args, config),
            input=input_text,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=git_env(env),
            stdin=None if input_text is not None else subprocess.DEVNULL,
            check=False,
            start_new_session=own_session,
        )
    except FileNotFoundError:
        raise SwitchyardError("git is not installed (not found on PATH)") from None
    if check and proc.returncode != 0:
        raise GitError(list(args), proc.returncode, proc.stderr.strip() or proc.stdout.strip())
    return proc


def _argv(cwd: Path, args: Sequence[str], config: Sequence[str]) -> list[str]:
    cfg: list[str] = []
    for item in config:
        cfg += ["-c", item]
    return ["git", *_BASE_CONFIG, *cfg, "-C", str(cwd), *args]


def run_git_raw(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """:func:`run_git` (same config and environment) with stdout and stderr as git wrote
    them: text mode's universal newlines turn ``\\r\\n`` into ``\\n`` and a lone ``\\r``
    into a line break, so a change that only turns LF into CRLF showed equal lines."""
    try:
        proc = subprocess.run(
            _argv(cwd, args, ()),
            capture_output=True,
            env=git_env(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        raise SwitchyardError("git is not installed (not found on PATH)") from None
    if check and proc.returncode != 0:
        said = proc.stderr.strip() or proc.stdout.strip()
        raise GitError(list(args), proc.returncode, said.decode("utf-8", "replace"))
    return proc


def git_bytes(cwd: Path, *args: str) -> bytes | None:
    """stdout of ``git -C cwd ARGS`` as git wrote it (None: git failed), e.g. a file's
    bytes (see :func:`run_git_raw`)."""
    proc = run_git_raw(cwd, *args, check=False)
    return proc.stdout if proc.returncode == 0 else None


def git_out(cwd: Path, *args: str, config: Sequence[str] = ()) -> str:
    """stdout of a git command that must succeed, without its trailing newline."""
    return run_git(cwd, *args, config=config).stdout.rstrip("\n")


def repo_root(path: Path) -> Path:
    """The top of the work tree that holds ``path``; :class:`NotAGitRepo` otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise NotAGitRepo(f"{path}: {'not a directory' if path.exists() else 'no such directory'}")
    proc = run_git(path, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        if OWNED_BY_ANOTHER in proc.stderr:
            raise NotAGitRepo(git_says(proc.stderr, path))
        why = git_says(proc.stderr, path) if proc.stderr.strip() else "no top level"
        raise NotAGitRepo(f"{path}: not a git work tree ({why})")
    return Path(proc.stdout.strip()).resolve()


def rev_parse(cwd: Path, rev: str) -> str | None:
    """The full sha of ``rev`` as a commit, or None when it does not name one."""
    proc = run_git(cwd, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def current_branch(cwd: Path) -> str | None:
    """``refs/heads/<name>`` HEAD points at, or None when HEAD is detached."""
    proc = run_git(cwd, "symbolic-ref", "--quiet", "HEAD", check=False)
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def has_identity(cwd: Path) -> bool:
    """Whether commits can be made here without a fallback identity."""
    for key in ("user.name", "user.email"):
        if run_git(cwd, "config", "--get", key, check=False).returncode != 0:
            return False
    return True


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


__all__ = [
    "GitError",
    "NotAGitRepo",
    "current_branch",
    "first_line",
    "git_bytes",
    "git_env",
    "git_out",
    "has_identity",
    "repo_root",
    "rev_parse",
    "run_git",
    "run_git_raw",
]
