"""What each screen looks like (pytest-textual-snapshot). Behaviour is tested elsewhere,
on messages; these only catch visual regressions.

Fixed terminal size, UTC, a ManualClock (timestamps, countdown), fixed session, run and
request ids, deterministic git commits, no blinking cursor, no toasts. Update with
``pytest tests/tui/test_snapshots.py --snapshot-update`` after looking at the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.clock import ManualClock
from tests.tui import scenes
from tests.tui.scripted import make_run

SIZE = (160, 48)
THEMES = ("switchyard-dark", "switchyard-light", "switchyard-high-contrast")


@pytest.mark.parametrize("theme", THEMES)
def test_main_screen_after_a_run(snap_compare: Any, make_app: Any, theme: str) -> None:
    app = make_app(theme=theme)
    assert snap_compare(app, terminal_size=SIZE, run_before=scenes.still(scenes.run_to_end))


@pytest.mark.parametrize("size", [(80, 24), (60, 20)], ids=["80x24", "60x20"])
def test_main_screen_after_a_run_narrow(
    snap_compare: Any, make_app: Any, size: tuple[int, int]
) -> None:
    """Below 100 columns: the budget a line under the tests and the escalation log."""
    app = make_app()
    assert snap_compare(app, terminal_size=size, run_before=scenes.still(scenes.run_to_end))


def test_approval_modal_in_60_by_20(snap_compare: Any, make_app: Any) -> None:
    """Every key explained (the key line wraps between keys)."""
    app = make_app()
    assert snap_compare(app, terminal_size=(60, 20), run_before=scenes.still(scenes.approval))


def test_main_screen_idle(snap_compare: Any, make_app: Any) -> None:
    app = make_app(task=None)
    assert snap_compare(app, terminal_size=SIZE, run_before=scenes.still(scenes.session_open))


@pytest.mark.parametrize("theme", ["switchyard-dark", "switchyard-high-contrast"])
def test_approval_modal(snap_compare: Any, make_app: Any, theme: str) -> None:
    app = make_app(theme=theme)
    assert snap_compare(app, terminal_size=SIZE, run_before=scenes.still(scenes.approval))


def _two_runs(repo: Path, clock: ManualClock, tmp_path: Path) -> None:
    """A failed run and a merge-ready one, in make_app's session's data dir."""
    data = tmp_path / "data"
    make_run(repo, "20260101-110000-bad001", green=False, clock=clock, data_dir=data)
    make_run(repo, "20260101-113000-good01", green=True, clock=clock, data_dir=data)


def test_evidence_screen(
    snap_compare: Any, make_app: Any, repo: Path, clock: ManualClock, tmp_path: Path
) -> None:
    _two_runs(repo, clock, tmp_path)
    app = make_app(task=None)
    assert snap_compare(app, terminal_size=SIZE, run_before=scenes.still(scenes.evidence))


def test_evidence_screen_verdict_tab(
    snap_compare: Any, make_app: Any, repo: Path, clock: ManualClock, tmp_path: Path
) -> None:
    data = tmp_path / "data"  # make_app's session's
    make_run(repo, "20260101-110000-bad001", green=False, clock=clock, data_dir=data)
    app = make_app(task=None)
    scene = scenes.still(scenes.evidence_verdict)
    assert snap_compare(app, terminal_size=SIZE, run_before=scene)


def test_evidence_screen_in_80_by_24(
    snap_compare: Any, make_app: Any, repo: Path, clock: ManualClock, tmp_path: Path
) -> None:
    """The runs list above the run: every tab's name shows, and the diff's lines whole."""
    _two_runs(repo, clock, tmp_path)
    app = make_app(task=None)
    scene = scenes.still(scenes.evidence_diffs)
    assert snap_compare(app, terminal_size=(80, 24), run_before=scene)


def test_tutor_screen(snap_compare: Any, make_app: Any) -> None:
    app = make_app(task=None)
    assert snap_compare(app, terminal_size=SIZE, run_before=scenes.still(scenes.tutor))


def test_tutor_screen_at_the_turn_cap(snap_compare: Any, make_app: Any) -> None:
    app = make_app(task=None)
    assert snap_compare(app, terminal_size=SIZE, run_before=scenes.still(scenes.tutor_at_cap))


def test_policy_screen(snap_compare: Any, make_app: Any) -> None:
    app = make_app(task=None)
    assert snap_compare(app, terminal_size=SIZE, run_before=scenes.still(scenes.policy))


def test_gateway_screen(snap_compare: Any, tmp_path: Path, clock: ManualClock) -> None:
    """``serve --tui`` after scripted traffic: the requests view, the log, the budget."""
    from tests.tui.scripted_gateway import gateway_app, traffic_approved

    app = gateway_app(tmp_path, clock)
    assert snap_compare(app, terminal_size=SIZE, run_before=scenes.still(traffic_approved))
