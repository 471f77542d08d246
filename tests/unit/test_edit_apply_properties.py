"""Properties of the applier (hypothesis): it never raises, an exact text found once lands
there and one found twice is refused with both places, and under every model error it
claims to tolerate an edit lands exactly where it belongs or is refused: never elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app.pipeline.edits.apply import apply_edits
from app.pipeline.edits.model import DiffHunk, SearchReplace, WholeFile

_TEXT = st.lists(
    st.sampled_from([*"ab \t\n\r.#x=()", "...", "# ... existing code ...", "\n\n", "  1 "]),
    max_size=60,
).map("".join)
_HUNK_LINE = st.builds(lambda tag, text: tag + text, st.sampled_from([" ", "-", "+"]), _TEXT)


@given(
    _TEXT,
    st.lists(
        st.one_of(
            st.builds(SearchReplace, path=st.just("f.py"), search=_TEXT, replace=_TEXT),
            st.builds(WholeFile, path=st.just("f.py"), content=_TEXT),
            st.builds(
                DiffHunk,
                path=st.just("f.py"),
                lines=st.lists(_HUNK_LINE.map(lambda s: s.replace("\n", "")), max_size=8),
                new_file=st.booleans(),
            ),
        ),
        min_size=1,
        max_size=3,
    ),
    st.booleans(),
)
@settings(max_examples=400)
def test_it_never_raises(text: str, edits: list[SearchReplace], exists: bool) -> None:
    result = apply_edits({"f.py": text if exists else None}, edits)
    assert result.ok or result.refusals
    assert all(r.message for r in result.refusals)


_LINES = st.lists(st.sampled_from(["a", "b", "c", "", "    a", "  b  "]), min_size=1, max_size=25)


@given(_LINES, st.data())
@settings(max_examples=300)
def test_exact_text_lands_where_it_is_once_and_is_refused_when_twice(
    lines: list[str], data: st.DataObject
) -> None:
    i = data.draw(st.integers(0, len(lines) - 1))
    j = data.draw(st.integers(i + 1, len(lines)))
    window = lines[i:j]
    new = [*data.draw(st.lists(st.sampled_from(["a", "b", "NEW"]), max_size=3)), "NEW"]
    text = "".join(x + "\n" for x in lines)
    edit = SearchReplace(
        path="f.py",
        search="".join(x + "\n" for x in window),
        replace="".join(x + "\n" for x in new),
    )
    result = apply_edits({"f.py": text}, [edit])
    starts = [
        s for s in range(len(lines) - len(window) + 1) if lines[s : s + len(window)] == window
    ]
    if len(starts) == 1:
        expected = lines[:i] + new + lines[j:]
        assert result.files == {"f.py": "".join(x + "\n" for x in expected)}
        assert result.notes[0].how == "exact"
    else:
        (refusal,) = result.refusals
        assert refusal.reason == "ambiguous" and result.files == {}
        assert i + 1 in [c.start for c in refusal.candidates]


# ── the model's errors, on files whose lines are unique but for blank ones ──────────────


@dataclass
class Scenario:
    lines: list[str]
    start: int
    end: int
    ops: list[tuple[str, str]]

    def expected(self) -> str:
        new = [t for g, t in self.ops if g != "-"]
        return "".join(x + "\n" for x in self.lines[: self.start] + new + self.lines[self.end :])

    def edit(self, ops: list[tuple[str, str]]) -> SearchReplace:
        return SearchReplace(
            path="f.py",
            search="".join(t + "\n" for g, t in ops if g != "+"),
            replace="".join(t + "\n" for g, t in ops if g != "-"),
        )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(4, 40))
    lines = []
    for k in range(n):
        if draw(st.integers(0, 5)) == 0:
            lines.append("")
        else:
            lines.append(" " * 4 * draw(st.integers(0, 2)) + f"v{k} = f({k})")
    start = draw(st.integers(0, n - 2))
    end = draw(st.integers(start + 2, min(n, start + 9)))
    ops: list[tuple[str, str]] = []
    fresh = iter(range(1000, 2000))
    for line in lines[start:end]:
        if draw(st.integers(0, 4)) == 0:
            ops.append(("+", " " * 4 * draw(st.integers(0, 2)) + f"new{next(fresh)} = 0"))
        ops.append(("-" if line and draw(st.integers(0, 3)) == 0 else " ", line))
    if draw(st.booleans()):
        ops.append(("+", f"tail{next(fresh)} = 1"))
    assume(any(g != " " for g, _ in ops))
    assume(any(g != "+" and t.strip() for g, t in ops))
    return Scenario(lines, start, end, ops)


def _shift(ops: list[tuple[str, str]], by: int) -> list[tuple[str, str]]:
    return [(g, " " * by + t if t else t) for g, t in ops]


def _tabs(ops: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for g, t in ops:
        body = t.lstrip(" ")
        ws = len(t) - len(body)
        out.append((g, "\t" * (ws // 4) + " " * (ws % 4) + body))
    return out


def _trailing(ops: list[tuple[str, str]], data: st.DataObject) -> list[tuple[str, str]]:
    return [(g, t + " " if g != "+" and t and data.draw(st.booleans()) else t) for g, t in ops]


def _dropped(ops: list[tuple[str, str]], data: st.DataObject) -> list[tuple[str, str]]:
    def edge(i: int) -> bool:  # without it the block would be exact and say something else
        after, before = ops[i + 1 :], ops[:i]
        return (bool(after) and all(g == "+" for g, _ in after)) or (
            bool(before) and all(g == "+" for g, _ in before)
        )

    context = [i for i, (g, t) in enumerate(ops) if g == " " and t.strip() and not edge(i)]
    assume(context)
    gone = data.draw(st.sampled_from(context))
    return [op for i, op in enumerate(ops) if i != gone]


def _extra(ops: list[tuple[str, str]], data: st.DataObject) -> list[tuple[str, str]]:
    spots = [i for i, (g, _) in enumerate(ops) if g == " "]
    assume(spots)
    at = data.draw(st.sampled_from(spots))
    return [*ops[:at], (" ", "invented = True"), *ops[at:]]


def _elided(ops: list[tuple[str, str]], data: st.DataObject) -> list[tuple[str, str]]:
    runs = [i for i in range(1, len(ops) - 2) if all(g == " " for g, _ in ops[i - 1 : i + 3])]
    assume(runs)
    i = data.draw(st.sampled_from(runs))
    return [*ops[:i], (" ", "# ... existing code ..."), *ops[i + 2 :]]


KINDS = ["none", "indentation", "tabs", "trailing", "dropped", "extra", "elided"]


def perturbed(case: Scenario, kind: str, data: st.DataObject) -> list[tuple[str, str]]:
    ops = case.ops
    if kind == "indentation":
        ops = _shift(ops, data.draw(st.sampled_from([2, 4])))
    elif kind == "tabs":
        # the file's own style decides, when it has one
        assume(sum(1 for x in case.lines if x.startswith(" ")) >= 3)
        ops = _tabs(ops)
    elif kind == "trailing":
        ops = _trailing(ops, data)
    elif kind == "dropped":
        ops = _dropped(ops, data)
    elif kind == "extra":
        ops = _extra(ops, data)
    elif kind == "elided":
        ops = _elided(ops, data)
    assume(any(g != "+" and t.strip() for g, t in ops))
    return ops


@given(scenarios(), st.sampled_from(KINDS), st.data())
@settings(max_examples=600, deadline=None)
def test_an_edit_lands_where_it_belongs_or_is_refused_never_elsewhere(
    case: Scenario, kind: str, data: st.DataObject
) -> None:
    ops = perturbed(case, kind, data)
    text = "".join(x + "\n" for x in case.lines)
    result = apply_edits({"f.py": text}, [case.edit(ops)])
    if result.ok:
        assert result.files["f.py"] == case.expected(), (kind, result.notes)
    else:
        assert result.refusals and result.files == {}


@given(scenarios(), st.sampled_from(KINDS), st.data())
@settings(max_examples=300, deadline=None)
def test_an_edit_whose_text_occurs_twice_is_refused_with_both_places(
    case: Scenario, kind: str, data: st.DataObject
) -> None:
    copy = case.lines[case.start : case.end]
    assume(any(x.strip() for x in copy))
    ops = perturbed(case, kind, data)
    text = "".join(x + "\n" for x in [*case.lines, "", *copy])
    result = apply_edits({"f.py": text}, [case.edit(ops)])
    (refusal,) = result.refusals
    assert result.files == {}
    if kind == "none":
        assert refusal.reason == "ambiguous"
        assert case.start + 1 in [c.start for c in refusal.candidates]


# ── a rewrite beside a left-out line ─────────────────────────────────────────────────────


@st.composite
def rewrites(draw: st.DrawFn) -> tuple[list[str], int, int, int, int, int]:
    """Unique lines; a window [s, e) with a run [r0, r1) of lines to rewrite and at least
    two context lines on each side; ``gone``: the context line beside the run left out."""
    n = draw(st.integers(8, 30))
    lines = [" " * 4 * draw(st.integers(0, 2)) + f"v{k} = f({k})" for k in range(n)]
    r0 = draw(st.integers(2, n - 3))
    r1 = draw(st.integers(r0 + 1, min(n - 2, r0 + 3)))
    s = draw(st.integers(max(0, r0 - 4), r0 - 2))
    e = draw(st.integers(r1 + 2, min(n, r1 + 4)))
    gone = draw(st.sampled_from([r0 - 1, r1]))
    return lines, s, e, r0, r1, gone


def _block(lines: list[str]) -> str:
    return "".join(x + "\n" for x in lines)


@given(rewrites(), st.sampled_from(["alike", "grown", "unlike"]))
@settings(max_examples=400, deadline=None)
def test_a_rewrite_beside_a_left_out_line_lands_in_place_only_line_for_line(
    scenario: tuple[list[str], int, int, int, int, int], how: str
) -> None:
    """Each removed line rewritten as an edit of itself (``f`` → ``g``) lands in place,
    with the context line beside it left out. A line added at the edge next to the
    left-out line, or rewrites unlike the lines they replace, could go on either side of
    it: refused, never placed."""
    lines, s, e, r0, r1, gone = scenario
    new = [x.replace(" = f(", " = g(") for x in lines[r0:r1]]
    if how == "grown":
        extra = lines[r0][: len(lines[r0]) - len(lines[r0].lstrip())] + "added = 0"
        new = [extra, *new] if gone < r0 else [*new, extra]
    elif how == "unlike":
        new = [f"zz{k}.quux()" for k in range(r0, r1)]
    search = [x for k, x in enumerate(lines[s:e], s) if k != gone]
    replace = [x for k, x in enumerate(lines[s:r0], s) if k != gone]
    replace += new + [x for k, x in enumerate(lines[r1:e], r1) if k != gone]
    edit = SearchReplace(path="f.py", search=_block(search), replace=_block(replace))
    result = apply_edits({"f.py": _block(lines)}, [edit])
    if how == "alike":
        assert result.files == {"f.py": _block(lines[:r0] + new + lines[r1:])}, result.refusals
    else:
        assert result.refusals and result.files == {}


def test_a_left_out_line_beside_repeated_blank_lines_is_refused_not_guessed() -> None:
    # found by the property above: the edit leaves out `v10 = f(10)`, which sits between
    # two blank lines, and adds `new1001` beside blank lines. Either diff pairing of
    # SEARCH and REPLACE puts new1001 before the first blank; the model meant after it
    # (before v10). Only a refusal is safe.
    lines = [""] * 8 + ["v8 = f(8)", "", "v10 = f(10)", "", "v12 = f(12)", ""] + [""] * 4
    ops = [
        ("+", "new1000 = 0"),
        ("-", "v8 = f(8)"),
        (" ", ""),
        ("+", "new1001 = 0"),
        (" ", "v10 = f(10)"),
        (" ", ""),
        ("-", "v12 = f(12)"),
        (" ", ""),
    ]
    case = Scenario(lines, 8, 14, ops)
    written = [op for op in ops if op != (" ", "v10 = f(10)")]
    result = apply_edits({"f.py": "".join(x + "\n" for x in lines)}, [case.edit(written)])
    if result.ok:  # a reading that keeps the model's order is the only acceptable one
        assert result.files["f.py"] == case.expected()
    else:
        (refusal,) = result.refusals
        assert refusal.reason == "ambiguous" and result.files == {}
