"""Replies in Anthropic's Messages shape: the event stream Claude Code reads
(``message_start``, a ``content_block_*`` triple per text or ``tool_use`` block,
``message_delta`` with the stop reason and usage, ``message_stop``), or one message.
"""

from __future__ import annotations

import json
from typing import Any

from app.backends.base import Delta, ToolCall, ToolCallDelta
from app.router.service import RoutedResult

_STOP = {
    "stop": "end_turn",
    "end_turn": "end_turn",
    "length": "max_tokens",
    "max_tokens": "max_tokens",
    "tool_calls": "tool_use",
    "tool_use": "tool_use",
    "stop_sequence": "stop_sequence",
}


def anthropic_stop(reason: str, tool_calls: bool, stop_sequence: str | None = None) -> str:
    if tool_calls:
        return "tool_use"
    if stop_sequence is not None:
        return "stop_sequence"
    return _STOP.get(reason, "end_turn")


def _input_of(call: ToolCall) -> Any:
    try:
        value = json.loads(call.arguments or "{}")
    except json.JSONDecodeError:
        return {"_raw_arguments": call.arguments}  # a model's broken JSON, kept visible
    return value if isinstance(value, dict) else {"value": value}


def input_usage(result: RoutedResult, counted: int) -> dict[str, int]:
    """The prompt's tokens as Anthropic's usage says them, as the backend reported them
    (what the provider billed and the ledger recorded): ``input_tokens`` past the cache,
    and beside it ``cache_creation_input_tokens`` and ``cache_read_input_tokens``, whatever
    protocol the provider spoke (an OpenAI-compatible provider's cached tokens are this
    protocol's cache reads). With no report, the gateway's own count alone (no split is
    known).

    The gateway's count (tools included) is what ``count_tokens`` says and what a stream's
    ``message_start`` must say before any backend has counted; once the backend has,
    its figures are the ones the client is told, as Anthropic's own stream says the final
    usage in ``message_delta``. (Each reply told the gateway's count: an escalated request
    said 105 where the provider reported, and the ledger recorded, 23; and then the whole
    prompt as ``input_tokens``, a cache read of 100000 among it, with no cache field: a
    user's audit.)"""
    if result.usage_counted_locally:
        return {"input_tokens": counted}
    written, read = result.tokens_cache_write, result.tokens_cached
    return {
        "input_tokens": result.tokens_in - written - read,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
    }


def message_object(
    message_id: str,
    model: str,
    result: RoutedResult,
    input_tokens: int,
    stop_sequence: str | None = None,
) -> dict[str, Any]:
    """The whole message; ``input_tokens`` is the gateway's one count of the prompt, told
    where the backend reported no usage (:func:`input_usage`)."""
    content: list[dict[str, Any]] = []
    if result.text:
        content.append({"type": "text", "text": result.text})
    for call in result.tool_calls:
        content.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": _input_of(call)}
        )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": anthropic_stop(result.finish_reason, bool(result.tool_calls), stop_sequence),
        "stop_sequence": stop_sequence,
        "usage": {**input_usage(result, input_tokens), "output_tokens": result.tokens_out},
    }


class MessagesStream:
    """Anthropic stream events for one streamed message."""

    def __init__(self, message_id: str, model: str, input_tokens: int) -> None:
        self.id = message_id
        self.model = model
        #: the gateway's count: ``message_start`` says it before any backend has counted
        self.input_tokens = input_tokens
        self._index = -1
        self._open: str | None = None  # "text" | "tool" while a block is open
        self._calls: dict[int, int] = {}  # call fragment index → block index
        self._call_open: int | None = None
        self._any_call = False

    def start(self) -> list[tuple[str, dict[str, Any]]]:
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 1},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _close(self) -> list[tuple[str, dict[str, Any]]]:
        if self._open is None:
            return []
        self._open = None
        self._call_open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self._index})]

    def delta(self, d: Delta) -> list[tuple[str, dict[str, Any]]]:
        events: list[tuple[str, dict[str, Any]]] = []
        if d.text:
            if self._open != "text":
                events += self._close()
                self._index += 1
                self._open = "text"
                events.append(
                    (
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": self._index,
                            "content_block": {"type": "text", "text": ""},
                        },
                    )
                )
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": self._index,
                        "delta": {"type": "text_delta", "text": d.text},
                    },
                )
            )
        for f in d.tool_calls:
            if f.index not in self._calls:
                events += self._close()
                self._index += 1
                self._calls[f.index] = self._index
                self._open, self._call_open, self._any_call = "tool", f.index, True
                block = {
                    "type": "tool_use",
                    "id": f.id or f"toolu_{self._index}",
                    "name": f.name or "",
                    "input": {},
                }
                events.append(
                    (
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": self._index,
                            "content_block": block,
                        },
                    )
                )
            elif self._call_open != f.index:
                # Anthropic's blocks do not interleave: a late fragment of an earlier call
                # cannot be sent in order; the calls are complete in the final message
                continue
            if f.arguments:
                events.append(
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": self._calls[f.index],
                            "delta": {"type": "input_json_delta", "partial_json": f.arguments},
                        },
                    )
                )
        return events

    def finish(
        self,
        result: RoutedResult,
        text_if_unstreamed: str = "",
        stop_sequence: str | None = None,
    ) -> list[tuple[str, dict[str, Any]]]:
        events: list[tuple[str, dict[str, Any]]] = []
        if text_if_unstreamed:
            events += self.delta(Delta(text=text_if_unstreamed))
        for i, call in enumerate(result.tool_calls):
            if i not in self._calls:  # a backend that gave calls only at the end
                frag = ToolCallDelta(index=i, id=call.id, name=call.name, arguments=call.arguments)
                events += self.delta(Delta(tool_calls=[frag]))
        events += self._close()
        stop = anthropic_stop(result.finish_reason, bool(result.tool_calls), stop_sequence)
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": stop_sequence},
                    # the usage so far, as Anthropic's final one is: the input too, now as
                    # the backend reported it, with its cache's writes and reads
                    "usage": {
                        **input_usage(result, self.input_tokens),
                        "output_tokens": result.tokens_out,
                    },
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        return events
