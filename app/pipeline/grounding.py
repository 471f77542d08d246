"""Grounded confidence (pure): a model's self-reported confidence, capped by checks
Switchyard makes against the repository and the task, so a model cannot vouch for itself.

Each failed check lowers the cap, from 1.0, by the amount the policy's ``[grounding]``
table sets; the grounded value is ``min(self-report, cap)``, and the reasons travel
with it into the trigger's text, e.g. "confidence 0.40 (self 1.00; 11 duplicate steps;
0 of 12 steps name a file) < 0.75". The checks read the plan or the change as written:
no model is asked anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from app.counted import counted
from app.memory.text import STOP_WORDS
from app.pipeline.schemas import Plan
from app.policy.signal_settings import Grounding

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\(\)")
_TICKED = re.compile(r"`([A-Za-z_][A-Za-z0-9_.]*)`")
_PATH = re.compile(r"[\w./-]+\.[A-Za-z0-9]{1,5}\b")
_TEST_ID = re.compile(r"\btest_[A-Za-z0-9_]+")
#: words saying a step brings a file into being (so a missing file is no fault)
_NEW = frozenset({"new", "create", "creates", "created", "add", "adds", "added", "write"})
#: the memory's stop list, and the words every task is phrased with
_STOP = STOP_WORDS | {"make", "makes", "must", "should", "without"}


@dataclass(frozen=True)
class RepoFacts:
    """What the checks know of the repository: its files (relative paths) and every
    identifier its texts hold."""

    files: frozenset[str] = frozenset()
    identifiers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Grounded:
    """A self-reported confidence and the cap the checks put on it."""

    self_report: float
    cap: float = 1.0
    reasons: tuple[str, ...] = field(default=())

    @property
    def value(self) -> float:
        return min(self.self_report, self.cap)

    @property
    def basis(self) -> str:
        """What the value rests on, for the trigger's text and the evidence."""
        return "; ".join([f"self {self.self_report:.2f}", *self.reasons])

    def as_json(self) -> dict[str, object]:
        return {
            "self_report": self.self_report,
            "cap": self.cap,
            "value": self.value,
            "reasons": list(self.reasons),
        }


def _capped(self_report: float, failed: Iterable[tuple[float, str]]) -> Grounded:
    cap, reasons = 1.0, []
    for amount, reason in failed:
        cap -= amount
        reasons.append(reason)
    return Grounded(
        self_report=min(1.0, max(0.0, self_report)),
        cap=round(max(0.0, cap), 4),
        reasons=tuple(reasons),
    )


# ── words ────────────────────────────────────────────────────────────────────────────────


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def key_terms(text: str) -> frozenset[str]:
    """The words that carry a text's meaning: lower-cased, stemmed, no stop words."""
    words = (w.lower() for w in _WORD.findall(text))
    return frozenset(_stem(w) for w in words if len(w) >= 3 and w not in _STOP)


def goal_overlap(goal: str, task: str) -> float:
    """The share of the task's key terms the goal names (1.0 when the task has none)."""
    wanted = key_terms(task)
    if not wanted:
        return 1.0
    return len(wanted & key_terms(goal)) / len(wanted)


def identifiers(text: str) -> frozenset[str]:
    return frozenset(_IDENT.findall(text))


# ── the plan ─────────────────────────────────────────────────────────────────────────────


def _norm(text: str) -> str:
    return " ".join(w.lower() for w in _WORD.findall(text))


def _declares_new(text: str) -> bool:
    return any(w.lower() in _NEW for w in _WORD.findall(text))


def _named_symbols(text: str) -> set[str]:
    names = set(_CALL.findall(text))
    for ticked in _TICKED.findall(text):
        if _PATH.fullmatch(ticked):
            continue  # a file name, checked as a file
        names.add(ticked.rsplit(".", 1)[-1])
    return {n for n in names if n}


def _listing(names: Iterable[str], limit: int = 3) -> str:
    items = sorted(names)
    more = f", +{len(items) - limit}" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def plan_checks(
    plan: Plan, task: str, facts: RepoFacts, policy: Grounding
) -> list[tuple[float, str]]:
    """The plan's failed checks: (amount, reason) pairs, in a fixed order."""
    failed: list[tuple[float, str]] = []
    steps = plan.steps
    n = len(steps)
    # distinct, non-empty steps
    seen: set[str] = set()
    repeats = empty = 0
    for step in steps:
        key = _norm(step.title)
        if not key:
            empty += 1
        elif key in seen:
            repeats += 1
        seen.add(key)
    if repeats or empty:
        parts = [f"{repeats} duplicate step{'s' * (repeats != 1)}"] if repeats else []
        parts += [f"{empty} empty step{'s' * (empty != 1)}"] if empty else []
        failed.append((policy.plan_duplicate_steps, ", ".join(parts)))
    # files: named at all, and real (or declared new by their step)
    naming = sum(1 for s in steps if s.files)
    new = {f for s in steps if _declares_new(f"{s.title} {s.rationale}") for f in s.files}
    if naming == 0:
        failed.append((policy.plan_no_files, f"0 of {n} steps name a file"))
    named = {f.strip().removeprefix("./") for s in steps for f in s.files if f.strip()}
    unknown = {f for f in named if f not in facts.files and f not in new}
    if unknown:
        failed.append(
            (
                policy.plan_unknown_files,
                f"{len(unknown)} of {len(named)} named files not in the repo ({_listing(unknown)})",
            )
        )
    # symbols the steps name
    symbols = set().union(*(_named_symbols(f"{s.title} {s.rationale}") for s in steps))
    missing = {s for s in symbols if s not in facts.identifiers}
    if missing:
        failed.append(
            (
                policy.plan_unknown_symbols,
                f"{len(missing)} of {len(symbols)} named symbols not in the repo "
                f"({_listing(missing)})",
            )
        )
    # the tests it names
    test_paths: set[str] = set()
    test_ids: set[str] = set()
    for entry in plan.acceptance_tests:
        paths = _PATH.findall(entry)
        test_paths.update(p.removeprefix("./") for p in paths)
        test_ids.update(_TEST_ID.findall(_PATH.sub(" ", entry)))
    absent = {p for p in test_paths if p not in facts.files and p not in new}
    absent |= {t for t in test_ids if t not in facts.identifiers}
    if absent:
        failed.append(
            (
                policy.plan_unknown_tests,
                f"{len(absent)} named test{'s' * (len(absent) != 1)} not found "
                f"({_listing(absent)})",
            )
        )
    # the goal is the task's
    overlap = goal_overlap(plan.goal, task)
    if overlap < policy.goal_overlap_min:
        failed.append(
            (
                policy.plan_off_task,
                f"the goal shares {overlap:.0%} of the task's key terms "
                f"(< {policy.goal_overlap_min:.0%})",
            )
        )
    return failed


def ground_plan(plan: Plan, task: str, facts: RepoFacts, policy: Grounding) -> Grounded:
    """The plan's confidence: its self-report, capped by :func:`plan_checks`."""
    return _capped(plan.confidence, plan_checks(plan, task, facts, policy))


# ── the Implementer's change ────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class ChangeFacts:
    """What Switchyard saw of one attempt's change."""

    #: the edits landed and were written in the worktree
    applied: bool
    #: files the worktree's diff touches
    touched: frozenset[str] = frozenset()
    #: the plan's named files that exist in the repository
    plan_files: frozenset[str] = frozenset()
    #: lines added plus lines removed
    changed_lines: int = 0
    plan_steps: int = 1


def change_checks(change: ChangeFacts, policy: Grounding) -> list[tuple[float, str]]:
    failed: list[tuple[float, str]] = []
    if not change.applied:
        failed.append((policy.change_not_applied, "the edits did not apply"))
        return failed
    if change.plan_files and not (change.touched & change.plan_files):
        failed.append(
            (
                policy.change_off_plan,
                f"touches none of the plan's files ({_listing(change.plan_files)})",
            )
        )
    bound = max(1, change.plan_steps) * policy.change_lines_per_step
    if change.changed_lines == 0:
        failed.append((policy.change_size, "changes no line"))
    elif change.changed_lines > bound:
        failed.append(
            (
                policy.change_size,
                f"{change.changed_lines} changed lines > {bound} "
                f"({counted(change.plan_steps, 'step')} × {policy.change_lines_per_step})",
            )
        )
    return failed


def ground_change(self_report: float, change: ChangeFacts, policy: Grounding) -> Grounded:
    """The Implementer's self_check_confidence, capped by :func:`change_checks`."""
    return _capped(self_report, change_checks(change, policy))


def diff_size(diff: str) -> int:
    """Added plus removed lines of a unified diff (file headers left out). Lines end at
    ``\\n`` only, as git's do: ``splitlines`` also broke at a CR or FF inside a line."""
    return sum(
        1
        for line in diff.split("\n")
        if (line.startswith("+") and not line.startswith("+++"))
        or (line.startswith("-") and not line.startswith("---"))
    )
