"""What a pytest run's own summary line says passed: a run whose every test was skipped
(or expected to fail) exits 0, and a run with nothing passing is no green (GR-006: the
tests' verdict is the truth the loop is judged by).

Pure: the command and its output in, a reason or None out. Only a summary pytest printed
is read (``-qq`` prints none: nothing is said then, as before).
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


def is_pytest(argv: Sequence[str]) -> bool:
    """``pytest …``, ``py.test …``, ``python -m pytest …`` (any path to them)."""
    if not argv:
        return False
    program = argv[0].rsplit("/", 1)[-1]
    if program in ("pytest", "py.test"):
        return True
    return any(a == "-m" and b == "pytest" for a, b in itertools.pairwise(argv))


def nothing_passed(argv: Sequence[str], output: str) -> str | None:
    """Why a pytest run that exited 0 is no pass (its last summary counts no test passed),
    or None."""
    if not is_pytest(argv):
        return None
    for line in reversed(output.splitlines()[-50:]):
        m = _SUMMARY.match(line.strip())
        if m is None:
            continue
        counts = {word: int(n) for n, word in _COUNT.findall(m["counts"])}
        if counts.get("passed", 0) or counts.get("xpassed", 0):
            return None
        return f"no test passed ({m['counts']}): every test was skipped or expected to fail"
    return None
