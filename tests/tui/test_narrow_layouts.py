"""The workbench in a narrow terminal (a user-audit in tmux at 100, 80 and 60 columns):
the escalation log keeps the width to read its lines and the budget meter becomes a line
under it; the approval modal explains every key; the tutor's footer and hint fit; the
policy screen shows the error of a session that did not open, whole."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from textual.notifications import Notify
from textual.widget import Widget
from textual.widgets import Footer, Input, Static

from app.clock import ManualClock
from app.errors import PolicyError
from app.tui.screens.approval import KEYS, TYPED_ON, key_line
from app.tui.screens.policy import PolicyScreen
from app.tui.screens.tutor import HINTS, TutorScreen
from tests.tui import scenes
from tests.tui.helpers import Messages, palette, settle, until
from tests.tui.scripted import ScriptedRun


def drawn(widget: Widget) -> list[str]:
    """The rows of the screen where ``widget`` is, as drawn (cut where it is cut, its
    children in it)."""
    rows = [strip.text for strip in widget.screen._compositor.render_strips()]
    region = widget.region
    return [row[region.x : region.right] for row in rows[region.y : region.bottom]]


@pytest.mark.parametrize("size", [(80, 24), (60, 20)])
async def test_below_100_columns_the_budget_is_a_line_and_the_log_has_the_width(
    make_app: Any, size: tuple[int, int]
) -> None:
    """The budget kept a column of 31 (the widest of the three at 60), the log's lines
    were cut to a few words and its title to "Escalati…" (a user-audit)."""
    width, _ = size
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await scenes.run_to_end(pilot)
        home = app.home
        assert "-narrow" in home.classes
        budget, tests, log = (home.query_one(f"#{n}") for n in ("budget", "tests", "escalations"))
        # the meter: a line as wide as the screen, under the tests and the log
        assert budget.region.height == 2 and budget.region.width == width
        assert budget.region.y >= log.region.bottom
        assert "Budget" in drawn(budget)[0]
        line = drawn(budget)[1]
        assert line.strip("│ ").startswith("session <1% $0.0094/5.00 · day <1%"), line
        # the log: wider than the tests, its title whole, what happened readable
        assert log.region.width > tests.region.width
        assert log.region.width >= 3 * width // 5 - 1
        rows = drawn(log)
        assert "─ Escalations ─" in rows[0], rows[0]
        assert any("APPROVE impl approved once: dee" in row for row in rows), rows
        # the whole meter is the zoomed pane's, and back it is a line again
        await palette(pilot, "Budget")
        assert home.maximized is budget and budget.region.height == size[1] - 1  # (the footer)
        assert "cost by role" in str(home.query_one("#budget-body", Static).render())
        await pilot.press("escape")
        await settle(pilot)
        assert home.maximized is None and budget.region.height == 2
        assert "cost by role" not in str(home.query_one("#budget-body", Static).render())


async def test_from_100_columns_the_budget_keeps_its_column(make_app: Any) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await scenes.run_to_end(pilot)
        home = app.home
        budget, log = home.query_one("#budget"), home.query_one("#escalations")
        assert "-wide" in home.classes
        assert budget.region.width >= 34 and budget.region.y == log.region.y
        assert "cost by role" in str(home.query_one("#budget-body", Static).render())


async def test_at_60_columns_the_approval_modal_explains_every_key(make_app: Any) -> None:
    """Its key line was cut at "… n deny   d": d was never explained (a user-audit)."""
    app = make_app()
    async with app.run_test(size=(60, 20)) as pilot:
        await scenes.approval(pilot)
        rows = drawn(app.screen.query_one("#approval-keys"))
        for key, does in KEYS:
            assert any(f"{key} {does}" in row for row in rows), (key, rows)
        box = app.screen.query_one("#approval-box")
        assert box.region.bottom <= app.screen.query_one(Footer).region.y


@pytest.mark.parametrize("width", range(20, 90, 7))
def test_the_key_line_breaks_between_keys_only(width: int) -> None:
    for lead in ("", TYPED_ON):
        lines = key_line(width, lead=lead).plain.splitlines()
        parts = [lead] if lead else []
        parts += [f"{key} {does}" for key, does in KEYS]
        # each part whole on a line, and a line past the width only for a part that long
        for part in parts:
            assert any(part in line for line in lines), (part, lines)
        for line in lines:
            assert len(line) <= width or line in parts, (line, width)


@pytest.mark.parametrize(("width", "hint"), [(160, 0), (80, 1), (60, 2)])
async def test_the_tutors_footer_and_hint_fit_the_width(
    make_app: Any, width: int, hint: int
) -> None:
    """At 80 columns the footer read "^q q▏^p palette" and the hint was cut at "…asks
    the cloud" (a user-audit): the footer is compact below 100 columns, as the main
    screen's, and the hint is the longest that fits."""
    app = make_app(task=None)
    async with app.run_test(size=(width, 24)) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        await pilot.press("escape", "t")
        await until(pilot, lambda: isinstance(app.screen, TutorScreen), what="the tutor")
        screen = app.screen
        box = screen.query_one("#tutor-input", Input)
        assert box.placeholder == HINTS[hint]
        assert len(box.placeholder) < box.content_region.width
        footer = screen.query_one(Footer)
        assert footer.compact == (width < 100)
        screen.query_one("#tutor-body").focus()  # (h, r and n in the footer too)
        await settle(pilot)
        if width >= 80:
            row = drawn(footer)[0]
            for said in ("esc back", "h hint", "r reveal answer", "n new session", "^q quit"):
                assert said in row, row


@asynccontextmanager
async def _broken(bus: Any) -> Any:
    raise PolicyError(
        [
            "/tmp/switchyard-audit-k2x9/policies/badval.toml:83: budget.session_usd: "
            "Input should be greater than or equal to 0 (the file's [budget] table)"
        ]
    )
    yield  # pragma: no cover


def _broken_app(repo: Path) -> Any:
    from app.tui.app import SwitchyardApp

    return SwitchyardApp(connect=_broken, runner=ScriptedRun(ManualClock()), repo=repo)


async def test_the_policy_screen_shows_a_sessions_error_whole(repo: Path) -> None:
    """The error sat in the one-line title, cut ("…: Input should be greater than or")
    above an empty body (a user-audit)."""
    app = _broken_app(repo)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.session_error, what="the session to fail")
        app.push_screen(PolicyScreen())
        await settle(pilot)
        title = drawn(app.screen.query_one("#policy-title"))[0]
        assert "the session did not open" in title
        body = "".join("".join(drawn(app.screen.query_one("#policy-table"))).split())
        assert "".join(str(app.session_error).split()) in body


async def test_with_no_session_the_footer_offers_no_new_task(repo: Path) -> None:
    """A broken policy disables the task box, and the footer still said "/ new task":
    "/" did nothing, and the task typed then went to the screen's keys ("e": "no run in
    progress", a user-audit)."""
    seen = Messages()
    app = _broken_app(repo)
    async with app.run_test(size=(100, 30), message_hook=seen) as pilot:
        await until(pilot, lambda: app.session_error, what="the session to fail")
        await settle(pilot)
        home = app.home
        assert home.query_one("#task", Input).disabled
        assert "slash" not in app.screen.active_bindings
        assert "new task" not in drawn(home.query_one(Footer))[0]
        await palette(pilot, "New task")  # (the palette's command says why)
        notes = [m.notification.message for m in seen.of(Notify)]
        assert any(n.startswith("no task can run: /tmp/switchyard-audit") for n in notes), notes


async def test_with_no_session_the_footer_offers_no_key_that_cannot_act(repo: Path) -> None:
    """A broken policy: the footer still offered "e escalate", "t tutor" and "z zoom"
    (nothing can run, no tutor can answer, nothing has the focus to zoom; a user audit).
    A pane given the focus can be zoomed, and z says so again."""
    app = _broken_app(repo)
    async with app.run_test(size=(160, 30)) as pilot:
        await until(pilot, lambda: app.session_error, what="the session to fail")
        await settle(pilot)
        home = app.home
        row = drawn(home.query_one(Footer))[0]
        for gone in ("escalate", "tutor", "zoom"):
            assert gone not in row, row
        assert "v evidence" in row, row  # (the runs can still be read)
        await pilot.press("e", "t", "z")  # (and none of them acts)
        await settle(pilot)
        assert app.screen is home and home.maximized is None
        await pilot.press("tab")
        await settle(pilot)
        assert "z zoom" in drawn(home.query_one(Footer))[0]
