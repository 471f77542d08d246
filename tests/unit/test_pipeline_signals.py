"""The ACE trigger: what makes a run an "interesting failure" (issue 6 part 7)."""

from __future__ import annotations

from app.pipeline.signals import diff_insertions, interesting_failure
from app.policy.schema import Ace

ACE = Ace(
    min_pattern_confidence=0.7,
    max_harmful_bullets=2,
    interesting_diff_files=5,
    interesting_diff_insertions=200,
)


def diff(files: int, added_per_file: int) -> str:
    out = []
    for i in range(files):
        out += [
            f"diff --git a/m{i}.py b/m{i}.py",
            f"--- a/m{i}.py",
            f"+++ b/m{i}.py",
            f"@@ -1,1 +1,{added_per_file + 1} @@",
            " keep",
            *(f"+line {n}" for n in range(added_per_file)),
        ]
    return "\n".join(out) + "\n"


def test_a_clean_small_green_run_is_not_interesting() -> None:
    assert interesting_failure([], diff(1, 3), ACE) == []
    assert interesting_failure([], "", ACE) == []


def test_one_failed_loop_is_ordinary_two_are_interesting_even_when_green() -> None:
    """Issue 17: one failed loop no longer counts as an interesting failure (ACE is
    local-first; its Kimi escalation waits for the policy's interesting_failed_loops)."""
    one = ["attempt 1: tests failed (exit 1)"]
    assert interesting_failure(one, diff(1, 3), ACE) == []
    two = [*one, "attempt 2: edits refused: ..."]
    assert interesting_failure(two, diff(1, 3), ACE) == ["2 failed loops (>= 2)"]


def test_the_policy_bounds_are_strict_greater_than() -> None:
    assert interesting_failure([], diff(5, 40), ACE) == []  # 5 files, 200 insertions: at the bound
    assert interesting_failure([], diff(6, 1), ACE) == ["the diff touches 6 files (> 5)"]
    assert interesting_failure([], diff(1, 201), ACE) == ["the diff inserts 201 lines (> 200)"]


def test_insertions_do_not_count_file_headers() -> None:
    assert diff_insertions(diff(2, 3)) == 6


def test_insertions_count_a_line_with_a_cr_or_ff_inside_once() -> None:
    diff = "--- a/x\n+++ b/x\n@@ -0,0 +1,2 @@\n+a\r+b\n+c\x0c+d\r\n"
    assert diff_insertions(diff) == 2
