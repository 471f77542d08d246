"""The plan pane shows each step's status as the pipeline published it, never a guess
(issue 17), and the runner's rule for a finished change."""

from __future__ import annotations

from typing import Any

from app.pipeline.plan_status import finished_statuses
from app.pipeline.schemas import Plan, PlanStep
from app.tui.panes.plan import files_shown, step_statuses

PLAN = {"goal": "g", "steps": [{"title": "a"}, {"title": "b"}, {"title": "c"}]}


def test_without_a_published_status_every_step_is_pending() -> None:
    # the implementer's stage having started says nothing about a step
    assert step_statuses(PLAN, None) == ["pending"] * 3


def test_published_statuses_are_shown_as_they_are() -> None:
    assert step_statuses(PLAN, ["done", "skipped", "failed"]) == ["done", "skipped", "failed"]
    # a shorter or unknown list never invents a status
    assert step_statuses(PLAN, ["active", "bogus"]) == ["active", "pending", "pending"]


def test_a_finished_change_marks_the_steps_it_touched_done() -> None:
    plan = Plan(
        goal="g",
        steps=[
            PlanStep(title="fix", files=["parser.py"]),
            PlanStep(title="docs", files=["README.md"]),
            PlanStep(title="run the tests"),
        ],
        confidence=0.9,
    )
    diff = "--- a/parser.py\n+++ b/parser.py\n@@ -1 +1 @@\n-a\n+b\n"
    assert finished_statuses(plan, diff) == ["done", "skipped", "done"]


def test_a_step_names_each_file_once_and_says_how_many_it_leaves_out() -> None:
    # the demo's 135M Architect names test_parser.py twice in one step
    assert files_shown(["test_parser.py", "test_parser.py", "t2.py"]) == "test_parser.py, t2.py"
    assert files_shown(["a", "b", "a", "c", "d", "e"]) == "a, b, c +2 more"


def test_with_no_plan_the_pane_says_what_is_happening() -> None:
    """After a run that ended with no plan the pane still said the Architect was planning."""
    from app.tui.panes.plan import render_plan

    stages = {"stage0": "finished", "architect": "failed"}
    assert "type a task below" in render_plan(None, {}, None, {}).plain
    assert "the Architect is planning" in render_plan(None, stages, None, {}).plain
    ended = render_plan(None, stages, None, {}, "stopped").plain
    assert "the run ended (stopped) before the Architect made one" in ended
    assert "planning" not in ended
    # and why, which a toast said for 8 s and then nothing did (a user-audit)
    why = render_plan(None, stages, None, {}, "stopped", None, "architect: no valid plan\n(x)")
    assert "the run ended (stopped: architect: no valid plan⏎(x)) before" in why.plain


def test_while_the_baseline_runs_the_pane_does_not_say_the_architect_plans() -> None:
    """The baseline runs before any model is asked (a command that cannot run stops the
    run there): "the Architect is planning…" over the tests' run was not so."""
    from app.tui.panes.plan import render_plan

    for status in ("started", "baseline"):
        shown = render_plan(None, {"tests": status}, None, {}).plain
        assert "the tests run on the base first, before any change" in shown
        assert "planning" not in shown
    ended = render_plan(None, {"tests": "baseline"}, None, {}, "stopped", None, "no run").plain
    assert "the run ended (stopped: no run) before the Architect made one" in ended


def test_a_red_baseline_is_not_drawn_as_failed_tests() -> None:
    """Right after the baseline the strip read "✗ tests", before the Implementer had tried
    anything: the baseline is red by design (a user-audit)."""
    from app.tui.panes.plan import render_plan

    stages = {"stage0": "finished", "architect": "finished", "tests": "baseline"}
    strip = render_plan(None, stages, None, {}).plain.splitlines()[0]
    assert strip.endswith("○ tests (red before any change: the bug)")
    assert "✗" not in strip


def test_a_run_that_ended_says_why_under_its_plan() -> None:
    """With a plan on screen the pane said nothing of the end: the header read "stopped",
    as if the user had stopped it, and why was in an 8 s toast (a TUI audit)."""
    from app.tui.panes.plan import render_plan

    stages = {"stage0": "finished", "architect": "finished", "implementer": "failed"}
    shown = render_plan(
        PLAN, stages, None, {}, "stopped", None, "implementer: 4 failed loops in 4 attempts"
    ).plain
    assert shown.splitlines()[-1] == (
        "the run ended (stopped: implementer: 4 failed loops in 4 attempts)"
    )
    assert "the run ended" not in render_plan(PLAN, stages, None, {}).plain


async def test_a_draft_plans_own_rating_is_not_shown_as_its_confidence(make_app: Any) -> None:
    """The title read "conf 1.00" over the Architect's draft for half a minute, then
    "conf 0.15": the model's self-rating before the checks ground it (a TUI audit)."""
    from app.tui.panes.plan import PlanPane

    app = make_app(task=None)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = app.screen.query_one(PlanPane)
        pane.show_plan({**PLAN, "confidence": 1.0})
        await pilot.pause()
        assert str(pane.border_title) == "Plan ── draft, self-rated 1.00"
        pane.show_plan({**PLAN, "confidence": 0.15, "grounding": {"value": 0.15}})
        await pilot.pause()
        assert str(pane.border_title) == "Plan ── conf 0.15"
