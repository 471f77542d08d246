"""The palette's Keys panel closes with esc, before esc does anything else: it stayed open
until the palette hid it, and esc meanwhile left the task box, closed a screen, or
denied the approval the user was reading the keys of."""

from __future__ import annotations

from typing import Any

from textual.widgets import HelpPanel, Input

from app.router.approvals import ApprovalBroker
from app.tui.screens.approval import ApprovalScreen
from app.tui.screens.main import MainScreen
from app.tui.screens.policy import PolicyScreen
from tests.tui.helpers import palette, settle, until


def _keys_open(app: Any) -> bool:
    return bool(app.screen.query(HelpPanel))


async def test_esc_closes_the_keys_panel_then_leaves_the_task_box(make_app: Any) -> None:
    app = make_app(task=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        assert isinstance(app.focused, Input) and app.focused.id == "task"
        await palette(pilot, "Keys")
        assert _keys_open(app)
        await pilot.press("escape")
        await settle(pilot)
        assert not _keys_open(app)
        assert isinstance(app.focused, Input) and app.focused.id == "task"  # (that esc only)
        await pilot.press("escape")  # the screen's own esc, as before
        await settle(pilot)
        assert app.focused is app.home.escalations.view


async def test_esc_closes_the_keys_panel_of_a_screen_then_the_screen(make_app: Any) -> None:
    app = make_app(task=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        await palette(pilot, "Policy")
        assert isinstance(app.screen, PolicyScreen)
        await palette(pilot, "Keys")
        assert _keys_open(app)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, PolicyScreen) and not _keys_open(app)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, MainScreen)


async def test_esc_over_the_approval_modal_closes_the_keys_and_denies_nothing(
    make_app: Any,
) -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
        await settle(pilot)
        modal = app.screen
        await palette(pilot, "Keys")
        assert _keys_open(app)
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is modal and not _keys_open(app)
        broker: ApprovalBroker = app.session.approvals
        assert broker.pending(), "esc answered the approval"
        await pilot.press("n")
        await until(pilot, lambda: not app.running, what="the run to end")


async def test_the_footer_says_how_to_start_the_next_task(make_app: Any) -> None:
    """After a run ended nothing on screen said how to start another (`/` was hidden; a
    TUI audit). It is in the footer while a task can be typed, and not in the task box,
    where `/` types a slash."""
    from textual.widgets import Footer

    def shown() -> list[str]:
        return [k.description for k in app.screen.query_one(Footer).query("FooterKey")]

    app = make_app(task=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        assert isinstance(app.focused, Input)
        await settle(pilot)
        assert "new task" not in shown()
        await pilot.press("escape")
        await settle(pilot)
        assert "new task" in shown()
        box = app.screen.query_one("#task", Input)
        box.value = "the last task"
        await pilot.press("slash")
        await settle(pilot)
        assert app.focused is box and box.value == ""
