"""The escalation pane's filter words (pure): a prefix picks every kind it starts, a whole
kind's name picks that kind alone. And what the pane says while a filter is on (Pilot)."""

from __future__ import annotations

from typing import Any

from textual.color import Color

from app.audit.kinds import AUDIT_KINDS
from app.bus import AuditAppended
from app.tui.panes.escalations import describe, line_matches, parse_filter
from tests.tui.helpers import settle, until


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


def _line(seq: int, kind: str) -> dict[str, Any]:
    ts = "2026-01-01T12:00:00.000Z"
    return {"seq": seq, "ts": ts, "session": "s", "kind": kind, "detail": f"line {seq}"}


async def test_a_filter_left_on_says_so_and_counts_what_it_hides_as_lines_come(
    make_app: Any,
) -> None:
    """Lines of the other kinds came and were hidden with no sign of it: "esc · 1/3 lines"
    named no filter and no hidden line, in the pane's usual grey."""
    app = make_app(task=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        await settle(pilot)
        pane = app.home.escalations

        def said() -> tuple[str, str]:
            kept, shown = len(pane.lines), len(pane.shown_lines())
            return (
                str(pane.border_subtitle),
                f"{kept - shown} hidden · {shown}/{kept} lines",
            )

        pane.view.focus()
        await pilot.press("f", *"esc", "enter")
        await settle(pilot)
        assert pane.filter_text == "esc" and pane.has_class("-filtered")
        assert str(pane.border_title) == "Escalations ── filter esc"
        subtitle, expected = said()
        assert subtitle == expected
        before, hidden = len(pane.lines), len(pane.lines) - len(pane.shown_lines())

        for n, kind in enumerate(["call", "route", "escalation"], 1):
            await app.bus.publish(AuditAppended.of(_line(n, kind)))
        await until(pilot, lambda: len(pane.lines) >= before + 3, what="3 lines")
        await settle(pilot)
        subtitle, expected = said()
        assert subtitle == expected and subtitle.startswith(f"{hidden + 2} hidden · "), subtitle
        top = pane.render_lines(pane.region.reset_offset)[0].text
        assert "Escalations ── filter esc" in top  # drawn, not only set
        warning = Color.parse(app.theme_variables["warning"])
        assert pane.styles.border_title_color == pane.styles.border_subtitle_color == warning

        pane.set_filter("")
        await settle(pilot)
        assert not pane.has_class("-filtered")
        assert str(pane.border_title) == "Escalations"
        assert str(pane.border_subtitle) == f"{len(pane.lines)} lines"


async def test_a_narrow_pane_shows_what_happened_and_zoomed_the_time(make_app: Any) -> None:
    """At 80 columns a line showed its time, its kind and three letters of the role, and
    never what happened (a TUI audit): a narrow pane leaves the time out and cuts the
    role to four letters; zoomed, it is wide and the time is back."""
    from app.tui.panes.escalations import EscalationsPane
    from tests.tui import scenes

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await scenes.run_to_end(pilot)
        pane = app.screen.query_one(EscalationsPane)
        assert pane.compact
        escalation = next(ln for ln in pane.view.plain_lines() if ln.startswith("ESCAL"))
        assert escalation.startswith("ESCAL   impl 2 failed")
        pane.view.focus()
        await pilot.press("z")
        await settle(pilot)
        assert app.screen.maximized is pane and not pane.compact
        full = next(ln for ln in pane.view.plain_lines() if " ESCAL " in ln)
        assert full[:8].count(":") == 2 and "ESCAL   implementer 2 failed" in full
        await pilot.press("z")
        await settle(pilot)
        assert pane.compact
