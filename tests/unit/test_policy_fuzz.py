"""Property tests: whatever a policy file holds, only PolicyError ever escapes the loader.

Example counts are bounded (≤ 60 per test) so CI stays fast; any exception other than
PolicyError is a loader bug.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import PolicyError
from app.policy.lines import key_lines
from app.policy.loader import LoadedPolicy, load_policy, parse_policy
from app.resources import default_policy_path

SEED = default_policy_path().read_text(encoding="utf-8")
SEED_LINES = SEED.split("\n")
FILE = Path("/fuzz/model-policy.toml")

# Lines holding a one-line `key = value`; the values a fuzzer may replace.
_ASSIGN = re.compile(r"^(\s*[A-Za-z0-9_.\"-]+\s*=\s*)(.+)$")
VALUE_LINES = [
    i
    for i, line in enumerate(SEED_LINES)
    if (m := _ASSIGN.match(line)) and not m.group(2).rstrip().endswith(("[", "{"))
]

FUZZ = settings(
    # SWITCHYARD_FUZZ_EXAMPLES=5000 for a deep local run; CI keeps the default.
    max_examples=int(os.environ.get("SWITCHYARD_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check(text: str, file: Path = FILE) -> LoadedPolicy | None:
    """Parse ``text``; a PolicyError is fine when every line of it starts with the file."""
    try:
        loaded = parse_policy(text, file)
    except PolicyError as exc:
        assert_well_formed(exc, file)
        return None
    assert all(w.startswith(f"{file}") and "\n" not in w for w in loaded.warnings)
    return loaded


def assert_well_formed(exc: PolicyError, file: Path) -> None:
    assert exc.problems, "a PolicyError without problems"
    assert str(exc).split("\n") == exc.problems, "a problem spans several lines"
    for problem in exc.problems:
        assert problem.startswith(f"{file}:") or problem.startswith(f"{file} "), problem
        assert problem.strip() == problem and "\r" not in problem, problem


# ── Strategies ─────────────────────────────────────────────────────────────────────────

_BARE_KEY = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
_KNOWN_KEYS = st.sampled_from(
    ["default", "kind", "role", "signal", "op", "threshold", "target", "enabled", "models", "id"]
)
_SCALARS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        ["true", "false", "0", "-0", "1.5", "0.75", "1e400", "-1", "1" + "0" * 500, "0x1F"]
    ),
    st.sampled_from(["1979-05-27T07:32:00Z", "1979-05-27", "07:32:00", "1979-05-27 07:32:00"]),
    st.text(max_size=20).map(json.dumps),
    st.sampled_from(['"qwen3-14b"', '"deepseek-r2"', '"*"', '"x"', '""', '"GR-003"', "'lit'"]),
)
TOML_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(st.one_of(_KNOWN_KEYS, _BARE_KEY), inner), max_size=3).map(
            lambda kvs: "{" + ", ".join(f"{k} = {v}" for k, v in dict(kvs).items()) + "}"
        ),
    ),
    max_leaves=8,
)
TOMLISH = st.text(
    alphabet=st.sampled_from(list("[]{}=\"'.#,\n\r\t abcx019-_+:\\\u2028")), max_size=400
)


# ── Properties ─────────────────────────────────────────────────────────────────────────


@FUZZ
@given(st.one_of(st.text(max_size=2000), TOMLISH))
def test_random_text(text: str) -> None:
    check(text)
    lines = key_lines(text)
    assert all(1 <= n <= text.count("\n") + 1 for n in lines.values())


@FUZZ
@given(data=st.binary(max_size=2000))
def test_random_bytes_in_a_file(data: bytes, tmp_path_factory: Any) -> None:
    target = tmp_path_factory.mktemp("bytes") / "policy.toml"
    target.write_bytes(data)
    try:
        load_policy(target)
    except PolicyError as exc:
        assert_well_formed(exc, target)


@FUZZ
@given(st.sets(st.integers(0, len(SEED_LINES) - 1), min_size=1, max_size=6))
def test_shipped_file_with_lines_deleted(drop: set[int]) -> None:
    check("\n".join(line for i, line in enumerate(SEED_LINES) if i not in drop))


@FUZZ
@given(st.lists(st.integers(0, len(SEED_LINES) - 1), min_size=1, max_size=4))
def test_shipped_file_with_lines_duplicated(dups: list[int]) -> None:
    lines = list(SEED_LINES)
    for i in sorted(dups, reverse=True):
        lines.insert(i, lines[i])
    check("\n".join(lines))


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(SEED) - 1),
            st.booleans(),  # True: insert, False: substitute
            st.one_of(st.characters(), st.sampled_from(list("[]{}=\"'#.,\n0 "))),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_shipped_file_with_characters_changed(edits: list[tuple[int, bool, str]]) -> None:
    text = SEED
    for offset, insert, char in sorted(edits, reverse=True):
        text = text[:offset] + char + text[offset + (0 if insert else 1) :]
    check(text)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(VALUE_LINES), TOML_VALUES), min_size=1, max_size=3))
def test_shipped_file_with_values_replaced(changes: list[tuple[int, str]]) -> None:
    lines = list(SEED_LINES)
    for index, value in changes:
        m = _ASSIGN.match(lines[index])
        assert m is not None
        lines[index] = m.group(1) + value
    check("\n".join(lines))


@FUZZ
@given(st.sampled_from(VALUE_LINES), TOML_VALUES)
def test_a_bad_value_is_reported_at_its_line(index: int, value: str) -> None:
    """When only one value changed and tomllib still parses, errors name that value's line
    or one of the lines that refer to it (a cross-check), never no line at all."""
    lines = list(SEED_LINES)
    m = _ASSIGN.match(lines[index])
    assert m is not None
    lines[index] = m.group(1) + value
    try:
        parse_policy("\n".join(lines), FILE)
    except PolicyError as exc:
        assert_well_formed(exc, FILE)
        for problem in exc.problems:
            assert re.match(rf"{re.escape(str(FILE))}:\d+(:\d+)?: ", problem), problem
