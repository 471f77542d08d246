"""The git harvester: commits and recorded session outcomes become memories, idempotently.

A commit becomes one ``commit`` memory: its message, then the files it touched with
their diff stats (``git log --numstat``), keyed ``git:<sha>`` so that it is harvested
once however often the harvester runs. Merge commits are skipped (their message says
little and their diff is their parents'). Session outcomes that the pipeline recorded
(:meth:`app.memory.store.MemoryStore.record_outcome`) and that have no memory yet are
swept in as well.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from app.errors import UsageError
from app.memory.store import MemoryStore
from app.memory.types import NewMemory
from app.subprocess_env import git_env

#: files listed in a commit memory's text (all of them are kept in its meta)
TEXT_FILES = 20
#: files kept in a commit memory's meta
META_FILES = 500
#: the longest commit message kept, in characters
MAX_MESSAGE = 4000

#: the record and field marks of one harvest's git log: a control character and a token
#: made afresh each time. With bare \x1e and \x1f, a commit message holding one (anyone
#: who wrote the repository can) was never harvested or invented its own file counts.
Marks = tuple[str, str]


def _marks() -> Marks:
    token = secrets.token_hex(8)
    return f"\x1e{token}\x1e", f"\x1f{token}\x1f"


def _format(marks: Marks) -> str:
    rs, us = marks
    return f"{rs}%H{us}%P{us}%an{us}%cI{us}%B{us}"


class HarvestError(UsageError):
    """The repository or the ref cannot be read (exit code 2)."""


@dataclass(frozen=True)
class FileStat:
    path: str
    added: int | None  # None: a binary file
    deleted: int | None


@dataclass(frozen=True)
class Commit:
    sha: str
    parents: tuple[str, ...]
    author: str
    date: datetime
    message: str
    files: tuple[FileStat, ...]

    @property
    def subject(self) -> str:
        return self.message.split("\n", 1)[0]

    @property
    def insertions(self) -> int:
        return sum(f.added or 0 for f in self.files)

    @property
    def deletions(self) -> int:
        return sum(f.deleted or 0 for f in self.files)


@dataclass(frozen=True)
class HarvestReport:
    repo: str
    since: str | None
    commits_seen: int
    commits_added: int
    commits_skipped: int  # harvested before
    outcomes_added: int
    memory_ids: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "since": self.since,
            "commits_seen": self.commits_seen,
            "commits_added": self.commits_added,
            "commits_skipped": self.commits_skipped,
            "outcomes_added": self.outcomes_added,
            "memory_ids": list(self.memory_ids),
        }


async def harvest(
    store: MemoryStore,
    repo: Path,
    *,
    since: str | None = None,
    limit: int | None = None,
    outcomes: bool = True,
) -> HarvestReport:
    """Harvest ``repo``'s commits after ``since`` (all of HEAD's history without it)."""
    top = await repo_root(repo)
    commits = await read_commits(top, since=since, limit=limit)
    ids = await store.add_many([commit_memory(c) for c in commits])
    added = [i for i in ids if i is not None]
    outcome_ids = await store.harvest_outcomes() if outcomes else []
    return HarvestReport(
        repo=str(top),
        since=since,
        commits_seen=len(commits),
        commits_added=len(added),
        commits_skipped=len(commits) - len(added),
        outcomes_added=len(outcome_ids),
        memory_ids=tuple(added + outcome_ids),
    )


def commit_memory(commit: Commit) -> NewMemory:
    message = commit.message.strip() or "(no commit message)"
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    lines = [message, ""]
    n = len(commit.files)
    lines.append(
        f"Files: {n} changed, +{commit.insertions} −{commit.deletions}" if n else "Files: none"
    )
    for f in commit.files[:TEXT_FILES]:
        lines.append(f"{f.path} {_stat(f)}")
    if n > TEXT_FILES:
        lines.append(f"… and {n - TEXT_FILES} more")
    return NewMemory(
        text="\n".join(lines),
        kind="commit",
        tags=("commit",),
        source=f"git:{commit.sha}",
        source_key=f"git:{commit.sha}",
        created=commit.date,
        meta={
            "sha": commit.sha,
            "parents": list(commit.parents),
            "author": commit.author,
            "date": commit.date.isoformat(),
            "subject": commit.subject,
            "files_changed": n,
            "insertions": commit.insertions,
            "deletions": commit.deletions,
            "files": [
                {"path": f.path, "added": f.added, "deleted": f.deleted}
                for f in commit.files[:META_FILES]
            ],
        },
    )


def _stat(f: FileStat) -> str:
    if f.added is None or f.deleted is None:
        return "(binary)"
    return f"+{f.added} −{f.deleted}"


# ── git ──────────────────────────────────────────────────────────────────────────────────


async def repo_root(repo: Path) -> Path:
    if not await asyncio.to_thread(repo.is_dir):
        there = await asyncio.to_thread(repo.exists)
        raise HarvestError(f"{repo}: {'not a directory' if there else 'no such directory'}")
    code, out, err = await _git(repo, "rev-parse", "--show-toplevel")
    if code != 0:
        raise HarvestError(f"{repo}: not a git repository ({_first_line(err)})")
    return Path(out.strip())


async def read_commits(
    repo: Path, *, since: str | None = None, limit: int | None = None
) -> list[Commit]:
    """Non-merge commits reachable from HEAD (after ``since``), oldest first."""
    if limit is not None and limit < 1:
        raise HarvestError(f"limit must be >= 1, got {limit}")
    if not await has_head(repo):
        return []  # a repository without commits yet
    base = await resolve_since(repo, since)
    revision = f"{base}..HEAD" if base is not None else "HEAD"
    args = [
        "log",
        "--no-merges",
        "--no-renames",
        "--numstat",
        "--no-color",
        "--encoding=UTF-8",
        "--reverse",
        f"--format={_format(marks := _marks())}",
    ]
    if limit is not None:
        args.append(f"--max-count={limit}")
    code, out, err = await _git(repo, *args, revision, "--")
    if code != 0:
        raise HarvestError(f"git log failed in {repo}: {_first_line(err)}")
    return parse_log(out, marks)


async def has_head(repo: Path) -> bool:
    code, _, _ = await _git(repo, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    return code == 0


async def resolve_since(repo: Path, since: str | None) -> str | None:
    """The commit ``since`` names (a sha), or None without one; HarvestError if unknown."""
    if since is None:
        return None
    if not since.strip() or since.startswith("-"):
        raise HarvestError(f"--since {since!r}: not a revision")
    code, out, _ = await _git(repo, "rev-parse", "--verify", "--quiet", f"{since}^{{commit}}")
    if code != 0:
        raise HarvestError(f"--since {since!r}: no such commit in {repo}")
    return out.strip()


def parse_log(text: str, marks: Marks) -> list[Commit]:
    rs, us = marks
    commits = []
    for record in text.split(rs)[1:]:
        fields = record.split(us, 5)
        if len(fields) != 6:
            continue
        sha, parents, author, date, message, rest = fields
        files = []
        for line in rest.splitlines():
            parts = line.split("\t", 2)
            if len(parts) != 3:
                continue
            added, deleted, path = parts
            files.append(FileStat(path=path, added=_count(added), deleted=_count(deleted)))
        commits.append(
            Commit(
                sha=sha.strip(),
                parents=tuple(parents.split()),
                author=author,
                date=datetime.fromisoformat(date.strip()),
                message=message.strip(),
                files=tuple(files),
            )
        )
    return commits


def _count(text: str) -> int | None:
    return int(text) if text.isdigit() else None


async def _git(repo: Path, *args: str) -> tuple[int, str, str]:
    # an allowlist, not the parent's environment: no provider key reaches git (GR-009)
    env = git_env({"GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "LC_ALL": "C"})
    command: Sequence[str] = (
        "git",
        "-C",
        str(repo),
        "-c",
        "core.quotePath=false",
        "-c",
        "log.showSignature=false",
        *args,
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except FileNotFoundError:
        raise HarvestError("git is not installed (no `git` on PATH)") from None
    out, err = await proc.communicate()
    return (
        proc.returncode if proc.returncode is not None else -1,
        out.decode("utf-8", errors="replace"),
        err.decode("utf-8", errors="replace"),
    )


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return "no detail"
