"""Grounded confidence (app/pipeline/grounding.py): each check on its own, the cap's
arithmetic as properties, and the reason text a trigger says."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from app.pipeline.grounding import (
    ChangeFacts,
    RepoFacts,
    change_checks,
    diff_size,
    goal_overlap,
    ground_change,
    ground_plan,
    key_terms,
    plan_checks,
)
from app.pipeline.schemas import Plan, PlanStep
from app.pipeline.signals import plan_signals
from app.policy import load_policy
from app.policy.signal_settings import Grounding
from app.router.decide import fired_triggers
from app.router.types import Signals

TASK = "Make the failing parser test pass: parse() drops the last token."
FACTS = RepoFacts(
    files=frozenset({"parser.py", "tests/test_parser.py", "README.md"}),
    identifiers=frozenset({"parse", "tokens", "test_parse_keeps_last_token", "Tokenizer"}),
)
POLICY = Grounding()


def good_plan(confidence: float = 0.9) -> Plan:
    return Plan(
        goal="parse() keeps the last token so the failing parser test passes",
        steps=[
            PlanStep(title="read the failing test", files=["tests/test_parser.py"]),
            PlanStep(title="fix the loop bound in parse()", files=["parser.py"]),
        ],
        acceptance_tests=["tests/test_parser.py::test_parse_keeps_last_token"],
        confidence=confidence,
    )


def test_a_grounded_plan_keeps_its_self_report() -> None:
    g = ground_plan(good_plan(0.9), TASK, FACTS, POLICY)
    assert g.cap == 1.0 and g.reasons == () and g.value == 0.9
    assert g.basis == "self 0.90"


def test_the_demo_plan_of_twelve_copies_is_capped_with_its_reasons() -> None:
    noise = Plan(
        goal="The Switchyard demo repository",
        steps=[PlanStep(title="The Switchyard demo repository")] * 12,
        confidence=1.0,
    )
    g = ground_plan(noise, TASK, FACTS, POLICY)
    assert "11 duplicate steps" in g.reasons
    assert "0 of 12 steps name a file" in g.reasons
    assert any("the goal shares 0%" in r for r in g.reasons)
    assert g.value == round(1 - 0.3 - 0.3 - 0.25, 4) == g.cap
    # the trigger that could never fire on a self-report of 1.00 now does, and says why
    policy = load_policy().policy
    signals = Signals(**plan_signals(noise, g.value), grounds=(("confidence", g.basis),))
    fired = {t.id: r for t, r in fired_triggers(policy, "architect", signals)}
    text = fired["architect_low_confidence"].text
    assert text.startswith("confidence 0.15 (self 1.00; 11 duplicate steps; 0 of 12 steps")
    assert text.endswith(") < 0.75")


def test_files_must_exist_or_be_declared_new() -> None:
    plan = good_plan().model_copy(
        update={
            "steps": [
                PlanStep(title="fix parse()", files=["parser.py", "lexer.py"]),
                PlanStep(title="add a new regression test", files=["tests/test_tail.py"]),
            ]
        }
    )
    reasons = [r for _, r in plan_checks(plan, TASK, FACTS, POLICY)]
    assert reasons == ["1 of 3 named files not in the repo (lexer.py)"]


def test_named_symbols_and_tests_must_exist() -> None:
    plan = good_plan().model_copy(
        update={
            "steps": [PlanStep(title="fix `Lexer.advance` and parse()", files=["parser.py"])],
            "acceptance_tests": ["tests/test_lexer.py", "test_nothing_like_it"],
        }
    )
    failed = plan_checks(plan, TASK, FACTS, POLICY)
    reasons = [r for _, r in failed]
    assert "1 of 2 named symbols not in the repo (advance)" in reasons
    assert "2 named tests not found (test_nothing_like_it, tests/test_lexer.py)" in reasons
    assert sum(a for a, _ in failed) == POLICY.plan_unknown_symbols + POLICY.plan_unknown_tests


def test_empty_and_repeated_steps() -> None:
    plan = good_plan().model_copy(
        update={
            "steps": [
                PlanStep(title="fix parse()", files=["parser.py"]),
                PlanStep(title="Fix parse() !", files=["parser.py"]),
                PlanStep(title="...", files=["parser.py"]),
            ]
        }
    )
    reasons = [r for _, r in plan_checks(plan, TASK, FACTS, POLICY)]
    assert reasons == ["1 duplicate step, 1 empty step"]


def test_goal_overlap_is_a_share_of_the_task_terms() -> None:
    assert goal_overlap(TASK, TASK) == 1.0
    assert goal_overlap("", TASK) == 0.0
    assert goal_overlap("anything", "") == 1.0
    assert key_terms("Parsing the tokens") == {"pars", "token"}


def test_the_change_checks() -> None:
    base = ChangeFacts(
        applied=True,
        touched=frozenset({"parser.py"}),
        plan_files=frozenset({"parser.py"}),
        changed_lines=2,
        plan_steps=2,
    )
    assert change_checks(base, POLICY) == []
    assert ground_change(0.9, base, POLICY).value == 0.9
    not_applied = ground_change(0.9, ChangeFacts(applied=False), POLICY)
    assert not_applied.reasons == ("the edits did not apply",) and not_applied.value == 0.4
    off = base.__class__(**{**base.__dict__, "touched": frozenset({"other.py"})})
    assert [r for _, r in change_checks(off, POLICY)] == [
        "touches none of the plan's files (parser.py)"
    ]
    big = base.__class__(**{**base.__dict__, "changed_lines": 81})
    assert [r for _, r in change_checks(big, POLICY)] == ["81 changed lines > 80 (2 steps × 40)"]
    empty = base.__class__(**{**base.__dict__, "changed_lines": 0})
    assert [r for _, r in change_checks(empty, POLICY)] == ["changes no line"]
    # the implementer's trigger reads the grounded value, and names the failed check
    policy = load_policy().policy
    signals = Signals(
        self_check_confidence=not_applied.value,
        grounds=(("self_check_confidence", not_applied.basis),),
    )
    fired = {t.id: r for t, r in fired_triggers(policy, "implementer", signals)}
    assert fired["implementer_low_self_check"].text == (
        "self_check_confidence 0.40 (self 0.90; the edits did not apply) < 0.5"
    )


def test_diff_size_counts_added_and_removed_lines() -> None:
    diff = "--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n-a\n+b\n c\n"
    assert diff_size(diff) == 2


def test_diff_size_counts_a_line_with_a_cr_or_ff_inside_once() -> None:
    """A lone CR (or FF) inside a line is not a line end: split there, ``+a\\r-b`` was
    counted as an added and a removed line."""
    diff = "--- a/x\n+++ b/x\n@@ -1 +1,2 @@\n-a\r\n+a\r-b\n+c\x0c-d\n"
    assert diff_size(diff) == 3


# ── properties ────────────────────────────────────────────────────────────────────────

words = st.sampled_from(
    ["parse", "parser.py", "token", "fix", "the", "loop", "`Tokenizer`", "lexer.py", "new", ""]
)
titles = st.lists(words, min_size=1, max_size=6).map(lambda ws: " ".join(ws) or "x")
files = st.lists(
    st.sampled_from(["parser.py", "tests/test_parser.py", "lexer.py", "src/none.py"]), max_size=3
)
steps = st.builds(PlanStep, title=titles, files=files)
plans = st.builds(
    Plan,
    goal=titles,
    steps=st.lists(steps, min_size=1, max_size=12),
    acceptance_tests=st.lists(
        st.sampled_from(["tests/test_parser.py", "test_parse_keeps_last_token", "test_gone"]),
        max_size=3,
    ),
    confidence=st.floats(0, 1),
)
amounts = st.floats(0, 1)
policies = st.builds(
    Grounding,
    plan_unknown_files=amounts,
    plan_no_files=amounts,
    plan_unknown_symbols=amounts,
    plan_duplicate_steps=amounts,
    plan_unknown_tests=amounts,
    plan_off_task=amounts,
    goal_overlap_min=amounts,
)


@settings(max_examples=300, deadline=None)
@given(plan=plans, policy=policies)
def test_the_grounded_value_is_the_self_report_capped_by_the_failed_checks(
    plan: Plan, policy: Grounding
) -> None:
    failed = plan_checks(plan, TASK, FACTS, policy)
    g = ground_plan(plan, TASK, FACTS, policy)
    assert 0.0 <= g.value <= 1.0
    assert g.value <= plan.confidence + 1e-9
    assert abs(g.cap - max(0.0, 1.0 - sum(a for a, _ in failed))) < 1e-3
    assert g.value == min(plan.confidence, g.cap)
    assert list(g.reasons) == [r for _, r in failed]
    assert g.basis.startswith(f"self {plan.confidence:.2f}")
    # pure: the same inputs give the same answer
    assert ground_plan(plan, TASK, FACTS, policy) == g


@settings(max_examples=200, deadline=None)
@given(plan=plans, extra=titles)
def test_a_repeated_step_never_raises_the_grounded_value(plan: Plan, extra: str) -> None:
    before = ground_plan(plan, TASK, FACTS, POLICY)
    if len(plan.steps) >= 12:
        return
    repeated = plan.model_copy(update={"steps": [*plan.steps, plan.steps[0]]})
    after = ground_plan(repeated, TASK, FACTS, POLICY)
    assert after.value <= before.value
    # a blank title repeated is one more empty step, not a duplicate of anything
    blank = re.search(r"[A-Za-z]", plan.steps[0].title) is None  # no word in the title
    said = "empty step" if blank else "duplicate"
    assert any(said in r for r in after.reasons)


@settings(max_examples=200, deadline=None)
@given(
    said=st.floats(0, 1),
    applied=st.booleans(),
    touched=st.frozensets(st.sampled_from(["a.py", "b.py", "c.py"])),
    named=st.frozensets(st.sampled_from(["a.py", "b.py"])),
    lines=st.integers(0, 500),
    steps=st.integers(1, 12),
)
def test_the_change_value_is_bounded_and_not_applied_is_always_a_failure(
    said: float,
    applied: bool,
    touched: frozenset[str],
    named: frozenset[str],
    lines: int,
    steps: int,
) -> None:
    facts = ChangeFacts(applied, touched, named, lines, steps)
    g = ground_change(said, facts, POLICY)
    assert 0.0 <= g.value <= said + 1e-9
    if not applied:
        assert g.reasons == ("the edits did not apply",)
        assert g.value <= 1 - POLICY.change_not_applied + 1e-9
    elif named & touched and 0 < lines <= steps * POLICY.change_lines_per_step:
        assert g.reasons == () and g.value == said
