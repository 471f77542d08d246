"""The approvals broker: humans approve what leaves the machine.

A cloud escalation asks :meth:`ApprovalBroker.request`. The broker creates a future for
the request, hands the request to a pluggable *decider* and waits, with a timeout that
denies. Whoever answers first settles the future: the decider's own answer, or
:meth:`ApprovalBroker.resolve` (what a UI calls when the user presses y/a/n). Every
decision, and who made it, is written to the audit log before it is returned. A decider
that shows its prompts one at a time (the terminal) says when one waits for its turn and
when it is shown (:func:`waiting_turn`, :func:`shown`): its timeout runs from then.

Nothing here knows there is a screen: the TUI only sees :class:`~app.bus.ApprovalRequested`
on the bus and calls ``resolve`` back. A face with a prompt of its own (the CLI's
terminal) passes it in: :func:`decider_for` takes it as ``ask``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from app.audit.types import AuditSink
from app.bus import ApprovalRequested, ApprovalResolved, Bus
from app.clock import Clock, SystemClock
from app.errors import ApprovalDenied

__all__ = [
    "AllowDecider",
    "ApprovalBroker",
    "ApprovalDecision",
    "ApprovalRequest",
    "BusDecider",
    "Decider",
    "DecisionKind",
    "DenyDecider",
    "UnattendedDecider",
    "decider_for",
    "shown",
    "waiting_turn",
]

#: ``deny_all`` ("deny all, stay local") denies this escalation, every later step of the
#: role's chain, and every later escalation of the session, without asking again: the
#: mirror of ``allow_session``, and what ACP's ``reject_always`` ("remember the choice")
#: promises an editor. Asking four more times after it was the bug a real session showed.
DecisionKind = Literal["allow_once", "allow_session", "deny", "deny_all"]

# Audit reason codes. Stable: the escalation pane and the evidence bundle read them.
APPROVED_ONCE = "APPROVED_ONCE"
APPROVED_SESSION = "APPROVED_SESSION"
APPROVED_SESSION_REUSED = "APPROVED_SESSION_REUSED"
DENIED = "DENIED"
DENIED_ALL = "DENIED_ALL"
DENIED_ALL_REUSED = "DENIED_ALL_REUSED"
APPROVAL_TIMEOUT = "APPROVAL_TIMEOUT"
APPROVER_ERROR = "APPROVER_ERROR"
#: the request that asked was cancelled (the user stopped the run) before an answer came
APPROVAL_CANCELLED = "APPROVAL_CANCELLED"

_CODE_FOR: dict[DecisionKind, str] = {
    "allow_once": APPROVED_ONCE,
    "allow_session": APPROVED_SESSION,
    "deny": DENIED,
    "deny_all": DENIED_ALL,
}

SESSION_APPROVAL = "session-approval"
SESSION_DENIAL = "session-denial"
TIMEOUT = "timeout"
CANCELLED = "cancelled"


class ApprovalRequest(BaseModel):
    """What a human is asked to approve: one cloud call for one role."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    session: str
    run: str | None = None
    role: str
    model: str
    provider: str
    reasons: list[dict[str, Any]] = Field(default_factory=list)  # the triggers that fired
    values: dict[str, Any] = Field(default_factory=dict)  # their measured values
    est_cost_usd: float = Field(ge=0)
    budget_left_usd: float
    #: set by the broker before a decider sees the request, so a UI can show a countdown
    timeout_s: float | None = None
    #: who waits on it, when the run is another program's request (a gateway client)
    origin: str = ""


class ApprovalDecision(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    decision: DecisionKind
    decided_by: str
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.decision in ("allow_once", "allow_session")


#: the answer a session's "deny all: stay local" gives every later question of it
_STAYED_LOCAL = ApprovalDecision(
    decision="deny_all",
    decided_by=SESSION_DENIAL,
    reason="denied for this session earlier (deny all: stay local)",
)


class Decider(Protocol):
    """Anything that can answer an approval request."""

    async def decide(self, req: ApprovalRequest) -> ApprovalDecision: ...


# ── The countdown, as a decider sees it ──────────────────────────────────────────────────


class _Countdown:
    """The timeout of one ask, which its decider may move (:func:`waiting_turn`,
    :func:`shown`); a decider that says nothing is timed from the ask, as before."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        #: the broker's running timeout (None before and after it runs)
        self.scope: asyncio.Timeout | None = None
        #: the bound of the wait for a turn, while the prompt waits for one
        self.turn_bound_s: float | None = None

    def restart(self, delay: float) -> None:
        scope = self.scope
        if scope is not None and not scope.expired():
            scope.reschedule(asyncio.get_running_loop().time() + delay)


#: the countdown of the ask being decided, set by the broker in its decider's task
_countdown: ContextVar[_Countdown | None] = ContextVar("approval_countdown", default=None)


def waiting_turn(bound_s: float) -> None:
    """Said by a decider whose prompt waits behind another before it is shown (the
    terminal asks one at a time): the human's time has not started, and the ask ends
    (denied) if it is not shown within ``bound_s``. Timed from the ask, a prompt queued
    behind a slow answer said "denied automatically after 10s" and was denied 2 s later
    (a user audit). Outside a broker's ask: nothing."""
    countdown = _countdown.get()
    if countdown is not None:
        countdown.turn_bound_s = bound_s
        countdown.restart(bound_s)


def shown() -> None:
    """Said by a decider that said :func:`waiting_turn` as its prompt is shown: its
    timeout (the request's ``timeout_s``) runs from now. Outside a broker's ask: nothing."""
    countdown = _countdown.get()
    if countdown is not None and countdown.turn_bound_s is not None:
        countdown.turn_bound_s = None
        countdown.restart(countdown.timeout_s)


# ── Deciders ─────────────────────────────────────────────────────────────────────────────


class AllowDecider:
    """Headless ``--approve allow``: every escalation is allowed, one at a time."""

    name = "headless:allow"

    def __init__(self, said: str = "--approve allow") -> None:
        #: where the standing answer was given (a flag, the environment, the config file)
        self.said = said

    async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
        return ApprovalDecision(decision="allow_once", decided_by=self.name, reason=self.said)


class DenyDecider:
    """Headless ``--approve deny``: nothing leaves the machine."""

    name = "headless:deny"

    def __init__(self, said: str = "--approve deny") -> None:
        self.said = said

    async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
        return ApprovalDecision(decision="deny", decided_by=self.name, reason=self.said)


class BusDecider:
    """For a UI: publishes :class:`ApprovalRequested` and waits for :meth:`resolve`.

    The UI may call either this ``resolve`` or the broker's; both settle the request.
    """

    name = "bus"

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._waiting: dict[str, asyncio.Future[ApprovalDecision]] = {}

    async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
        if self.bus.subscriber_count == 0:
            # Nobody could ever answer; don't make the session wait out the timeout.
            return ApprovalDecision(decision="deny", decided_by=self.name, reason="no UI listening")
        fut: asyncio.Future[ApprovalDecision] = asyncio.get_running_loop().create_future()
        # Registered before publishing, so a subscriber that answers at once finds it.
        self._waiting[req.request_id] = fut
        try:
            await self.bus.publish(
                ApprovalRequested(
                    session=req.session,
                    request_id=req.request_id,
                    run=req.run or "",
                    role=req.role,
                    model=req.model,
                    provider=req.provider,
                    reasons=req.reasons,
                    est_cost_usd=req.est_cost_usd,
                    budget_left_usd=req.budget_left_usd,
                    timeout_s=req.timeout_s or 0.0,
                )
            )
            return await fut
        finally:
            self._waiting.pop(req.request_id, None)

    def resolve(self, request_id: str, decision: ApprovalDecision) -> bool:
        """Answer a pending request; False when it is unknown or already settled."""
        fut = self._waiting.get(request_id)
        if fut is None or fut.done():
            return False
        fut.set_result(decision)
        return True


class UnattendedDecider:
    """``ask`` with nobody to ask (no UI on a bus, no prompt from a face): fail closed."""

    name = "unattended"

    async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
        return ApprovalDecision(decision="deny", decided_by=self.name, reason="nobody to ask")


def decider_for(
    mode: Literal["allow", "deny", "ask"],
    bus: Bus | None = None,
    *,
    ask: Callable[[], Decider] | None = None,
    said: str | None = None,
) -> Decider:
    """The decider for ``--approve``: ask goes to the UI when there is a bus, else to the
    face's own prompt (``ask``, e.g. the CLI's terminal); with neither, it denies.
    ``said``: where a standing allow or deny was given, for its audit lines."""
    if mode == "allow":
        return AllowDecider(said or "--approve allow")
    if mode == "deny":
        return DenyDecider(said or "--approve deny")
    if bus is not None:
        return BusDecider(bus)
    return ask() if ask is not None else UnattendedDecider()


# ── Broker ───────────────────────────────────────────────────────────────────────────────


class ApprovalBroker:
    """Turns approval requests into audited decisions (one audit line per decision)."""

    def __init__(
        self,
        decider: Decider,
        *,
        audit: AuditSink,
        bus: Bus | None = None,
        timeout_s: float,
        clock: Clock | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.decider = decider
        self.timeout_s = timeout_s
        self._audit = audit
        # A UI decider's bus also gets ApprovalResolved, so its modal closes on a timeout.
        if bus is None and isinstance(decider, BusDecider):
            bus = decider.bus
        self._bus = bus
        self._clock: Clock = clock or SystemClock()
        self._pending: dict[str, asyncio.Future[tuple[ApprovalDecision, str]]] = {}
        #: the session of each pending request (a "deny all" settles its session's others)
        self._pending_session: dict[str, str] = {}
        self._session_allowed: set[tuple[str, str, str]] = set()
        #: sessions whose human answered "deny all, stay local"
        self._session_denied: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # The key includes the provider: the same model name elsewhere is another destination.
    def is_session_allowed(self, session: str, provider: str, model: str) -> bool:
        # "deny all: stay local" outranks an earlier "a": the router, which asks no one
        # about a model allowed for the session, sent the next request to the cloud
        if session in self._session_denied:
            return False
        return (session, provider, model) in self._session_allowed

    def allowed_of(self, session: str, models: Iterable[tuple[str, str]]) -> frozenset[str]:
        """The models among ``models`` ((model, provider) pairs) allowed for ``session``
        (:meth:`is_session_allowed` of each, in one pass)."""
        allowed = self._session_allowed
        if not allowed or session in self._session_denied:
            return frozenset()
        return frozenset(m for m, provider in models if (session, provider, m) in allowed)

    def is_session_denied(self, session: str) -> bool:
        return session in self._session_denied

    def pending(self) -> list[str]:
        """Request ids waiting for a decision."""
        return list(self._pending)

    def resolve(self, request_id: str, decision: ApprovalDecision) -> bool:
        """Settle a pending request (a UI keypress). False when unknown or already settled.

        Call it on the broker's event loop.
        """
        fut = self._pending.get(request_id)
        if fut is None or fut.done():
            return False
        fut.set_result((decision, _CODE_FOR[decision.decision]))
        return True

    async def require(self, req: ApprovalRequest) -> ApprovalDecision:
        """Like :meth:`request`, but a denial raises :class:`~app.errors.ApprovalDenied`."""
        decision = await self.request(req)
        if not decision.allowed:
            raise ApprovalDenied(
                f"escalation to {req.model} ({req.provider}) denied by "
                f"{decision.decided_by}: {decision.reason}"
            )
        return decision

    async def request(self, req: ApprovalRequest) -> ApprovalDecision:
        """Decide on ``req``, audit the decision, publish it, and return it."""
        started = self._clock.monotonic()
        key = (req.session, req.provider, req.model)
        if req.session in self._session_denied:  # "stay local" outranks an earlier "a"
            decision, code = _STAYED_LOCAL, DENIED_ALL_REUSED
        elif key in self._session_allowed:
            decision = ApprovalDecision(
                decision="allow_session",
                decided_by=SESSION_APPROVAL,
                reason="allowed for this session earlier",
            )
            code = APPROVED_SESSION_REUSED
        else:
            req = req.model_copy(update={"timeout_s": self.timeout_s})
            try:
                decision, code = await self._ask(req)
                if decision.decision == "deny_all":
                    self._stay_local(req.session)  # (at once: before its line is written)
                elif decision.allowed and req.session in self._session_denied:
                    # "deny all: stay local" was answered on another question of the
                    # session while this one waited: it outranks this answer, which let
                    # a request leave after "d" (two modals at once, a TUI audit)
                    decision, code = _STAYED_LOCAL, DENIED_ALL_REUSED
            except asyncio.CancelledError:
                # Stopped while the human was asked: the escalation still ends in a
                # recorded decision (GR-005), a denial, and the modal closes.
                cancelled = ApprovalDecision(
                    decision="deny",
                    decided_by=CANCELLED,
                    reason="cancelled before an answer came (its request ended first)",
                )
                await asyncio.shield(self._record(req, cancelled, APPROVAL_CANCELLED, started))
                raise
        await self._record(req, decision, code, started)
        return decision

    async def _record(
        self, req: ApprovalRequest, decision: ApprovalDecision, code: str, started: float
    ) -> None:
        """Audit the decision, remember a session-wide one, and publish it."""
        key = (req.session, req.provider, req.model)
        # GR-005: the line is written before the decision takes effect.
        await self._audit.append(
            "approval" if decision.allowed else "denial",
            session=req.session,
            run=req.run,
            role=req.role,
            to=req.model,
            reason_codes=[code],
            values={
                "model": req.model,
                "provider": req.provider,
                "est_cost_usd": req.est_cost_usd,
                "budget_left_usd": req.budget_left_usd,
                "reasons": req.reasons,
                "trigger_values": req.values,
                "decision": decision.decision,
                "waited_s": round(self._clock.monotonic() - started, 3),
            },
            provenance={"approver": decision.decided_by},
            detail=decision.reason,
        )
        if decision.decision == "allow_session":
            self._session_allowed.add(key)
        elif decision.decision == "deny_all":
            self._stay_local(req.session)
        if self._bus is not None:
            await self._bus.publish(
                ApprovalResolved(
                    session=req.session,
                    request_id=req.request_id,
                    decision=decision.decision,
                    decided_by=decision.decided_by,
                    reason=decision.reason,
                )
            )

    def _stay_local(self, session: str) -> None:
        """``session``'s "deny all: stay local": remembered, and its other questions on
        screen answered with it (their modals close). Each was still open to a "y" after
        the "d", and a request left the machine (two held requests at once, a TUI audit).
        Taken at once, before the answer's line is written: the safe way to be early."""
        self._session_denied.add(session)
        for rid, fut in list(self._pending.items()):
            if self._pending_session.get(rid) == session and not fut.done():
                fut.set_result((_STAYED_LOCAL, DENIED_ALL_REUSED))

    async def _ask(self, req: ApprovalRequest) -> tuple[ApprovalDecision, str]:
        if req.request_id in self._pending:
            raise ValueError(f"approval request {req.request_id} is already pending")
        fut: asyncio.Future[tuple[ApprovalDecision, str]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[req.request_id] = fut
        self._pending_session[req.request_id] = req.session
        countdown = _Countdown(self.timeout_s)
        task = asyncio.create_task(self._run_decider(req, fut, countdown))
        # Keep a reference: an unreferenced task can be garbage-collected mid-flight.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            # (the decider runs once this waits: the scope is there for it to move)
            async with asyncio.timeout(self.timeout_s) as countdown.scope:
                return await fut
        except TimeoutError:
            bound = countdown.turn_bound_s
            said = (
                f"not asked within {bound:g}s: the prompts before it were not done"
                if bound is not None
                else f"no decision within {self.timeout_s:g}s"
            )
            return (
                ApprovalDecision(decision="deny", decided_by=TIMEOUT, reason=said),
                APPROVAL_TIMEOUT,
            )
        finally:
            countdown.scope = None  # (done: a late shown() moves nothing)
            self._pending.pop(req.request_id, None)
            self._pending_session.pop(req.request_id, None)
            # Whoever did not answer stops asking (a TUI modal closes on ApprovalResolved).
            task.cancel()

    async def _run_decider(
        self,
        req: ApprovalRequest,
        fut: asyncio.Future[tuple[ApprovalDecision, str]],
        countdown: _Countdown,
    ) -> None:
        _countdown.set(countdown)  # (this task's own context: the asker's is untouched)
        try:
            decision = await self.decider.decide(req)
            result = (decision, _CODE_FOR[decision.decision])
        except Exception as exc:
            # A broken decider must fail closed, never let the escalation through.
            name = getattr(self.decider, "name", type(self.decider).__name__)
            result = (
                ApprovalDecision(decision="deny", decided_by=f"{name}:error", reason=repr(exc)),
                APPROVER_ERROR,
            )
        if not fut.done():
            fut.set_result(result)
