"""What a decision line records of ``decide()``'s inputs, and how it is read back.

Every ``route``, ``runtime_fallback``, ``escalation`` and ``refusal`` line the router
writes for a request carries ``values["inputs"]``: the Signals and the RouterState that
``decide()`` read for it, so the decision can be replayed under another policy
(``switchyard policy simulate``). Defaults are left out to keep lines short. Every line a
request writes after its first carries ``values["req"]``, the seq of that first line:
one request may decide several times (a denial, a failure), and lines of concurrent
requests interleave.

A ``check`` line is a decision no request was routed by (:mod:`app.pipeline.checked`):
a pipeline step read a role's own output against the triggers (the Architect's final
plan, with its grounded confidence and scope; the second opinion's occasion) and did
not escalate, or a ``cloud_only`` request was kept local at its first decision (ACE's,
the Librarian's: the router raises ``RouteStaysLocal`` with the inputs and leaves the
line to its caller, whose check names the request its skip lines opened in
``values["req"]``). It carries the same ``inputs``, made by
:meth:`app.router.service.Router.decide_unserved` (or ``decide_recorded``, or the router's
own first decision), so a simulation replays it as the request the escalation would
have been; a trigger that fires and escalates is recorded by the router's own
``escalation`` line instead.

Lines written before this record existed have no ``inputs``: a simulation counts them
as unsimulated, never guesses them.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, ValidationError

from app.router.types import Frozen, RouterState, Signals

INPUTS_VERSION = 1
#: a pipeline step's escalation decision that sent nothing to the cloud (module docstring)
CHECK = "check"
#: the line kinds that record one decide() each
DECISION_KINDS = frozenset({"route", "runtime_fallback", "escalation", "refusal", CHECK})


def record_inputs(
    signals: Signals,
    state: RouterState,
    step: int,
    *,
    budget_read: bool,
    policy: str | None = None,
) -> dict[str, Any]:
    """``values["inputs"]`` of the line that carries the decision made from these inputs.

    ``step`` counts the decisions of one request (0 first). ``budget_read``: the router
    read the ledger for this decision (it does only when a trigger may escalate).
    ``policy``: the fingerprint of the policy decide() was given
    (:func:`app.policy.fingerprint.fingerprint`).
    """
    out: dict[str, Any] = {"v": INPUTS_VERSION, "step": step, "signals": _dumped(signals)}
    if policy is not None:
        out["policy"] = policy
    if state.local_only:
        out["local_only"] = True
    if state.health:
        down = sorted(k for k, ok in state.health.items() if not ok)
        if down:
            out["down"] = down
    if state.failed:
        out["failed"] = dict(state.failed)
    if state.denied:
        out["denied"] = sorted(state.denied)
    if state.approved:
        out["approved"] = sorted(state.approved)
    if state.unavailable:
        out["unavailable"] = dict(state.unavailable)
    if state.context_windows:
        out["windows"] = dict(state.context_windows)
    if budget_read:
        out["left"] = dict(state.provider_left_usd)
        if math.isfinite(state.session_left_usd):
            out["session_left"] = state.session_left_usd
        if math.isfinite(state.day_left_usd):
            out["day_left"] = state.day_left_usd
    return out


#: each Signals field's default (a field never set holds it: pydantic fills it in)
_DEFAULTS: dict[str, Any] = {
    name: field.get_default(call_default_factory=True)
    for name, field in Signals.model_fields.items()
}
_FIELDS = frozenset(_DEFAULTS)


def _dumped(signals: Signals) -> dict[str, Any]:
    """``signals.model_dump(exclude_defaults=True)`` as a dict (its keys in no fixed
    order: a line writes them sorted), read from the fields that were set, as the others
    hold their defaults: a third of its time, on every decision (issue 20). Its values
    are the fields' own (numbers, flags, the grounds' tuples, which a line spells as
    lists, as model_dump's do); a subclass gets model_dump's. (A name in the fields set
    that is no field, which only a ``model_copy`` given one puts there, is left out, as
    model_dump leaves it; ``model_construct`` told a fields set without a field it was
    given a value for is the one way to a value this does not see.)"""
    if type(signals) is not Signals:
        return signals.model_dump(exclude_defaults=True)
    values = signals.__dict__
    return {
        name: values[name]
        for name in signals.__pydantic_fields_set__ & _FIELDS
        if values[name] != _DEFAULTS[name]
    }


class RecordedInputs(Frozen):
    """``values["inputs"]`` read back (the schema :func:`record_inputs` writes)."""

    v: Literal[1]
    step: int = Field(ge=0)
    policy: str | None = None
    signals: Signals
    local_only: bool = False
    down: list[str] = Field(default_factory=list)
    failed: dict[str, str] = Field(default_factory=dict)
    denied: list[str] = Field(default_factory=list)
    approved: list[str] = Field(default_factory=list)
    unavailable: dict[str, str] = Field(default_factory=dict)
    windows: dict[str, int] = Field(default_factory=dict)
    #: what the ledger said was left per provider, when it was read
    left: dict[str, float] | None = None
    session_left: float | None = None
    day_left: float | None = None


def read_inputs(values: dict[str, Any]) -> RecordedInputs | None:
    """The recorded inputs of a decision line's ``values``; None when it has none or they
    do not read (a line from before the record, or from a newer version)."""
    raw = values.get("inputs")
    if not isinstance(raw, dict):
        return None
    try:
        return RecordedInputs.model_validate(raw)
    except ValidationError:
        return None
