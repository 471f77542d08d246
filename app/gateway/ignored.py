"""The request fields the gateway carries to no backend, by name (pure).

Clients send many fields by default (Claude Code's ``thinking``, ``metadata`` and
``cache_control``, Codex's ``include`` and ``reasoning``): refusing them would refuse
those clients, and dropping them silently let a client believe it got what it asked
for. Each one left out is named, in the request's audit line (``ignored_fields``, beside
the hosted tools' ``dropped_tools``) and in the reply's ``x-switchyard-ignored`` header.
A field whose value is null, false or empty ("", [], {}) asks for nothing and is not named.

The sets below are the fields :mod:`app.gateway.inbound` reads (a field read and then
refused is a 400, never named here); anything else is named as the client spelt it.
"""

from __future__ import annotations

from typing import Any

from app.gateway.errors import Protocol

#: the header that names them on a reply
HEADER = "x-switchyard-ignored"

_CHAT = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "temperature",
        "top_p",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "stream",
        "stream_options",
        "n",
    }
)
_CHAT_MESSAGE = frozenset(
    {"role", "content", "tool_calls", "tool_call_id", "reasoning_content", "reasoning"}
)
_CHAT_FUNCTION = frozenset({"name", "description", "parameters"})
_RESPONSES = frozenset(
    {
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "temperature",
        "top_p",
        "seed",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "previous_response_id",
        "stream",
        "store",
    }
)
#: (a custom tool's grammar ``format`` is not carried: its one string is not checked)
_RESPONSES_TOOL = frozenset({"type", "name", "description", "parameters", "tools"})
_MESSAGES = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "stop_sequences",
        "temperature",
        "top_p",
        "seed",
        "tools",
        "tool_choice",
        "stream",
        "output_config",
        # refused when it asks for anything (inbound.parse_messages): never named
        "mcp_servers",
    }
)
_MESSAGES_TOOL = frozenset({"type", "name", "description", "input_schema"})


def _asks(value: Any) -> bool:
    """Whether a field's value asks for anything (null, false, "", [] and {} do not)."""
    return value is not None and value is not False and value not in ("", [], {})


def _extra(obj: Any, known: frozenset[str], prefix: str = "") -> set[str]:
    if not isinstance(obj, dict):
        return set()
    return {f"{prefix}{k}" for k, v in obj.items() if k not in known and _asks(v)}


def _each(items: Any) -> list[Any]:
    return items if isinstance(items, list) else []


def ignored_fields(protocol: Protocol, body: dict[str, Any]) -> list[str]:
    """The fields of ``body`` (a request already parsed whole) carried to no backend."""
    if protocol == "chat":
        found = _extra(body, _CHAT)
        for m in _each(body.get("messages")):
            found |= _extra(m, _CHAT_MESSAGE, "messages[].")  # a participant's name, …
        for t in _each(body.get("tools")):
            fn = t.get("function") if isinstance(t, dict) else None
            found |= _extra(fn, _CHAT_FUNCTION, "tools[].function.")  # strict, …
    elif protocol == "responses":
        found = _extra(body, _RESPONSES)
        found |= _extra(body.get("text"), frozenset({"format"}), "text.")  # verbosity
        for t in _each(body.get("tools")):
            if isinstance(t, dict) and t.get("type") in ("function", "custom", "namespace"):
                found |= _extra(t, _RESPONSES_TOOL, "tools[].")  # strict, …
    else:
        found = _extra(body, _MESSAGES)
        found |= _extra(body.get("output_config"), frozenset({"format"}), "output_config.")
        thinking = body.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") == "disabled":
            found.discard("thinking")  # asks for what every backend does anyway
        for t in _each(body.get("tools")):
            found |= _extra(t, _MESSAGES_TOOL, "tools[].")
        found.discard("tools[].cache_control")
        if _cache_control(body):
            found.add("cache_control")
    return _named(found)


#: at most this many names, each at most NAME_MAX characters: a body of 10,000 made-up
#: keys is not copied into a header (a client refuses one past its limit) or the audit
MOST_NAMED = 24
NAME_MAX = 64


def _named(found: set[str]) -> list[str]:
    """The names, sorted, fit for a header: printable ASCII (a key is the client's text:
    a control character in a header is a protocol error), none cut without saying so."""
    names = sorted(found)
    shown = [_printable(n) for n in names[:MOST_NAMED]]
    if len(names) > MOST_NAMED:
        shown.append(f"(+{len(names) - MOST_NAMED} more)")
    return shown


def _printable(name: str) -> str:
    text = "".join(c if " " <= c <= "~" and c != "," else "?" for c in name)
    return text if len(text) <= NAME_MAX else text[: NAME_MAX - 3] + "..."


def _cache_control(body: dict[str, Any]) -> bool:
    """Whether any block of a Messages body (system, turns, a tool result's content,
    tools) or the body itself asks for prompt caching."""
    blocks: list[Any] = [body, *_each(body.get("system")), *_each(body.get("tools"))]
    for m in _each(body.get("messages")):
        for block in _each(m.get("content") if isinstance(m, dict) else None):
            blocks.append(block)
            if isinstance(block, dict):
                blocks += _each(block.get("content"))
    return any(isinstance(b, dict) and _asks(b.get("cache_control")) for b in blocks)
