"""The escalation pane's filter words (pure): a prefix picks every kind it starts, a whole
kind's name picks that kind alone."""

from __future__ import annotations

from app.audit.kinds import AUDIT_KINDS
from app.tui.panes.escalations import describe, line_matches, parse_filter


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


def test_the_panes_own_labels_pick_their_kinds() -> None:
    """The pane shows DENY, APPROVE, FALLBK, LOCAL!: typed into the filter they matched
    no kind's name, and the pane showed every line under "deny · 8/8 lines"."""
    assert parse_filter("deny")[0] == frozenset({"denial"})
    assert parse_filter("fallbk")[0] == frozenset({"runtime_fallback"})
    assert parse_filter("local!")[0] == frozenset({"local_only_refusal"})
    assert parse_filter("-approve")[1] == frozenset({"approval"})


def test_a_word_that_names_no_kind_keeps_nothing() -> None:
    keep, drop = parse_filter("nonsense")
    assert keep and drop == frozenset()
    assert not any(line_matches({"kind": kind}, keep, drop) for kind in AUDIT_KINDS)
    assert line_matches({"kind": "denial"}, *parse_filter("nonsense deny"))


def test_an_escalation_the_user_asked_for_says_so_first() -> None:
    """Cut at the pane's width, the detail's reasons hid the user's request: "e" seemed
    lost (a user-audit)."""
    line = {
        "kind": "escalation",
        "reason_codes": ["LOW_CONFIDENCE", "USER_REQUEST"],
        "detail": "confidence 0.45 < 0.75, user_request == true → gpt-5.1-high",
    }
    assert describe(line).startswith("you asked · confidence 0.45")
    assert describe({**line, "reason_codes": ["LOW_CONFIDENCE"]}).startswith("confidence")


def test_a_yes_no_trigger_reads_true_not_pythons_true() -> None:
    """The modal read "user_request = True" above "user_request == true" (a user-audit)."""
    from app.tui.screens.approval import trigger_line

    reason = {"code": "USER_REQUEST", "signal": "user_request", "value": True, "op": "is_true"}
    assert trigger_line(reason) == "USER_REQUEST: user_request = true"
