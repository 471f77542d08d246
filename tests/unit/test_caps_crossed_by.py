"""Which caps a write to the ledger crossed, decided from that write's own totals (just
before it and just after it): the pure half of GR011_CAP_CROSSED."""

from __future__ import annotations

from app.router.ledger.money import NANO
from app.router.ledger.records import CapTotal, Crossed, crossed_by


def test_a_write_crosses_a_cap_it_finds_within_and_leaves_past() -> None:
    totals = (CapTotal("deepseek day", 500, 388, 776),)
    assert crossed_by(totals) == [Crossed("deepseek day", 500 / NANO, 776 / NANO)]


def test_a_cap_past_before_the_write_was_crossed_by_another() -> None:
    """The writes that landed after the crossing one find the cap past already: they do
    not say it again (each cap is said once, by the write that carried the spend past)."""
    assert crossed_by((CapTotal("day", 500, 776, 1164),)) == []


def test_reaching_a_cap_exactly_is_not_crossing_it_and_from_it_is() -> None:
    assert crossed_by((CapTotal("session", 500, 100, 500),)) == []
    assert [c.cap for c in crossed_by((CapTotal("session", 500, 500, 501),))] == ["session"]


def test_only_the_caps_crossed_are_named_in_their_order() -> None:
    totals = (
        CapTotal("session", 1000, 1200, 1500),  # past before: another's
        CapTotal("day", 1400, 1200, 1500),
        CapTotal("deepseek day", 1300, 1200, 1500),
    )
    assert [c.cap for c in crossed_by(totals)] == ["day", "deepseek day"]


def test_no_totals_no_crossing() -> None:
    """The usual write (within every cap) returns none; a stand-in store, None."""
    assert crossed_by(()) == [] and crossed_by(None) == []
