"""Plan: the stages of the run, then the Architect's plan.json steps with their status,
and its (grounded) confidence in the border.

A step's status is what the pipeline published for it (``PlanStepsChanged``: pending,
active, done, skipped, failed), never inferred here; a plan no status has reached yet
shows its steps pending.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from app.counted import counted
from app.tui.safe import clean
from app.tui.widgets.pane import Pane, style_of

MARK = {"done": "✓", "active": "▶", "pending": "·", "failed": "✗", "skipped": "–"}
STAGE_MARK = {"started": "▶", "finished": "✓", "failed": "✗", "skipped": "–", "baseline": "○"}
STAGE_STYLE = {
    "started": "step-active",
    "finished": "step-done",
    "failed": "step-failed",
    "skipped": "step-pending",
    "baseline": "step-pending",
}
#: a stage's words beside its name, for a status the mark alone does not say
STAGE_NOTE = {"baseline": " (red before any change: the bug)"}


def step_statuses(plan: dict[str, Any], published: list[str] | None) -> list[str]:
    """The published status of each step (pending where none was published)."""
    steps = plan.get("steps") or []
    given = published or []
    return [
        given[i] if i < len(given) and given[i] in MARK else "pending" for i in range(len(steps))
    ]


def files_shown(files: list[Any], most: int = 3) -> str:
    """A step's files, each once (a small model names one twice), the first ``most`` of
    them and how many more there are."""
    unique = list(dict.fromkeys(str(f) for f in files))
    more = len(unique) - most
    return ", ".join(unique[:most]) + (f" +{more} more" if more > 0 else "")


def render_plan(
    plan: dict[str, Any] | None,
    stages: dict[str, str],
    published: list[str] | None,
    variables: dict[str, str],
    outcome: str | None = None,
    unavailable: str | None = None,
    reason: str = "",
    merged: str | None = None,
) -> Text:
    """``merged``: what the run's merge came to ("merged into main @ …"), said in place
    of why it ended (merge_ready's reason invites the merge done since)."""
    dim = style_of(variables.get("dim-text", ""))
    parts: list[Text] = []
    if stages:
        strip = Text(no_wrap=True, end="")
        for n, (stage, status) in enumerate(stages.items()):
            if n:
                strip.append(" › ", dim)
            style = style_of(variables.get(STAGE_STYLE.get(status, "dim-text"), ""))
            strip.append(
                f"{STAGE_MARK.get(status, '·')} {stage}{STAGE_NOTE.get(status, '')}", style
            )
        parts.append(strip)
    if plan is None:
        if unavailable is not None:  # it invited a task no session could run
            hint = f"the session did not open: {unavailable} · fix that and start again"
        elif outcome is not None:  # it said "the Architect is planning…" after the end
            # with why: the toast that said it was gone after 8 s (a user-audit)
            why = f": {clean(reason, one_line=True)}" if reason else ""
            hint = f"the run ended ({outcome}{why}) before the Architect made one"
        elif list(stages) == ["tests"]:  # the baseline runs before any model is asked
            hint = "the tests run on the base first, before any change…"
        elif stages:
            hint = "the Architect is planning…"
        else:
            hint = "type a task below and press enter"
        parts.append(Text(f"no plan yet · {hint}", style=dim))
        return Text("\n").join(parts)
    # the plan is a model's reply: drawn as plain text (app/shown.py)
    goal = clean(str(plan.get("goal") or ""))
    if goal:
        parts.append(Text.assemble(("goal ", dim), (goal, style_of("", bold=True))))
    statuses = step_statuses(plan, published)
    for n, (step, status) in enumerate(zip(plan.get("steps") or [], statuses, strict=False), 1):
        title = clean(str(step.get("title", "")) if isinstance(step, dict) else str(step))
        style = style_of(variables.get(f"step-{status}", variables.get("step-pending", "")))
        line = Text(no_wrap=False)
        line.append(
            f"{MARK[status]} {n} ", style_of(variables.get(f"step-{status}", ""), bold=True)
        )
        line.append(title, style if status != "pending" else None)
        files = step.get("files") if isinstance(step, dict) else None
        if files:
            line.append("  " + clean(files_shown(files), one_line=True), dim)
        parts.append(line)
    for label, key in (("risk", "risks"), ("open", "open_questions")):
        for item in plan.get(key) or []:
            parts.append(Text.assemble((f"{label} ", dim), (clean(str(item)), dim)))
    if outcome is not None and merged is not None:
        parts.append(Text(f"the run ended ({outcome}), then was {merged}", style=dim))
    elif outcome is not None:
        # why the run ended, where the plan is (the header said "stopped", as if the user
        # had stopped it; why was in an 8 s toast and the evidence: a TUI audit)
        why = f": {clean(reason, one_line=True)}" if reason else ""
        parts.append(Text(f"the run ended ({outcome}{why})", style=dim))
    return Text("\n").join(parts)


class PlanPane(Pane):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.plan: dict[str, Any] | None = None
        #: stage → last status, in the order the stages first appeared
        self.stages: dict[str, str] = {}
        self.outcome: str | None = None
        #: why the run ended, shown where no plan came
        self.reason = ""
        #: each step's status as the pipeline published it
        self.statuses: list[str] | None = None
        #: why the session did not open (then no task can run)
        self.unavailable: str | None = None
        #: the run's merge, once merged ("merged into main @ …")
        self.merged: str | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(id="plan-body")

    def reset(self) -> None:
        self.plan, self.stages, self.outcome, self.statuses = None, {}, None, None
        self.merged = None
        self.redraw()

    def show_plan(self, plan: dict[str, Any]) -> None:
        if self.plan is not None and len(plan.get("steps") or []) != len(
            self.plan.get("steps") or []
        ):
            self.statuses = None  # another plan (an escalation's): its steps start over
        self.plan = plan
        self.redraw()

    def step_status(self, statuses: Sequence[str]) -> None:
        self.statuses = list(statuses)
        self.redraw()

    def stage(self, stage: str, status: str) -> None:
        self.stages[stage] = status
        self.redraw()

    def finished(self, outcome: str, reason: str = "") -> None:
        self.outcome, self.reason = outcome, reason
        self.redraw()

    def was_merged(self, said: str) -> None:
        self.merged = said
        self.redraw()

    def session_failed(self, why: str) -> None:
        self.unavailable = why
        self.redraw()

    def redraw(self) -> None:
        conf = self.plan.get("confidence") if self.plan else None
        steps = len(self.plan.get("steps") or []) if self.plan else 0
        if conf is None:
            title = "Plan"
        elif self.plan is not None and "grounding" not in self.plan:
            # the model's own rating of its draft, before the checks ground it (it read
            # as the confidence the triggers use: 1.00, then 0.15: a TUI audit)
            title = f"Plan ── draft, self-rated {float(conf):.2f}"
        else:
            title = f"Plan ── conf {float(conf):.2f}"
        self.set_titles(title, counted(steps, "step") if steps else "")
        body = render_plan(
            self.plan,
            self.stages,
            self.statuses,
            self.app.theme_variables,
            self.outcome,
            self.unavailable,
            self.reason,
            self.merged,
        )
        self.query_one("#plan-body", Static).update(body)
