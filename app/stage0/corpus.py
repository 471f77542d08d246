"""Which files Stage0 reads: the working tree as git sees it, or a committed tree.

The working tree comes from ``git ls-files --cached --others --exclude-standard``:
tracked files and untracked ones that no ignore rule hides, so ``.gitignore`` is
respected. A committed tree (``rev``) comes from ``git ls-tree`` and is read with
``git cat-file``, never checked out; the retrieval benchmark indexes parent commits
this way without touching the repository.

Every file is known by its git blob id (``sha1("blob <size>\\0" + bytes)``), computed here
for working-tree files, so both sources share one per-content cache. A working-tree
file whose size, mtime, ctime and inode match the last scan is not read again, unless
its mtime was within :data:`RACY_NS` of that scan (git's "racily clean" rule: a write
in the same clock tick as the scan would otherwise go unseen).

Only what lies in the repository is read: a path that goes through a symbolic link (a
linked file, or a linked folder on the way to it) is skipped and counted, never
followed, so a link planted in a checkout cannot feed another file to a model. Each
folder is looked at once per scan, not once per file.

A file name that is not UTF-8 is known by a readable form (each byte that is not UTF-8
shown as ``\\xNN``, see :func:`shown_path`): that form goes to the cache, the index and
the output; the name on disk is kept beside it to read the file.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from app.errors import UsageError
from app.git_says import OWNED_BY_ANOTHER, git_says
from app.paths import STATE_DIR_NAME
from app.regular_file import open_regular
from app.subprocess_env import git_env

#: A file modified this close to a scan is re-hashed on the next scan.
RACY_NS = 2_000_000_000
BINARY_SNIFF = 8192

Progress = Callable[[str, int, int], None]


class NotAGitRepo(UsageError):
    """Stage0 reads what git tracks; a plain directory cannot be indexed."""


class GitError(UsageError):
    """A git command failed on what the user gave (bad revision, broken repository)."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str  # POSIX, relative to the repository root
    blob: str  # git blob id of the content
    size: int


@dataclass(frozen=True, slots=True)
class StatRow:
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    blob: str
    racy: bool


@dataclass
class Scan:
    """A listing of the files to index, with counts of what was left out and why."""

    entries: list[FileEntry]
    skipped: Counter[str] = field(default_factory=Counter)
    #: contents already in memory (read to hash them), by blob id
    contents: dict[str, bytes] = field(default_factory=dict)
    #: paths read from disk in this scan (a working-tree scan only)
    read: list[str] = field(default_factory=list)
    #: new stat rows to remember (a working-tree scan only)
    stats: dict[str, StatRow] = field(default_factory=dict)
    #: the name on disk of each listed path whose name is not UTF-8 (see shown_path)
    on_disk: dict[str, str] = field(default_factory=dict)


def git_blob_id(data: bytes) -> str:
    h = hashlib.sha1(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


def is_binary(data: bytes) -> bool:
    return b"\0" in data[:BINARY_SNIFF]


def run_git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args],
            input=stdin,
            capture_output=True,
            check=False,
            env=git_env(),  # an allowlist: no provider key reaches git (GR-009)
        )
    except FileNotFoundError:
        raise UsageError("git is not installed (Stage0 reads the repository through it)") from None
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace")
        if OWNED_BY_ANOTHER in said:  # (its last line was the command to copy)
            raise GitError(git_says(said, repo))
        msg = said.strip().splitlines()
        raise GitError(f"git {args[0]} failed in {repo}: {msg[-1] if msg else 'no message'}")
    return done.stdout


def check_repo(repo: Path, *, worktree: bool = True) -> Path:
    """``repo`` resolved, or :class:`NotAGitRepo` (exit 2) with one line.

    ``worktree=False`` also accepts a bare repository (committed trees only).
    """
    if not repo.exists():
        raise NotAGitRepo(f"{repo}: no such directory")
    if not repo.is_dir():
        raise NotAGitRepo(f"{repo}: not a directory")
    try:
        out = run_git(repo, "rev-parse", "--is-inside-work-tree", "--is-bare-repository")
    except GitError as exc:
        if OWNED_BY_ANOTHER in str(exc):  # (git's reason, not "not a git repository")
            raise NotAGitRepo(str(exc)) from None
        raise NotAGitRepo(f"{repo}: not a git repository") from None
    inside, bare = [*out.split(), b"", b""][:2]
    if inside != b"true" and not (bare == b"true" and not worktree):
        what = "has no working tree" if bare == b"true" else "is not a git repository"
        raise NotAGitRepo(f"{repo}: {what}")
    return repo.resolve()


def shown_path(raw: bytes) -> str:
    """A path as git gave it, as text that any store and terminal takes: UTF-8, with
    each byte that is not UTF-8 shown as ``\\xNN`` (a lone surrogate, which
    ``surrogateescape`` would give, cannot be stored in SQLite nor printed)."""
    return raw.decode("utf-8", "backslashreplace")


def _listing(repo: Path) -> tuple[dict[str, str], int]:
    """Shown path → name on disk of every file git sees, and how many names were left
    out because their shown form is another file's real name (``a\\xe9`` beside a file
    literally called so: the real UTF-8 name wins)."""
    out = run_git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    prefix = (STATE_DIR_NAME + "/").encode()
    names: dict[str, str] = {}
    clashes = 0
    # real UTF-8 names first, so a clash always drops the undecodable one
    raws = sorted({p for p in out.split(b"\0") if p and not p.startswith(prefix)})
    for raw in sorted(raws, key=lambda r: shown_path(r) != os.fsdecode(r)):
        shown = shown_path(raw)
        if shown in names:
            clashes += 1
            continue
        names[shown] = os.fsdecode(raw)
    return names, clashes


def list_worktree(repo: Path) -> list[str]:
    return sorted(_listing(repo)[0])


class RepoDirs:
    """Which folders of a working tree are real folders inside it, each looked at once
    (a scan of a big repository asks for the same few thousand folders again and again).

    :meth:`skip` gives why a file's path cannot be read as lying in the repository: a
    folder on the way is a symbolic link (it may lead anywhere), or a component is
    ``..``. None: read it (a folder that is missing just makes the file missing)."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self._seen: dict[str, str | None] = {"": None}

    def skip(self, rel: str) -> str | None:
        parts = rel.split("/")
        if any(p in ("", ".", "..") for p in parts):
            return "not_a_file"
        return self._folder(rel.rpartition("/")[0])

    def _folder(self, rel: str) -> str | None:
        if rel in self._seen:
            return self._seen[rel]
        why = self._folder(rel.rpartition("/")[0])
        if why is None:
            try:
                if stat.S_ISLNK(os.lstat(self.repo / rel).st_mode):
                    why = "symlinked_dir"
            except (FileNotFoundError, NotADirectoryError):
                pass  # gone: the file's own lstat says "missing"
            except OSError:
                why = "unreadable"
        self._seen[rel] = why
        return why


def read_regular(path: Path, limit: int, expect: os.stat_result | None = None) -> bytes:
    """At most ``limit`` + 1 bytes of ``path``, a regular file, never through a symbolic
    link as its last component (``O_NOFOLLOW``: the folders are :class:`RepoDirs`' to
    check). ``expect``: the file's lstat, which the opened file must still match (it
    was not swapped since). OSError otherwise."""
    with open_regular(path, expect) as fh:
        return fh.read(limit + 1)


def read_repo_file(repo: Path, rel: str, limit: int) -> bytes | None:
    """The content of the working tree's file ``rel`` (POSIX, relative), or None when it
    is not a regular file in the repository, goes through a symbolic link, is larger
    than ``limit`` bytes or cannot be read: what a scan would skip."""
    if RepoDirs(repo).skip(rel) is not None:
        return None
    full = repo / rel
    try:
        st = os.lstat(full)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        data = read_regular(full, limit, st)
    except OSError:
        return None
    return data if len(data) <= limit else None


def scan_worktree(
    repo: Path,
    max_file_bytes: int,
    known: dict[str, StatRow],
    progress: Progress | None = None,
    now_ns: Callable[[], int] = time.time_ns,
) -> Scan:
    """List, stat and (where the stat changed) hash the working tree's files."""
    started = now_ns()
    names, clashes = _listing(repo)
    paths = sorted(names)
    scan = Scan(entries=[])
    if clashes:
        scan.skipped["name_clash"] += clashes
    dirs = RepoDirs(repo)
    total = len(paths)
    for i, rel in enumerate(paths):
        if progress is not None and i % 64 == 0:
            progress("scan", i, total)
        on_disk = names[rel]
        why = dirs.skip(on_disk)
        if why is not None:
            scan.skipped[why] += 1
            continue
        full = repo / on_disk
        try:
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            scan.skipped["missing"] += 1
            continue
        except OSError:
            scan.skipped["unreadable"] += 1
            continue
        if not stat.S_ISREG(st.st_mode):
            scan.skipped["not_a_file"] += 1
            continue
        if st.st_size > max_file_bytes:
            scan.skipped["too_large"] += 1
            continue
        old = known.get(rel)
        if (
            old is not None
            and not old.racy
            and (old.size, old.mtime_ns, old.ctime_ns, old.ino)
            == (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        ):
            if on_disk != rel:
                scan.on_disk[rel] = on_disk
            scan.entries.append(FileEntry(rel, old.blob, old.size))
            continue
        try:
            data = read_regular(full, max_file_bytes, st)
        except OSError:
            scan.skipped["unreadable"] += 1
            continue
        if len(data) > max_file_bytes:  # grew between stat and read
            scan.skipped["too_large"] += 1
            continue
        if on_disk != rel:
            scan.on_disk[rel] = on_disk
        blob = git_blob_id(data)
        scan.read.append(rel)
        scan.contents[blob] = data
        racy = st.st_mtime_ns >= started - RACY_NS
        scan.stats[rel] = StatRow(
            len(data), st.st_mtime_ns, st.st_ctime_ns, st.st_ino, blob, racy=racy
        )
        scan.entries.append(FileEntry(rel, blob, len(data)))
    if progress is not None:
        progress("scan", total, total)
    return scan


_STATE_PREFIX = (STATE_DIR_NAME + "/").encode()


def scan_tree(repo: Path, rev: str, max_file_bytes: int) -> Scan:
    """The files of a committed tree (blob ids and sizes straight from git)."""
    out = run_git(repo, "ls-tree", "-r", "-l", "-z", "--full-tree", rev)
    scan = Scan(entries=[])
    for record in out.split(b"\0"):
        if not record:
            continue
        head, _, raw_path = record.partition(b"\t")
        mode, kind, blob, size = head.split()
        path = shown_path(raw_path)  # read through git by blob id, never by name
        if raw_path.startswith(_STATE_PREFIX):
            # Switchyard's own state, as the working tree's scan leaves it out: a commit
            # holding it (a config force-added, a planted "evidence") is not the project's
            scan.skipped["state_dir"] += 1
            continue
        if kind != b"blob" or mode == b"120000":
            scan.skipped["not_a_file"] += 1
            continue
        if int(size) > max_file_bytes:
            scan.skipped["too_large"] += 1
            continue
        scan.entries.append(FileEntry(path, blob.decode("ascii"), int(size)))
    scan.entries.sort(key=lambda e: e.path)
    return scan


def read_blobs(repo: Path, blobs: Iterable[str]) -> dict[str, bytes]:
    """Contents of blobs by id, in one ``git cat-file --batch`` call."""
    wanted = sorted(set(blobs))
    if not wanted:
        return {}
    out = run_git(repo, "cat-file", "--batch", stdin="".join(b + "\n" for b in wanted).encode())
    found: dict[str, bytes] = {}
    pos = 0
    for blob in wanted:
        eol = out.index(b"\n", pos)
        header = out[pos:eol].split()
        pos = eol + 1
        if len(header) < 3 or header[1] == b"missing":
            continue
        size = int(header[2])
        found[blob] = out[pos : pos + size]
        pos += size + 1  # content, then a newline
    return found


def read_worktree(
    repo: Path,
    wanted: Iterable[tuple[str, str]],
    max_file_bytes: int,
    on_disk: Mapping[str, str] | None = None,
) -> dict[str, bytes]:
    """Contents of working-tree files given as (path, expected blob id), by blob id.

    A file that cannot be read as a scan would (through a symbolic link, larger than
    ``max_file_bytes``), or whose content no longer has the expected id (it changed
    after its stat was taken), is left out. ``on_disk``: names on disk of paths that
    are not UTF-8 (:attr:`Scan.on_disk`).
    """
    found: dict[str, bytes] = {}
    dirs = RepoDirs(repo)
    for path, blob in wanted:
        name = (on_disk or {}).get(path, path)
        if dirs.skip(name) is not None:
            continue
        try:
            data = read_regular(repo / name, max_file_bytes)
        except OSError:
            continue
        if git_blob_id(data) == blob:
            found[blob] = data
    return found


def decode(data: bytes) -> str:
    """Text of a file: UTF-8 (a BOM dropped), undecodable bytes replaced."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", "replace")
