from __future__ import annotations

from app.counted import counted


def test_one_is_singular_and_every_other_count_plural() -> None:
    assert counted(1, "line") == "1 line"
    assert counted(0, "line") == "0 lines"
    assert counted(2, "line") == "2 lines"
    assert counted(-1, "line") == "-1 lines"


def test_an_irregular_plural_is_given() -> None:
    assert counted(1, "chain", "chains") == "1 chain"
    assert counted(3, "memory", "memories") == "3 memories"
