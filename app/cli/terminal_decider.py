"""The CLI's approval prompt: asks on the terminal whether an escalation may leave the machine.

The router only knows the :class:`~app.router.approvals.Decider` protocol; this is the
plain command line's decider (the TUI answers through the bus instead).
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any, TextIO

from app.router import approvals
from app.router.approvals import ApprovalDecision, ApprovalRequest, Decider, DecisionKind
from app.shown import clean

if TYPE_CHECKING:
    from app.bus import Bus
    from app.config import ApproveMode

#: what a typed answer means; anything else is asked again
_ANSWERS: dict[str, DecisionKind] = {
    "y": "allow_once",
    "yes": "allow_once",
    "a": "allow_session",
    "always": "allow_session",
    "n": "deny",
    "no": "deny",
    "d": "deny_all",
    "deny all": "deny_all",
    "": "deny",  # Enter alone takes the safe default
}


def _describe_reason(reason: dict[str, Any]) -> str:
    code = reason.get("code") or reason.get("reason") or "?"
    rest = ", ".join(f"{k}={v}" for k, v in reason.items() if k not in ("code", "reason"))
    return f"{code} ({rest})" if rest else str(code)


class TerminalDecider:
    """Asks on the terminal (the plain CLI without the TUI).

    The prompt goes to stderr so that ``--json`` output on stdout stays clean. The read
    blocks a worker thread; if the broker times out first, that thread stays parked on
    ``readline`` until a line arrives and its answer is ignored.
    """

    name = "terminal"
    max_tries = 3

    def __init__(self, *, stdin: TextIO | None = None, out: TextIO | None = None) -> None:
        self._stdin = stdin
        self._out = out

    async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
        stdin = self._stdin if self._stdin is not None else sys.stdin
        out = self._out if self._out is not None else sys.stderr
        if stdin is None or not stdin.isatty():
            return ApprovalDecision(decision="deny", decided_by=self.name, reason="no terminal")
        return await asyncio.to_thread(self._ask, req, stdin, out)

    def _ask(self, req: ApprovalRequest, stdin: TextIO, out: TextIO) -> ApprovalDecision:
        lines = [
            f"Escalation for role {req.role!r} wants to leave the machine:",
            f"  model   {req.model} ({req.provider})",
            f"  cost    ~${req.est_cost_usd:.4f}   budget left ${req.budget_left_usd:.4f}",
        ]
        lines += [f"  trigger {_describe_reason(r)}" for r in req.reasons]
        if req.values:
            lines.append("  values  " + ", ".join(f"{k}={v}" for k, v in req.values.items()))
        if req.timeout_s:
            lines.append(f"  (denied automatically after {req.timeout_s:g}s)")
        # What the human approves must read as it is: a reason's or a value's text cannot
        # move the cursor or restyle the prompt (app/shown.py).
        out.write("\n".join(clean(line, one_line=True) for line in lines) + "\n")
        for _ in range(self.max_tries):
            out.write(
                "Approve? [y]es once / [a]lways this session / [N]o / [d]eny all, stay local: "
            )
            out.flush()
            line = stdin.readline()
            if not line:
                return ApprovalDecision(
                    decision="deny", decided_by=self.name, reason="no answer (end of input)"
                )
            answer = _ANSWERS.get(line.strip().lower())
            if answer is not None:
                return ApprovalDecision(decision=answer, decided_by=self.name, reason="terminal")
            out.write("Please answer y, a, n or d.\n")
        return ApprovalDecision(decision="deny", decided_by=self.name, reason="no valid answer")


def decider_for(mode: ApproveMode, said: str | None = None, bus: Bus | None = None) -> Decider:
    """``--approve`` on the command line: the core's deciders, with this prompt for ``ask``
    when no UI listens on a bus. ``said``: where the mode was given (``approve_setting``)."""
    return approvals.decider_for(mode, bus, ask=TerminalDecider, said=said)
