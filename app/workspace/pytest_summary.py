"""What a pytest run's own summary line says passed: a run whose every test was skipped
(or expected to fail) exits 0, and a run with nothing passing is no green (GR-006: the
tests' verdict is the truth the loop is judged by). Nor is a run that printed no summary
where the run's first loop did: it ended before its tests were counted (an
``os._exit(0)`` in the code under test, a user audit).

Pure: the command and its output in, a reason or None out. Only a summary pytest printed
is read (``-qq`` prints none, in every loop: read by its exit code, as before). Also read
here: pytest's refusal of its own command line (:func:`usage_error`), which no change to
the code can mend (app/workspace/broken_command.py).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

#: "=== 1 passed, 2 skipped in 0.12s ===", "3 skipped in 0.01s",
#: "1 xfailed, 1 warning in 2.01s (0:00:02)"
_SUMMARY = re.compile(
    r"^=*\s*(?P<counts>\d+ [a-z]+(?:, \d+ [a-z]+)*) in [\d.]+s(?: \([\d:]+\))?\s*=*\s*$"
)
_COUNT = re.compile(r"(\d+) ([a-z]+)")
#: a terminal's colour codes (``--color=yes``, often in a project's addopts)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: argparse's refusal of the command line, as pytest prints it before it exits 4:
#: "ERROR: usage: pytest [options] [file_or_dir] …" then "pytest: error: unrecognized
#: arguments: --x" (an option on the command line, or in the project's addopts)
_USAGE = re.compile(r"^(?:ERROR: )?usage: .*\n\S+: error: (?P<error>.+)$", re.M)


def is_pytest(argv: Sequence[str]) -> bool:
    """``pytest …``, ``py.test …``, ``python -m pytest …`` (any path to them)."""
    if not argv:
        return False
    program = argv[0].rsplit("/", 1)[-1]
    if program in ("pytest", "py.test"):
        return True
    return any(a == "-m" and b == "pytest" for a, b in itertools.pairwise(argv))


def usage_error(output: str) -> str | None:
    """What pytest's argument parser refused ("unrecognized arguments: --x"), or None.
    Its other exit-4 cases (a path that is not there, a conftest that fails to import)
    print no usage line: they are not the command line's fault."""
    m = _USAGE.search(_ANSI.sub("", output))
    return m["error"].strip() if m is not None else None


def summary_of(output: str) -> str | None:
    """The counts of the last pytest summary line in ``output`` ("1 passed, 2 skipped"),
    colour codes aside; None when there is none."""
    # (every line: a make target's lint after pytest pushed the summary past the last 50,
    # and a green loop read as one with no summary: a review)
    for line in reversed(output.splitlines()):
        m = _SUMMARY.match(_ANSI.sub("", line).strip())
        if m is not None:
            return m["counts"]
    return None


def nothing_passed(
    argv: Sequence[str], output: str, *, first_had_summary: bool = False
) -> str | None:
    """Why a run that exited 0 is no pass, or None: its pytest summary counts no test
    passed, or it printed none where the run's first loop did (``first_had_summary``:
    also how a ``make test`` that runs pytest is known)."""
    if not (is_pytest(argv) or first_had_summary):
        return None
    counts = summary_of(output)
    if counts is None:
        if first_had_summary:
            return (
                "no pytest summary, where the first loop printed one: the run ended before "
                "its tests were counted"
            )
        return None
    found = {word: int(n) for n, word in _COUNT.findall(counts)}
    if found.get("passed", 0) or found.get("xpassed", 0):
        return None
    return f"no test passed ({counts}): every test was skipped or expected to fail"
