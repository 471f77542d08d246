"""The §3 signals a gateway request carries (pure).

* ``context_estimate``: the router counts it from the messages (the shared counter).
* ``tool_calls`` / ``tool_heavy``: the tool calls and results already in the conversation
  (an agent deep in a tool loop is the seed's "tool-heavy" case).
* explicit signals from headers: ``x-switchyard-signal: confidence=0.6`` (repeatable, or
  comma-separated), and ``x-switchyard-escalate: 1`` for the user's request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from app.backends.base import ChatRequest
from app.gateway.errors import GatewayError
from app.router.types import Signals

#: tool calls plus results in one conversation from which it counts as tool-heavy
TOOL_HEAVY_ACTIONS = 20
_TRUE = {"1", "true", "yes", "on"}


def tool_actions(request: ChatRequest) -> int:
    """Tool calls and tool results in the conversation so far."""
    calls = sum(len(m.tool_calls) for m in request.messages)
    results = sum(1 for m in request.messages if m.role == "tool")
    return calls + results


def signals_for(
    request: ChatRequest,
    header_signals: Iterable[str],
    *,
    user_request: bool,
    escalate_header: str | None = None,
) -> Signals:
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
    values.setdefault("tool_heavy", actions >= TOOL_HEAVY_ACTIONS)
    values["output_tokens"] = request.max_tokens
    wants = user_request or (escalate_header or "").strip().lower() in _TRUE
    values["user_request"] = wants or str(values.get("user_request", "")).lower() in _TRUE
    try:
        return Signals.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise GatewayError(
            400, "invalid_request", f"x-switchyard-signal: {where}: {first['msg']}"
        ) from None


def header_values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of ``name``: a header sent twice is two values (``get`` read the first
    alone, so a second ``x-switchyard-signal`` was dropped without a word)."""
    getlist = getattr(headers, "getlist", None)
    if getlist is not None:
        return [str(v) for v in getlist(name) if v]
    value = headers.get(name)
    return [value] if value else []
