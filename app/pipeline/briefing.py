"""What the planner reads besides the brief itself: its sources for the Librarian and
the Tier2 synthesis as markdown (pure)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.stage0.brief import Brief
    from app.stage0.citations import Synthesis


def brief_sources(brief: Brief, synthesis: str = "") -> list[tuple[str, str]]:
    """The brief as citable (id, text) sources for the Librarian, in the brief's order.

    The metadata block is left out: it is for machines, and brief.json keeps it.
    """
    out: list[tuple[str, str]] = []
    if brief.constitution is not None:
        out.append((f"constitution:{brief.constitution.path}", brief.constitution.text))
    if brief.spec is not None:
        out.append((f"spec:{brief.spec.path}", brief.spec.text))
    out += [(f"memory:{i}", m) for i, m in enumerate(brief.memories, start=1)]
    out += [(f"{c.path}:{c.start}-{c.end}", c.text) for c in (*brief.code, *brief.docs)]
    if brief.risks:
        out.append(("risks", "\n".join(f"- {r}" for r in brief.risks)))
    if brief.approach:
        out.append(("approach", "\n".join(f"- {a}" for a in brief.approach)))
    if synthesis.strip():
        out.append(("tier2", synthesis.strip()))
    return out


def synthesis_markdown(synthesis: Synthesis | None) -> str:
    """An accepted synthesis as a brief section (claims with their citations), or ""."""
    if synthesis is None:
        return ""
    lines = ["", "## Tier2 synthesis (every claim checked against the brief)", ""]
    for claim in synthesis.claims:
        lines.append(f"- {claim.text} [{', '.join(claim.cites)}]")
    for pair in synthesis.contradictions:
        lines.append(f"- CONTRADICTION {pair.a} vs {pair.b}: {pair.note}")
    return "\n".join(lines) + "\n"
