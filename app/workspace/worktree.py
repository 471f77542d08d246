"""A git worktree per run: the Implementer's diffs land here, never in the user's checkout.

``Worktree.create(repo, run_id)`` adds ``REPO/.switchyard/worktrees/<run-id>`` on a new
branch ``switchyard/<run-id>`` at the user's HEAD. The state dir is git-ignored, and
``git worktree add`` writes only under ``.git/worktrees/`` and the new branch ref: the
user's HEAD, index and work tree stay exactly as they were (see
:func:`checkout_fingerprint`, which the tests compare before and after).

The submodules the user's checkout has initialised are filled from this machine's objects
only, their ``.git`` files kept out of the tests' reach (:mod:`app.workspace.submodules`).

The calls are synchronous and take milliseconds to a few seconds (a large checkout);
async callers run them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.counted import counted
from app.errors import SwitchyardError
from app.evidence.runid import validate_run_id
from app.paths import STATE_DIR_NAME, repo_state_dir, state_path
from app.workspace.git import (
    NotAGitRepo,
    current_branch,
    git_out,
    has_identity,
    repo_root,
    rev_parse,
    run_git,
    run_git_raw,
)
from app.workspace.shown_diff import DIFF_ARGS, diff_text, shown_diff
from app.workspace.submodules import (
    EXACT_STAT,
    Submodule,
    broken_pointers,
    check_out,
    clear_folder,
    drift,
    folder_entries,
    restore,
    safe_path,
)

BRANCH_PREFIX = "switchyard/"
WORKTREES_DIR = "worktrees"
#: Identity for commits in a repo where the user has none configured (CI, a fresh box).
FALLBACK_IDENTITY = ("user.name=Switchyard", "user.email=switchyard@localhost")
#: Longest git message kept in an ApplyResult (it is fed back to the model).
MAX_REASON_CHARS = 4000
#: check-ignore's pathspec magic for "from the top": a name that starts with ":" stays a name
_TOP = ":(top)"
#: given to every git call on the worktree: a recursing reset or checkout (the user's
#: submodule.recurse) would run git inside a submodule, found through its .git file,
#: which the tests may have rewritten (GR-010; app.workspace.submodules)
NO_SUBMODULE_RECURSION = ("submodule.recurse=false",)


class WorkspaceError(SwitchyardError):
    """A worktree cannot be created, found or changed as asked."""


class ApplyResult(BaseModel):
    """One diff attempt. ``reason`` is git's own message when the diff did not apply."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ok: bool
    attempt: int
    #: "" when ok; otherwise why (git's message for a diff that does not apply)
    reason: str = ""
    #: the commit on the run branch holding the attempt (None when not applied)
    commit: str | None = None
    #: paths the diff touches (new and old names of renames)
    files: list[str] = Field(default_factory=list)
    #: the commit the attempt was applied on
    parent: str
    #: paths refused for lying outside the folder the change is kept to (``within``)
    outside: list[str] = Field(default_factory=list)


# ── the user's checkout ──────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class CheckoutFingerprint:
    """What must not change in the user's checkout: HEAD, the index and the work tree.

    Read without writing anything (no index refresh, no ``write-tree``); ignored files,
    and so ``.switchyard/``, are not part of it.
    """

    head: str | None
    head_ref: str | None
    #: sha256 of ``git ls-files -s``: every index entry's mode, blob and stage
    index: str
    #: ``git status --porcelain=v2`` with untracked files
    status: str
    #: sha256 over the content of every modified and untracked file
    content: str

    def differences(self, other: CheckoutFingerprint) -> list[str]:
        names = ("head", "head_ref", "index", "status", "content")
        return [n for n in names if getattr(self, n) != getattr(other, n)]


def checkout_fingerprint(repo: Path, *, untracked: bool = True) -> CheckoutFingerprint:
    """HEAD, the index, the status and the content of every changed file; untracked files
    too unless ``untracked=False`` (the merge's: it never touches them, and a log file
    another program appends to made a clean rollback read as a failed one)."""
    top = repo_root(repo)
    index = run_git(top, "ls-files", "-s", "-z").stdout
    mode = "--untracked-files=all" if untracked else "--untracked-files=no"
    status = run_git(top, "status", "--porcelain=v2", "-z", mode).stdout
    others = ["--others", "--exclude-standard"] if untracked else []
    listed = run_git(top, "ls-files", "-z", "--modified", *others).stdout.split("\0")
    content = hashlib.sha256()
    for rel in sorted({p for p in listed if p}):
        content.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        content.update(_file_digest(top / rel).encode() + b"\0")
    return CheckoutFingerprint(
        head=rev_parse(top, "HEAD"),
        head_ref=current_branch(top),
        index=hashlib.sha256(index.encode("utf-8", "surrogateescape")).hexdigest(),
        status=status,
        content=content.hexdigest(),
    )


def _file_digest(path: Path) -> str:
    try:
        if path.is_symlink():
            return "link:" + os.readlink(path)
        if not path.is_file():
            return "missing" if not path.exists() else "not-a-file"
        with path.open("rb") as fh:  # in pieces: an 800 MB file took 860 MB whole
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as exc:
        return f"unreadable:{exc.errno}"


def dirty_paths(repo: Path, *, untracked: bool = True) -> list[str]:
    """Paths with uncommitted changes (staged, unstaged and, if asked, untracked)."""
    mode = "--untracked-files=all" if untracked else "--untracked-files=no"
    out = run_git(repo, "status", "--porcelain=v1", "-z", mode).stdout
    paths: list[str] = []
    records = iter(out.split("\0"))
    for rec in records:
        if len(rec) < 4:
            continue
        paths.append(rec[3:])
        if rec[0] in "RC":  # a rename's source follows as its own record
            next(records, None)
    return paths


# ── the worktree ─────────────────────────────────────────────────────────────────────────


class Worktree:
    """A run's worktree. Build with :meth:`create` (or :meth:`open` for an existing one)."""

    def __init__(
        self,
        *,
        repo: Path,
        path: Path,
        run_id: str,
        branch: str,
        base: str,
        git_dir: Path,
        notes: tuple[str, ...] = (),
        user_dirty: tuple[str, ...] = (),
        submodules: tuple[Submodule, ...] = (),
    ) -> None:
        self.repo = repo
        self.path = path
        #: the worktree's own folder in the repository's git dir. Every git call names it,
        #: never finding it through the worktree's ``.git`` file: sandboxed code can write
        #: that file, and a git dir of its making would have git run its config's programs
        #: (``core.fsmonitor``, filters) outside the sandbox (GR-010).
        self.git_dir = git_dir
        self.run_id = run_id
        self.branch = branch
        #: the user's HEAD when the run started; every attempt is measured against it
        self.base = base
        #: things the caller should tell the user (e.g. uncommitted changes left behind)
        self.notes = notes
        #: paths that were dirty in the user's checkout at creation (not carried over)
        self.user_dirty = user_dirty
        #: the submodules filled in it (:mod:`app.workspace.submodules`)
        self.submodules = submodules
        self.attempts = 0

    # ── lifecycle ────────────────────────────────────────────────────────────────────────

    @classmethod
    def create(cls, repo: Path, run_id: str, *, base: str = "HEAD") -> Worktree:
        top = repo_root(repo)
        validate_run_id(run_id)
        base_sha = rev_parse(top, base)
        if base_sha is None:
            if base == "HEAD":
                raise NotAGitRepo(f"{top}: the repository has no commit yet")
            raise WorkspaceError(f"{base!r} does not name a commit in {top}")
        branch = BRANCH_PREFIX + run_id
        if rev_parse(top, f"refs/heads/{branch}") is not None:
            raise WorkspaceError(f"branch {branch} already exists: run ids must be unique")
        root = repo_state_dir(top, WORKTREES_DIR)  # real folders, no link on the way
        path = root / run_id
        if path.exists() or _meta_path(root, run_id).exists():
            raise WorkspaceError(f"{path} already exists: run ids must be unique")
        dirty = tuple(dirty_paths(top))
        notes: list[str] = []
        if dirty:
            shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
            notes.append(
                f"the checkout has {counted(len(dirty), 'uncommitted change')} ({shown}); "
                f"the run works on the last commit {base_sha[:12]} and does not carry them over"
            )
        run_git(top, "worktree", "add", "--quiet", "-b", branch, str(path), base_sha)
        try:
            git_dir = _admin_dir(top, path)
            # from this machine's objects only; each .git file they get is pinned read-only
            # in the sandbox and checked after every test run (GR-010)
            submodules, said = check_out(top, git_dir, path, base_sha)
            notes += said
            meta = {
                "run_id": run_id,
                "branch": branch,
                "base": base_sha,
                "submodules": [sub.meta() for sub in submodules],
            }
            held = _lock_held(top, run_id)
            _write_meta(root, run_id, {**meta, LOCK_HELD: held, MACHINE: this_machine()})
        except BaseException:
            # without its meta nothing would ever remove them (prune_dead reads the metas):
            # the worktree and its branch go now, whatever the failure (a review)
            with contextlib.suppress(Exception):  # (the failure is what the caller hears)
                _discard(top, path, branch, _meta_path(root, run_id))
            raise
        return cls(
            repo=top,
            path=path,
            git_dir=git_dir,
            run_id=run_id,
            branch=branch,
            base=base_sha,
            notes=tuple(notes),
            user_dirty=dirty,
            submodules=tuple(submodules),
        )

    @classmethod
    def open(cls, repo: Path, run_id: str) -> Worktree:
        """The worktree :meth:`create` made for ``run_id`` (e.g. after a restart)."""
        top = repo_root(repo)
        validate_run_id(run_id)
        root = state_path(top, WORKTREES_DIR)
        try:
            meta = json.loads(_meta_path(root, run_id).read_text(encoding="utf-8"))
            base, branch = str(meta["base"]), str(meta["branch"])
            listed = meta.get("submodules", [])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise WorkspaceError(f"no worktree for run {run_id} in {top}") from None
        path = root / run_id
        if not path.is_dir():
            raise WorkspaceError(f"the worktree of run {run_id} is gone ({path})")
        git_dir = _admin_dir(top, path)
        try:
            subs = tuple(Submodule.from_meta(item, git_dir) for item in listed)
        except (ValueError, KeyError, TypeError):
            raise WorkspaceError(
                f"the worktree of run {run_id}: its submodules are unreadable"
            ) from None
        return cls(
            repo=top,
            path=path,
            run_id=run_id,
            branch=branch,
            base=base,
            git_dir=git_dir,
            submodules=subs,
        )

    def remove(self, *, delete_branch: bool = False) -> None:
        """Delete the worktree (and, if asked, its branch). Safe to call twice."""
        meta = _meta_path(self.path.parent, self.run_id)
        _discard(self.repo, self.path, self.branch if delete_branch else None, meta)

    # ── attempts ─────────────────────────────────────────────────────────────────────────

    def _git(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        """``git`` on the worktree, its git dir named (:attr:`git_dir`), never recursing
        into a submodule."""
        config = (*NO_SUBMODULE_RECURSION, *kw.pop("config", ()))
        return run_git(self.path, *self._where(), *args, config=config, **kw)

    def _where(self) -> tuple[str, str]:
        return (f"--git-dir={self.git_dir}", f"--work-tree={self.path}")

    def _git_out(self, *args: str) -> str:
        return self._git(*args).stdout.rstrip("\n")

    def config_files(self) -> list[Path]:
        """What git reads as configuration or attributes for this worktree
        (:mod:`app.workspace.git_config_guard`); the repository's git dir is the one
        :attr:`git_dir` lies in (``<git dir>/worktrees/<name>``). The submodules' git dirs'
        too: a person's git in the worktree reads them."""
        from app.workspace.git_config_guard import watched_files

        files = watched_files(self.git_dir.parent.parent, self.git_dir)
        for sub in self.submodules:
            files += [sub.git_dir / "config", sub.git_dir / "info" / "attributes"]
        return files

    def pinned(self) -> list[str]:
        """The files in the worktree the sandbox keeps read-only and in place, beside its
        own ``.git``: each submodule's ``.git`` (relative POSIX paths)."""
        return [sub.pointer for sub in self.submodules]

    def broken_pointers(self) -> list[str]:
        """The submodules whose ``.git`` file is no longer the one written for them (or
        is reached otherwise than through real folders); a git that followed one would
        obey a git dir of the tests' making."""
        return broken_pointers(self.path, self.submodules)

    def restore_dotgit(self) -> bool:
        """Put the worktree's ``.git`` file back as git wrote it, if sandboxed code changed
        it (a runner that does not confine writes; bwrap mounts it read-only). True when it
        had been changed. Switchyard's own calls never read it; a person's git would."""
        dotgit = self.path / ".git"
        want = f"gitdir: {self.git_dir}\n"
        with contextlib.suppress(OSError):
            if not dotgit.is_symlink() and dotgit.is_file() and dotgit.read_text() == want:
                return False
        if dotgit.is_dir() and not dotgit.is_symlink():
            _rmtree(dotgit)
        else:
            with contextlib.suppress(FileNotFoundError):
                dotgit.unlink()
        dotgit.write_text(want, encoding="utf-8")
        return True

    def head(self) -> str:
        return self._git_out("rev-parse", "HEAD")

    def reset(self, to: str | None = None) -> None:
        """Put the worktree back at ``to`` (default: the base): tracked and untracked files.

        Ignored files (build outputs, node_modules) are kept: they are the project's
        caches, and its build tool decides when they are stale. A file whose change time
        moved is read again (:data:`~app.workspace.submodules.EXACT_STAT`: the user's
        ``core.trustctime=false`` kept a file a test rewrote at its old size and mtime).
        Git does not recurse into a submodule here (:data:`NO_SUBMODULE_RECURSION`):
        each is put back by :meth:`restore_submodules`, through the run's own git dir for
        it, whole, its ignored files too (what a test wrote there never shows in the run's
        change, and stayed for the later loops to pass on).
        """
        self._git("reset", "--hard", "--quiet", to or self.base, config=EXACT_STAT)
        self._git("clean", "-ffdq", config=EXACT_STAT)
        self.restore_submodules()

    def restore_submodules(self) -> None:
        """Each filled submodule back exactly at the commit the worktree's index records
        for it (:func:`~app.workspace.submodules.restore`), and the folder of each one not
        filled empty again. Best effort: one whose ``.git`` file is not the one written
        for it is left alone (the test loop stops the run on it), and one that cannot be
        put back is left as it is; the test loop checks :meth:`submodule_drift` before
        every test command, and does not run the tests on it."""
        links = self._gitlinks()
        for sub in self.submodules:
            with contextlib.suppress(SwitchyardError, OSError):
                restore(self.path, sub, links.get(sub.path, sub.commit))
        for path in sorted(links.keys() - {sub.path for sub in self.submodules}):
            if safe_path(path):
                with contextlib.suppress(OSError):
                    clear_folder(self.path, path)

    def submodule_drift(self) -> dict[str, list[str]]:
        """What differs, per submodule path, from the worktree's submodules as recorded:
        a filled one's files against the commit the index records for it
        (:func:`~app.workspace.submodules.drift`), and anything in the folder of one not
        filled, which git never looks into. Empty when every one is exact."""
        links = self._gitlinks()
        found: dict[str, list[str]] = {}
        for sub in self.submodules:
            try:
                said = drift(self.path, sub, links.get(sub.path, sub.commit))
            except SwitchyardError as exc:
                said = [f"(git cannot tell: {exc})"]
            if said:
                found[sub.path] = said
        for path in sorted(links.keys() - {sub.path for sub in self.submodules}):
            if not safe_path(path):
                continue
            inside = folder_entries(self.path, path)
            if inside:
                found[path] = inside
        return found

    def apply_diff(
        self, diff_text: str, *, message: str | None = None, from_base: bool = True
    ) -> ApplyResult:
        """Check, apply and commit one diff attempt on the run branch.

        ``from_base`` (the default) resets to the base first, so each attempt is a whole
        diff against the user's HEAD; False stacks it on the previous attempt. Hunk line
        counts are recounted (``--recount``): models often miscount them, and the change is
        the same. Classify the committed change (:meth:`diff`), not the model's text.
        """
        self.attempts += 1
        n = self.attempts
        if from_base:
            self.reset()
        parent = self.head()

        def failed(reason: str, files: list[str] | None = None) -> ApplyResult:
            text = reason.strip()[:MAX_REASON_CHARS]
            return ApplyResult(ok=False, attempt=n, reason=text, files=files or [], parent=parent)

        if not diff_text.strip():
            return failed("the diff is empty")
        text = diff_text if diff_text.endswith("\n") else diff_text + "\n"
        opts = ("--recount", "--whitespace=nowarn")
        check = self._git("apply", "--check", "--index", *opts, "-", input_text=text, check=False)
        if check.returncode != 0:
            return failed(check.stderr or check.stdout or "git apply --check failed")
        numstat = ("apply", "--numstat", "-z", "--recount", "-")
        files = _diff_paths(self._git(*numstat, input_text=text).stdout)
        state = [f for f in files if f == STATE_DIR_NAME or f.startswith(STATE_DIR_NAME + "/")]
        if state:
            return failed(f"the diff touches Switchyard's state dir: {', '.join(state)}", files)
        # git apply --check passes a file new inside a submodule, then writes it there and
        # fails to stage it: refused first, as apply_files does (a submodule's commit
        # pointer itself may change)
        inside = self._in_submodule(files)
        if inside:
            return failed(inside, files)
        applied = self._git("apply", "--index", *opts, "-", input_text=text, check=False)
        if applied.returncode != 0:
            self.reset(parent)
            return failed(applied.stderr or "git apply failed", files)
        return self._commit(n, parent, files, message, what="the diff")

    def read_file(self, rel: str) -> str | None:
        """A file's text in the worktree (None when there is none); ValueError when it
        is not UTF-8 text or not a plain file inside the worktree."""
        target = self._inside(rel)
        if not target.exists() and not target.is_symlink():
            return None
        if target.is_symlink() or not target.is_file():
            raise ValueError("not a regular file")
        data = target.read_bytes()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("not UTF-8 text") from None

    def apply_files(
        self,
        files: Mapping[str, str],
        *,
        message: str | None = None,
        within: str = "",
        attempt: int | None = None,
    ) -> ApplyResult:
        """Write whole new file texts (the applier's output) from the base and commit them
        as one attempt. Paths must stay inside the worktree, out of ``.git`` (any part, any
        case), the state dir and submodules, never go through a symlink, and not be ignored
        by git; bytes are written as given (UTF-8). ``within`` (a folder of the repository,
        POSIX, "" for all of it) is where every path must lie: the folder an ACP editor
        opened. A refused path is an ApplyResult, not an error, decided before anything is
        written where it can be; otherwise whatever was written is taken back, so nothing
        is half-applied: one path refused refuses the whole change. ``attempt``: the
        caller's number for it (the implementer counts replies that changed nothing too;
        the commit said "attempt 2" of what the evidence and the editor called attempt 4,
        an ACP audit); by default the calls of this method, counted."""
        self.attempts += 1
        n = self.attempts if attempt is None else attempt
        self.reset()
        parent = self.head()
        paths = sorted(files)

        def failed(reason: str) -> ApplyResult:
            text = reason.strip()[:MAX_REASON_CHARS]
            return ApplyResult(ok=False, attempt=n, reason=text, files=paths, parent=parent)

        if not files:
            return failed("the change is empty")
        try:
            targets = {rel: self._inside(rel) for rel in paths}
        except ValueError as exc:
            return failed(str(exc))
        root = self.path.resolve()
        outside = [rel for rel, t in targets.items() if not in_folder(t.relative_to(root), within)]
        if outside:
            result = failed(outside_reason(outside, within))
            return result.model_copy(update={"outside": outside})
        refusal = self._write_refusal(targets)
        if refusal:
            return failed(refusal)
        created: list[Path] = []  # files and folders this attempt made, in order
        for rel, target in targets.items():
            try:
                _write_file(target, files[rel].encode("utf-8"), created)
            except OSError as exc:
                self._undo(parent, created)
                return failed(f"{rel}: cannot be written ({exc.strerror or exc})")
        # the change's own .gitignore counts, so this is asked once the files are there
        ignored = self._ignored(paths)
        if ignored:
            self._undo(parent, created)
            return failed(ignored)
        added = self._git("add", "--", *paths, check=False)
        if added.returncode != 0:
            self._undo(parent, created)
            return failed(f"git refused the change: {added.stderr or added.stdout}")
        return self._commit(n, parent, paths, message, what="the change")

    def _write_refusal(self, targets: Mapping[str, Path]) -> str | None:
        """Why these paths (already :meth:`_inside`) cannot be written, or None: a folder
        on the way is a symlink or a submodule, or the file is not a regular file, or it
        is an ignored file already in the worktree (a build output, a local secret)."""
        root = self.path.resolve()
        gitlinks = self._gitlinks()
        present: list[str] = []
        for rel, target in targets.items():
            parts = target.relative_to(root).parts
            for i in range(1, len(parts) + 1):
                prefix = "/".join(parts[:i])
                if prefix in gitlinks:
                    return (
                        f"{rel}: {prefix} is a submodule (another repository); "
                        "its files are not part of this change"
                    )
                if i < len(parts) and root.joinpath(*parts[:i]).is_symlink():
                    real = (target.parent.resolve() / target.name).relative_to(root)
                    return (
                        f"{rel}: {prefix} is a symbolic link, and files are never written "
                        f"through one; write {real.as_posix()} instead"
                    )
            if target.is_symlink() or (target.exists() and not target.is_file()):
                return f"{rel}: not a regular file"
            if target.exists():
                present.append(rel)
        # after a reset, a file that is there and not tracked is an ignored one
        return self._ignored(present)

    def _in_submodule(self, paths: list[str]) -> str | None:
        """Why one of ``paths`` cannot change: it lies inside a submodule."""
        gitlinks = self._gitlinks()
        for rel in paths:
            parts = PurePosixPath(rel).parts
            for i in range(1, len(parts)):
                prefix = "/".join(parts[:i])
                if prefix in gitlinks:
                    return (
                        f"{rel}: {prefix} is a submodule (another repository); "
                        "its files are not part of this change"
                    )
        return None

    def _gitlinks(self) -> dict[str, str]:
        """The submodule paths in the index (mode 160000), each with its commit."""
        out = self._git("ls-files", "--stage", "-z").stdout
        links: dict[str, str] = {}
        for rec in out.split("\0"):
            info, tab, path = rec.partition("\t")
            fields = info.split()
            if tab and len(fields) == 3 and fields[0] == "160000":
                links[path] = fields[1]
        return links

    def _ignored(self, paths: list[str]) -> str | None:
        """Why some of ``paths`` are ignored by git (None when none is). Tracked files are
        never ignored; a ``!pattern`` that re-includes a path does not count."""
        if not paths:
            return None
        # check-ignore refuses the 'literal' magic every call gets (GIT_LITERAL_PATHSPECS);
        # ':(top)' keeps a name that starts with ':' from being read as magic instead
        proc = self._git(
            "check-ignore",
            "--verbose",
            "-z",
            "--stdin",
            input_text="".join(f"{_TOP}{p}\0" for p in paths),
            env={"GIT_LITERAL_PATHSPECS": "0"},
            check=False,
        )
        fields = proc.stdout.split("\0")
        hits: list[str] = []
        for i in range(0, len(fields) - 3, 4):
            source, _line, pattern, path = fields[i : i + 4]
            if pattern and not pattern.startswith("!"):
                where = "git's excludes" if os.path.isabs(source) else source
                hits.append(f'{path.removeprefix(_TOP)} ("{pattern}" in {where})')
        if not hits:
            return None
        return (
            f"ignored by git: {', '.join(hits)}. Ignored paths are build outputs and local "
            "secrets (.env, logs) and are not part of the change: put the code in a file "
            "the repository tracks"
        )

    def _undo(self, parent: str, created: list[Path]) -> None:
        """Take back a half-written attempt: the files and folders it made (an ignored
        one would outlive the reset), then everything else with :meth:`reset`."""
        for path in reversed(created):
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink()
        self.reset(parent)

    def _inside(self, rel: str) -> Path:
        """``rel`` under the worktree, checked: relative, no '..', not .git (anywhere, in
        any case) or the state dir, and no symlinked directory on the way out of the tree."""
        parts = [p for p in Path(rel).parts if p not in ("", ".")]
        if not parts or Path(rel).is_absolute() or ".." in parts:
            raise ValueError(f"{rel}: the path must stay inside the repository")
        for part in parts:
            if _is_dotgit(part):
                raise ValueError(f"{rel}: {part}/ is not part of the change (git's own files)")
        if parts[0].lower() == STATE_DIR_NAME.lower():
            raise ValueError(f"{rel}: {parts[0]}/ is not part of the change")
        root = self.path.resolve()
        target = root.joinpath(*parts)
        if not target.parent.resolve().is_relative_to(root):
            raise ValueError(f"{rel}: the path leads out of the repository")
        return target

    def _commit(
        self, n: int, parent: str, files: list[str], message: str | None, *, what: str
    ) -> ApplyResult:
        """Commit the staged attempt on the run branch (back to ``parent`` on failure)."""
        config = ["commit.gpgsign=false"]
        if not has_identity(self.repo):
            config += FALLBACK_IDENTITY
        msg = message or f"switchyard run {self.run_id}: attempt {n}"
        commit = self._git(
            "commit", "--quiet", "--no-verify", "-m", msg, config=config, check=False
        )
        if commit.returncode == 0:
            return ApplyResult(ok=True, attempt=n, commit=self.head(), files=files, parent=parent)
        self.reset(parent)
        out = commit.stdout + commit.stderr
        if "nothing to commit" in out or "nothing added to commit" in out:
            reason = f"{what} changes nothing"
        else:
            reason = f"git commit failed: {out}".strip()[:MAX_REASON_CHARS]
        return ApplyResult(ok=False, attempt=n, reason=reason, files=files, parent=parent)

    def diff(self) -> str:
        """The run's change so far, base → HEAD of the run branch: every file as text
        whatever the repository's attributes say, a binary one as git's one line
        (:mod:`app.workspace.shown_diff`), read as bytes so that its CRs stay (a change
        from LF to CRLF shows). A submodule shows as its commit pointer only. For reading
        only: the merge takes the commit."""
        args = ("diff", *DIFF_ARGS, self.base, "HEAD")
        return shown_diff(diff_text(run_git_raw(self.path, *self._where(), *args).stdout))

    def changed_files(self) -> list[str]:
        # (the flag given outright: a .gitmodules the tests wrote, "ignore = all", hid a
        # submodule's new commit from git's own reading)
        args = ("--name-only", "-z", "--ignore-submodules=dirty", self.base, "HEAD")
        out = self._git("diff", *args).stdout
        return [p for p in out.split("\0") if p]


def in_folder(rel: Path | str, folder: str) -> bool:
    """Whether the repository-relative path ``rel`` lies inside ``folder`` (a folder of the
    repository, POSIX; "" is the whole of it). Read as written, part by part: the caller
    has refused ``..``, absolute paths and symbolic links on the way (:meth:`Worktree.
    _inside`, :meth:`Worktree._write_refusal`; git's own paths have none)."""
    want = PurePosixPath(folder).parts if folder else ()
    parts = PurePosixPath(Path(rel).as_posix()).parts
    return len(parts) > len(want) and parts[: len(want)] == want


def outside_reason(paths: list[str], folder: str) -> str:
    """Why ``paths`` are refused: they lie outside ``folder``."""
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    return (
        f"outside {folder}/, the folder the change is kept to: {shown}; only files under"
        f" {folder}/ may change, and nothing of this change was written"
    )


def _diff_paths(out: str) -> list[str]:
    """Every path a patch names (both names of a rename), from ``git apply --numstat -z``."""
    fields = out.split("\0")
    paths: list[str] = []
    i = 0
    while i < len(fields):
        rec = fields[i]
        i += 1
        if not rec:
            continue
        parts = rec.split("\t", 2)
        if len(parts) < 3:
            continue
        if parts[2]:
            paths.append(parts[2])
        else:  # a rename: the old and new names follow as their own fields
            paths += [p for p in fields[i : i + 2] if p]
            i += 2
    return sorted(set(paths))


def _is_dotgit(part: str) -> bool:
    """Whether git takes a path part for ``.git``: any case, and as NTFS reads it (trailing
    dots and spaces dropped, the short name ``git~1``)."""
    name = part.lower()
    return name.rstrip(". ") == ".git" or name == "git~1"


def _write_file(target: Path, data: bytes, created: list[Path]) -> None:
    """Write ``target``, making its missing folders; what did not exist goes in ``created``."""
    missing: list[Path] = []
    folder = target.parent
    while not folder.exists() and not folder.is_symlink():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir()
        created.append(path)
    if not target.exists():
        created.append(target)
    target.write_bytes(data)


def _admin_dir(top: Path, path: Path) -> Path:
    """The folder git keeps for the worktree at ``path`` (``<git dir>/worktrees/<name>``),
    found from the repository's side: the one whose ``gitdir`` names ``path/.git``."""
    common = Path(git_out(top, "rev-parse", "--path-format=absolute", "--git-common-dir"))
    want = path.resolve() / ".git"  # never through a link the tests may have put there
    with contextlib.suppress(OSError):
        for admin in sorted((common / "worktrees").iterdir()):
            with contextlib.suppress(OSError):
                said = (admin / "gitdir").read_text(encoding="utf-8").strip()
                if Path(said).resolve() == want:
                    return admin
    raise WorkspaceError(f"git does not know the worktree {path} (git worktree list)")


#: how old a dead run's worktree is before it goes when its run's liveness cannot be
#: told: a run whose live marker could not be held (no lock on that filesystem) reads as
#: dead while it works (a review)
PRUNE_AFTER_S = 6 * 3600
#: the worktree's meta key saying its run held its live marker's lock when the worktree
#: was made: locks work where the marker lies, so the lock found free is the run ended
LOCK_HELD = "live_lock_held"
#: the meta's field naming the machine whose process held it: a lock one machine sees
#: free on a shared filesystem (NFS without lockd, SMB, sshfs) may be held on another
MACHINE = "machine"


def this_machine() -> str:
    """This machine, as long as it runs: its name and its boot's id (Linux)."""
    boot = ""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    return f"{socket.gethostname()}/{boot}"


def _lock_held(top: Path, run_id: str) -> bool:
    """Whether a process (the run making the worktree: its bundle holds the lock from
    its creation on) holds the live marker of ``run_id``'s bundle now."""
    from app.evidence import live
    from app.evidence.layout import runs_dir

    return live.running(runs_dir(top) / run_id)


def prune_due(*, age_s: float, lock_held: bool, sealed: bool) -> bool:
    """Whether the worktree of a run that no process holds the live marker of goes now.

    A run that held its marker's lock (``lock_held``) and left its bundle unsealed was
    killed: its lock is free only because its process is gone, so it goes at once (a
    SIGKILLed run's worktree and branch stayed six hours, a user audit). Otherwise the
    free lock proves nothing (a filesystem without locks: the run may be at work; or a
    sealed run whose own end is removing it), and it goes after :data:`PRUNE_AFTER_S`.
    ``lock_held`` is proved on this machine only (:func:`prune_dead`)."""
    return (lock_held and not sealed) or age_s >= PRUNE_AFTER_S


def prune_dead(repo: Path) -> list[str]:
    """Remove the worktrees of runs that died before their end (a SIGKILL, a crash: no
    process holds their live marker), and their branch when it holds no commit of theirs;
    the run ids whose worktree went. They stayed for good, a full checkout each (a user
    audit); a run's own end removes its worktree. A branch with commits stays: what the
    run made is the user's to look at. Best effort: a worktree that cannot go is left."""
    from app.evidence import live
    from app.evidence.layout import MANIFEST, runs_dir

    top = repo_root(repo)
    root = state_path(top, WORKTREES_DIR)
    if not root.is_dir():
        return []
    gone: list[str] = []
    now = time.time()
    for meta in sorted(root.glob("*.json")):
        run_id = meta.stem
        bundle = runs_dir(top) / run_id
        try:
            validate_run_id(run_id)
            if not bundle.is_dir():
                continue  # (not a run's to judge)
            lock = live.look(bundle)
            if lock == "held":
                continue  # (at work)
            said = json.loads(meta.read_text(encoding="utf-8"))
            # at once only when this machine's lock proves it: held by the run here, and
            # known free now (a review: another machine's run, or a marker this user may
            # not open, read as dead and lost its live worktree)
            held = (
                isinstance(said, dict)
                and said.get(LOCK_HELD) is True
                and said.get(MACHINE) == this_machine()
                and lock == "free"
            )
            age = now - meta.stat().st_mtime
            if not prune_due(age_s=age, lock_held=held, sealed=(bundle / MANIFEST).exists()):
                continue
            wt = Worktree.open(top, run_id)
        except (SwitchyardError, OSError, ValueError):
            continue
        ahead = run_git(top, "rev-list", "--count", f"{wt.base}..{wt.branch}", check=False)
        wt.remove(delete_branch=ahead.returncode == 0 and ahead.stdout.strip() == "0")
        gone.append(run_id)
    return gone


def _discard(top: Path, path: Path, branch: str | None, meta: Path) -> None:
    """The worktree at ``path`` gone (its folder, git's record of it with its
    submodules' git dirs, its meta) and, when named, ``branch``. Best effort; safe to
    call twice."""
    run_git(top, "worktree", "remove", "--force", "--force", str(path), check=False)
    if path.exists():
        _rmtree(path)
    run_git(top, "worktree", "prune", check=False)
    with contextlib.suppress(FileNotFoundError):
        meta.unlink()
    if branch is not None:
        run_git(top, "branch", "--quiet", "-D", branch, check=False)


def _meta_path(root: Path, run_id: str) -> Path:
    return root / f"{run_id}.json"


def _write_meta(root: Path, run_id: str, meta: dict[str, Any]) -> None:
    _meta_path(root, run_id).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _rmtree(path: Path) -> None:
    # Build tools leave read-only files and dirs (Go's module cache); make them writable.
    # Never through a link: a test can leave one to a file outside, whose mode the retry
    # then changed (os.chmod follows links; the folder is made writable, a link is not).
    def retry(func: Callable[..., Any], p: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            parent = os.path.dirname(p)
            if not os.path.islink(parent):
                os.chmod(parent, stat.S_IRWXU)
            if not os.path.islink(p):
                os.chmod(p, stat.S_IRWXU)
            func(p)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)


__all__ = [
    "BRANCH_PREFIX",
    "ApplyResult",
    "CheckoutFingerprint",
    "WorkspaceError",
    "Worktree",
    "checkout_fingerprint",
    "dirty_paths",
    "in_folder",
    "outside_reason",
    "prune_dead",
    "prune_due",
]
