"""What the grounding checks know of a repository (read once per run, off the loop)."""

from __future__ import annotations

import os
from pathlib import Path

from app.paths import STATE_DIR_NAME
from app.pipeline.grounding import RepoFacts, identifiers

#: files larger than this are listed but not read for identifiers
MAX_READ_BYTES = 256_000
#: files read for identifiers at most (a huge repo's facts stay bounded)
MAX_READ_FILES = 4000
_SKIP_DIRS = frozenset(
    {".git", STATE_DIR_NAME, "__pycache__", ".venv", "node_modules", ".mypy_cache", ".tox"}
)


def repo_facts(root: Path, rev: str | None = None) -> RepoFacts:
    """The repository's files (relative paths) and the identifiers their texts hold: of
    the working tree, or of commit ``rev``'s tree (a run's: a plan is grounded in the
    files its worktree will have, not in the user's uncommitted or untracked ones)."""
    if rev is not None:
        return _facts_at(root, rev)
    files: set[str] = set()
    names: set[str] = set()
    read = 0
    for folder, dirs, entries in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for entry in sorted(entries):
            path = Path(folder) / entry
            rel = path.relative_to(root).as_posix()
            files.add(rel)
            if read >= MAX_READ_FILES:
                continue
            try:
                if path.stat().st_size > MAX_READ_BYTES:
                    continue
                data = path.read_bytes()
            except OSError:
                continue
            if b"\0" in data[:1024]:
                continue  # binary
            read += 1
            names |= identifiers(data.decode("utf-8", errors="replace"))
    return RepoFacts(files=frozenset(files), identifiers=frozenset(names))


def _facts_at(root: Path, rev: str) -> RepoFacts:
    """:func:`repo_facts` of a commit, read through git (paths relative to ``root``, as
    the walk gives them: ``ls-tree`` from a folder lists that folder's part of the tree)."""
    from app.stage0.corpus import read_blobs, run_git

    out = run_git(root, "ls-tree", "-r", "-l", "-z", rev)
    files: set[str] = set()
    wanted: list[str] = []
    for record in out.split(b"\0"):
        head, _, raw = record.partition(b"\t")
        fields = head.split()
        if len(fields) != 4 or fields[1] != b"blob":
            continue  # (a submodule's commit, or the empty end)
        rel = raw.decode("utf-8", errors="replace")
        if _SKIP_DIRS.intersection(rel.split("/")[:-1]):
            continue
        files.add(rel)
        size = fields[3]
        small = size.isdigit() and int(size) <= MAX_READ_BYTES
        if fields[0] != b"120000" and small and len(wanted) < MAX_READ_FILES:
            wanted.append(fields[2].decode())
    names: set[str] = set()
    for data in read_blobs(root, wanted).values():
        if b"\0" not in data[:1024]:  # binary
            names |= identifiers(data.decode("utf-8", errors="replace"))
    return RepoFacts(files=frozenset(files), identifiers=frozenset(names))
