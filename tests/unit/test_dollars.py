"""Dollars as a person reads them: cents when whole, else the places the amount has."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.dollars import cap_row, dollars, spent


@pytest.mark.parametrize(
    ("usd", "shown"),
    [
        (0, "$0.00"),
        (5, "$5.00"),
        (0.1 + 0.2, "$0.30"),
        # rounded to cents these read $0.02, $10.00, $0.00 and $0.0001 > $0.0001
        (0.018068, "$0.018068"),
        (9.996, "$9.996"),
        (0.002, "$0.002"),
        (0.000128, "$0.000128"),
        (0.000068, "$0.000068"),
        (0.00011032, "$0.00011"),
        (12.345678912, "$12.345679"),
        (-0.005, "-$0.005"),
        (-2, "-$2.00"),
        (0.0000001, "<$0.000001"),
        # half a micro-dollar read "$0.00" (six places round it down; a team-store audit)
        (0.0000005, "<$0.000001"),
        (0.0000006, "$0.000001"),
    ],
)
def test_dollars(usd: float, shown: str) -> None:
    assert dollars(usd) == shown


NANO = 10**9


@given(
    cap=st.none() | st.integers(0, 10**6 * NANO),
    spent_n=st.integers(0, 2 * 10**6 * NANO),
    reserved_n=st.integers(0, 10**6 * NANO),
)
def test_a_cap_row_adds_up_and_never_shows_more_left_than_there_is(
    cap: int | None, spent_n: int, reserved_n: int
) -> None:
    """Rounded each to the nearest, $0.1709925 spent of $20 read "$0.170992 spent,
    $19.829007 left", and of $5 "$4.829008 left" (more than the $4.8290075 there was)."""
    shown = cap_row(None if cap is None else cap / NANO, spent_n / NANO, reserved_n / NANO)
    limit, spent_s, reserved_s, left = (
        None if f is None else Decimal(dollars(f).removeprefix("$")) for f in shown
    )
    assert spent_s is not None and reserved_s is not None
    nano = Decimal(NANO)
    assert spent_s >= spent_n / nano and reserved_s >= reserved_n / nano  # never below
    assert spent_s - spent_n / nano < Decimal("0.000001")  # by less than a micro-dollar
    if cap is None:
        assert limit is None and left is None
        return
    assert limit is not None and left is not None
    true_left = max(Decimal(0), (cap - spent_n - reserved_n) / nano)
    assert 0 <= left <= true_left
    if limit >= spent_s + reserved_s:
        assert spent_s + reserved_s + left == limit
    else:
        assert left == 0


def test_the_row_an_audit_found() -> None:
    assert [dollars(f) for f in cap_row(20.0, 0.1709925, 0.0) if f is not None] == [
        "$20.00",
        "$0.170993",
        "$0.00",
        "$19.829007",
    ]
    assert [dollars(f) for f in cap_row(5.0, 0.1709925, 0.0) if f is not None][-1] == "$4.829007"
    assert cap_row(None, 0.5, 0.0) == (None, 0.5, 0.0, None)
    assert spent(0.0000001) == 0.000001 and spent(0.0) == 0.0
