"""The edit format's parser: every accepted form, every problem named, nothing raised but
the typed EditFormatError (hypothesis), and what the renderer writes parses back."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.pipeline.edits.model import DiffHunk, EditList, SearchReplace, WholeFile
from app.pipeline.edits.parse import EditFormatError, parse_edits
from app.pipeline.edits.render import EXAMPLE, block, render, reply, whole_file
from app.pipeline.edits.reply import EditReplyParser
from app.router.structured import ReplyRejected

FIX_SEARCH = "    for i in range(len(tokens) - 1):\n"
FIX_REPLACE = "    for i in range(len(tokens)):\n"


def problems(text: str) -> list[str]:
    with pytest.raises(EditFormatError) as err:
        parse_edits(text)
    return err.value.problems


def test_the_prompts_example_parses() -> None:
    edits = parse_edits(EXAMPLE)
    assert edits.format == "blocks" and edits.self_check_confidence == 0.8
    (edit,) = edits.edits
    assert isinstance(edit, SearchReplace) and edit.path == "app/util.py"
    assert edit.search.endswith("return a - b\n") and edit.replace.endswith("return a + b\n")


def test_blocks_in_fences_with_prose_and_a_decorated_path() -> None:
    text = (
        "The loop stops one short. Here is the fix:\n\n```python\n**`parser.py`**\n"
        f"<<<<<<< SEARCH\n{FIX_SEARCH}=======\n{FIX_REPLACE}>>>>>>> REPLACE\n```\n\n"
        'And the trailer:\n```json\n{"self_check_confidence": 0.9, "notes": "bound"}\n```\n'
    )
    edits = parse_edits(text)
    assert edits.edits == [SearchReplace(path="parser.py", search=FIX_SEARCH, replace=FIX_REPLACE)]
    assert edits.notes == "bound"


def test_a_block_without_a_path_reuses_the_one_before() -> None:
    text = (
        block("a.py", "x = 1\n", "x = 2\n")
        + "<<<<<<< SEARCH\ny = 1\n=======\ny = 2\n>>>>>>> REPLACE\n"
        + '{"self_check_confidence": 0.5}'
    )
    assert [e.path for e in parse_edits(text).edits] == ["a.py", "a.py"]


def test_a_path_without_a_dot_and_one_named_in_prose() -> None:
    text = reply([block("Makefile", "all:\n", "all: test\n")]).replace(
        "Makefile\n", "Makefile\n\n```make\n", 1
    )
    assert parse_edits(text).edits[0].path == "Makefile"
    prose = "In `src/app.py`:\n" + reply([block("x", "a\n", "b\n")]).split("\n", 1)[1]
    assert parse_edits(prose).edits[0].path == "src/app.py"


def test_whole_files_and_new_files() -> None:
    text = reply([whole_file("pkg/new.py", "X = 1\n"), block("old.py", "", "Y = 2\n")])
    first, second = parse_edits(text).edits
    assert first == WholeFile(path="pkg/new.py", content="X = 1\n")
    assert second == SearchReplace(path="old.py", search="", replace="Y = 2\n")


def test_a_unified_diff_with_no_numbers_and_a_blank_context_line() -> None:
    diff = (
        "```diff\n--- a/parser.py\n+++ b/parser.py\n@@ @@\n     tagged = []\n\n"
        f"-{FIX_SEARCH}+{FIX_REPLACE}```\n" + '{"self_check_confidence": 0.7}\n'
    )
    edits = parse_edits(diff)
    assert edits.format == "diff"
    (hunk,) = edits.edits
    assert isinstance(hunk, DiffHunk) and hunk.path == "parser.py"
    assert hunk.lines == ["     tagged = []", " ", "-" + FIX_SEARCH[:-1], "+" + FIX_REPLACE[:-1]]


@pytest.mark.parametrize(
    ("quoted", "path"),
    [
        (r'"{side}/dir with space/caf\303\251.txt"', "dir with space/café.txt"),
        (r'"{side}/say \"hi\".py"', 'say "hi".py'),
    ],
)
def test_a_path_git_quoted_is_read_unquoted(quoted: str, path: str) -> None:
    """Git quotes a name with a byte past ASCII or a quote (unless core.quotepath=false);
    the name was taken with its quotes and backslashes and refused (an audit)."""
    diff = (
        f"--- {quoted.format(side='a')}\n+++ {quoted.format(side='b')}\n@@ @@\n"
        f"-{FIX_SEARCH}+{FIX_REPLACE}" + '{"self_check_confidence": 0.7}\n'
    )
    (hunk,) = parse_edits(diff).edits
    assert isinstance(hunk, DiffHunk) and hunk.path == path


@pytest.mark.parametrize(
    "escaped",
    [r"x\377.py", r"x\033[2J.py", r"x\001.py", "x\ud800.py", r"x\342\200\256.py"],
    ids=["no-utf8", "esc", "soh", "lone-surrogate", "bidi-override"],
)
def test_a_quoted_name_of_no_utf8_or_a_control_byte_is_refused(escaped: str) -> None:
    """Unquoted, such a name was a lone surrogate (its edit list could not be written as
    JSON) or carried ESC past the path check (a review): refused, named."""
    diff = (
        f'--- "a/{escaped}"\n+++ "b/{escaped}"\n@@ @@\n-{FIX_SEARCH}+{FIX_REPLACE}'
        + '{"self_check_confidence": 0.7}\n'
    )
    found = problems(diff)
    assert any("no control characters or backslashes" in p for p in found), found


def test_blocks_and_a_unified_diff_in_one_reply_are_named_not_half_applied() -> None:
    """The diff's edits were dropped without a word while the blocks landed."""
    text = (
        block("parser.py", FIX_SEARCH, FIX_REPLACE)
        + "And in util.py:\n```diff\n--- a/util.py\n+++ b/util.py\n@@ @@\n-x = 1\n+x = 2\n```\n"
        + '{"self_check_confidence": 0.6}'
    )
    assert any("mixes SEARCH/REPLACE blocks with a unified diff" in p for p in problems(text))
    # a block whose own text looks like a diff is one format still
    inside = block("notes.diff", "--- a/x\n+++ b/x\n", "--- a/y\n+++ b/y\n")
    assert parse_edits(inside + '{"self_check_confidence": 0.6}').format == "blocks"


def test_context_lines_that_look_like_fences_stay_in_the_hunk() -> None:
    """An RST underline (" ~~~~") or a Markdown fence inside a docstring (" ```") is a
    context line; only a fence at the start of its line closes the diff (the bench found a
    hunk cut short there, and the rest of the diff landed without it)."""
    diff = (
        '```diff\n--- a/m.py\n+++ b/m.py\n@@ -1,4 +1,4 @@\n """\n ~~~~~~\n     ```\n'
        "-old\n+new\n```\n" + '{"self_check_confidence": 0.7}\n'
    )
    (hunk,) = parse_edits(diff).edits
    assert isinstance(hunk, DiffHunk)
    assert hunk.lines == [' """', " ~~~~~~", "     ```", "-old", "+new"]


def test_the_older_json_reply_with_a_diff_is_still_read() -> None:
    diff = f"--- a/parser.py\n+++ b/parser.py\n@@ -20,2 +20,2 @@\n-{FIX_SEARCH}+{FIX_REPLACE}"
    text = json.dumps({"diff": diff, "self_check_confidence": 0.6, "notes": "n"})
    edits = parse_edits(text)
    assert edits.format == "json" and edits.self_check_confidence == 0.6
    assert isinstance(edits.edits[0], DiffHunk)


def test_a_new_file_in_a_diff() -> None:
    diff = "--- /dev/null\n+++ b/pkg/x.py\n@@ -0,0 +1 @@\n+X = 1\n"
    (hunk,) = parse_edits(diff + '{"self_check_confidence": 1.0}').edits
    assert isinstance(hunk, DiffHunk) and hunk.new_file and hunk.lines == ["+X = 1"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("I would change the loop bound.", "no edits found"),
        (block("a.py", "x\n", "y\n"), "no JSON trailer"),
        (block("a.py", "x\n", "y\n") + '{"self_check_confidence": 2}', "less than or equal to 1"),
        ("a.py\n<<<<<<< SEARCH\nx\n", "a ======= line is missing"),
        ("a.py\n<<<<<<< SEARCH\nx\n=======\ny\n", "a >>>>>>> REPLACE line is missing"),
        ("<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n{}", "no file path"),
        (reply([block("../etc/passwd", "x\n", "y\n")]), "stay inside the repository"),
        (reply([block(".git/config", "x\n", "y\n")]), ".git/ is not part of the change"),
        (reply([block("/abs.py", "x\n", "y\n")]), "relative"),
        ("--- a/x.py\n+++ /dev/null\n@@ @@\n-x\n", "deleting files is not supported"),
    ],
)
def test_problems_are_named_for_the_repair_turn(text: str, needle: str) -> None:
    assert any(needle in p for p in problems(text)), problems(text)


def test_every_problem_is_reported_at_once() -> None:
    text = reply([block("../a.py", "x\n", "y\n")]).replace("0.8", "7")
    found = problems(text)
    assert any("inside the repository" in p for p in found)
    assert any("trailer" in p for p in found)


# ── paths with spaces ────────────────────────────────────────────────────────────────────

SPACED = {"my file.py": "x = 1\n", "file.py": "x = 1\n"}
TRAILER = '{"self_check_confidence": 0.5}'


def edit_after(line: str, search: str = "x = 1\n") -> str:
    return f"{line}\n<<<<<<< SEARCH\n{search}=======\nz = 2\n>>>>>>> REPLACE\n{TRAILER}"


@pytest.mark.parametrize(
    "line",
    [
        "my file.py",
        "`my file.py`",
        "**`my file.py`**",
        '"my file.py"',
        "'my file.py'",
        "### my file.py",
        "- `my file.py`",
        "File: my file.py",
        "In `my file.py`:",
    ],
)
def test_a_path_with_spaces_is_read_whole(line: str) -> None:
    """The edit for ``my file.py`` landed in ``file.py``: the line was read as prose, and
    its last path-like word taken."""
    assert parse_edits(edit_after(line)).edits[0].path == "my file.py"
    change = EditReplyParser(SPACED.get)(edit_after(line))
    assert change.files == {"my file.py": "z = 2\n"}


@pytest.mark.parametrize(
    ("line", "rewritten"),
    [
        ("Here is the fix for file.py:", True),
        ("In `file.py`:", True),
        ("In file.py, the loop", True),
        ("Update file.py", False),
        ("### Changes to file.py", False),
        ("Run `python file.py`:", False),
    ],
)
def test_prose_naming_a_path_still_names_it(line: str, rewritten: bool) -> None:
    """An edit of the file lands in the file the prose names. A FILE block does too
    after a line that can only be prose; after one that could be a new file's path with
    spaces ("Update file.py"), it is refused rather than guessed."""
    files = {"file.py": "x = 1\n"}
    assert EditReplyParser(files.get)(edit_after(line)).files == {"file.py": "z = 2\n"}
    rewrite = f"{line}\n<<<<<<< FILE\nz = 2\n>>>>>>> FILE\n{TRAILER}"
    if rewritten:
        assert EditReplyParser(files.get)(rewrite).files == {"file.py": "z = 2\n"}
    else:
        with pytest.raises(ReplyRejected, match="could name"):
            EditReplyParser(files.get)(rewrite)


def test_a_path_line_that_cannot_be_told_is_refused_not_written_elsewhere() -> None:
    """Only ``file.py`` exists: a FILE block after "my file.py" creates a new file, or
    rewrites file.py after a line of prose; neither reading is safe to guess."""
    files = {"file.py": "x = 1\n"}
    text = f"my file.py\n<<<<<<< FILE\nz = 2\n>>>>>>> FILE\n{TRAILER}"
    parser = EditReplyParser(files.get)
    with pytest.raises(ReplyRejected) as err:
        parser(text)
    assert "could name 'my file.py' or 'file.py'" in err.value.problem
    assert "in backticks" in err.value.problem
    assert parser.last is not None and parser.last.outcome == "format"
    # the repair: the path alone, in backticks
    change = EditReplyParser(files.get)(text.replace("my file.py", "`my file.py`", 1))
    assert change.files == {"my file.py": "z = 2\n"}
    # an edit of an existing file can only mean the one that exists
    assert EditReplyParser(files.get)(edit_after("Update file.py")).files == {"file.py": "z = 2\n"}


def test_a_path_with_spaces_renders_and_parses_back() -> None:
    edits = EditList(
        edits=[SearchReplace(path="docs/my  notes.md", search="a\n", replace="b\n")],
        self_check_confidence=0.5,
    )
    assert parse_edits(render(edits)) == edits


# ── properties ───────────────────────────────────────────────────────────────────────────

_LINE = st.text(
    alphabet=st.characters(
        blacklist_categories=["Cs"], blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
    ),
    max_size=20,
).filter(lambda s: not s.lstrip().startswith(("<<<<<", "=====", ">>>>>")))
_BODY = st.lists(_LINE, max_size=6).map(lambda lines: "".join(x + "\n" for x in lines))
_PATH = st.from_regex(r"[a-z][a-z0-9_]{0,8}(/[a-z][a-z0-9_]{0,8}){0,2}\.py", fullmatch=True)


@given(st.text(max_size=400))
@settings(max_examples=300)
def test_any_text_parses_or_raises_the_typed_error(text: str) -> None:
    try:
        edits = parse_edits(text)
    except EditFormatError as exc:
        assert exc.problems and all(isinstance(p, str) for p in exc.problems)
    else:
        assert isinstance(edits, EditList) and edits.edits


@given(
    st.lists(
        st.one_of(
            st.builds(SearchReplace, path=_PATH, search=_BODY.filter(bool), replace=_BODY),
            st.builds(WholeFile, path=_PATH, content=_BODY),
        ),
        min_size=1,
        max_size=4,
    ),
    st.floats(min_value=0, max_value=1),
    st.text(alphabet="abc xyz.", max_size=40),
)
@settings(max_examples=200)
def test_what_the_renderer_writes_parses_back_to_the_same_edits(
    edits: list[SearchReplace | WholeFile], confidence: float, notes: str
) -> None:
    original = EditList(edits=edits, self_check_confidence=confidence, notes=notes)
    assert parse_edits(render(original)) == original


def test_the_narrowed_grammar_offers_the_shown_files_and_their_lines() -> None:
    from app.pipeline.edits.grammar import EDIT_GRAMMAR, edit_grammar

    grammar = edit_grammar({"a.py": 'x = "q"\\\n=======\n<<<< no\ny\n', "b/c.py": "z\n"})
    assert edit_grammar({}) == EDIT_GRAMMAR
    assert '"a.py\\n" "<<<<<<< SEARCH\\n" copy0{1,12}' in grammar
    assert '"b/c.py\\n"' in grammar and 'copy1 ::= "z\\n" | "\\n"' in grammar
    assert '"x = \\"q\\"\\\\\\n"' in grammar  # quotes and backslashes escaped
    assert '=======\\n" |' not in grammar and "<<<< no" not in grammar  # never a marker
