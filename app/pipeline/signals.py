"""The soft §3 signals, computed from what the roles produced (pure)."""

from __future__ import annotations

from unidiff.patch import PatchSet

from app.pipeline.schemas import Plan
from app.policy.highrisk import module_of


def plan_signals(plan: Plan) -> dict[str, int | float]:
    files = {f for step in plan.steps for f in step.files}
    return {
        "confidence": plan.confidence,
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
