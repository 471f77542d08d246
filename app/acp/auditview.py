"""Audit lines as the client sees them live (GR-005), and the session's usage and cost.

Routes, the quieter router steps and checks (a decision that no escalation was needed,
"the final plan (…) fires no trigger: no escalation needed", or one kept local at once:
context for the run's next step, cheap to show) go out as agent thoughts; escalations,
decisions, degradations, refusals, budget lines and a cloud step skipped for the budget
or the local-only rule as agent message chunks, so an editor shows them in the
conversation. ``call`` lines feed the usage update: the last call's tokens against its
model's window, and the session's cost so far.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from acp import update_agent_message_text, update_agent_thought_text
from acp.schema import AgentMessageChunk, AgentThoughtChunk, Cost, UsageUpdate

from app.policy.schema import Policy

#: shown as agent thoughts
THOUGHT_KINDS = frozenset({"route", "runtime_fallback", "skip", "retry", "repair", "check"})
#: shown as agent message chunks: what leaves the machine, who decided, what got weaker
MESSAGE_KINDS = frozenset(
    {
        "escalation",
        "approval",
        "denial",
        "degradation",
        "budget_stop",
        # a call that cost past a cap, one settled at its estimate, a reservation expired
        "budget",
        "refusal",
        "local_only_refusal",
    }
)


#: a cloud step skipped for these reasons is a budget stop or the local-only rule at work:
#: an escalation the triggers asked for did not happen, and the user is told (GR-005), as
#: a message the first time in a turn for each model, then as thoughts (a run's steps
#: each skip it again: ~28 lines in two turns, an ACP audit)
TOLD_SKIPS = frozenset({"budget", "local_only"})


def audit_chunk(
    line: dict[str, Any], told: set[tuple[str, str]] | None = None
) -> AgentThoughtChunk | AgentMessageChunk | None:
    """The chunk for one audit line (None for kinds the client is not shown). ``told``:
    the (reason, model) skips already said as messages in this turn (added to)."""
    kind = str(line.get("kind", ""))
    if kind == "skip" and told is not None:
        reason = str((line.get("values") or {}).get("reason") or "")
        key = (reason, str(line.get("to") or ""))
        if reason in TOLD_SKIPS and key not in told:
            told.add(key)
            return update_agent_message_text(quoted(f"**{kind}** · {describe(line)}"))
    if kind in THOUGHT_KINDS:
        return update_agent_thought_text(describe(line) + "\n")
    if kind in MESSAGE_KINDS:
        return update_agent_message_text(quoted(f"**{kind}** · {describe(line)}"))
    return None


def quoted(text: str) -> str:
    """A markdown block quote (every line of it), set apart from what came before."""
    return "\n" + "\n".join(f"> {line}" for line in text.strip().splitlines()) + "\n"


def describe(line: dict[str, Any]) -> str:
    """``route · architect: → qwen3-14b [ROUTE_LOCAL] detail``"""
    kind = line.get("kind", "")
    role = line.get("role") or ""
    origin, target = line.get("from"), line.get("to")
    where = ""
    if origin or target:
        where = f"{origin or ''} → {target or ''}".strip()
    codes = ", ".join(line.get("reason_codes") or [])
    parts = [f"{kind}", f"{role}:" if role else "", where, f"[{codes}]" if codes else ""]
    approver = (line.get("provenance") or {}).get("approver")
    if approver and kind in ("approval", "denial"):
        parts.append(f"by {approver}")
    detail = str(line.get("detail") or "").strip()
    if detail:
        parts.append(f"— {detail[:300]}")
    return " ".join(p for p in parts if p)


@dataclass
class UsageMeter:
    """Tokens and cost of an ACP session, from its ``call`` audit lines."""

    policy: Policy
    cost_usd: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0

    def take(self, line: dict[str, Any]) -> UsageUpdate | None:
        if line.get("kind") != "call":
            return None
        values = line.get("values") or {}
        t_in = int(values.get("tokens_in") or 0)
        t_out = int(values.get("tokens_out") or 0)
        self.tokens_in += t_in
        self.tokens_out += t_out
        self.cost_usd += float(values.get("cost_usd") or 0.0)
        model = str(line.get("to") or "").split("@", 1)[0]
        spec = self.policy.models.get(model)
        window = spec.context_window if spec is not None else 0
        return UsageUpdate(
            session_update="usage_update",
            used=t_in + t_out,
            size=max(window, t_in + t_out),
            cost=Cost(amount=round(self.cost_usd, 6), currency="USD"),
        )
