"""Dollars as a person reads them: cents when whole, else the places the amount has."""

from __future__ import annotations

import pytest

from app.dollars import dollars


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
    ],
)
def test_dollars(usd: float, shown: str) -> None:
    assert dollars(usd) == shown
