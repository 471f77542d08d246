"""The applier, level by level: what lands where, what is refused and what the model is
told. Pure: texts in, texts or typed refusals out."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.pipeline.edits.apply import apply_edits
from app.pipeline.edits.land import Missed, land
from app.pipeline.edits.model import Applied, DiffHunk, SearchReplace, WholeFile
from app.pipeline.edits.parse import parse_edits
from app.pipeline.edits.text import FileText, ops_between

APP = Path(__file__).resolve().parents[2] / "app"
SOURCE = APP / "resources" / "examples" / "parser-bug" / "parser.py"
if not SOURCE.exists():  # the demo repo ships with the package data
    SOURCE = Path(__file__).resolve().parents[2] / "examples" / "parser-bug" / "parser.py"
PARSER = SOURCE.read_text()
FIXED = PARSER.replace("range(len(tokens) - 1)", "range(len(tokens))")


def sr(search: str, replace: str, path: str = "parser.py") -> SearchReplace:
    return SearchReplace(path=path, search=search, replace=replace)


def run(*edits: SearchReplace | WholeFile | DiffHunk, text: str = PARSER) -> Applied:
    return apply_edits({"parser.py": text}, list(edits))


def landed(result: Applied, how: str) -> str:
    assert result.ok, [r.message for r in result.refusals]
    assert [n.how for n in result.notes] == [how] * len(result.notes)
    return result.files["parser.py"]


def test_exact() -> None:
    out = run(sr("    for i in range(len(tokens) - 1):\n", "    for i in range(len(tokens)):\n"))
    assert landed(out, "exact") == FIXED
    assert str(out.notes[0].at) == "line 21"


def test_trailing_whitespace_and_dedented_copies_land_reindented() -> None:
    search = "tagged = []   \nfor i in range(len(tokens) - 1):\n    token = tokens[i]\n"
    replace = "tagged = []\nfor i in range(len(tokens)):\n    token = tokens[i]\n"
    assert landed(run(sr(search, replace)), "whitespace") == FIXED


def test_tabs_for_spaces_and_new_lines_written_in_the_files_style() -> None:
    search = "\tfor i in range(len(tokens) - 1):\n\t\ttoken = tokens[i]\n"
    replace = "\tfor i in range(len(tokens)):\n\t\t# every token\n\t\ttoken = tokens[i]\n"
    out = landed(run(sr(search, replace)), "whitespace")
    assert "    for i in range(len(tokens)):\n        # every token\n" in out


def test_another_indentation_unit_is_scaled_to_the_files() -> None:
    search = "  tagged = []\n  for i in range(len(tokens) - 1):\n    token = tokens[i]\n"
    replace = (
        "  tagged = []\n  for i in range(len(tokens)):\n    token = tokens[i]\n"
        "    if not token:\n      continue\n"
    )
    out = landed(run(sr(search, replace)), "whitespace")
    assert "        token = tokens[i]\n        if not token:\n            continue\n" in out


def test_a_missing_and_an_extra_context_line() -> None:
    missing = "    tagged = []\n        token = tokens[i]\n"  # the for line is not copied...
    # ...so a change next to it would be a guess, but one a line away is not
    out = run(
        sr(
            '    """Tag each token as a number or an operator."""\n    tagged = []\n'
            "    for i in range(len(tokens) - 1):\n        token = tokens[i]\n"
            '        tagged.append(("num" if token.isdigit() else "op", token))\n',
            '    """Tag each token as a number or an operator."""\n    tagged = []\n'
            "    for i in range(len(tokens)):\n        token = tokens[i]\n"
            '        tagged.append(("num" if token.isdigit() else "op", token))\n',
        )
    )
    assert landed(out, "exact") == FIXED
    extra = (
        "    tagged = []\n    seen = set()\n    for i in range(len(tokens) - 1):\n"
        "        token = tokens[i]\n"
    )
    fixed_extra = extra.replace(" - 1", "")
    assert landed(run(sr(extra, fixed_extra)), "fuzzy_context") == FIXED
    # a line left out away from the change (the append line before the return)
    dropped = (
        "    tagged = []\n    for i in range(len(tokens) - 1):\n        token = tokens[i]\n"
        "    return tagged\n"
    )
    assert landed(run(sr(dropped, dropped.replace(" - 1", ""))), "fuzzy_context") == FIXED
    # ...and right beside it ("tagged = []"): the line is rewritten in place, one for one
    beside = (
        '    """Tag each token as a number or an operator."""\n'
        "    for i in range(len(tokens) - 1):\n        token = tokens[i]\n"
    )
    assert landed(run(sr(beside, beside.replace(" - 1", ""))), "fuzzy_context") == FIXED
    # but a line added with it could go on either side of the left-out line
    grown = beside.replace(" - 1):\n", "):\n        # each one\n")
    (refusal,) = run(sr(beside, grown)).refusals
    assert refusal.reason == "ambiguous" and "line 21 is missing" in refusal.message
    assert run(sr(missing, missing)).refusals  # changes nothing


def test_an_insertion_next_to_a_left_out_line_is_refused_not_guessed() -> None:
    doc = '    """Tag each token as a number or an operator."""\n'
    search = doc + "    for i in range(len(tokens) - 1):\n"
    replace = (
        '    """Tag each token as a number or an operator."""\n    # keep them all\n'
        "    for i in range(len(tokens) - 1):\n"
    )
    (refusal,) = run(sr(search, replace)).refusals
    assert refusal.reason == "ambiguous" and "not next to each other" in refusal.message


def test_elided_lines_in_search_and_replace() -> None:
    search = (
        "def parse(tokens: list[str]) -> list[tuple[str, str]]:\n    # ... existing code ...\n"
        "    for i in range(len(tokens) - 1):\n"
    )
    out = run(sr(search, search.replace(" - 1", "")))
    assert landed(out, "elided") == FIXED


def test_elided_lines_in_replace_only_keep_what_search_had() -> None:
    search = (
        "def parse(tokens: list[str]) -> list[tuple[str, str]]:\n"
        '    """Tag each token as a number or an operator."""\n    tagged = []\n'
        "    for i in range(len(tokens) - 1):\n"
    )
    replace = (
        "def parse(tokens: list[str]) -> list[tuple[str, str]]:\n    # ... existing code ...\n"
        "    tagged = []\n    for i in range(len(tokens)):\n"
    )
    assert landed(run(sr(search, replace)), "exact") == FIXED
    # next to a changed line, a marker cannot be told from the lines it replaces
    lazy = replace.replace("    tagged = []\n", "")
    (refusal,) = run(sr(search, lazy)).refusals
    assert refusal.reason == "bad_elision" and "between unchanged lines" in refusal.message


def test_a_literal_ellipsis_line_is_code_when_the_file_has_it() -> None:
    text = "class P(Protocol):\n    def f(self) -> int:\n        ...\n"
    out = apply_edits(
        {"p.py": text},
        [SearchReplace(path="p.py", search="        ...\n", replace="        return 1\n")],
    )
    assert out.files["p.py"] == text.replace("        ...", "        return 1")


def test_line_numbers_copied_from_the_listing_are_dropped() -> None:
    search = "  21     for i in range(len(tokens) - 1):\n  22         token = tokens[i]\n"
    replace = "  21     for i in range(len(tokens)):\n  22         token = tokens[i]\n"
    assert landed(run(sr(search, replace)), "line_numbers") == FIXED


def test_ambiguous_is_refused_with_the_candidates() -> None:
    text = (
        PARSER + "\n\ndef pairs(tokens):\n    for i in range(len(tokens) - 1):\n        yield i\n"
    )
    result = run(
        sr("    for i in range(len(tokens) - 1):\n", "    for i in range(3):\n"), text=text
    )
    (refusal,) = result.refusals
    assert refusal.reason == "ambiguous" and not result.files
    assert [(c.start, c.end) for c in refusal.candidates] == [(21, 21), (41, 41)]
    assert "line 21, line 41" in refusal.message and "copy more lines" in refusal.message
    # more context makes it one place
    two = "    tagged = []\n    for i in range(len(tokens) - 1):\n"
    assert run(sr(two, two.replace(" - 1", "")), text=text).ok


def test_not_found_shows_the_nearest_text_with_line_numbers() -> None:
    (refusal,) = run(
        sr("    for i in range(len(token_list) - 1):\n        tok = token_list[i]\n", "x\n")
    ).refusals
    assert refusal.reason == "not_found" and refusal.nearest is not None
    assert refusal.nearest.start == 21
    assert "  21|     for i in range(len(tokens) - 1):" in refusal.message
    assert "nowhere in the file" in refusal.message


def test_one_refusal_refuses_the_attempt_and_every_refusal_is_told() -> None:
    good = sr("    for i in range(len(tokens) - 1):\n", "    for i in range(len(tokens)):\n")
    bad = sr("    nothing like this\n", "x\n")
    result = run(good, bad, sr("    nor this\n", "y\n"))
    assert not result.ok and result.files == {}
    assert [r.edit for r in result.refusals] == [2, 3]
    assert [n.edit for n in result.notes] == [1]


def test_edits_apply_in_order_each_to_the_text_before_it() -> None:
    first = sr("    total = 0\n", "    total = 0\n    count = 0\n")
    second = sr("    count = 0\n", "    count = 1\n")
    assert "    total = 0\n    count = 1\n" in landed(run(first, second), "exact")


def test_whole_files_new_files_and_their_limits() -> None:
    small = apply_edits({"a.py": "x = 1\n"}, [WholeFile(path="a.py", content="x = 2\n")])
    assert small.files == {"a.py": "x = 2\n"} and small.notes[0].how == "rewritten"
    big = "".join(f"x{i} = {i}\n" for i in range(200))
    (refusal,) = apply_edits({"a.py": big}, [WholeFile(path="a.py", content="")]).refusals
    assert refusal.reason == "too_large" and "SEARCH/REPLACE" in refusal.message
    new = apply_edits({"b.py": None}, [SearchReplace(path="b.py", search="", replace="Y = 1\n")])
    assert new.files == {"b.py": "Y = 1\n"} and new.notes[0].how == "created"
    (exists,) = apply_edits(
        {"b.py": "Y\n"}, [SearchReplace(path="b.py", search="", replace="Z\n")]
    ).refusals
    assert exists.reason == "file_exists"
    (gone,) = apply_edits(
        {"c.py": None}, [SearchReplace(path="c.py", search="a\n", replace="b\n")]
    ).refusals
    assert gone.reason == "missing_file"


def test_crlf_and_no_final_newline_are_kept() -> None:
    text = "a = 1\r\nb = 2\r\nc = 3"
    out = apply_edits(
        {"w.py": text}, [SearchReplace(path="w.py", search="b = 2\n", replace="b = 20\nb2 = 0\n")]
    )
    assert out.files["w.py"] == "a = 1\r\nb = 20\r\nb2 = 0\r\nc = 3"
    end = apply_edits(
        {"w.py": text}, [SearchReplace(path="w.py", search="c = 3\n", replace="c = 4\n")]
    )
    assert end.files["w.py"] == "a = 1\r\nb = 2\r\nc = 4"


def test_diff_hunks_ignore_their_line_numbers() -> None:
    hunk = DiffHunk(
        path="parser.py",
        lines=[
            "     tagged = []",
            "-    for i in range(len(tokens) - 1):",
            "+    for i in range(len(tokens)):",
        ],
    )
    assert landed(run(hunk), "exact") == FIXED


def test_the_applier_and_the_parser_import_no_layer_above_the_leaves() -> None:
    """Pure: nothing from the router, the backends, the workspace or a face (only the
    reply adapter knows the structured-output owner)."""
    allowed = ("app.pipeline.edits", "app.paths")
    for path in sorted((APP / "pipeline" / "edits").glob("*.py")):
        if path.name == "reply.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                if name.startswith("app"):
                    assert name.startswith(allowed), f"{path.name} imports {name}"


def test_edits_that_would_cross_between_twin_blocks_are_both_refused() -> None:
    """Two near-identical functions, an edit written for each; the first edit, a line
    short, is exactly the second function's text. Applied in order, each would land at
    the other's place: placed in the file as it was, their changes overlap, so neither
    lands."""
    twin = "    if not parts:\n        return False\n{extra}    cmd = parts[0]\n    run(cmd)\n"
    text = (
        "def a(parts):\n" + twin.format(extra="    args = parts[1:]\n") + "\n\n"
        "def b(parts):\n" + twin.format(extra="") + "\n"
    )
    short = twin.format(extra="")  # edit 1 is meant for a() but left out its args line
    first = SearchReplace(path="f.py", search=short, replace=short.replace("run(cmd)", "go(cmd)"))
    second = SearchReplace(path="f.py", search=short, replace=short.replace("run(cmd)", "do(cmd)"))
    result = apply_edits({"f.py": text}, [first, second])
    assert [r.edit for r in result.refusals] == [1, 2] and not result.files
    assert "edits 1 and 2 both change" in result.refusals[0].message


def test_a_moved_line_beside_a_left_out_line_is_refused() -> None:
    text = "try:\n    p = f()\n    p.reverse()\n    del f.x\nexcept E:\n    p = []\n\nnext()\n"
    search = "try:\n    p = f()\n    del f.x\nexcept E:\n    p = []\n\n"  # p.reverse() left out
    replace = "try:\n    p = f()\nexcept E:\n    p = []\nelse:\n    del f.x\n\n"
    (refusal,) = apply_edits(
        {"f.py": text}, [SearchReplace(path="f.py", search=search, replace=replace)]
    ).refusals
    assert refusal.reason == "ambiguous"


def test_a_rewrite_beside_a_left_out_line_lands_in_place_only_one_for_one() -> None:
    """Each added line an edit of the removed line in its place: it takes that place.
    More added lines than removed ones, or an added line unlike its removed one, could
    go on either side of the left-out line: refused (the bench's case: an attribute's
    annotation moved out of ``__init__`` into the class, its new line alike to the old)."""
    text = "class K:\n    def __init__(self, f):\n        self._f: IO = f\n\n    def g(self):\n"
    search = "class K:\n        self._f: IO = f\n"  # the def line left out
    edited = apply_edits(
        {"k.py": text},
        [SearchReplace(path="k.py", search=search, replace=search.replace(": IO", ""))],
    )
    assert edited.files == {"k.py": text.replace("self._f: IO", "self._f")}
    moved = "class K:\n    _f: IO\n\n        self._f = f\n"
    (refusal,) = apply_edits(
        {"k.py": text}, [SearchReplace(path="k.py", search=search, replace=moved)]
    ).refusals
    assert refusal.reason == "ambiguous" and "is missing from the edit" in refusal.message
    unlike = "class K:\n        raise NotImplementedError\n"
    assert apply_edits(
        {"k.py": text}, [SearchReplace(path="k.py", search=search, replace=unlike)]
    ).refusals


def test_numbers_copied_into_search_are_dropped_but_a_tables_own_numbers_are_kept() -> None:
    """A status table's lines start with numbers (``    102: ("processing",),``): the
    added lines keep theirs, only numbers written as the copied ones were are dropped."""
    text = 'CODES = {\n    100: ("continue",),\n    101: ("switching",),\n}\n'
    search = '  40 CODES = {\n  41     100: ("continue",),\n  42     101: ("switching",),\n'
    replace = search + '    102: ("processing",),\n'
    result = apply_edits(
        {"c.py": text}, [SearchReplace(path="c.py", search=search, replace=replace)]
    )
    assert result.files == {"c.py": text.replace("}\n", '    102: ("processing",),\n}\n')}
    numbered = search + '  43     102: ("processing",),\n'  # the model numbered its new line
    again = apply_edits(
        {"c.py": text}, [SearchReplace(path="c.py", search=search, replace=numbered)]
    )
    assert again.files == result.files


# ── whole files with elided lines ───────────────────────────────────────────────────────

CALC = (
    "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n\n\n"
    "def div(a, b):\n    return a / b\n"
)


@pytest.mark.parametrize(
    "marker", ["# ... rest of the file unchanged ...", "# ... existing code ...", "..."]
)
def test_a_whole_file_with_elided_lines_is_refused_not_cut_short(marker: str) -> None:
    """The FILE block replaced the whole file with the abbreviated text: mul and div were
    deleted, and the run could end merge-ready."""
    text = (
        f"calc.py\n<<<<<<< FILE\ndef add(a, b):\n    return a + b\n\n{marker}\n>>>>>>> FILE\n"
        '{"self_check_confidence": 0.9, "notes": "x"}'
    )
    result = apply_edits({"calc.py": CALC}, parse_edits(text).edits)
    assert not result.ok and result.files == {}
    (refusal,) = result.refusals
    assert refusal.reason == "bad_elision"
    (told,) = result.feedback()  # what the repair turn says
    assert "line 4" in told and marker in told
    assert "every line" in told and "SEARCH/REPLACE" in told


def test_a_whole_files_own_ellipsis_lines_are_code() -> None:
    """A line that is only "..." is Python's Ellipsis as often as an elision: a new file's
    are its own, as are an existing file's kept where they were."""
    stub = "class P(Protocol):\n    def f(self) -> int:\n        ...\n"
    new = apply_edits({"p.py": None}, [WholeFile(path="p.py", content=stub)])
    assert new.files == {"p.py": stub} and new.notes[0].how == "created"
    grown = stub + "\n    def g(self) -> str: ...\n"
    kept = apply_edits({"p.py": stub}, [WholeFile(path="p.py", content=grown)])
    assert kept.files == {"p.py": grown}
    crlf = apply_edits(
        {"p.py": stub.replace("\n", "\r\n")}, [WholeFile(path="p.py", content=grown)]
    )
    assert crlf.files == {"p.py": grown.replace("\n", "\r\n")}
    empty = apply_edits({"p.py": ""}, [WholeFile(path="p.py", content=stub)])
    assert empty.files == {"p.py": stub}  # an empty file has no lines to leave out
    # a "..." line among changed lines cannot be told from an elision: refused, and the
    # model is told how to write one that is code
    added = stub + "\n    def g(self) -> str:\n        ...\n"
    (refusal,) = apply_edits({"p.py": stub}, [WholeFile(path="p.py", content=added)]).refusals
    assert refusal.reason == "bad_elision" and "line 6" in refusal.message
    # one standing for lines the file has, in place of them
    gone = stub.replace("        ...\n", "        return 1\n")
    elided = apply_edits({"p.py": gone}, [WholeFile(path="p.py", content=stub)]).refusals
    assert [r.reason for r in elided] == ["bad_elision"]


# ── scale: a common line in a large file ─────────────────────────────────────────────────


class _Walked(list[str]):
    """A file's lines that count how often the whole file is walked."""

    walks = 0

    def __iter__(self) -> Iterator[str]:
        self.walks += 1
        return super().__iter__()


def test_a_common_line_walks_a_large_file_a_few_times_not_once_per_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SEARCH of one common line is composed at each of its places: each counted the
    file's indentation style and line ends over the whole file again and made a copy of
    the whole file (quadratic: 10k lines took 5 s, 200k lines minutes). What is learnt of
    the file is counted once, and the new file is made only for the place that lands."""
    copies: list[int] = []
    replaced = FileText.replaced

    def counted(self: FileText, start: int, end: int, new: list[str]) -> FileText:
        copies.append(start)
        return replaced(self, start, end, new)

    monkeypatch.setattr(FileText, "replaced", counted)
    function = ["def f():", "    x = {", "        1: 2,", "    }", "    return x"]
    lines = _Walked(function * 400)
    found = land(FileText(lines), ops_between(["    }"], ["    };"]))
    assert isinstance(found, Missed) and found.reason == "ambiguous"
    assert len(found.candidates) == 400
    assert lines.walks <= 3 and copies == []
    once = _Walked([*lines, "    }  # the last"])
    fixed = land(FileText(once), ops_between(["    }  # the last"], ["    };  # the last"]))
    assert not isinstance(fixed, Missed) and fixed.text.lines[-1] == "    };  # the last"
    assert once.walks <= 3 and len(copies) == 1
