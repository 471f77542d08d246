"""The soft §3 signals, computed from what the roles produced (pure)."""

from __future__ import annotations

from unidiff.patch import PatchSet

from app.pipeline.schemas import Plan
from app.policy.highrisk import module_of
from app.policy.schema import Ace


def plan_signals(plan: Plan, confidence: float | None = None) -> dict[str, int | float]:
    """``confidence``: the grounded one (:mod:`.grounding`); the self-report without it."""
    files = {f for step in plan.steps for f in step.files}
    return {
        "confidence": plan.confidence if confidence is None else confidence,
        "plan_steps": len(plan.steps),
        "files_touched": len(files),
        "open_questions": len(plan.open_questions),
    }


def diff_files(diff: str) -> list[str]:
    """Paths a unified diff touches; an unparsable diff touches nothing we can name."""
    try:
        patch = PatchSet(diff)
    except Exception:  # unidiff raises its own errors and sometimes bare ones
        return []
    out = []
    for f in patch:
        path = f.target_file if f.target_file != "/dev/null" else f.source_file
        out.append(path[2:] if path.startswith(("a/", "b/")) else path)
    return sorted(set(out))


def diff_signals(diff: str) -> dict[str, int]:
    files = diff_files(diff)
    return {"files_touched": len(files), "modules_touched": len({module_of(f) for f in files})}


def diff_insertions(diff: str) -> int:
    """Added lines of a unified diff (``+`` lines outside the file headers); lines end at
    ``\\n`` only, as git's do (``splitlines`` also broke at a CR or FF inside a line)."""
    return sum(
        1 for line in diff.split("\n") if line.startswith("+") and not line.startswith("+++")
    )


def interesting_failure(failures: list[str], diff: str, ace: Ace) -> list[str]:
    """Why a run is an interesting failure (ACE's own §1 trigger), or nothing.

    At least ``interesting_failed_loops`` compile/test failures on the way (one failed
    loop is ordinary), or a diff larger than the policy's bounds (more than
    ``interesting_diff_files`` files or ``interesting_diff_insertions`` insertions), even
    when the run ended green.
    """
    many = len(failures) >= ace.interesting_failed_loops
    why = [f"{len(failures)} failed loops (>= {ace.interesting_failed_loops})"] if many else []
    files = len(diff_files(diff)) if diff else 0
    if files > ace.interesting_diff_files:
        why.append(f"the diff touches {files} files (> {ace.interesting_diff_files})")
    added = diff_insertions(diff) if diff else 0
    if added > ace.interesting_diff_insertions:
        why.append(f"the diff inserts {added} lines (> {ace.interesting_diff_insertions})")
    return why
