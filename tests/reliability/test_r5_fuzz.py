"""R5: fuzzing the two readers of user-written text, with bounded example counts.

* The policy loader: the deep pass is ``tests/unit/test_policy_fuzz.py`` (random text and
  bytes, the shipped file with lines deleted, duplicated, characters and values changed;
  only PolicyError escapes, every problem one FILE:LINE line). Here a short pass runs
  mutated policies through the CLI (``switchyard policy check`` and ``spec lint --policy``):
  exit 0 or 2, one clear line per problem, never an exception out of ``main``.
* The spec linter: random text, mutated §8 templates (lines deleted, duplicated, swapped,
  values replaced, characters changed) and random bytes in a file. Only SpecError (no
  block, unreadable) or a report comes out; every finding is one ``FILE:LINE: `` line whose
  line is inside the file. Deleting any line the block needs makes it non-compliant, and
  pathological lines (200k characters of blanks, brackets, separators) lint in linear time.

``SWITCHYARD_FUZZ_EXAMPLES=5000`` for a deep local run; CI keeps the default (60).
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.cli.main import main
from app.policy import load_policy
from app.policy.loader import LoadedPolicy
from app.policy.spec import SpecError
from app.policy.spec_lint import LintReport, lint_file, lint_text
from app.resources import default_policy_path
from tests.unit.test_spec_lint import ROLES, SEED_FULL, SEED_INFRA, filled

EXAMPLES = int(os.environ.get("SWITCHYARD_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
LOADED = load_policy()
HEADING = "## Model & Runtime (Spec Overrides)"
GOOD = filled().replace("HR = YES/NO", "HR = YES")
GOOD_INFRA = SEED_INFRA.replace("<true|false>", "false")
_FINDING = re.compile(r"^(?P<path>.+?):(?P<line>[0-9]+): (?:warning: )?\S")


def check(text: str, path: str = "fuzz.md", loaded: LoadedPolicy = LOADED) -> LintReport | None:
    """Lint ``text``: a report, or SpecError; every finding one line inside the file."""
    try:
        report = lint_text(text, path, loaded)
    except SpecError as exc:
        assert HEADING.split(" (")[0][3:] in str(exc) and "\n" not in str(exc)
        return None
    assert_well_formed(report, text, path)
    return report


def assert_well_formed(report: LintReport, text: str, path: str) -> None:
    n_lines = max(1, len(text.splitlines()))
    for problem in report.problems:
        shown = str(problem)
        assert "\n" not in shown and "\r" not in shown, shown
        m = _FINDING.match(shown)
        assert m is not None and m["path"] == path, shown
        assert 1 <= int(m["line"]) <= n_lines, (shown, n_lines)
    assert report.compliant == (not report.errors)


# ── strategies ───────────────────────────────────────────────────────────────────────────

_WORDS = st.sampled_from(
    [
        "YES",
        "NO",
        "YES/NO",
        "yes",
        "true",
        "false",
        "<true|false>",
        "none",
        "<none | list>",
        "1.0.0",
        "0.75",
        "< 0.75",
        "<=",
        "2 failed",
        "100k",
        "escalation-only",
        "local-first with escalation",
        "GPT-5.1 High / Claude Opus",
        "DeepSeek (reasoner/chat)",
        "<local 14B planner>",
        "(version: 1.0.0)",
        "docs/MODEL-POLICY.md",
        "HR =",
        "local_only =",
        "Policy:",
        "- ",
        ":",
        "=",
        "#",
        "**",
        "`",
        "[x](y)",
        "\u2028",
        "\t",
        "é",
    ]
)
LINE = st.one_of(
    st.text(max_size=80),
    st.lists(_WORDS, min_size=1, max_size=6).map(" ".join),
    st.sampled_from(GOOD.splitlines() + GOOD_INFRA.splitlines()),
)
BLOCK = st.lists(LINE, max_size=40).map(lambda ls: HEADING + "\n" + "\n".join(ls))


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """One of the valid blocks with a few random edits."""
    lines = draw(st.sampled_from([GOOD, GOOD_INFRA, SEED_FULL, SEED_INFRA])).split("\n")
    for _ in range(draw(st.integers(1, 6))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "replace", "char", "value"]))
        if op == "delete" and i > 0:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "replace":
            lines[i] = draw(LINE)
        elif op == "char" and lines[i]:
            k = draw(st.integers(0, len(lines[i]) - 1))
            lines[i] = lines[i][:k] + draw(st.characters()) + lines[i][k + 1 :]
        elif op == "value" and (":" in lines[i] or "=" in lines[i]):
            sep = ":" if ":" in lines[i] else "="
            lines[i] = lines[i].split(sep, 1)[0] + sep + " " + draw(st.one_of(_WORDS, LINE))
    return "\n".join(lines)


# ── the spec linter ──────────────────────────────────────────────────────────────────────


@FUZZ
@given(st.text(max_size=3000))
def test_random_text_after_a_heading(text: str) -> None:
    check(HEADING + "\n" + text)
    check(text)  # usually no block at all: SpecError


@FUZZ
@given(BLOCK)
def test_blocks_of_plausible_lines(text: str) -> None:
    check(text)


@FUZZ
@given(mutated())
def test_mutated_templates(text: str) -> None:
    check("# A spec\n\nprose\n\n" + text + "\n## Next\n")


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_in_a_file(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("spec") / "spec.md"
    path.write_bytes(HEADING.encode() + b"\n" + data)
    try:
        report = lint_file(path, LOADED)
    except SpecError as exc:
        assert str(exc).startswith(f"{path}: "), exc
        return
    assert_well_formed(report, path.read_text(encoding="utf-8"), str(path))


def test_the_valid_blocks_are_compliant() -> None:
    for text in (GOOD, GOOD_INFRA):
        report = check(text)
        assert report is not None and report.problems == [], report


def test_deleting_any_needed_line_is_found() -> None:
    """Exhaustive over single-line deletions of the filled template: every line the block
    needs (all but blank ones and the 'Privacy:'/'High-risk:' headers) is missed."""
    lines = GOOD.split("\n")
    optional = {"", "Privacy:", "High-risk:"}
    needed = [i for i, line in enumerate(lines) if i > 0 and line not in optional]
    assert len(needed) >= len(ROLES) + 12
    for i in needed:
        text = "\n".join(lines[:i] + lines[i + 1 :])
        report = check(text)
        assert report is not None and not report.compliant, f"deleting {lines[i]!r} went unseen"


PATHOLOGICAL = [
    " " * 200_000 + ":",
    "- " + " " * 200_000 + "HR = x",
    "Policy: a" + " " * 200_000 + "b",
    "Policy: x (" + "( version" * 50_000,
    "Primary tiers:\n- premium_judge: a" + " " * 200_000 + "b",
    "- premium_judge: " + "(" * 100_000 + ")" * 100_000,
    "Architect escalation: <" + " " * 200_000 + "x",
    "Roles exercised by this spec:\n- a" + " " * 200_000 + "b: YES",
    "x" + "\t" * 200_000 + "=" + "y",
    "Roles exercised by this spec:\n" + "- Tutor: YES\n" * 20_000,
]


def test_pathological_lines_lint_in_linear_time() -> None:
    """Long runs of blanks next to optional separators once made the block reader and
    the tier splitter backtrack quadratically (minutes for one 200k-character line)."""
    started = time.perf_counter()
    for body in PATHOLOGICAL:
        check(HEADING + "\n" + body)
    assert time.perf_counter() - started < 5.0


# ── the policy loader, end to end through the CLI ────────────────────────────────────────

POLICY_LINES = default_policy_path().read_text(encoding="utf-8").split("\n")
_VALUE = re.compile(r"^(\s*[A-Za-z0-9_.\"-]+\s*=\s*)(.+)$")
VALUE_LINES = [
    i
    for i, line in enumerate(POLICY_LINES)
    if (m := _VALUE.match(line)) and not m.group(2).rstrip().endswith(("[", "{"))
]


@settings(
    max_examples=max(10, EXAMPLES // 3),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(VALUE_LINES),
            st.one_of(_WORDS.map(lambda w: f'"{w}"'), _WORDS, st.text(max_size=12)),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_mutated_policies_through_the_cli(
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    changes: list[tuple[int, str]],
) -> None:
    lines = list(POLICY_LINES)
    for i, value in changes:
        m = _VALUE.match(POLICY_LINES[i])
        assert m is not None
        lines[i] = m.group(1) + value
    folder = tmp_path_factory.mktemp("policy")
    policy = folder / "policy.toml"
    policy.write_text("\n".join(lines), encoding="utf-8")
    spec = folder / "spec.md"
    spec.write_text(GOOD, encoding="utf-8")
    for argv in (
        ["policy", "check", "--quiet", str(policy)],
        ["spec", "lint", str(spec), "--policy", str(policy)],
    ):
        rc = _main(argv)
        captured = capsys.readouterr()
        assert rc in (0, 1, 2), (argv, rc)
        if rc == 2:
            err = [line for line in captured.err.splitlines() if line]
            assert err and all(line.startswith(f"switchyard: {policy}") for line in err), err


def _main(argv: list[str]) -> Any:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse only
        return exc.code
