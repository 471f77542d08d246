"""The budget meter on a shared (team) store: the day is the team's, the user's own day
beside it; on a machine's own file it reads as before."""

from __future__ import annotations

from typing import Any

from app.router.ledger.records import BudgetSnapshot, usage
from app.tui.panes.budget import budget_line, render_budget

NANO = 1_000_000_000


def _snap(**team: Any) -> dict[str, Any]:
    return BudgetSnapshot(
        session="s",
        day="2026-03-01",
        ts="2026-03-01T10:00:00Z",
        per_session=usage(5 * NANO, NANO, 0),
        per_day=usage(20 * NANO, 12 * NANO, NANO),
        per_provider={},
        reserved_usd=0.0,
        calls=3,
        by_role={},
        by_model={},
        by_provider={},
        **team,
    ).model_dump()


def test_a_team_store_shows_the_teams_day_and_the_users() -> None:
    text = render_budget(
        _snap(team="red", user="alice", per_user=usage(4 * NANO, 2 * NANO, 0)), {}
    ).plain
    assert "team day" in text and "$12.00/20.00" in text
    assert "you" in text and "$2.00/4.00" in text
    assert "team red · alice" in text


def test_a_machines_own_file_reads_as_before() -> None:
    text = render_budget(_snap(), {}).plain
    assert "team" not in text and "you " not in text
    assert text.splitlines()[1].startswith("day")


def test_the_one_line_meter_keeps_the_session_first_and_fits_its_room() -> None:
    """Below 100 columns the meter is one line (MainScreen): the amounts go first, the
    session's last, and a line still too long is cut, never past its room."""
    snap = _snap(team="red", user="alice", per_user=usage(4 * NANO, 2 * NANO, 0))
    snap["reserved_usd"] = 0.05
    whole = budget_line(snap, {}, 200).plain
    assert whole == (
        "session 20% $1.00/5.00 · team day 65% $12.00/20.00 · you 50% $2.00/4.00 · held $0.050"
    )
    assert budget_line(snap, {}, 61).plain == (
        "session 20% $1.00/5.00 · team day 65% · you 50% · held $0.050"
    )
    assert budget_line(snap, {}, 60).plain == "session 20% · team day 65% · you 50% · held $0.050"
    for room in range(10, 90):
        line = budget_line(snap, {}, room).plain
        assert len(line) <= room and "\n" not in line and line.startswith("session")
    assert budget_line(None, {}, 80).plain == "no spend yet · local models cost $0"


def test_the_meter_says_how_many_calls_failed() -> None:
    """An approved call to a host that never answered counted as a call, at $0: "9 calls
    this session" where `budget` said 2 of them failed (a user-audit)."""
    assert "3 calls this session" in render_budget(_snap(), {}).plain
    assert "3 calls (2 failed) this session" in render_budget(_snap(failed=2), {}).plain


async def test_the_meter_lays_out_only_when_its_shape_changes(monkeypatch: Any) -> None:
    """A new figure in the same rows redraws the box alone; a new row asks for a layout
    pass; the same snapshot again draws nothing."""
    from textual.app import App, ComposeResult
    from textual.visual import VisualType
    from textual.widgets import Static

    from app.tui.panes.budget import BudgetPane

    class Host(App[None]):
        def compose(self) -> ComposeResult:
            yield BudgetPane(id="budget")

    updates: list[tuple[str, bool]] = []
    update = Static.update

    def spy(self: Static, content: VisualType = "", *, layout: bool = True) -> None:
        if self.id == "budget-body":
            updates.append((str(getattr(content, "plain", content)), layout))
        update(self, content, layout=layout)

    monkeypatch.setattr(Static, "update", spy)
    app = Host()
    async with app.run_test(size=(60, 30)) as pilot:
        pane = app.query_one(BudgetPane)
        pane.show(_snap())
        await pilot.pause()
        updates.clear()
        pane.show(_snap())  # the same snapshot: nothing to draw
        assert updates == []
        pane.show({**_snap(), "calls": 4})  # a figure changes, the rows stay
        assert [layout for _, layout in updates] == [False]
        assert "4 calls this session" in updates[-1][0]
        by_role = {"architect": 1.5}
        pane.show({**_snap(), "calls": 5, "by_role": by_role})  # new rows: laid out
        assert [layout for _, layout in updates] == [False, True]
        assert "architect" in updates[-1][0]
        # an older snapshot of the session, come late (the one read as the session
        # opened, after a run's own): kept out
        pane.show({**_snap(), "calls": 1, "ts": "2026-03-01T09:59:59Z"})
        assert pane.snapshot is not None and pane.snapshot["calls"] == 5
