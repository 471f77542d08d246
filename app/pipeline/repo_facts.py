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


def repo_facts(root: Path) -> RepoFacts:
    """The repository's files (relative paths) and the identifiers their texts hold."""
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
