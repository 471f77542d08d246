"""count_messages remembers a long message's count (app.tokens._Remembered): the same
number as counting it, one count for a text sent again (a new object, as each request
parses its own), short texts never kept, and the memory it keeps bounded."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app import tokens
from app.tokens import (
    MESSAGE_OVERHEAD,
    REPLY_PRIMING,
    _Remembered,
    count_messages,
    count_text,
)

LONG = "def parse(tokens):\n    return [t for t in tokens if t]  # the tail\n" * 60


def _copy(text: str) -> str:
    """An equal string that is another object (its hash not yet computed)."""
    return "".join(list(text))


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each text app.tokens counts, in order (a fresh memory for the test)."""
    seen: list[str] = []
    real = tokens.count_text

    def counting(text: str) -> int:
        seen.append(text)
        return real(text)

    monkeypatch.setattr(tokens, "count_text", counting)
    monkeypatch.setattr(tokens, "_remembered", _Remembered())
    return seen


@given(texts=st.lists(st.text(max_size=3000) | st.just(LONG), max_size=6))
def test_a_remembered_count_is_the_count(texts: list[str]) -> None:
    expected = sum(MESSAGE_OVERHEAD + count_text(t) for t in texts) + REPLY_PRIMING
    assert count_messages(texts) == expected
    assert count_messages([_copy(t) for t in texts]) == expected


def test_a_long_message_sent_again_is_counted_once(counted: list[str]) -> None:
    assert len(LONG) >= _Remembered.MIN_CHARS
    first = count_messages([LONG, "what next?"])
    again = count_messages([_copy(LONG), "what next?", _copy(LONG) + "!"])
    assert again == first + MESSAGE_OVERHEAD + count_text(LONG + "!")
    # the long text once; the short one each time; the new long one once
    assert counted == [LONG, "what next?", "what next?", LONG + "!"]


def test_what_is_kept_stays_within_its_bound(counted: list[str], monkeypatch: Any) -> None:
    monkeypatch.setattr(_Remembered, "MAX_CHARS", 4 * (len(LONG) + 4))  # four of them
    memory = _Remembered()
    texts = [f"{i:04d}{LONG}" for i in range(6)]
    for text in texts:
        memory.count(text)
    assert memory._chars <= _Remembered.MAX_CHARS
    kept = list(memory._counts)
    assert kept == texts[-4:]  # the oldest let go
    counted.clear()
    memory.count(_copy(texts[2]))  # kept: not counted again, and now the latest
    memory.count(_copy(texts[0]))  # let go: counted again, and the least recent goes
    assert counted == [texts[0]]
    assert list(memory._counts) == [texts[4], texts[5], texts[2], texts[0]]
    # a text longer than a quarter of the bound is counted, never kept
    memory.count(LONG * 2)
    assert LONG * 2 not in memory._counts
