"""Tool calls in the OpenAI-compatible fake: the checks the servers make, ids in each
server's style, and calls as a reply carries them (whole, or as streamed fragments).

Checks (400, in OpenAI's words where it has them):

* ``tools`` entries are ``{"type": "function", "function": {"name": …, …}}``;
* ``tool_choice`` and ``parallel_tool_calls`` only with ``tools``;
* Kimi (moonshot) takes ``tool_choice`` auto or none only (the real API refuses a forced
  choice on its thinking models); llama.cpp takes auto/none/required (stricter than the
  real server, which reads a named choice as auto, so a test sees it was sent);
* an assistant's ``tool_calls`` are answered by ``tool`` messages right after it, one
  per call id, and every ``tool`` message answers such a call;
* DeepSeek's reasoner (thinking mode) wants each assistant turn with ``tool_calls`` sent
  back with its ``reasoning_content``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from tests.fakes.script import ScriptedCall, count_words, fragments

__all__ = [
    "call_ids",
    "calls_words",
    "check_tools",
    "message_calls",
    "prompt_words",
    "stream_calls",
]

#: (status, message, error type)
Refusal = tuple[int, str, str]


def check_tools(flavor: str, body: dict[str, Any]) -> Refusal | None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not tools:
            return _invalid("Invalid 'tools': empty array. Expected an array of tools.")
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if tool.get("type") != "function" or not isinstance(function, dict):
                return _invalid(f"Invalid 'tools[{i}]': expected a function tool.")
            if not isinstance(function.get("name"), str):
                return _invalid(f"Missing required parameter: 'tools[{i}].function.name'.")
    for name in ("tool_choice", "parallel_tool_calls"):
        if name in body and not tools:
            return (
                400,
                f"Invalid value for '{name}': '{name}' is only allowed when 'tools' are specified.",
                "invalid_request_error",
            )
    choice = body.get("tool_choice")
    if flavor == "moonshot" and choice is not None and choice not in ("auto", "none"):
        return _invalid(f"tool_choice {choice!r} is not supported")
    if flavor == "llamacpp" and choice is not None and choice not in ("auto", "none", "required"):
        return _invalid(f"Invalid tool_choice: {choice}")
    messages = body.get("messages") or []
    if flavor == "deepseek" and body.get("model") == "deepseek-reasoner":
        for i, m in enumerate(messages):
            if isinstance(m, dict) and m.get("tool_calls") and "reasoning_content" not in m:
                return _invalid(
                    f"Missing `reasoning_content` field in the assistant message at message "
                    f"index {i}. For more information, please refer to "
                    "https://api-docs.deepseek.com/guides/thinking_mode#tool-calls"
                )
    return _check_pairs(messages)


def _check_pairs(messages: list[Any]) -> Refusal | None:
    waiting: list[str] = []  # call ids of the last assistant turn not answered yet
    answerable: set[str] = set()
    for m in messages:
        if not isinstance(m, dict):
            continue
        if m.get("role") == "tool":
            ident = m.get("tool_call_id")
            if ident not in answerable:
                return (
                    400,
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    "invalid_request_error",
                )
            if ident in waiting:
                waiting.remove(ident)
            continue
        if waiting:
            return _unanswered(waiting)
        answerable = set()
        if m.get("role") == "assistant" and m.get("tool_calls"):
            for call in m["tool_calls"]:
                function = call.get("function") or {}
                if not isinstance(call.get("id"), str) or not isinstance(
                    function.get("arguments"), str
                ):
                    return _invalid("Invalid 'tool_calls': id and arguments are required")
            waiting = [c["id"] for c in m["tool_calls"]]
            answerable = set(waiting)
    return _unanswered(waiting) if waiting else None


def _invalid(message: str) -> Refusal:
    return 400, message, "invalid_request_error"


def _unanswered(ids: list[str]) -> Refusal:
    return (
        400,
        "An assistant message with 'tool_calls' must be followed by tool messages responding "
        f"to each 'tool_call_id'. The following tool_call_ids did not have response "
        f"messages: {', '.join(ids)}",
        "invalid_request_error",
    )


def call_ids(flavor: str, seq: int, calls: tuple[ScriptedCall, ...]) -> list[str]:
    """Each call's id: the scripted one, else one in the server's own style."""
    out = []
    for i, call in enumerate(calls):
        digest = hashlib.sha256(f"{flavor}:{seq}:{i}".encode()).hexdigest()
        made = {
            "vllm": f"chatcmpl-tool-{digest[:32]}",
            "llamacpp": digest[:32],
            "deepseek": f"call_{i:02d}_{digest[:24]}",
            "moonshot": f"functions.{call.name}:{i}",
        }.get(flavor, f"call_{digest[:24]}")
        out.append(call.id or made)
    return out


def message_calls(calls: tuple[ScriptedCall, ...], ids: list[str]) -> list[dict[str, Any]]:
    """``message.tool_calls`` of a non-streamed reply."""
    return [
        {
            "id": ident,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments_text},
        }
        for call, ident in zip(calls, ids, strict=True)
    ]


def stream_calls(
    calls: tuple[ScriptedCall, ...], ids: list[str], size: int
) -> list[dict[str, Any]]:
    """The ``delta`` of each chunk that streams the calls, one call after the other: the
    first names it (id, type, function.name, empty arguments), the rest carry the
    arguments ``size`` characters at a time."""
    deltas: list[dict[str, Any]] = []
    for index, (call, ident) in enumerate(zip(calls, ids, strict=True)):
        head = {
            "index": index,
            "id": ident,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        deltas.append({"tool_calls": [head]})
        deltas += [
            {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
            for piece in fragments(call.arguments_text, size)
        ]
    return deltas


def prompt_words(messages: list[Any]) -> int:
    """The fake's prompt count: 4 framing words a message, its content's and calls' words."""
    total = 0
    for m in messages:
        if not isinstance(m, dict):
            continue
        total += 4 + count_words(str(m.get("content") or ""))
        for call in m.get("tool_calls") or []:
            function = call.get("function") or {}
            total += count_words(f"{function.get('name', '')} {function.get('arguments', '')}")
    return total


def calls_words(calls: tuple[ScriptedCall, ...]) -> int:
    return sum(count_words(f"{c.name} {c.arguments_text}") for c in calls)
