"""The plan pane shows each step's status as the pipeline published it, never a guess
(issue 17), and the runner's rule for a finished change."""

from __future__ import annotations

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


def test_a_red_baseline_is_not_drawn_as_failed_tests() -> None:
    """Right after the baseline the strip read "✗ tests", before the Implementer had tried
    anything: the baseline is red by design (a user-audit)."""
    from app.tui.panes.plan import render_plan

    stages = {"stage0": "finished", "architect": "finished", "tests": "baseline"}
    strip = render_plan(None, stages, None, {}).plain.splitlines()[0]
    assert strip.endswith("○ tests (red before any change: the bug)")
    assert "✗" not in strip
