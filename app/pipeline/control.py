"""What a user can ask of a running pipeline: the UI's keys and the CLI's flags land here.

The pipeline reads it between steps; nothing here knows whether a screen exists.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.pipeline.runner import RunOutcome


#: the roles whose steps read the user's escalation request (§3): a request for another
#: (Stage0, the tests, which call no model) would wait for nobody
ESCALATABLE = frozenset({"architect", "implementer", "judge", "second_opinion"})


@dataclass
class RunControl:
    #: roles the user asked to escalate (§3 "user explicitly requests escalation")
    escalate: set[str] = field(default_factory=set)
    #: set when the user asks the run to stop; the pipeline stops at the next step
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    #: the role at work right now, for a UI's "escalate this role" key
    current_role: str = ""
    #: what a cancel of the run is recorded as (the ACP agent's hang-up says the editor
    #: went: a crash read as "cancelled by the user" in the audit, an ACP audit)
    cancel_reason: str = "cancelled by the user"
    #: how the run ended when it ended by raising (cancelled, or an internal error), its
    #: bundle sealed: a caller that only sees the exception can still say which run it was
    ended: RunOutcome | None = None

    def request_escalation(self, role: str | None = None) -> str:
        """Ask to escalate ``role`` (default: the role at work). Returns the role."""
        target = role or self.current_role
        if target:
            self.escalate.add(target)
        return target

    def user_requested(self, role: str) -> bool:
        """True once per request: the flag is consumed by the step that escalates."""
        if role in self.escalate:
            self.escalate.discard(role)
            return True
        return False

    def request_stop(self) -> None:
        self.stop.set()

    @property
    def stopping(self) -> bool:
        return self.stop.is_set()
