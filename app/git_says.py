"""What git said when it refused, in one line a person can act on.

Git's refusals run over several lines (a hint, an empty line, a command to copy), and a
repository owned by another user is refused as "dubious ownership" by every command,
where Switchyard said "not a git repository" and advised ``git init`` (an audit). Every
face that shows git's refusal shows it through :func:`git_says`.
"""

from __future__ import annotations

from pathlib import Path

#: what git says of a repository another user owns (git ≥ 2.35.2, safe.directory)
OWNED_BY_ANOTHER = "dubious ownership"


def git_says(stderr: str, path: Path | str) -> str:
    """Git's refusal of ``path`` in one line: its first line without ``fatal:``, or, for a
    repository another user owns, that and the command git suggests."""
    text = stderr.strip()
    if OWNED_BY_ANOTHER in text:
        return (
            f"{path} belongs to another user and git refuses to work in it (dubious"
            f" ownership); if you trust it: git config --global --add safe.directory {path}"
        )
    for line in text.splitlines():
        line = line.strip().removeprefix("fatal:").removeprefix("error:").strip()
        if line:
            return line
    return "git gave no reason"
