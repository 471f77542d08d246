"""The TOML key → line scanner that gives policy errors their FILE:LINE."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from app.policy.lines import key_lines, line_for
from app.resources import default_policy_path


def test_headers_and_assignments() -> None:
    text = "top = 1\n[a]\nx = 1\n\n[a.b]  # comment\ny = 2\n"
    assert key_lines(text) == {
        ("top",): 1,
        ("a",): 2,
        ("a", "x"): 3,
        ("a", "b"): 5,
        ("a", "b", "y"): 6,
    }


def test_dotted_and_quoted_keys() -> None:
    text = '[models."gpt-5.1"]\nx . y = 1\n\'lit.key\' = 2\n"esc\\u0061ped" = 3\n"a\\nb" = 4\n'
    lines = key_lines(text)
    assert lines[("models", "gpt-5.1")] == 1
    assert lines[("models", "gpt-5.1", "x", "y")] == 2
    assert lines[("models", "gpt-5.1", "lit.key")] == 3
    assert lines[("models", "gpt-5.1", "escaped")] == 4
    assert lines[("models", "gpt-5.1", "a\nb")] == 5


def test_arrays_of_tables_are_indexed() -> None:
    text = (
        "[[t]]\nid = 'a'\n[[t]]\nid = 'b'\n[t.sub]\nk = 1\n[[t.items]]\nv = 1\n[[t.items]]\nv = 2\n"
    )
    lines = key_lines(text)
    assert lines[("t", 0, "id")] == 2
    assert lines[("t", 1, "id")] == 4
    # A sub-table after [[t]] belongs to t's last element, as in TOML.
    assert lines[("t", 1, "sub", "k")] == 6
    assert lines[("t", 1, "items", 0, "v")] == 8
    assert lines[("t", 1, "items", 1, "v")] == 10
    assert tomllib.loads(text)["t"][1]["items"][1]["v"] == 2


def test_multiline_values_are_skipped() -> None:
    text = (
        "a = [\n"
        '  "]", # ] in a comment\n'
        "  'x = 1',\n"
        "]\n"
        'b = """\n'
        "[not.a.header]\n"
        'c = 1 \\"""\n'
        '"""\n'
        "d = '''\n"
        "e = 1\n"
        "'''\n"
        "f = { g = 1, h = [\n"
        "  1 ] }\n"
        "i = 1\n"
    )
    tomllib.loads(text)  # valid TOML
    assert key_lines(text) == {("a",): 1, ("b",): 5, ("d",): 9, ("f",): 12, ("i",): 14}


def test_only_newline_ends_a_line() -> None:
    text = "# \u2028 \u2029 \x85 \x0c\na = 1\r\nb = 2\r\n[c]\r\nd = 3\n"
    assert key_lines(text) == {("a",): 2, ("b",): 3, ("c",): 4, ("c", "d"): 5}


def test_line_for_falls_back_to_the_nearest_mapped_key() -> None:
    lines = {("a",): 1, ("a", "b"): 2, ("r", "x"): 7, ("r", "y"): 5}
    assert line_for(lines, ("a", "b")) == 2
    assert line_for(lines, ("a", "b", 3, "c")) == 2  # ancestor
    assert line_for(lines, ("a", "zzz")) == 1
    assert line_for(lines, ("r",)) == 5  # no header of its own: its first descendant
    assert line_for(lines, ("r", "missing")) == 5
    assert line_for(lines, ("nowhere",)) is None
    assert line_for(lines, ()) is None


def _paths(value: Any, prefix: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], bool]]:
    """(key path, is a table) for every key tomllib produced, through arrays of tables."""
    out: list[tuple[tuple[str | int, ...], bool]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            tables = isinstance(child, list) and child and all(isinstance(v, dict) for v in child)
            out.append(((*prefix, key), isinstance(child, dict) or bool(tables)))
            out += _paths(child, (*prefix, key))
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, child in enumerate(value):
            out += [((*prefix, i), True), *_paths(child, (*prefix, i))]
    return out


def test_every_key_of_the_shipped_policy_is_mapped_to_its_own_line() -> None:
    text = default_policy_path().read_text(encoding="utf-8")
    source = text.split("\n")
    lines = key_lines(text)
    for path, is_table in _paths(tomllib.loads(text), ()):
        if is_table and path not in lines:
            # an implicit table ([roles.x] defines roles): placed at its first descendant
            assert line_for(lines, path) == min(
                n for k, n in lines.items() if k[: len(path)] == path
            )
            continue
        assert path in lines, path
        line, last = source[lines[path] - 1], path[-1]
        if isinstance(last, int):
            assert line.strip().startswith("[["), (path, line)
        else:
            assert last in line, (path, line)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n\n",
        "[",
        "[[",
        "]]",
        "a = [[[[[[",
        'a = """',
        "a = '''\n",
        '"unterminated = 1',
        'a = "\\',
        "[a.]\n[.b]\n[a..b]\n",
        "= = =",
        "\x00\x01\ufeff[a]\nb=1",
    ],
)
def test_odd_input_never_raises(text: str) -> None:
    lines = key_lines(text)
    assert all(1 <= n <= text.count("\n") + 1 for n in lines.values())
