"""A §8 "Model & Runtime (Spec Overrides)" block that the linter accepts: the seed's
template with every role marked and the choices a test cares about filled in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

#: the seed's role lines, in its order
ROLE_LINES = (
    "Stage0 Tier2 (NotebookLM)",
    "Architect/Planner",
    "Implementer/Rust Ace",
    "Librarian",
    "Tutor",
    "Auditor/Judge",
)
DEFAULT_ROLES = {
    "Stage0 Tier2 (NotebookLM)": "NO",
    "Architect/Planner": "YES",
    "Implementer/Rust Ace": "YES",
    "Librarian": "YES",
    "Tutor": "NO",
    "Auditor/Judge": "YES",
}


def seed_spec(
    *,
    title: str = "Fix the parser",
    roles: Mapping[str, str] | None = None,
    local_only: bool = False,
    hr: str = "NO",
    overrides: Sequence[str] = ("none",),
) -> str:
    marks = {**DEFAULT_ROLES, **(roles or {})}
    role_lines = "\n".join(f"- {name}: {marks[name]}" for name in ROLE_LINES)
    override_lines = "\n".join(f"- {o}" for o in overrides)
    return f"""# {title}

## Model & Runtime (Spec Overrides)

Policy: docs/MODEL-POLICY.md (version: 1.0.0)

Roles exercised by this spec:
{role_lines}

Routing mode: local-first with escalation
Architect escalation: confidence < 0.75
Implementer escalation: 2 failed compile/test loops
Kimi: escalation-only (Librarian hard sweeps)
DeepSeek: escalation-only (Implementer stuck)

Primary tiers:
- fast_local: <local 14B planner> + <local 32B coder> (vLLM on RTX 5090)
- slow_cloud_escalation: DeepSeek (reasoner/chat) [escalation-only]
- premium_judge: GPT-5.1 High / Claude Opus (HR required)

Privacy:
- local_only = {str(local_only).lower()}

High-risk:
- HR = {hr}

Overrides (must be rare):
{override_lines}
"""
