"""The user's submodules in a run's worktree, from this machine's objects only (GR-010).

``git worktree add`` leaves a submodule's folder empty, and a project whose tests need
its submodules failed every test loop. :func:`check_out` fills each submodule the user's
checkout has initialised, at the commit the run's base records: a git dir of the run's
own, ``<worktree's git dir>/modules/<name>`` (where git keeps a linked worktree's
submodules: outside the worktree, so read-only to the sandboxed tests under bwrap and
unshare), which borrows the objects of the user's ``.git/modules/<name>`` (alternates).
It has no remote, and every call says ``protocol.allow=never``: nothing is fetched. A
submodule that cannot be filled so is left empty, and a note says which and why.

A filled submodule has a ``.git`` file in the worktree naming that git dir, and the
tests could rewrite it: a git that followed it would obey a config of the tests' making,
outside the sandbox. So bwrap and unshare keep each one read-only and in place (the
sandbox's ``pinned`` files); after every test run :func:`broken_pointers` checks each is
byte for byte what was written (the only guard under rlimit) and a changed one stops the
run; and Switchyard's own git calls on the worktree never descend into a submodule (no
recursion, tree-to-tree diffs with ``--submodule=short``): the run's change holds a
submodule's commit pointer only, as git shows it by default.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from app.counted import counted
from app.errors import SwitchyardError
from app.workspace.git import first_line, git_out, run_git
from app.workspace.sandbox_runners import pin_points

#: every git call that fills a submodule: no transport at all (a local path is one too;
#: protocol.<name>.allow outranks protocol.allow, so each is said), no recursion into its
#: own submodules. The run's git dir has no remote either: nothing to fetch from.
NO_FETCH = (
    "protocol.allow=never",
    *(f"protocol.{name}.allow=never" for name in ("file", "git", "ssh", "http", "https", "ext")),
    "submodule.recurse=false",
    "advice.detachedHead=false",
)
#: no lazy fetch of a partial clone's objects (git 2.45+); and git-lfs downloads what its
#: store lacks, which the run's git dir starts without: LFS files stay pointers
NO_FETCH_ENV = {"GIT_NO_LAZY_FETCH": "1", "GIT_LFS_SKIP_SMUDGE": "1"}


@dataclass(frozen=True)
class Submodule:
    """A submodule filled in the run's worktree."""

    name: str
    #: where it lies in the worktree (POSIX, relative to its top)
    path: str
    #: the commit the base records for it, checked out detached
    commit: str
    #: the run's own git dir for it (``<worktree's git dir>/modules/<name>``)
    git_dir: Path

    @property
    def pointer(self) -> str:
        """Its ``.git`` file, relative to the worktree's top."""
        return f"{self.path}/.git"

    def pointer_bytes(self) -> bytes:
        return b"gitdir: " + os.fsencode(self.git_dir) + b"\n"

    def meta(self) -> dict[str, str]:
        return {"name": self.name, "path": self.path, "commit": self.commit}

    @classmethod
    def from_meta(cls, item: Any, admin: Path) -> Submodule:
        """From the worktree's meta (:meth:`meta`); ValueError when it is not one."""
        name, path, commit = str(item["name"]), str(item["path"]), str(item["commit"])
        if not safe_name(name) or not safe_path(path):
            raise ValueError(f"not a submodule's name and path: {name!r}, {path!r}")
        return cls(name=name, path=path, commit=commit, git_dir=admin / "modules" / name)


def safe_name(name: str) -> bool:
    """Whether ``name`` may name a folder under ``modules/`` (git's own rule: no ``..``,
    in either separator; and nothing empty or absolute, no control character)."""
    parts = name.replace("\\", "/").split("/")
    return _plain(name) and not {"", ".", ".."} & set(parts)


def safe_path(path: str) -> bool:
    """Whether ``path`` is a plain relative path with no ``.git`` in it (any case)."""
    parts = path.split("/")
    return (
        _plain(path)
        and not {"", ".", ".."} & set(parts)
        and not {".git", "git~1"} & {p.lower().rstrip(". ") for p in parts}
    )


def _plain(text: str) -> bool:
    return bool(text) and not text.startswith("/") and all(ord(c) >= 32 for c in text)


def check_out(
    top: Path, admin: Path, worktree: Path, base: str
) -> tuple[list[Submodule], list[str]]:
    """Fill the submodules of ``worktree`` (made at ``base`` from the checkout ``top``;
    ``admin`` is its git dir) that ``top`` has initialised; the ones filled, and notes
    for the user on the ones left empty."""
    try:
        declared, notes = _declared(top, base)
        if not declared:
            return [], notes
        config = _submodule_config(top)
        user_git_dir = Path(git_out(top, "rev-parse", "--absolute-git-dir"))
    except (OSError, SwitchyardError) as exc:  # (never half done: nothing is filled yet)
        return [], [f"submodules are left empty in the run's worktree: {exc}"]
    left: dict[str, list[str]] = {}
    filled: list[Submodule] = []
    for name, path, commit in declared:
        if not safe_name(name) or not safe_path(path):
            left.setdefault("UNSAFE", []).append(repr(path))
            continue
        off = config.get(f"submodule.{name}.active", "").lower() in ("false", "no", "off", "0")
        if not config.get(f"submodule.{name}.url") or off:
            left.setdefault("NOT_INIT", []).append(path)
            continue
        store = user_git_dir / "modules" / name
        if not (store / "objects").is_dir() or not (store / "HEAD").is_file():
            left.setdefault("NO_STORE", []).append(path)
            continue
        sub = Submodule(name=name, path=path, commit=commit, git_dir=admin / "modules" / name)
        failed = _fill(sub, store, worktree)
        if failed is not None:
            why, detail = failed
            left.setdefault(why, []).append(f"{path} at {commit[:12]}{detail}")
            continue
        filled.append(sub)
        nested = False
        with contextlib.suppress(SwitchyardError):  # (only a missing git: then none)
            nested = _has(sub.git_dir, f"{commit}:.gitmodules")
        if nested:
            notes.append(
                f"the submodules of submodule {path} are not checked out in the run's worktree"
            )
    for why, paths in left.items():
        notes.append(_note(why, paths))
    return filled, notes


_WHY = {
    "UNSAFE": "whose name or path in .gitmodules is not a safe one",
    "NOT_INIT": "not initialised in your checkout (git submodule update --init)",
    "NO_STORE": "with no git dir of their own under .git/modules in your checkout "
    "(git submodule absorbgitdirs)",
    "MISSING": "whose recorded commit is not in this machine's objects, and nothing is "
    "fetched (git submodule update in your checkout brings it)",
    "FAILED": "that git could not check out from this machine's objects (nothing is fetched)",
}


def _note(why: str, paths: list[str]) -> str:
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    return (
        f"{counted(len(paths), 'submodule')} left empty in the run's worktree, {_WHY[why]}: {shown}"
    )


def _declared(top: Path, base: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(name, path, recorded commit) of each submodule the base's ``.gitmodules`` names
    at a gitlink of the base's tree; and a note when that file cannot be read."""
    if run_git(top, "cat-file", "-e", f"{base}:.gitmodules", check=False).returncode != 0:
        return [], []
    proc = run_git(
        top,
        "config",
        "--blob",
        f"{base}:.gitmodules",
        "--null",
        "--get-regexp",
        r"^submodule\..*\.path$",
        check=False,
    )
    if proc.returncode not in (0, 1):  # (1: it names no submodule)
        why = first_line(proc.stderr) or f"exit {proc.returncode}"
        return [], [f"submodules are left empty in the run's worktree: .gitmodules: {why}"]
    names: dict[str, str] = {}  # path → name (the first that names it)
    for entry in proc.stdout.split("\0"):
        key, _, path = entry.partition("\n")
        if key.startswith("submodule.") and key.endswith(".path") and path:
            names.setdefault(path, key[len("submodule.") : -len(".path")])
    if not names:
        return [], []
    listed = run_git(top, "ls-tree", "-z", "--full-tree", base, "--", *names).stdout
    found: list[tuple[str, str, str]] = []
    for entry in listed.split("\0"):
        info, _, path = entry.partition("\t")
        fields = info.split()
        if len(fields) == 3 and fields[0] == "160000" and path in names:
            found.append((names[path], path, fields[2]))
    return found, []


def _submodule_config(top: Path) -> dict[str, str]:
    """The ``submodule.*`` settings of the user's repository (what initialised them)."""
    proc = run_git(top, "config", "--null", "--get-regexp", r"^submodule\.", check=False)
    out: dict[str, str] = {}
    for entry in proc.stdout.split("\0"):
        key, _, value = entry.partition("\n")
        if key:
            out[key] = value
    return out


def _fill(sub: Submodule, store: Path, worktree: Path) -> tuple[str, str] | None:
    """Check ``sub`` out into ``worktree`` from ``store``'s objects; None, or why not (a
    key of :data:`_WHY` and what git said). Whatever a failed attempt made is taken back:
    the folder is left empty, as git worktree add left it."""
    folder = worktree.joinpath(*PurePosixPath(sub.path).parts)
    if not _real_empty_folder(worktree, sub.path):
        return "FAILED", " (its folder is not an empty one)"
    if sub.git_dir.exists() or sub.git_dir.is_symlink():
        return "FAILED", f" ({sub.git_dir} is there already)"
    try:
        fmt = git_out(
            worktree,
            "config",
            "--file",
            str(store / "config"),
            "--default",
            "sha1",
            "extensions.objectformat",
        )
        run_git(
            worktree,
            "init",
            "--quiet",
            "--bare",
            "--template=",
            f"--object-format={fmt}",
            str(sub.git_dir),
            config=NO_FETCH,
            env=NO_FETCH_ENV,
        )
        for key, value in (("core.bare", "false"), ("core.worktree", str(folder))):
            run_git(worktree, "config", "--file", str(sub.git_dir / "config"), key, value)
        alternates = sub.git_dir / "objects" / "info" / "alternates"
        alternates.parent.mkdir(parents=True, exist_ok=True)
        alternates.write_bytes(os.fsencode(store / "objects") + b"\n")
        if not _has(sub.git_dir, f"{sub.commit}^{{commit}}"):
            _take_back(sub, folder)
            return "MISSING", ""
        where = (f"--git-dir={sub.git_dir}", f"--work-tree={folder}")
        done = run_git(
            folder,
            *where,
            "checkout",
            "--quiet",
            "--detach",
            sub.commit,
            config=NO_FETCH,
            env=NO_FETCH_ENV,
            check=False,
        )
        if done.returncode != 0:
            _take_back(sub, folder)
            return "FAILED", f" (git: {first_line(done.stderr) or done.returncode})"
        # the pointer to the run's git dir, written last: what the sandbox pins
        with open(folder / ".git", "xb") as fh:
            fh.write(sub.pointer_bytes())
    except (OSError, SwitchyardError) as exc:
        _take_back(sub, folder)
        return "FAILED", f" ({exc})"
    return None


def _has(git_dir: Path, rev: str) -> bool:
    """Whether ``rev`` is an object in ``git_dir`` (or the stores it borrows from)."""
    proc = run_git(
        git_dir,
        f"--git-dir={git_dir}",
        "cat-file",
        "-e",
        rev,
        config=NO_FETCH,
        env=NO_FETCH_ENV,
        check=False,
    )
    return proc.returncode == 0


def _real_empty_folder(worktree: Path, path: str) -> bool:
    """Whether ``path`` is an empty folder reached through real folders (no link)."""
    here = worktree
    try:
        for part in PurePosixPath(path).parts:
            here = here / part
            if not stat.S_ISDIR(here.lstat().st_mode):
                return False
        return not any(here.iterdir())
    except OSError:
        return False


def _take_back(sub: Submodule, folder: Path) -> None:
    """The run's git dir for ``sub`` gone, with the folders made for it (a ``modules``
    folder left behind has git worktree remove refuse), and its folder empty again
    (best effort)."""
    shutil.rmtree(sub.git_dir, ignore_errors=True)
    # up to <worktree's git dir>/modules, each while empty (another submodule's stays)
    for made in sub.git_dir.parents[: len(PurePosixPath(sub.name).parts)]:
        try:
            made.rmdir()
        except OSError:
            break
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink()


def broken_pointers(worktree: Path, submodules: tuple[Submodule, ...]) -> list[str]:
    """The paths of the submodules whose ``.git`` file is not byte for byte what
    :func:`check_out` wrote, or is not reached through real folders (one renamed away
    and another put in its place)."""
    broken: list[str] = []
    for sub in submodules:
        try:
            pin_points(worktree, [sub.pointer])
            intact = (worktree / sub.pointer).read_bytes() == sub.pointer_bytes()
        except (ValueError, OSError):
            intact = False
        if not intact:
            broken.append(sub.path)
    return broken


__all__ = ["Submodule", "broken_pointers", "check_out", "safe_name", "safe_path"]
