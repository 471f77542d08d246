from __future__ import annotations

from app.counted import counted


def test_one_is_singular_and_every_other_count_plural() -> None:
    assert counted(1, "line") == "1 line"
    assert counted(0, "line") == "0 lines"
    assert counted(2, "line") == "2 lines"
    assert counted(-1, "line") == "-1 lines"
    assert counted(1, "map call") == "1 map call"
    assert counted(3, "map call") == "3 map calls"
