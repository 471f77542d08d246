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

What the tests write inside a submodule never shows in that change, so it must not
outlive its test loop either: a test that patched a vendored library there had every
later loop pass on a library no clean checkout has, and the evidence said green (a
security review). :func:`restore` puts a submodule back exactly at the commit the
run's worktree records for it, through the run's own git dir for it (never its ``.git``
file), with every file that commit does not hold gone, ignored ones too, and the folders
of its own submodules emptied (git's clean never looks inside them); the worktree's
reset calls it, and :func:`drift` (what differs, read the same way) is checked before
each test command, so every loop, the green one too, tests the submodules as recorded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
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
#: how the worktree's files are read against an index when it is reset (and a submodule
#: checked or restored): a file whose inode's change time moved is read again, whatever
#: the user's git says (``core.trustctime=false`` had a file a test rewrote at its old
#: size, its mtime put back, read as unchanged: a reset kept it, status did not list it)
EXACT_STAT = (
    "core.trustctime=true",
    "core.checkStat=default",
    "core.ignoreStat=false",
    "core.untrackedCache=false",
)


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
    for the user on the ones left empty. Never raises (but for an interruption): a
    failure of any kind is a note, and the submodule it met is left empty."""
    try:
        declared, notes = _declared(top, base)
        if not declared:
            return [], notes
        config = _submodule_config(top)
        stores = _store_dirs(top)
    except Exception as exc:  # (never half done: nothing is filled yet)
        return [], [f"submodules are left empty in the run's worktree: {_said(exc)}"]
    left: dict[str, list[str]] = {}
    filled: list[Submodule] = []
    for name, path, commit in declared:
        if not commit or not safe_name(name) or not safe_path(path):
            left.setdefault("UNSAFE", []).append(repr(path))
            continue
        off = config.get(f"submodule.{name}.active", "").lower() in ("false", "no", "off", "0")
        if not config.get(f"submodule.{name}.url") or off:
            left.setdefault("NOT_INIT", []).append(path)
            continue
        store = _store(stores, name)
        if store is None:
            embedded = _real_folder(top / path / ".git")
            left.setdefault("EMBEDDED" if embedded else "NO_STORE", []).append(path)
            continue
        sub = Submodule(name=name, path=path, commit=commit, git_dir=admin / "modules" / name)
        try:
            failed = _fill(sub, store, worktree)
        except Exception as exc:  # (a bug here leaves this one empty, never half filled)
            _take_back(sub, worktree.joinpath(*PurePosixPath(path).parts))
            failed = "FAILED", f" ({_said(exc)})"
        if failed is not None:
            why, detail = failed
            left.setdefault(why, []).append(f"{path} at {commit[:12]}{detail}")
            continue
        filled.append(sub)
        nested = False
        with contextlib.suppress(Exception):  # (only a note: without it, none)
            nested = _has(sub.git_dir, f"{commit}:.gitmodules")
        if nested:
            notes.append(
                f"the submodules of submodule {path} are not checked out in the run's worktree"
            )
    for why, paths in left.items():
        notes.append(_note(why, paths))
    return filled, notes


def _said(exc: BaseException) -> str:
    """An error as a note says it: Switchyard's own in its words, another with its kind."""
    if isinstance(exc, SwitchyardError | OSError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _store_dirs(top: Path) -> list[Path]:
    """Where the user's checkout keeps its submodules' git dirs, in the order looked at:
    its own git dir's ``modules`` (a linked worktree's own, where ``git submodule update``
    there puts them), then the repository's common dir's (the main checkout's)."""
    own = Path(git_out(top, "rev-parse", "--absolute-git-dir")) / "modules"
    common = Path(git_out(top, "rev-parse", "--path-format=absolute", "--git-common-dir"))
    return list(dict.fromkeys([own, common / "modules"]))


def _store(stores: list[Path], name: str) -> Path | None:
    """The first git dir of submodule ``name`` in ``stores``: only its objects are read
    (borrowed through alternates), never written. A linked worktree whose submodules were
    initialised in the main checkout only borrows the main checkout's."""
    for where in stores:
        store = where / name
        if (store / "objects").is_dir() and (store / "HEAD").is_file():
            return store
    return None


def _real_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


_WHY = {
    "UNSAFE": "whose name or path in .gitmodules is not a safe one",
    "NOT_INIT": "not initialised in your checkout (git submodule update --init)",
    "NO_STORE": "not checked out in your checkout: no git dir of theirs under .git/modules "
    "(git submodule update --init, in that checkout)",
    "EMBEDDED": "whose git dir lies inside their folder in your checkout, not under "
    ".git/modules (git submodule absorbgitdirs)",
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
    at a gitlink of the base's tree, and (name, path, "") of each it names at a path that
    is not a safe one (never given to git: one such path, ``../outside``, had ls-tree
    fail and every submodule left empty); and a note when that file cannot be read."""
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
    found = [(name, path, "") for path, name in names.items() if not safe_path(path)]
    asked = [path for path in names if safe_path(path)]
    if not asked:
        return found, []
    listed = run_git(top, "ls-tree", "-z", "--full-tree", base, "--", *asked).stdout
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


def restore(worktree: Path, sub: Submodule, commit: str) -> None:
    """Put ``sub``'s folder in ``worktree`` back exactly at ``commit``: every tracked file
    as committed, every other one gone (ignored ones too: nothing in a submodule is the
    run's own, and a ``.gitignore`` a test wrote there ignored what it planted beside it),
    and the folders of its own submodules, which are never filled, empty; each file
    compared with ``commit`` by content. Through the run's own git dir for it, never its
    ``.git`` file, and with :data:`NO_FETCH`: a commit not in this machine's objects
    stays out. SwitchyardError (a GitError) when it cannot be done; OSError from
    emptying a folder."""
    if broken_pointers(worktree, (sub,)):
        raise SwitchyardError(
            f"submodule {sub.path}: its .git file is not the one written for it: left as it is"
        )
    folder = _folder(worktree, sub)
    _read_afresh(sub, folder, commit)
    _sub_git(sub, folder, "reset", "--hard", "--quiet", commit)
    _sub_git(sub, folder, "clean", "-ffdxq")
    for nested in _nested(sub, folder):
        clear_folder(folder, nested)


def drift(worktree: Path, sub: Submodule, commit: str) -> list[str]:
    """What in ``sub``'s folder is not ``commit``, each file compared by content: its
    checked-out commit when another, then each path changed, deleted, not tracked or
    ignored, and each file inside a folder of its own submodules; empty when it is
    exactly ``commit``. SwitchyardError when git cannot tell."""
    if broken_pointers(worktree, (sub,)):
        return [".git (not the file written for it)"]
    folder = _folder(worktree, sub)
    _read_afresh(sub, folder, commit)
    found: list[str] = []
    head = _sub_git(sub, folder, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
    at = head.stdout.strip()
    if at != commit:
        found.append(f"checked out at {at[:12] or 'no commit'}, not {commit[:12]}")
    status = _sub_git(
        sub,
        folder,
        "status",
        "--porcelain=v1",
        "-z",
        "--no-renames",
        "--untracked-files=all",
        "--ignored=traditional",
        "--ignore-submodules=all",
    ).stdout
    found += [rec[3:] for rec in status.split("\0") if len(rec) > 3]
    for nested in _nested(sub, folder):
        found += [f"{nested}/{name}" for name in folder_entries(folder, nested)]
    return found


def clear_folder(top: Path, rel: str) -> None:
    """Make the folder ``rel`` under ``top`` an empty one, as ``git worktree add`` leaves
    a submodule it does not fill: what is in it goes, and a file or link in its place
    becomes an empty folder. Nothing is done through a link: when a folder on the way is
    not a real one, it is left (:func:`folder_entries` then says so). OSError when
    something cannot be removed."""
    parts = PurePosixPath(rel).parts
    here = top
    for part in parts[:-1]:
        here = here / part
        if not _real_folder(here):
            return
    target = here / parts[-1]
    if not _real_folder(target):
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        target.mkdir()
        return
    for entry in list(target.iterdir()):
        if _real_folder(entry):
            shutil.rmtree(entry)
        else:
            entry.unlink()


def folder_entries(top: Path, rel: str) -> list[str]:
    """What is in the folder ``rel`` under ``top`` that should be empty (a submodule not
    filled): its entries' names, or why it is not an empty real folder."""
    here = top
    for part in PurePosixPath(rel).parts:
        here = here / part
        if not _real_folder(here):
            return ["(not a real folder)"] if here.exists() or here.is_symlink() else []
    try:
        return sorted(entry.name for entry in here.iterdir())
    except OSError as exc:
        return [f"(unreadable: {exc.strerror or exc})"]


def _folder(worktree: Path, sub: Submodule) -> Path:
    return worktree.joinpath(*PurePosixPath(sub.path).parts)


def _sub_git(
    sub: Submodule, folder: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """git on ``sub``'s folder through the run's own git dir for it, never its ``.git``
    file; no fetch, no recursion, files read by content whenever they changed."""
    return run_git(
        folder,
        f"--git-dir={sub.git_dir}",
        f"--work-tree={folder}",
        *args,
        config=(*NO_FETCH, *EXACT_STAT),
        env=NO_FETCH_ENV,
        check=check,
    )


def _read_afresh(sub: Submodule, folder: Path, commit: str) -> None:
    """The index of ``sub``'s git dir made anew from ``commit``, every file compared with
    it by content: an index's stat data decide by the second, and a file a test rewrote
    at its old size and mtime, in the second the index last saw it change, read as
    unchanged (ctime included), and a reset kept it."""
    _sub_git(sub, folder, "read-tree", commit)  # (no stat data: each file is hashed)
    _sub_git(sub, folder, "update-index", "-q", "--refresh", check=False)


def _nested(sub: Submodule, folder: Path) -> list[str]:
    """The paths of ``sub``'s own submodules (gitlinks of its index), which Switchyard
    never fills: git's clean never looks inside their folders, nor does status."""
    out = _sub_git(sub, folder, "ls-files", "--stage", "-z").stdout
    links = [
        rec.split("\t", 1)[1]
        for rec in out.split("\0")
        if rec.startswith("160000 ") and "\t" in rec
    ]
    return [path for path in links if safe_path(path)]


__all__ = [
    "EXACT_STAT",
    "Submodule",
    "broken_pointers",
    "check_out",
    "clear_folder",
    "drift",
    "folder_entries",
    "restore",
    "safe_name",
    "safe_path",
]
