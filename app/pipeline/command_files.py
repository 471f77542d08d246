"""The repository files a run's test command runs, followed through what it reaches.

A change to one of them writes the test verdict itself, so it is High-Risk (GR-002's
cloud Judge reads it). ``--test-command ./check.sh`` named its script, but ``make test``
reached ``./check.sh`` through the Makefile, and an audit merged a change that replaced
the check with ``exit 0`` on a local Judge's word. So the files are found the way the
command would find them:

- each argument that is a file of the repository (``./check.sh``, ``scripts/test.sh``);
- the words of a ``sh -c "..."`` string, the same way;
- the task file a runner reads (``make`` → ``Makefile``, ``npm test`` → ``package.json``,
  ``just``, ``task``, ``tox``, ``nox``, ``cargo`` → ``build.rs``; ``uv``/``poetry``/
  ``hatch``/``pdm`` → ``pyproject.toml``);
- inside each file found, every word naming a script of the repository (by its suffix, a
  task file's name, or its executable bit), and so on, a bounded number of files deep.

It errs on the side of finding too much: a file found that the command does not in
fact run costs a cloud Judge's look, a file missed costs a verdict the change wrote. A
search that reaches :data:`MAX_FILES` gives up and says so (None): the caller then
counts every file the change touches.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

#: runner → the files it reads its tasks from (first existing ones count, all of them)
RUNNER_FILES: dict[str, tuple[str, ...]] = {
    "make": ("GNUmakefile", "makefile", "Makefile"),
    "gmake": ("GNUmakefile", "makefile", "Makefile"),
    "just": ("justfile", ".justfile", "Justfile"),
    "task": ("Taskfile.yml", "Taskfile.yaml", "taskfile.yml", "taskfile.yaml"),
    "npm": ("package.json",),
    "npx": ("package.json",),
    "yarn": ("package.json",),
    "pnpm": ("package.json",),
    "bun": ("package.json",),
    "tox": ("tox.ini",),
    "nox": ("noxfile.py",),
    "cargo": ("build.rs", "Cargo.toml"),
    "uv": ("pyproject.toml",),
    "poetry": ("pyproject.toml",),
    "hatch": ("pyproject.toml",),
    "pdm": ("pyproject.toml",),
}
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh"})
#: a word in a file that may name another script it runs
_SCRIPT_SUFFIXES = (
    ".sh", ".bash", ".zsh", ".py", ".pl", ".rb", ".js", ".mjs", ".cjs", ".ts", ".mk",
    ".bat", ".cmd", ".ps1",
)  # fmt: skip
_TASK_NAMES = frozenset(n for files in RUNNER_FILES.values() for n in files)
#: a shell's flags that end with ``c``: the next word is a script (``-c``, ``-lc``, ``-euc``)
_RUNS_STRING = re.compile(r"^-[a-zA-Z]*c[a-zA-Z]*$")
_WORD = re.compile(r"[\w.@+/-]+")
#: how many files the search reads, and how much of each
MAX_FILES = 64
MAX_BYTES = 256 * 1024


def command_files(argv: Sequence[str], root: Path) -> list[str] | None:
    """The repository files ``argv`` runs or reads its tasks from, and the scripts those
    name in turn, as paths from ``root`` (sorted, each once); None when there are more
    than :data:`MAX_FILES` (a Makefile naming seventy sources before ``./check.sh`` hid
    the script: the search must not stop quietly)."""
    top = root.resolve()
    found: dict[str, None] = {}
    queue: list[str] = []

    def add(rel: str) -> bool:
        if rel in found:
            return True
        if len(found) >= MAX_FILES:
            return False
        found[rel] = None
        queue.append(rel)
        return True

    for rel in _from_argv(argv, top):
        if not add(rel):
            return None
    while queue:
        rel = queue.pop(0)
        for named in _named_scripts(top / rel, top):
            if not add(named):
                return None
    return sorted(found)


def _from_argv(argv: Sequence[str], top: Path) -> Iterable[str]:
    words = [a for a in argv if a and "\0" not in a]
    for i, word in enumerate(words):
        name = os.path.basename(word)
        if name in _SHELLS:  # sh -c "make check && ./check.sh", bash -lc / -euc "..."
            rest = words[i + 1 :]
            flag = next((j for j, w in enumerate(rest) if _RUNS_STRING.match(w)), None)
            if flag is not None and flag + 1 < len(rest):
                yield from _from_argv(_split(rest[flag + 1]), top)
        for task_file in RUNNER_FILES.get(name, ()):
            rel = _inside(top, task_file)
            if rel is not None:
                yield rel
        if not word.startswith("-"):
            rel = _inside(top, word)
            if rel is not None:
                yield rel


def _named_scripts(path: Path, top: Path) -> Iterable[str]:
    """The repository scripts a file's words name (its text read, bounded)."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_BYTES)
    except OSError:
        return
    if b"\0" in data[:8192]:
        return  # a binary runs nothing we could read
    text = data.decode("utf-8", errors="replace")
    for word in dict.fromkeys(_WORD.findall(text)):
        bare = word.rstrip(".,;:")
        if not bare or bare.startswith("-"):
            continue
        for task_file in RUNNER_FILES.get(bare, ()):  # a script that runs `make test`
            rel = _inside(top, task_file)
            if rel is not None:
                yield rel
        # "$(CURDIR)/scripts/check" reads as the word "/scripts/check": from the top too
        rel = _inside(top, bare, base=path.parent) or (
            _inside(top, bare.lstrip("/")) if bare.startswith("/") else None
        )
        if rel is not None and _is_script(top / rel, bare):
            yield rel


def _is_script(path: Path, word: str) -> bool:
    name = os.path.basename(word)
    if name in _TASK_NAMES or name.endswith(_SCRIPT_SUFFIXES):
        return True
    try:
        return bool(path.stat().st_mode & stat.S_IXUSR)
    except OSError:
        return False


def _inside(top: Path, word: str, *, base: Path | None = None) -> str | None:
    """``word`` as a regular file inside ``top`` (from ``top``, or from ``base`` too),
    else None. Never follows a link out of the repository."""
    for start in (top, base) if base is not None and base != top else (top,):
        try:
            target = (start / word).resolve()
            if target.is_relative_to(top) and target.is_file():
                return target.relative_to(top).as_posix()
        except (OSError, ValueError):
            continue
    return None


def _split(script: str) -> list[str]:
    try:
        words = shlex.split(script, comments=True)
    except ValueError:  # an unclosed quote: the words as they stand
        words = script.split()
    return [w for w in words if w not in ("&&", "||", ";", "|", "&")]
