"""The sandbox's runners, strongest first, and the command line and environment each
one gives a command (see :mod:`app.workspace.sandbox` for what each runner confines).

Everything here is pure: it builds argv lists and environments and runs nothing.
"""

from __future__ import annotations

import contextlib
import shutil
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Literal

from app.subprocess_env import TOOLCHAIN_ENV, command_env

Runner = Literal["bwrap", "unshare", "rlimit"]
RUNNERS: tuple[Runner, ...] = ("bwrap", "unshare", "rlimit")

#: what a degraded runner does not confine, for the GR-005 audit line
WEAKNESS: dict[Runner, str] = {
    "unshare": "no network, writes only in the worktree, no capabilities, its own /dev and "
    "IPC (as bwrap), but no cgroup namespace",
    "rlimit": "no network or filesystem isolation: only time and memory limits",
}

# Secret stores under $HOME that a test has no business reading: hidden under bwrap.
MASKED_HOME_PATHS = (
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".kube",
    ".docker",
    ".config/gcloud",
    ".config/gh",
    ".netrc",
    ".git-credentials",
    ".pypirc",
    ".npmrc",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    ".pgpass",
    # where people export their keys, and the shells' histories of typing them (an audit:
    # a test read ~/.bashrc and printed the key into its log, and so into the evidence
    # and the next cloud prompt)
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_history",
    ".profile",
    ".zshrc",
    ".zshenv",
    ".zprofile",
    ".zsh_history",
    ".config/fish",  # its rc and universal variables (``set -Ux OPENAI_API_KEY …``)
    ".local/share/fish/fish_history",
    ".python_history",
    # the coding agents' own sign-ins (the README has people run them beside Switchyard)
    ".codex/auth.json",
    ".claude/.credentials.json",
)
#: the checkout's own untracked secrets beside the run's worktree (the worktree is a clean
#: checkout: a test has no business reading ``../../../.env``), at its top level
CHECKOUT_SECRETS = (".env", ".env.*", "*.pem", "*.key", ".netrc", ".pgpass", ".envrc")
# Toolchain locations passed through when set (the allowlist lives with the others in
# app.subprocess_env; this is its old name here).
PASSTHROUGH_ENV = TOOLCHAIN_ENV
#: mounted private inside the sandbox: whatever lives under them is hidden
PRIVATE_MOUNTS = (Path("/tmp"), Path("/run"), Path("/var/run"))


def base_env(home: str, tmp: str) -> dict[str, str]:
    """The minimal environment a command starts from: built, never inherited
    (:func:`app.subprocess_env.command_env`, without local_only or additions)."""
    return command_env(home, tmp)


def wrap(
    runner: Runner,
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    ro: Sequence[Path],
    pinned: Sequence[str] = (),
) -> list[str]:
    """``argv`` as ``runner`` runs it. ``pinned``: files inside ``cwd`` (relative POSIX
    paths, checked with :func:`pin_points`) that bwrap and unshare keep read-only and in
    place; rlimit cannot, and its caller checks them after the command instead."""
    if runner == "bwrap":
        return bwrap(argv, cwd=cwd, env=env, ro=ro, pinned=pinned)
    if runner == "unshare":
        return unshare(argv, cwd=cwd, ro=ro, pinned=pinned)
    return argv


def pin_points(cwd: Path, pinned: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """What keeps the files ``pinned`` (relative to ``cwd``) read-only and where they are:
    the folders on the way from ``cwd``, each to be bound onto itself (parents first: a
    mount point cannot be renamed, and a read-only bind alone moved along with a renamed
    parent folder, so a test could put a file of its own where the old one was), and the
    files, each to be bound read-only over itself. ValueError when one is not a plain file
    reached through real folders inside ``cwd``: it cannot be pinned, and nothing runs
    (fail closed)."""
    folders: list[Path] = []
    files: list[Path] = []
    for rel in pinned:
        parts = PurePosixPath(rel).parts
        if not parts or PurePosixPath(rel).is_absolute() or {"", ".", ".."} & set(parts):
            raise ValueError(f"{rel}: not a path inside the worktree")
        here = cwd
        for part in parts[:-1]:
            here = here / part
            if not _is_real(here, stat.S_ISDIR):
                raise ValueError(f"{rel}: {here} is not a real folder")
            if here not in folders:
                folders.append(here)
        target = cwd.joinpath(*parts)
        if not _is_real(target, stat.S_ISREG):
            raise ValueError(f"{rel}: not a regular file")
        files.append(target)
    folders.sort(key=lambda p: len(p.parts))
    return folders, files


def _is_real(path: Path, kind: Callable[[int], bool]) -> bool:
    """Whether ``path`` itself (never through a link) is of ``kind``."""
    try:
        return kind(path.lstat().st_mode)
    except OSError:
        return False


def unshare(
    argv: list[str], *, cwd: Path, ro: Sequence[Path], pinned: Sequence[str] = ()
) -> list[str]:
    """``argv`` in new user, mount, net and pid namespaces, with the filesystem bwrap
    gives it, built by :mod:`app.workspace.unshare_shim` (every mount read-only but the
    worktree, private /tmp and /run, the secret stores hidden, loopback up, the
    ``pinned`` files read-only and in place)."""
    shim = [sys.executable, "-I", "-S", str(Path(__file__).with_name("unshare_shim.py"))]
    shim += ["--cwd", str(cwd)]
    for p in [*ro, *_hidden_toolchain(argv)]:
        if Path(p).exists():
            shim += ["--ro", str(Path(p).resolve())]
    for p in _masked_paths(Path.home(), cwd):
        shim += ["--mask", str(p)]
    for rel in pinned:
        shim += ["--pin", rel]
    return [
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "--net",
        "--ipc",  # the user's SysV shared memory and message queues stay out of reach
        "--uts",
        "--pid",
        "--fork",
        "--kill-child",
        *shim,
        "--",
        *argv,
    ]


def bwrap(
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    ro: Sequence[Path],
    pinned: Sequence[str] = (),
) -> list[str]:
    out = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    # Private /tmp and /run: the host's service sockets (docker, dbus, ssh-agent) live
    # there, and a read-only bind does not stop connect() on a unix socket.
    out += ["--tmpfs", "/tmp", "--tmpfs", "/run"]
    var_run = Path("/var/run")
    if var_run.is_dir() and not var_run.is_symlink():
        out += ["--tmpfs", "/var/run"]
    # Read-only views first, so the masks below hide secrets inside them too.
    for p in [*ro, *_hidden_toolchain(argv)]:
        if Path(p).exists():
            out += ["--ro-bind", str(p), str(p)]
    # A masked file reads as empty: /dev/null over it (a dev-bind, since plain binds are
    # nodev and would make it unreadable instead; writes to it go nowhere).
    for p in _masked_paths(Path.home(), cwd):
        out += ["--tmpfs", str(p)] if p.is_dir() else ["--dev-bind", "/dev/null", str(p)]
    out += ["--bind", str(cwd), str(cwd), "--chdir", str(cwd)]
    # The checkout's .git read-only: a worktree's .git file names its git dir, and a test
    # that pointed it at a git dir of its own would have Switchyard's git, outside, run
    # that config's programs (core.fsmonitor, filters). Switchyard names the git dir on
    # every call anyway (app.workspace.worktree); this keeps the person's git safe too.
    dotgit = cwd / ".git"
    if dotgit.exists() and not dotgit.is_symlink():
        out += ["--ro-bind", str(dotgit), str(dotgit)]
    # The submodules' .git files likewise (each names its module's git dir), with every
    # folder on the way pinned in place (see pin_points).
    folders, files = pin_points(cwd, pinned)
    for folder in folders:
        out += ["--bind", str(folder), str(folder)]
    for file in files:
        out += ["--ro-bind", str(file), str(file)]
    out += ["--unshare-all", "--new-session", "--die-with-parent", "--cap-drop", "ALL"]
    out += ["--clearenv"]
    for key, value in env.items():
        out += ["--setenv", key, value]
    return [*out, "--", *argv]


def _hidden_toolchain(argv: Sequence[str]) -> list[Path]:
    """The interpreter or tool the command needs, where a private mount would hide it.

    A checkout (and its .venv) under /tmp — a CI clone, say — would otherwise vanish
    behind the sandbox's own /tmp, and the command would not even start.
    """
    found = [Path(sys.prefix), Path(sys.base_prefix)]
    exe = shutil.which(argv[0]) if argv else None
    if exe:
        found.append(Path(exe).resolve().parent.parent)
    out: list[Path] = []
    for path in found:
        real = path.resolve()
        hidden = any(real == m or m in real.parents for m in PRIVATE_MOUNTS)
        if hidden and real not in out and real.is_dir():
            out.append(real)
    return out


def _masked_paths(home: Path, cwd: Path | None = None) -> list[Path]:
    """The secret stores that exist under ``home``, Switchyard's own folders (its config
    may hold the team database's password; its data, the audit log and the ledger), and
    the checkout's untracked secrets beside the worktree ``cwd``: symlinks resolved (a
    mount needs the real path, and the target is what holds the secrets). A folder that
    holds ``cwd`` is not hidden: the command would lose its worktree."""
    candidates = [home / rel for rel in MASKED_HOME_PATHS]
    candidates += _switchyard_dirs()
    if cwd is not None:
        candidates += _checkout_secrets(cwd)
    out: list[Path] = []
    for p in candidates:
        if not p.exists():
            continue
        real = p.resolve()
        if cwd is not None and (real == cwd.resolve() or real in cwd.resolve().parents):
            # it holds the worktree (the demo's repository is in the data folder): what
            # lies beside the way down to the checkout is hidden instead (the stores, the
            # logs, other repositories), the checkout itself left as the run reads it
            out += [e for e in _beside_the_way(real, cwd.resolve()) if e not in out]
            continue
        if (real.is_dir() or real.is_file()) and real not in out:
            out.append(real)
    return out


def _beside_the_way(top: Path, cwd: Path) -> list[Path]:
    """Every entry of ``top`` and of each folder below it on the way to ``cwd``'s
    checkout (its worktree's repository, else ``cwd``) that is not on that way."""
    worktree = cwd.parent.name == "worktrees" and cwd.parent.parent.name == ".switchyard"
    checkout = cwd.parents[2] if worktree else cwd
    found: list[Path] = []
    folder = top
    while folder != checkout and folder in checkout.parents:
        on_the_way = next(p for p in [checkout, *checkout.parents] if p.parent == folder)
        for entry in sorted(folder.iterdir()):
            if entry != on_the_way and not entry.is_symlink():
                found.append(entry.resolve())
        folder = on_the_way
    return found


def _switchyard_dirs() -> list[Path]:
    """Switchyard's config folder, its default data folder and the one the settings name
    (the environment's, or the config file's ``data_dir``)."""
    from app import paths
    from app.config import load_settings
    from app.errors import SwitchyardError

    found = [paths.user_config_dir(), paths.user_data_dir()]
    # (a setting that cannot be read: the command that runs the test said so already)
    with contextlib.suppress(SwitchyardError):
        found.append(load_settings().data_dir)
    return found


def _checkout_secrets(cwd: Path) -> list[Path]:
    """The untracked secrets at the top of the checkout whose worktree ``cwd`` is
    (``REPO/.switchyard/worktrees/<run>``); none for any other folder."""
    if not (cwd.parent.name == "worktrees" and cwd.parent.parent.name == ".switchyard"):
        return []
    repo = cwd.parent.parent.parent
    found: list[Path] = []
    for pattern in CHECKOUT_SECRETS:
        found += sorted(p for p in repo.glob(pattern) if p.is_file())
    return found


def with_limits(argv: list[str], memory_mb: int) -> list[str]:
    """``argv`` under a memory limit (RLIMIT_AS) and no core dumps."""
    limit = memory_mb * 1024 * 1024
    prlimit = shutil.which("prlimit")
    if prlimit is not None:
        return [prlimit, f"--as={limit}", "--core=0", "--", *argv]
    # No prlimit: set the limit in a tiny Python shim that then execs the command.
    return [sys.executable, "-c", _RLIMIT_SHIM, str(limit), *argv]


# Runs as argv[0..]: sets RLIMIT_AS and RLIMIT_CORE, then execs the rest.
_RLIMIT_SHIM = (
    "import os,resource,sys\n"
    "n=int(sys.argv[1])\n"
    "resource.setrlimit(resource.RLIMIT_AS,(n,n))\n"
    "resource.setrlimit(resource.RLIMIT_CORE,(0,0))\n"
    "try:\n"
    " os.execvp(sys.argv[2],sys.argv[2:])\n"
    "except OSError as e:\n"
    " sys.stderr.write(f'{sys.argv[2]}: {e.strerror}\\n')\n"
    " sys.exit(127)"
)


__all__ = [
    "MASKED_HOME_PATHS",
    "PASSTHROUGH_ENV",
    "PRIVATE_MOUNTS",
    "RUNNERS",
    "WEAKNESS",
    "Runner",
    "base_env",
    "bwrap",
    "pin_points",
    "with_limits",
    "wrap",
]
