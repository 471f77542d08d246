"""The token counter's two spellings of one rule set: piece by piece (the regex, as the
rules read) and in passes over the text's bytes (what long texts take). They must agree
on every text, the odd ones most of all."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import tokens
from app.tokens import TextCount, _count_bytes, _count_pieces, count_text

#: what the rules care about, and what a byte-level count could get wrong: every ASCII
#: character, long runs, letters and whitespace past ASCII, a lone surrogate, an emoji
_PARTS = st.one_of(
    st.characters(max_codepoint=127),
    st.sampled_from(["a" * 7, "b" * 12, "Z" * 23, "1" * 4, "9" * 7, "-" * 3, "=" * 6, "(*)"]),
    # runs past the lengths counted one pass each (app.tokens._PASSES)
    st.sampled_from(["q" * 47, "Q" * 52, "w" * 131, "#" * 19, "." * 40, "4" * 25, "0" * 77]),
    st.sampled_from([" a", " 1", " .", "  x", "\n ", " \t", "\r\n", "\x1c", "\x7f", "\x00"]),
    st.sampled_from(["é", "→", "中文", "😀", "\ud800", "ﬁ", "٣", "\u200b", "\ufeff"]),
)
_TEXTS = st.lists(_PARTS, max_size=120).map("".join)
_WIDE = st.lists(
    st.one_of(_PARTS, st.sampled_from(["\xa0", "\u3000", "\u2028", " \x85x"])), max_size=80
).map("".join)


@settings(max_examples=600, deadline=None)
@given(_TEXTS)
def test_the_byte_count_is_the_piece_count(text: str) -> None:
    assert _count_bytes(text) == _count_pieces(text)


@settings(max_examples=300, deadline=None)
@given(_WIDE)
def test_every_text_counts_as_its_pieces_whichever_way_is_taken(text: str) -> None:
    assert count_text(text) == _count_pieces(text)
    assert count_text(text * 3) == _count_pieces(text * 3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("hello world", 2),
        ("internationalization", 4),
        ("2026", 2),
        ("a  b", 3),
        (" x = 1;  # ok\n", 8),
        ("a" * 200_000, 40_000),  # a blob of letters: 1 + 39,999 more past the first 6
        ("-" * 100_001, 50_001),
        ("7" * 99_999, 33_333),
    ],
)
def test_the_rules_examples_both_ways(text: str, expected: int) -> None:
    assert _count_pieces(text) == expected
    assert _count_bytes(text) == expected


def test_a_long_text_is_counted_by_bytes_unless_it_has_whitespace_past_ascii(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken: list[str] = []
    monkeypatch.setattr(tokens, "_count_bytes", lambda t: taken.append("bytes") or 0)
    monkeypatch.setattr(tokens, "_count_pieces", lambda t: taken.append("pieces") or 0)
    long = "def parse(tokens): return tokens  # → ok\n" * 3
    for text in ("short", long, long + "\xa0", long.replace("→", "->")):
        count_text(text)
    assert taken == ["pieces", "bytes", "pieces", "bytes"]


def test_the_wide_spaces_are_exactly_what_the_pieces_call_whitespace() -> None:
    space = re.compile(r"\s").match
    wide = [chr(c) for c in range(0x80, 0x110000) if space(chr(c))]
    assert [c for c in wide if not tokens._WIDE_SPACE.match(c)] == []
    pattern_chars = [chr(c) for c in range(0x80, 0x110000) if tokens._WIDE_SPACE.match(chr(c))]
    assert pattern_chars == wide


def test_a_blob_of_one_class_costs_a_bounded_number_of_passes() -> None:
    """A pass per length reached would make a 200 KB run of letters 40,000 passes over it
    (seconds, from one prompt): past a few, the long runs are measured one by one."""

    class Passes(bytes):
        made = 0

        def count(self, *args: object) -> int:  # type: ignore[override]
            Passes.made += 1
            return super().count(*args)  # type: ignore[arg-type]

    blob = Passes(b"\0" + b"a" * 200_000 + b"\0").translate(tokens._LETTERS)
    assert tokens._runs_of(Passes(blob), b"a", 7, 5) == 39_999
    assert Passes.made <= 16


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.one_of(_PARTS, st.sampled_from(["word ", " ", "\n", "  ", "\xa0"])), max_size=60),
    st.data(),
)
def test_a_text_counted_in_parts_counts_as_the_whole(parts: list[str], data: st.DataObject) -> None:
    """A streamed reply counted as it comes (the relay's cap, app.backends.provider_common)
    is the whole text's count, wherever the parts are cut: each counted on its own came
    to more (a word cut in two is two pieces, a space at a part's end one of its own)."""
    text = "".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=12)))
    running, total = TextCount(), 0
    for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True):
        total = running.add(text[start:end])
    assert total == count_text(text)


def test_parts_counted_one_by_one_came_to_more() -> None:
    """Why the parts are counted together: 20 parts of "word word " counted each on its
    own come to 60 tokens, the whole to 41."""
    parts = ["word word "] * 20
    assert sum(count_text(p) for p in parts) == 60
    running = TextCount()
    assert [running.add(p) for p in parts][-1] == count_text("".join(parts)) == 41
