"""The budget meter on a shared (team) store: the day is the team's, the user's own day
beside it; on a machine's own file it reads as before."""

from __future__ import annotations

from typing import Any

from app.router.ledger.records import BudgetSnapshot, usage
from app.tui.panes.budget import render_budget

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
