"""What each screen looks like (pytest-textual-snapshot). Behaviour is tested elsewhere,
on messages; these only catch visual regressions.

Fixed terminal size, UTC, a ManualClock (timestamps, countdown), fixed session and run
ids, deterministic git commits, no blinking cursor, no toasts. Update with
``pytest tests/tui/test_snapshots.py --snapshot-update`` after looking at the report.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from app.clock import ManualClock
from app.tui.screens.approval import ApprovalScreen
from app.tui.screens.evidence import EvidenceScreen
from app.tui.screens.policy import PolicyScreen
from app.tui.screens.tutor import TutorScreen
from tests.tui.helpers import freeze, settle, until
from tests.tui.scripted import make_run

SIZE = (160, 48)
THEMES = ("switchyard-dark", "switchyard-light", "switchyard-high-contrast")
Before = Callable[[Pilot[Any]], Awaitable[None]]


async def _to_approval(pilot: Pilot[Any]) -> None:
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
    await settle(pilot)


async def _run_to_end(pilot: Pilot[Any]) -> None:
    app: Any = pilot.app
    await _to_approval(pilot)
    await pilot.press("y")
    await until(pilot, lambda: not app.running, what="the run to end")
    await until(pilot, lambda: app.home.header.state == "merge_ready", what="merge_ready")
    await settle(pilot)


def _snap(after: Before) -> Before:
    async def run_before(pilot: Pilot[Any]) -> None:
        await after(pilot)
        await settle(pilot)
        freeze(pilot)
        await settle(pilot)

    return run_before


@pytest.mark.parametrize("theme", THEMES)
def test_main_screen_after_a_run(snap_compare: Any, make_app: Any, theme: str) -> None:
    assert snap_compare(make_app(theme=theme), terminal_size=SIZE, run_before=_snap(_run_to_end))


def test_main_screen_idle(snap_compare: Any, make_app: Any) -> None:
    async def idle(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: pilot.app.session is not None, what="the session")  # type: ignore[attr-defined]

    assert snap_compare(make_app(task=None), terminal_size=SIZE, run_before=_snap(idle))


@pytest.mark.parametrize("theme", ["switchyard-dark", "switchyard-high-contrast"])
def test_approval_modal(snap_compare: Any, make_app: Any, theme: str) -> None:
    assert snap_compare(make_app(theme=theme), terminal_size=SIZE, run_before=_snap(_to_approval))


def test_evidence_screen(snap_compare: Any, make_app: Any, repo: Path, clock: ManualClock) -> None:
    make_run(repo, "20260101-110000-bad001", green=False, clock=clock)
    make_run(repo, "20260101-113000-good01", green=True, clock=clock)

    async def evidence(pilot: Pilot[Any]) -> None:
        app: Any = pilot.app
        await until(pilot, lambda: app.session is not None, what="the session")
        await pilot.press("escape", "v")
        await until(
            pilot,
            lambda: isinstance(app.screen, EvidenceScreen) and app.screen.view is not None,
            what="a run",
        )
        await settle(pilot)

    assert snap_compare(make_app(task=None), terminal_size=SIZE, run_before=_snap(evidence))


def test_evidence_screen_verdict_tab(
    snap_compare: Any, make_app: Any, repo: Path, clock: ManualClock
) -> None:
    make_run(repo, "20260101-110000-bad001", green=False, clock=clock)

    async def verdict(pilot: Pilot[Any]) -> None:
        app: Any = pilot.app
        await until(pilot, lambda: app.session is not None, what="the session")
        await pilot.press("escape", "v")
        await until(
            pilot,
            lambda: isinstance(app.screen, EvidenceScreen) and app.screen.view is not None,
            what="a run",
        )
        app.screen.query_one("#run-tabs").active = "tab-verdict"
        await settle(pilot)

    assert snap_compare(make_app(task=None), terminal_size=SIZE, run_before=_snap(verdict))


def test_tutor_screen(snap_compare: Any, make_app: Any) -> None:
    async def tutor(pilot: Pilot[Any]) -> None:
        app: Any = pilot.app
        await until(pilot, lambda: app.session is not None, what="the session")
        await pilot.press("escape", "t")
        await until(pilot, lambda: isinstance(app.screen, TutorScreen), what="the tutor")
        await pilot.press(*"why does parse drop the last token?", "enter")
        await until(pilot, lambda: app.screen.turn is not None, what="the answer")
        await settle(pilot)

    assert snap_compare(make_app(task=None), terminal_size=SIZE, run_before=_snap(tutor))


def test_policy_screen(snap_compare: Any, make_app: Any) -> None:
    async def policy(pilot: Pilot[Any]) -> None:
        app: Any = pilot.app
        await until(pilot, lambda: app.session is not None, what="the session")
        app.push_screen(PolicyScreen())
        await until(pilot, lambda: isinstance(app.screen, PolicyScreen), what="the policy")
        await settle(pilot)

    assert snap_compare(make_app(task=None), terminal_size=SIZE, run_before=_snap(policy))
