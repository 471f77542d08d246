"""The escalation pane's filter words (pure): a prefix picks every kind it starts, a whole
kind's name picks that kind alone."""

from __future__ import annotations

from app.audit.kinds import AUDIT_KINDS
from app.tui.panes.escalations import line_matches, parse_filter


def test_a_whole_kind_name_is_that_kind_alone() -> None:
    """The palette's "Escalations: only run" showed runtime fallbacks too, and "only
    budget" the budget stops: each kind's name was read as a prefix."""
    assert "runtime_fallback" in AUDIT_KINDS and "budget_stop" in AUDIT_KINDS
    assert parse_filter("run") == (frozenset({"run"}), frozenset())
    assert parse_filter("budget") == (frozenset({"budget"}), frozenset())
    keep, drop = parse_filter("-run")
    assert keep == frozenset() and drop == frozenset({"run"})
    assert not line_matches({"kind": "runtime_fallback"}, *parse_filter("run"))


def test_a_prefix_still_picks_every_kind_it_starts() -> None:
    keep, _ = parse_filter("ru")
    assert {"run", "runtime_fallback"} <= keep
    keep, drop = parse_filter("esc den -call")
    assert "escalation" in keep and "denial" in keep and drop == frozenset({"call"})
    assert parse_filter("nonsense") == (frozenset(), frozenset())
