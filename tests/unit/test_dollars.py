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


def test_a_cap_the_ledger_refuses_is_named_as_it_is() -> None:
    from app.router.ledger.errors import CapExceeded

    err = CapExceeded(
        cap="provider:deepseek",
        limit_usd=0.002,
        spent_usd=0.0015,
        reserved_usd=0.0,
        requested_usd=0.000728,
        session="s1",
        provider="deepseek",
        model="m",
    )
    assert "cap of $0.002 would be crossed" in str(err) and "requested $0.000728" in str(err)
