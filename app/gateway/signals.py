"""The §3 signals a gateway request carries (pure).

* ``context_estimate``: the router counts it from the messages (the shared counter).
* ``tool_calls`` / ``tool_heavy``: the tool actions already in the conversation (an agent
  deep in a tool loop is the seed's "tool-heavy" case): a call and its result are one
  action, as the pipeline counts a file read or a test run once. ``tool_heavy`` from the
  policy's ``[tool_use] librarian_heavy_actions``, as the pipeline's Librarian.
* explicit signals from headers: ``x-switchyard-signal: confidence=0.6`` (repeatable, or
  comma-separated), and ``x-switchyard-escalate: 1`` for the user's request (``true``,
  ``yes``, ``on`` too; ``0``, ``false``, ``no``, ``off`` say no; anything else is a 400).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from app.backends.base import ChatRequest
from app.gateway.errors import GatewayError
from app.router.types import Signals

#: the spellings of ``x-switchyard-escalate``, either way; anything else is refused: a
#: value read as "off" without a word (``garbage``, a typo of ``ture``) left the client
#: believing it had asked for the cloud, where a bad ``x-switchyard-signal`` is a 400
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def tool_actions(request: ChatRequest) -> int:
    """The tool actions in the conversation so far: its tool calls, each with its result
    (one action, not two: counted so, the policy's "20 tool calls" fired at 10), or its
    results where the calls were trimmed from the history."""
    calls = sum(len(m.tool_calls) for m in request.messages)
    results = sum(1 for m in request.messages if m.role == "tool")
    return max(calls, results)


def signals_for(
    request: ChatRequest,
    header_signals: Iterable[str],
    *,
    user_request: bool,
    heavy_actions: int,
    escalate_header: str | None = None,
) -> Signals:
    """``heavy_actions``: the policy's ``tool_use.librarian_heavy_actions``."""
    values: dict[str, Any] = {}
    for raw in header_signals:
        for item in raw.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            if not sep:
                raise GatewayError(
                    400, "invalid_request", f"x-switchyard-signal: expected KEY=VALUE, got {item!r}"
                )
            values[key.strip()] = value.strip()
    actions = tool_actions(request)
    values.setdefault("tool_calls", actions)
    values.setdefault("tool_heavy", actions >= heavy_actions)
    values["output_tokens"] = request.max_tokens
    wants = escalate_asked(escalate_header) or user_request  # (the header checked always)
    try:
        # a signal's user_request is read as its other flags are: "garbage" is a 400 (it
        # was read as false), and pydantic's spellings of true (y, t) are true
        signals = Signals.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise GatewayError(
            400, "invalid_request", f"x-switchyard-signal: {where}: {first['msg']}"
        ) from None
    return signals.model_copy(update={"user_request": True}) if wants else signals


def escalate_asked(value: str | None) -> bool:
    """Whether an ``x-switchyard-escalate`` header asks for the cloud; absent or empty is
    no; a value that is none of its spellings is a 400 naming them."""
    said = (value or "").strip().lower()
    if not said or said in _FALSE:
        return False
    if said in _TRUE:
        return True
    shown = value if value is not None and len(value) <= 40 else f"{(value or '')[:37]}..."
    raise GatewayError(
        400,
        "invalid_request",
        f"x-switchyard-escalate: expected {', '.join(_TRUE)} (escalate) or "
        f"{', '.join(_FALSE)} (do not), got {shown!r}",
    )


def header_values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of ``name``: a header sent twice is two values (``get`` read the first
    alone, so a second ``x-switchyard-signal`` was dropped without a word)."""
    getlist = getattr(headers, "getlist", None)
    if getlist is not None:
        return [str(v) for v in getlist(name) if v]
    value = headers.get(name)
    return [value] if value else []
