"""pytest's own summary line read for what passed (app/workspace/pytest_summary.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.workspace.pytest_summary import is_pytest, nothing_passed

PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]


def run_pytest(tmp_path: Path, body: str, *flags: str) -> tuple[int, str]:
    (tmp_path / "test_x.py").write_text(body)
    done = subprocess.run(
        [*PYTEST, *flags, str(tmp_path)], capture_output=True, text=True, cwd=tmp_path
    )
    return done.returncode, done.stdout + done.stderr


SKIPPED = "import pytest\n\n@pytest.mark.skip(reason='flaky')\ndef test_add():\n    assert 0\n"
XFAILED = "import pytest\n\n@pytest.mark.xfail\ndef test_add():\n    assert 0\n"
PASSING = SKIPPED + "\n\ndef test_mul():\n    assert 2 * 3 == 6\n"


@pytest.mark.parametrize("flags", [(), ("-q",), ("-rA",)])
@pytest.mark.parametrize("body", [SKIPPED, XFAILED])
def test_a_real_pytest_run_with_nothing_passed_is_no_pass(
    tmp_path: Path, flags: tuple[str, ...], body: str
) -> None:
    """``@pytest.mark.skip`` over the failing test: pytest exits 0, and the run counted
    green (a user audit)."""
    rc, out = run_pytest(tmp_path, body, *flags)
    assert rc == 0
    why = nothing_passed(PYTEST, out)
    assert why is not None and why.startswith("no test passed (1 ")


@pytest.mark.parametrize("flags", [(), ("-q",)])
def test_a_real_pytest_run_with_a_pass_is_a_pass(tmp_path: Path, flags: tuple[str, ...]) -> None:
    rc, out = run_pytest(tmp_path, PASSING, *flags)
    assert rc == 0 and nothing_passed(PYTEST, out) is None


def test_what_is_not_read() -> None:
    # -qq prints no summary: nothing is said (as before); another runner is not read
    assert nothing_passed(PYTEST, "s  [100%]\n") is None
    assert nothing_passed(["cargo", "test"], "1 skipped in 0.01s\n") is None
    # a summary-like line of the tests' own, before pytest's: the last one is pytest's
    out = "3 skipped in 0.5s\n" + "=== 2 passed in 0.10s ===\n"
    assert nothing_passed(["pytest"], out) is None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["pytest", "-q"], True),
        (["/repo/.venv/bin/pytest"], True),
        (["py.test"], True),
        (["python3", "-m", "pytest", "tests"], True),
        (["python3", "-m", "unittest"], False),
        (["make", "test"], False),
        ([], False),
    ],
)
def test_is_pytest(argv: list[str], expected: bool) -> None:
    assert is_pytest(argv) is expected


def test_a_coloured_summary_is_read(tmp_path: Path) -> None:
    """``--color=yes`` (often in a project's addopts): its codes hid the summary, and a
    run of skips alone read as a pass (a review)."""
    rc, out = run_pytest(tmp_path, SKIPPED, "--color=yes")
    assert rc == 0 and "\x1b[" in out
    why = nothing_passed(PYTEST, out)
    assert why is not None and why.startswith("no test passed (1 skipped")


def test_no_summary_where_the_first_loop_printed_one_is_no_pass() -> None:
    """``os._exit(0)`` in the code under test ended pytest before it counted anything:
    exit 0 and an empty log read as a pass (a user audit)."""
    why = nothing_passed(PYTEST, "", first_had_summary=True)
    assert why is not None and why.startswith("no pytest summary, where the first loop")
    assert nothing_passed(PYTEST, "", first_had_summary=False) is None  # -qq: as before
    # a `make test` that runs pytest is known by its first loop's summary
    assert nothing_passed(["make", "test"], "1 skipped in 0.1s\n", first_had_summary=True)
    assert nothing_passed(["make", "test"], "2 passed in 0.1s\n", first_had_summary=True) is None
    assert nothing_passed(["make", "test"], "1 skipped in 0.1s\n") is None


def test_a_summary_followed_by_other_output_is_read() -> None:
    """A ``make test`` that lints after pytest: the summary was past the last 50 lines,
    and a green loop read as one with no summary (a review)."""
    out = "===== 3 passed in 0.1s =====\n" + "".join(f"src/m{i}.py: ok\n" for i in range(80))
    assert nothing_passed(["make", "test"], out, first_had_summary=True) is None
