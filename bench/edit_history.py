"""Single-file changes from real git history, and the ways models get them wrong.

A case is one commit that modified exactly one Python file: the file before (the
parent's) and after (the commit's), read through git (``log``, ``cat-file --batch``):
the repository is never checked out or written. The change is cut into hunks with 3
lines of context (6 for elisions, to have lines to leave out); each hunk is one edit.
Where a hunk's old text occurs more than once in the file (repetitive code: httpx's
client methods), the context is widened until every hunk's old text occurs once, as the
format asks of a model (its SEARCH text must match one place; a diff's line numbers are
never trusted); a case no width up to 12 makes unique is left out and counted.

A perturbation rewrites every hunk of a case the way a model errs, or says the case has
nothing to perturb (then it is not counted for that kind). Each kind is deterministic for
a seed and a commit.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from difflib import SequenceMatcher
from pathlib import Path

#: changed lines (added + removed) a case may have at most
MAX_CHANGED = 60
#: bytes a file may have at most
MAX_BYTES = 200_000
MARKER = "# ... existing code ..."
#: context widths tried in turn until every hunk's old text occurs once in the file
CONTEXTS = (3, 5, 8, 12)


@dataclass(frozen=True)
class Hunk:
    """(tag, text) lines; ``start`` is the 1-based old line the hunk starts at."""

    ops: tuple[tuple[str, str], ...]
    start: int
    new_start: int
    #: line-number prefixes on the lines copied from the file (wrong on purpose)
    numbers: int | None = None
    #: the header says no line numbers at all
    no_numbers: bool = False

    def old(self) -> list[str]:
        return [t for g, t in self.ops if g != "+"]

    def new(self) -> list[str]:
        return [t for g, t in self.ops if g != "-"]


@dataclass(frozen=True)
class Case:
    repo: str
    commit: str
    path: str
    before: str
    after: str
    hunks: tuple[Hunk, ...] = field(default=())
    #: the context width the hunks were cut with
    context: int = 3


def cases(gitdir: Path, limit: int, stats: dict[str, int] | None = None) -> list[Case]:
    """The most recent single-file Python modifications of ``gitdir`` (up to ``limit``);
    ``stats`` counts the ones left out because no context width made them unique."""
    log = subprocess.run(
        [
            "git",
            "--git-dir",
            str(gitdir),
            "log",
            "--no-merges",
            "--format=%x00%H %P",
            "--name-status",
            "--no-renames",
            "-n",
            "6000",
            "HEAD",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    picked: list[tuple[str, str, str]] = []
    for record in log.split("\0")[1:]:
        head, *rest = record.strip("\n").split("\n")
        shas = head.split()
        files = [line.split("\t") for line in rest if line.strip()]
        if len(shas) != 2 or len(files) != 1 or files[0][0] != "M":
            continue
        path = files[0][1]
        if path.endswith(".py") and " " not in path and '"' not in path:
            picked.append((shas[0], shas[1], path))
    out: list[Case] = []
    with _Blobs(gitdir) as blobs:
        for commit, parent, path in picked:
            before, after = blobs.text(f"{parent}:{path}"), blobs.text(f"{commit}:{path}")
            if before is None or after is None or not _fits(before, after):
                continue
            cut = unique_hunks(before, after, CONTEXTS[0])
            if cut is None:
                if stats is not None:
                    stats["not_unique"] = stats.get("not_unique", 0) + 1
                continue
            hunks, width = cut
            if hunks and sum(1 for h in hunks for g, _ in h.ops if g != " ") <= MAX_CHANGED:
                out.append(Case(str(gitdir), commit, path, before, after, tuple(hunks), width))
            if len(out) >= limit:
                break
    return out


def _fits(before: str, after: str) -> bool:
    return (
        len(before) <= MAX_BYTES
        and len(after) <= MAX_BYTES
        and before.endswith("\n")
        and after.endswith("\n")
        and "\r" not in before + after
        and "\f" not in before + after
        and before != after
    )


class _Blobs:
    """``git cat-file --batch``: one process for every blob read."""

    def __init__(self, gitdir: Path) -> None:
        self.proc = subprocess.Popen(
            ["git", "--git-dir", str(gitdir), "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def __enter__(self) -> _Blobs:
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()

    def text(self, spec: str) -> str | None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(spec.encode() + b"\n")
        self.proc.stdin.flush()
        header = self.proc.stdout.readline().split()
        if len(header) != 3:
            return None
        data = self.proc.stdout.read(int(header[2]))
        self.proc.stdout.read(1)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None


def make_hunks(before: str, after: str, context: int) -> list[Hunk]:
    a, b = before.splitlines(), after.splitlines()
    out: list[Hunk] = []
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    for group in matcher.get_grouped_opcodes(context):
        ops: list[tuple[str, str]] = []
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                ops += [(" ", t) for t in a[i1:i2]]
                continue
            ops += [("-", t) for t in a[i1:i2]]
            ops += [("+", t) for t in b[j1:j2]]
        out.append(Hunk(tuple(ops), group[0][1] + 1, group[0][3] + 1))
    return out


def unique_hunks(before: str, after: str, least: int) -> tuple[list[Hunk], int] | None:
    """The hunks at the narrowest width from ``least`` up whose old texts each occur once
    in ``before``, and that width; None when none up to the widest does."""
    lines = before.splitlines()
    for width in sorted({least, *(c for c in CONTEXTS if c > least)}):
        hunks = make_hunks(before, after, width)
        if all(_occurrences(lines, h.old()) == 1 for h in hunks):
            return hunks, width
    return None


def _occurrences(lines: list[str], old: list[str]) -> int:
    if not old:
        return 0
    n = len(old)
    return sum(
        1 for i in range(len(lines) - n + 1) if lines[i] == old[0] and lines[i : i + n] == old
    )


# ── perturbations ────────────────────────────────────────────────────────────────────────

Perturb = Callable[[Case, random.Random], Case | None]


def _each(case: Case, fn: Callable[[Hunk], Hunk | None]) -> Case | None:
    hunks = [fn(h) for h in case.hunks]
    if all(h is None for h in hunks):
        return None
    return replace(case, hunks=tuple(h or o for h, o in zip(hunks, case.hunks, strict=True)))


def none(case: Case, rng: random.Random) -> Case | None:
    return case


def numbers_wrong(case: Case, rng: random.Random) -> Case | None:
    """Hunk headers off by 5-40 lines; blocks carry copied line numbers, as wrong."""

    def shift(h: Hunk) -> Hunk:
        off = rng.choice([-1, 1]) * rng.randint(5, 40)
        start = max(1, h.start + off)
        return replace(h, start=start, new_start=max(1, h.new_start + off), numbers=start)

    return _each(case, shift)


def numbers_missing(case: Case, rng: random.Random) -> Case | None:
    """Hunk headers with no numbers (``@@ @@``); blocks never carry any."""
    return _each(case, lambda h: replace(h, no_numbers=True))


def _map_copied(h: Hunk, fn: Callable[[str], str]) -> Hunk:
    """Apply ``fn`` to the lines a model copies from the file (context and removed)."""
    return replace(h, ops=tuple((g, fn(t) if g != "+" else t) for g, t in h.ops))


def indentation(case: Case, rng: random.Random) -> Case | None:
    """The whole block shifted: out by 2 or 4 spaces, or dedented to column 0."""

    def shift(h: Hunk) -> Hunk | None:
        texts = [t for _, t in h.ops if t.strip()]
        if not texts:
            return None
        least = min(len(t) - len(t.lstrip(" ")) for t in texts)
        # a dedent must not empty a whitespace-only line (that changes the new text)
        keeps = all(len(t) > least for _, t in h.ops if t and not t.strip())
        how = rng.choice(["+2", "+4", "dedent"] if least >= 2 and keeps else ["+2", "+4"])
        if any(t.startswith("\t") for t in texts):
            return None

        def move(t: str) -> str:
            if not t:
                return t
            return t[least:] if how == "dedent" else " " * int(how[1:]) + t

        return replace(h, ops=tuple((g, move(t)) for g, t in h.ops))

    return _each(case, shift)


def trailing_whitespace(case: Case, rng: random.Random) -> Case | None:
    """Trailing spaces added to some copied lines, and dropped where the file had some."""

    def drift(h: Hunk) -> Hunk | None:
        copied = [i for i, (g, t) in enumerate(h.ops) if g != "+" and t.strip()]
        if not copied:
            return None
        chosen = set(rng.sample(copied, max(1, len(copied) // 3)))
        ops = [
            (g, (t.rstrip() if t != t.rstrip() else t + rng.choice([" ", "  ", "\t"])))
            if i in chosen
            else (g, t)
            for i, (g, t) in enumerate(h.ops)
        ]
        return replace(h, ops=tuple(ops))

    return _each(case, drift)


def dropped_context(case: Case, rng: random.Random) -> Case | None:
    """One non-blank context line left out of each hunk (never the last context line
    before lines added at the block's end, nor the first after lines added at its start:
    without it the block is still exact, and says to add them somewhere else)."""

    def edge(i: int, h: Hunk) -> bool:
        after, before = h.ops[i + 1 :], h.ops[:i]
        return (bool(after) and all(g == "+" for g, _ in after)) or (
            bool(before) and all(g == "+" for g, _ in before)
        )

    def drop(h: Hunk) -> Hunk | None:
        ctx = [i for i, (g, t) in enumerate(h.ops) if g == " " and t.strip() and not edge(i, h)]
        if not ctx:
            return None
        gone = rng.choice(ctx)
        return replace(h, ops=tuple(op for i, op in enumerate(h.ops) if i != gone))

    return _each(case, drop)


def extra_context(case: Case, rng: random.Random) -> Case | None:
    """A line from elsewhere in the file put among each hunk's context lines."""
    lines = case.before.splitlines()

    def add(h: Hunk) -> Hunk | None:
        far = [
            t
            for i, t in enumerate(lines)
            if t.strip() and abs(i + 1 - h.start) > 20 and t not in h.old()
        ]
        spots = [i for i, (g, _) in enumerate(h.ops) if g == " "] + [len(h.ops)]
        if not far or len(spots) < 2:
            return None
        at = rng.choice(spots)
        ops = list(h.ops)
        ops.insert(at, (" ", rng.choice(far)))
        return replace(h, ops=tuple(ops))

    return _each(case, add)


def elided(case: Case, rng: random.Random) -> Case | None:
    """With 6 lines of context (more where 6 is not unique), the middle of the longest
    context run becomes ``# ... existing code ...`` (in SEARCH and REPLACE alike)."""
    cut = unique_hunks(case.before, case.after, max(6, case.context))
    if cut is None:
        return None
    wide = replace(case, hunks=tuple(cut[0]), context=cut[1])

    def elide(h: Hunk) -> Hunk | None:
        runs: list[tuple[int, int]] = []
        i = 0
        while i < len(h.ops):
            if h.ops[i][0] != " ":
                i += 1
                continue
            j = i
            while j < len(h.ops) and h.ops[j][0] == " ":
                j += 1
            runs.append((i, j))
            i = j
        runs = [r for r in runs if r[1] - r[0] >= 4]
        if not runs:
            return None
        i, j = max(runs, key=lambda r: r[1] - r[0])
        # keep one line at the run's far end, and two next to a change
        if i == 0:
            lo, hi = i + 1, j - 2
        elif j == len(h.ops):
            lo, hi = i + 2, j - 1
        else:
            lo, hi = i + 1, j - 1
        if hi - lo < 1:
            return None
        gone = h.ops[lo:hi]
        indent = next((t[: len(t) - len(t.lstrip())] for _, t in gone if t.strip()), "")
        ops = [*h.ops[:lo], (" ", indent + MARKER), *h.ops[hi:]]
        return replace(h, ops=tuple(ops))

    return _each(wide, elide)


def tabs_spaces(case: Case, rng: random.Random) -> Case | None:
    """Leading runs of four spaces written as tabs (or tabs as four spaces)."""

    def swap(h: Hunk) -> Hunk | None:
        if not any(t[:1] in (" ", "\t") and t.strip() for _, t in h.ops):
            return None

        def conv(t: str) -> str:
            body = t.lstrip(" \t")
            ws = t[: len(t) - len(body)]
            if "\t" in ws:
                return ws.replace("\t", "    ") + body
            return "\t" * (len(ws) // 4) + " " * (len(ws) % 4) + body

        return replace(h, ops=tuple((g, conv(t)) for g, t in h.ops))

    return _each(case, swap)


def occurs_twice(case: Case, rng: random.Random) -> Case | None:
    """A copy of the first hunk's old text appended to the file (before and after): the
    edit's text now occurs twice, so it must be refused or placed by line numbers."""
    copy = "\n" + "".join(t + "\n" for t in case.hunks[0].old())
    return replace(case, before=case.before + copy, after=case.after + copy)


KINDS: dict[str, Perturb] = {
    "none": none,
    "line numbers wrong": numbers_wrong,
    "line numbers missing": numbers_missing,
    "indentation drift": indentation,
    "trailing whitespace": trailing_whitespace,
    "dropped context line": dropped_context,
    "extra context line": extra_context,
    "elided lines": elided,
    "tabs/spaces swapped": tabs_spaces,
    "occurs twice": occurs_twice,
}
