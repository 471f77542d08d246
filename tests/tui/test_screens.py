"""Tutor mode, the command palette (themes, actions), the policy screen, worker errors."""

from __future__ import annotations

from typing import Any

import pytest
from rich.table import Table
from textual.widgets import Collapsible, Static

from app.clock import ManualClock
from app.errors import PolicyError, SwitchyardError
from app.tui.core import TutorAnswered, WorkFailed
from app.tui.screens.approval import ApprovalScreen
from app.tui.screens.policy import PolicyScreen
from app.tui.screens.tutor import TutorScreen
from tests.tui.helpers import Messages, palette, settle, until


async def test_tutor_asks_questions_first(make_app: Any) -> None:
    seen = Messages()
    app = make_app(task=None)
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        await pilot.press("escape", "t")
        await settle(pilot)
        assert isinstance(app.screen, TutorScreen)
        await pilot.press(*"why does parse drop a token?", "enter")
        await until(pilot, lambda: seen.of(TutorAnswered), what="the tutor")
        await settle(pilot)
        answered = seen.of(TutorAnswered)[0]
        assert answered.question == "why does parse drop a token?"
        shown = str(app.screen.query_one("#tutor-questions", Static).render())
        assert shown.startswith("first, think about these:")
        assert "range(n - 1)" in shown
        title = str(app.screen.query_one("#tutor-title", Static).render())
        assert title.endswith("turn 1/6")
        answer = app.screen.query_one("#answer", Collapsible)
        assert answer.collapsed  # the answer waits until asked for
        assert app.tutor.last.answer is None  # held back in the core, not only folded
        await pilot.press("r")
        await settle(pilot)
        assert not answer.collapsed
        assert app.tutor.last.answer == answered.turn.answer
        shown = str(app.screen.query_one("#tutor-answer", Static).render())
        assert shown.startswith("range(len(tokens) - 1) stops one short")


async def test_a_failing_worker_is_reported_once_not_raised(make_app: Any) -> None:
    class Broken:
        max_turns = 6
        turns_used = 0
        capped = False
        last = None

        async def ask(self, question: str, *, escalate: bool = False) -> Any:
            raise SwitchyardError("tutor: no model can serve this role")

    def broken_tutor(session: Any, repo: Any) -> Any:
        return Broken()

    seen = Messages()
    app = make_app(task=None)
    app._tutor = broken_tutor
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        await pilot.press("escape", "t", *"hello", "enter")
        await until(pilot, lambda: seen.of(WorkFailed), what="the failure")
        await settle(pilot)
        failed = seen.of(WorkFailed)
        assert {(f.group, f.text) for f in failed} == {
            ("tutor", "tutor: no model can serve this role")
        }
        shown = str(app.screen.query_one("#tutor-questions", Static).render())
        assert "could not answer" in shown
        assert app.is_running


async def test_palette_switches_theme_and_opens_policy(make_app: Any) -> None:
    app = make_app(task=None, approval_timeout_s=40.0)  # shorter than the policy's 60 s
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        assert app.theme == "switchyard-dark"
        await palette(pilot, "switchyard-light")
        assert app.theme == "switchyard-light"
        assert app.theme_variables["audit-escalation"] == "#9c2b9c"

        await palette(pilot, "Policy")
        assert isinstance(app.screen, PolicyScreen)
        table = app.screen.query_one("#policy-table", Static).content
        assert isinstance(table, Table)
        assert "implementer" in [str(cell) for cell in table.columns[0].cells]
        # what is in force for this session, not the policy file's defaults
        session = app.session
        assert session is not None
        shown = str(app.screen.query_one("#policy-budget", Static).render())
        assert session.approvals.timeout_s == 40.0 and "time out after 40s" in shown
        assert f"local_only {str(session.local_only).lower()}" in shown


async def test_a_screen_already_open_is_brought_back_not_opened_twice(make_app: Any) -> None:
    """`t`, then the palette's Tutor (or `v`, then Runs): a second screen with the same
    id crashed the app with DuplicateIds, and the run at work was sealed as stopped (a
    TUI audit). The open one comes back, as it was; Policy twice no longer stacks."""
    from app.tui.screens.evidence import EvidenceScreen
    from app.tui.screens.tutor import TutorScreen

    app = make_app(task=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        await pilot.press("escape", "t")
        await until(pilot, lambda: isinstance(app.screen, TutorScreen), what="the tutor")
        tutor = app.screen
        await palette(pilot, "Runs")
        assert isinstance(app.screen, EvidenceScreen)
        await palette(pilot, "Tutor")
        assert app.screen is tutor  # the open one, its conversation kept
        assert sum(isinstance(s, (TutorScreen, EvidenceScreen)) for s in app.screen_stack) == 1
        await palette(pilot, "Policy")
        await palette(pilot, "Policy")
        assert sum(isinstance(s, PolicyScreen) for s in app.screen_stack) == 1


async def test_the_policy_screen_at_80_columns_cuts_no_name(make_app: Any) -> None:
    """At 80 columns the table folded names in the middle (``deepseek-rea``/``soner``,
    ``qwen2.5-code``/``r-32b``): the triggers go under the chain, and every model name of
    the policy is drawn whole on a line of its own; wide again, the triggers have their
    own column."""
    app = make_app(task=None)
    async with app.run_test(size=(80, 40)) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        await palette(pilot, "Policy")
        assert isinstance(app.screen, PolicyScreen) and app.session is not None
        policy = app.session.policy
        table = app.screen.query_one("#policy-table", Static).content
        assert isinstance(table, Table)
        assert [c.header for c in table.columns] == ["role", "model · where", "escalation · when"]
        drawn = app.screen.query_one("#policy-table", Static).render_lines(
            app.screen.query_one("#policy-table", Static).region.reset_offset
        )
        text = "\n".join(line.text for line in drawn)
        for role in policy.roles.values():
            for name in [role.default, *role.fallback]:
                if name:
                    assert policy.resolve(name) in text, name
        await pilot.resize_terminal(160, 48)
        await settle(pilot)
        table = app.screen.query_one("#policy-table", Static).content
        assert isinstance(table, Table) and table.columns[-1].header == "triggers"


async def test_palette_filters_the_escalation_pane(make_app: Any) -> None:
    # no run: its approval modal, up whenever the run got there, took the palette's keys
    app = make_app(task=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        await palette(pilot, "only escalation")
        assert app.home.escalations.filter_text == "escalation"


async def test_a_session_that_cannot_open_is_said_once_and_blocks_runs(
    make_app: Any, repo: Any
) -> None:
    from contextlib import asynccontextmanager

    from app.tui.app import SwitchyardApp
    from tests.tui.scripted import ScriptedRun

    @asynccontextmanager
    async def broken(bus: Any) -> Any:
        raise PolicyError(["policy.toml:3: budget.session_usd: must be >= 0"])
        yield  # pragma: no cover

    seen = Messages()
    app = SwitchyardApp(
        connect=broken, runner=ScriptedRun(ManualClock()), repo=repo, start_task=None
    )
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await until(pilot, lambda: seen.of(WorkFailed), what="the failure")
        await settle(pilot)
        failed = seen.of(WorkFailed)[0]
        assert (failed.group, failed.text) == (
            "session",
            "policy.toml:3: budget.session_usd: must be >= 0",
        )
        assert app.home.header.state == "error"
        await pilot.press(*"fix it", "enter")
        await settle(pilot)
        assert not app.running
        assert app.session_error is not None and app.is_running
        app.push_screen(PolicyScreen())  # it said "the session is still opening"
        await settle(pilot)
        body = str(app.screen.query_one("#policy-table", Static).render())
        assert "budget.session_usd: must be >= 0" in body
    # quitting the workbench that showed it ends with the CLI's code for a bad policy
    assert app.session_exit_code == 2


@pytest.mark.parametrize("pane", ["escalations", "budget", "plan"])
async def test_a_zoomed_pane_fills_the_screen(make_app: Any, pane: str) -> None:
    """The escalations pane (3fr of its row) ran off the right edge when zoomed, its border
    and subtitle cut; the budget meter (44 columns at most) stayed a narrow box."""
    app = make_app(task=None)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        widget = app.screen.query_one(f"#{pane}")
        app.screen.maximize(widget)  # what z does with the focused pane
        await settle(pilot)
        region = widget.region
        assert app.screen.maximized is widget
        assert region.x >= 0 and region.right <= 120 and region.bottom <= 40
        assert region.width >= 110, region  # the screen's width, not a share of a row


async def test_the_palettes_budget_takes_the_focus_out_of_the_hidden_task_box(
    make_app: Any,
) -> None:
    """Zoomed from the palette with the focus in the task box, the Budget hid that box and
    the keys typed went into it unseen (an Enter would have run them), and z typed a
    "z" there instead of bringing the panes back (a TUI audit)."""
    from textual.widgets import Input

    app = make_app(task=None)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        box = app.screen.query_one("#task", Input)
        diff = app.screen.query_one("#diff")
        next(w for w in diff.walk_children() if w.focusable).focus()
        # the audit's path: Budget, back, Policy, back, Budget
        for command in ("Budget", "escape", "Policy", "escape", "Budget"):
            if command == "escape":
                await pilot.press("escape")
                await settle(pilot)
            else:
                await palette(pilot, command)
        budget = app.screen.query_one("#budget")
        assert app.screen.maximized is budget, app.screen.maximized
        assert app.focused in list(budget.walk_children()), app.focused
        await pilot.press("]", "z", "z", "z")
        await settle(pilot)
        assert box.value == "", box.value


@pytest.mark.parametrize("pane", ["plan", "diff", "tests", "escalations", "budget"])
async def test_z_zooms_the_pane_around_the_focus(make_app: Any, pane: str) -> None:
    """On Plan and Budget the focus is a scrolling view inside the pane, which Textual
    never maximizes: "z" did nothing there, with no word."""
    app = make_app(task=None)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        widget = app.screen.query_one(f"#{pane}")
        focusable = [w for w in widget.walk_children() if w.focusable] or [widget]
        focusable[0].focus()
        await settle(pilot)
        assert app.screen.focused is not None
        await pilot.press("z")
        await settle(pilot)
        assert app.screen.maximized is widget
        # the footer names what z does now (zoomed, it still said "zoom pane")
        assert app.screen.active_bindings["z"].binding.description == "back"
        await pilot.press("z")
        await settle(pilot)
        assert app.screen.maximized is None
        assert app.screen.active_bindings["z"].binding.description == "zoom"
        await pilot.press("z", "escape")  # Textual's own escape, no action of ours
        await settle(pilot)
        assert app.screen.maximized is None
        assert app.screen.active_bindings["z"].binding.description == "zoom"


async def test_the_palettes_new_task_is_not_offered_while_a_run_goes(
    make_app: Any, clock: ManualClock
) -> None:
    """ "/" is not offered during a run, but the palette's New task was: it wiped the task
    box and left the focus in it, the run's keys typed there (a user audit)."""
    from textual.widgets import Input

    from app.tui.commands import commands
    from tests.tui.scripted import ScriptedRun

    run = ScriptedRun(clock, stop_before="escalation")
    app = make_app(run=run)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, run.reached.is_set, what="the run at work")
        await settle(pilot)
        assert app.running
        titles = [title for title, _, _ in commands(app)]
        assert "New task" not in titles and "Stop run" in titles
        box = app.screen.query_one("#task", Input)
        assert box.value and not box.has_focus
        app.home.action_new_task()  # (a palette opened before the run began, picked now)
        await settle(pilot)
        assert box.value and not box.has_focus
        run.go_on.set()
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
        await pilot.press("n")
        await until(pilot, lambda: not app.running, what="the run to end")
        assert "New task" in [title for title, _, _ in commands(app)]
