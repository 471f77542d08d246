"""The Librarian's pure parts: packing, splitting, rendering, clipping."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.pipeline.librarian import LibrarianNotes, NotePoint, pack, render_notes, render_sources
from app.pipeline.librarian.packing import _clip, _pieces
from app.pipeline.structured import unfence
from app.tokens import count_text


def test_pack_is_greedy_in_order_and_never_overfills() -> None:
    costs = [40, 30, 50, 10, 90, 5, 5]
    groups = pack(costs, 100)
    assert groups == [[0, 1], [2, 3], [4, 5, 6]]
    assert [i for g in groups for i in g] == list(range(len(costs)))  # order kept
    assert all(sum(costs[i] for i in g) <= 100 for g in groups)


def test_pack_gives_an_oversized_item_its_own_group() -> None:
    assert pack([10, 500, 10], 100) == [[0], [1], [2]]
    assert pack([], 100) == []


def test_balanced_pack_leaves_no_small_remainder() -> None:
    costs = [10] * 30
    assert [len(g) for g in pack(costs, 200)] == [20, 10]
    groups = pack(costs, 200, balanced=True)
    assert [len(g) for g in groups] == [15, 15]
    assert [i for g in groups for i in g] == list(range(30))
    uneven = [7, 13, 5, 21, 8, 2, 17, 9, 11, 3] * 9
    for group in pack(uneven, 250, balanced=True):
        assert sum(uneven[i] for i in group) <= 250
    assert len(pack(uneven, 250, balanced=True)) == len(pack(uneven, 250))


def test_pack_is_deterministic() -> None:
    costs = [(i * 37) % 91 + 1 for i in range(200)]
    assert pack(costs, 300) == pack(list(costs), 300)


def test_a_source_bigger_than_a_group_is_split_and_keeps_its_id() -> None:
    text = "\n".join(f"line {i} " + "x" * 60 for i in range(200))
    pieces = _pieces([("big.py:1-200", text), ("small.md:1-2", "hello")], 300)
    big = [p for p in pieces if p.id == "big.py:1-200"]
    assert len(big) > 1
    assert all(p.cost <= 300 for p in pieces)
    assert "".join(p.text for p in big) == text  # nothing lost, nothing repeated
    assert [p.part for p in big] == [f"{i}/{len(big)}" for i in range(1, len(big) + 1)]
    assert pieces[-1].id == "small.md:1-2" and pieces[-1].part == ""


def test_a_single_line_longer_than_a_group_is_cut() -> None:
    pieces = _pieces([("min.js:1-1", "y" * 10_000)], 200)
    assert len(pieces) > 1
    assert "".join(p.text for p in pieces) == "y" * 10_000
    assert all(p.cost <= 200 for p in pieces)


def test_render_keeps_ids() -> None:
    text = render_sources([("a.py:1-3", "def f(): ..."), ("README.md:1-1", "# hi")])
    assert '<source id="a.py:1-3">' in text and '<source id="README.md:1-1">' in text
    notes = render_notes(
        [NotePoint(text="f is a stub", sources=["a.py:1-3", "README.md:1-1"])], ["x vs y"]
    )
    assert notes == "- f is a stub [a.py:1-3, README.md:1-1]\n\nContradictions:\n- x vs y"


def test_clip_keeps_whole_blocks_and_says_so() -> None:
    blocks = [f"- point {i} " + "z" * 100 for i in range(50)]
    text, kept = _clip(blocks, 200, "points")
    assert count_text(text) <= 200
    assert 0 < kept < 50
    assert text.splitlines()[:kept] == blocks[:kept]
    assert f"kept {kept} of 50 points" in text and "clipped by the Librarian" in text


def test_clip_cuts_the_first_block_when_none_fits() -> None:
    text, kept = _clip(["w" * 5000], 100, "sources")
    assert kept == 0 and count_text(text) <= 100
    assert text.startswith("www") and "kept 0 of 1 sources" in text


def test_clip_never_exceeds_a_tiny_budget() -> None:
    text, _ = _clip(["abc" * 100], 5, "sources")
    assert count_text(text) <= 5


def test_notes_schema_is_bounded_and_fences_are_tolerated() -> None:
    raw = '```json\n{"points": [{"text": "t", "sources": ["a"]}], "confidence": 0.5}\n```'
    notes = LibrarianNotes.model_validate_json(unfence(raw))
    assert notes.points[0].sources == ["a"] and notes.confidence == 0.5
    with pytest.raises(ValidationError):
        LibrarianNotes.model_validate_json('{"points": [], "confidence": 2}')
    with pytest.raises(ValidationError):
        LibrarianNotes.model_validate_json('{"points": [{"text": ""}], "confidence": 0.5}')


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("1", False),
        ("none", False),
        ("N/A", False),
        ("None found.", False),
        ("No contradictions found", False),
        ("There are no conflicts between the sources.", False),
        ("", False),
        ("a.py sets the timeout to 30, b.py to 60", True),
        ("parse() returns a list in one source and a tuple in another", True),
    ],
)
def test_only_words_about_the_sources_count_as_a_contradiction(text: str, kept: bool) -> None:
    from app.pipeline.librarian.calls import is_contradiction

    assert is_contradiction(text) is kept
