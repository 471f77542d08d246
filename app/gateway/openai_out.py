"""Replies in OpenAI's two shapes: Chat Completions (chunks, or one completion) and
Responses (the full event sequence Codex CLI expects, or one response object).

Each encoder is a small state machine over the router's deltas: text and tool-call
fragments arrive mixed, as the backend streams them, and leave in the protocol's order
(a message item before its text, a function-call item before its arguments, every item
closed before ``response.completed``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from app.backends.base import Delta, ToolCall, ToolCallDelta
from app.router.service import RoutedResult

#: our finish reasons (and the ones backends pass through) → OpenAI's
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


def openai_finish(reason: str, tool_calls: bool) -> str:
    if tool_calls:
        return "tool_calls"
    mapped = _FINISH.get(reason, reason)
    return mapped if mapped in ("stop", "length", "tool_calls", "content_filter") else "stop"


def _usage_chat(result: RoutedResult) -> dict[str, Any]:
    """The usage as OpenAI says it: the whole prompt, and of it the tokens the provider
    read from its prompt cache (``prompt_tokens_details.cached_tokens``), whatever
    protocol the provider spoke (Anthropic's cache reads; its cache writes have no field
    here and stay in ``prompt_tokens``, as OpenAI counts every uncached token)."""
    return {
        "prompt_tokens": result.tokens_in,
        "completion_tokens": result.tokens_out,
        "total_tokens": result.tokens_in + result.tokens_out,
        "prompt_tokens_details": {"cached_tokens": result.tokens_cached},
    }


def _call_json(index: int, call: ToolCall) -> dict[str, Any]:
    return {
        "index": index,
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


# ── Chat Completions ─────────────────────────────────────────────────────────────────────


class ChatStream:
    """``chat.completion.chunk`` objects for one streamed completion."""

    def __init__(self, completion_id: str, model: str, *, include_usage: bool) -> None:
        self.id = completion_id
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time())
        self._sent_role = False
        self._sent_text = False
        self._sent_calls = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if not self._sent_role:
            delta = {"role": "assistant", **delta}
            self._sent_role = True
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def delta(self, d: Delta) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if d.reasoning:
            # the model's thinking, as DeepSeek and vLLM's reasoning parsers send it (a
            # client that does not know the field skips it): it was dropped, an audit
            out.append(self._chunk({"reasoning_content": d.reasoning}))
        if d.text:
            self._sent_text = True
            out.append(self._chunk({"content": d.text}))
        if d.tool_calls:
            self._sent_calls = True
            calls = []
            for f in d.tool_calls:
                call: dict[str, Any] = {"index": f.index}
                if f.id is not None:
                    call["id"] = f.id
                    call["type"] = "function"
                fn: dict[str, Any] = {}
                if f.name is not None:
                    fn["name"] = f.name
                if f.arguments or f.name is not None:
                    fn["arguments"] = f.arguments
                call["function"] = fn
                calls.append(call)
            out.append(self._chunk({"tool_calls": calls}))
        return out

    def done(self, result: RoutedResult, text_if_unstreamed: str = "") -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if text_if_unstreamed:
            self._sent_text = True
            out.append(self._chunk({"content": text_if_unstreamed}))
        if result.tool_calls and not self._sent_calls:
            calls = [_call_json(i, c) for i, c in enumerate(result.tool_calls)]
            out.append(self._chunk({"tool_calls": calls}))
        finish = openai_finish(result.finish_reason, bool(result.tool_calls))
        # an empty reply without tool calls still says its content, "" (chat_content):
        # a client that adds the deltas up found none and made the message's content null
        empty = not (self._sent_text or self._sent_calls or result.tool_calls)
        out.append(self._chunk({"content": ""} if empty else {}, finish))
        if self.include_usage:
            out.append(
                {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": _usage_chat(result),
                }
            )
        return out


def chat_content(result: RoutedResult) -> str | None:
    """A message's ``content`` as OpenAI gives it: null only beside tool calls with no
    text; otherwise a string, empty when the reply was (a ``stop`` that cut it at its
    first token): a null there broke clients that read ``content`` as a string."""
    if result.text or not result.tool_calls:
        return result.text
    return None


def chat_completion(completion_id: str, model: str, result: RoutedResult) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": chat_content(result)}
    if result.reasoning:
        message["reasoning_content"] = result.reasoning
    if result.tool_calls:
        message["tool_calls"] = [_call_json(i, c) for i, c in enumerate(result.tool_calls)]
        for call in message["tool_calls"]:
            call.pop("index")
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": openai_finish(result.finish_reason, bool(result.tool_calls)),
            }
        ],
        "usage": _usage_chat(result),
    }


# ── Responses ────────────────────────────────────────────────────────────────────────────


def _usage_responses(result: RoutedResult | None) -> dict[str, Any]:
    tin, tout = (result.tokens_in, result.tokens_out) if result else (0, 0)
    return {
        "input_tokens": tin,
        # (of them, read from the provider's prompt cache: it said 0 whatever was read)
        "input_tokens_details": {"cached_tokens": result.tokens_cached if result else 0},
        "output_tokens": tout,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": tin + tout,
    }


def responses_status(result: RoutedResult) -> str:
    """``incomplete`` when the reply was cut off at its token limit, as OpenAI says it (a
    Responses client reads ``completed`` as whole: Codex would apply a patch cut short)."""
    cut = _FINISH.get(result.finish_reason, result.finish_reason) == "length"
    return "incomplete" if cut else "completed"


def response_object(
    response_id: str,
    model: str,
    *,
    status: str,
    output: list[dict[str, Any]],
    result: RoutedResult | None,
    previous: str | None,
    created: int,
    echo: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``echo``: the request's own fields, as sent (instructions, store, tools, …), over
    the defaults below."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": previous,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "truncation": "disabled",
        "usage": _usage_responses(result) if result is not None else None,
        "metadata": {},
        **(echo or {}),
    }


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]
        if status == "completed"
        else [],
    }


def function_item(
    call: ToolCall,
    item_id: str,
    status: str = "completed",
    *,
    custom: frozenset[str] = frozenset(),
    namespaces: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A function call item; a custom (freeform) tool's call as ``custom_tool_call`` with
    its one string ``input``; a namespaced tool's call names its namespace."""
    done = status == "completed"
    if call.name in custom:
        text = ""
        if done:
            try:
                value = json.loads(call.arguments or "{}")
                text = str(value.get("input", "")) if isinstance(value, dict) else str(value)
            except json.JSONDecodeError:
                text = call.arguments
        return {
            "type": "custom_tool_call",
            "id": item_id,
            "call_id": call.id,
            "name": call.name,
            "input": text,
            "status": status,
        }
    item = {
        "type": "function_call",
        "id": item_id,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments if done else "",
        "status": status,
    }
    ns = (namespaces or {}).get(call.name)
    if ns:
        item["namespace"] = ns
    return item


class ResponsesStream:
    """The Responses API's event sequence for one streamed response."""

    def __init__(
        self,
        response_id: str,
        model: str,
        previous: str | None,
        *,
        custom: frozenset[str] = frozenset(),
        namespaces: dict[str, str] | None = None,
        echo: dict[str, Any] | None = None,
    ) -> None:
        self.echo = echo
        self.custom = custom
        self.namespaces = namespaces or {}
        self.id = response_id
        self.model = model
        self.previous = previous
        self.created = int(time.time())
        self.seq = 0
        self.output: list[dict[str, Any]] = []
        self._text: list[str] = []
        self._text_index: int | None = None
        #: the call fragments' index → (output index, item id, name, arguments so far)
        self._calls: dict[int, list[Any]] = {}
        #: the call whose item is open (added, not yet done)
        self._open_call: int | None = None

    def _event(self, kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        event = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return kind, event

    def _response(self, status: str, result: RoutedResult | None) -> dict[str, Any]:
        return response_object(
            self.id,
            self.model,
            status=status,
            output=self.output,
            result=result,
            previous=self.previous,
            created=self.created,
            echo=self.echo,
        )

    def start(self) -> list[tuple[str, dict[str, Any]]]:
        snapshot = self._response("in_progress", None)
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def _open_text(self) -> list[tuple[str, dict[str, Any]]]:
        self._text_index = len(self.output)
        item_id = f"msg_{self.id[5:]}_{self._text_index}"
        self.output.append(message_item(item_id, "", "in_progress"))
        return [
            self._event(
                "response.output_item.added",
                output_index=self._text_index,
                item=message_item(item_id, "", "in_progress"),
            ),
            self._event(
                "response.content_part.added",
                item_id=item_id,
                output_index=self._text_index,
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": []},
            ),
        ]

    def _close_text(self) -> list[tuple[str, dict[str, Any]]]:
        if self._text_index is None:
            return []
        index, text = self._text_index, "".join(self._text)
        item_id = self.output[index]["id"]
        self.output[index] = message_item(item_id, text)
        self._text_index, self._text = None, []
        part = {"type": "output_text", "text": text, "annotations": []}
        common = {"item_id": item_id, "output_index": index, "content_index": 0}
        return [
            self._event("response.output_text.done", text=text, **common),
            self._event("response.content_part.done", part=part, **common),
            self._event("response.output_item.done", output_index=index, item=self.output[index]),
        ]

    def delta(self, d: Delta) -> list[tuple[str, dict[str, Any]]]:
        events: list[tuple[str, dict[str, Any]]] = []
        if d.text:
            if self._text_index is None:
                events += self._close_call()
                events += self._open_text()
            assert self._text_index is not None
            self._text.append(d.text)
            events.append(
                self._event(
                    "response.output_text.delta",
                    item_id=self.output[self._text_index]["id"],
                    output_index=self._text_index,
                    content_index=0,
                    delta=d.text,
                )
            )
        for f in d.tool_calls:
            state = self._calls.get(f.index)
            if state is None:
                # an item's events end before the next item is added, as OpenAI sends
                # them (item 1 was added before item 0's arguments were done)
                events += self._close_text()
                events += self._close_call()
                out_index = len(self.output)
                item_id = f"fc_{self.id[5:]}_{out_index}"
                call = ToolCall(id=f.id or f"call_{out_index}", name=f.name or "", arguments="")
                item = function_item(
                    call, item_id, "in_progress", custom=self.custom, namespaces=self.namespaces
                )
                self.output.append(item)
                state = self._calls[f.index] = [out_index, item_id, call, []]
                self._open_call = f.index
                events.append(
                    self._event("response.output_item.added", output_index=out_index, item=item)
                )
            if f.arguments:
                state[3].append(f.arguments)
                if state[2].name in self.custom or f.index != self._open_call:
                    # a freeform tool's input is sent whole, when the call ends; a late
                    # piece of a call already done is in the final response's item
                    continue
                events.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        item_id=state[1],
                        output_index=state[0],
                        delta=f.arguments,
                    )
                )
        return events

    def _complete(self, index: int, final: ToolCall | None) -> tuple[int, str, str]:
        """The ``index``-th call's item, completed (with the result's call when there is
        one): its output index, item id and arguments."""
        out_index, item_id, call, pieces = self._calls[index]
        arguments = final.arguments if final is not None else "".join(pieces)
        complete = ToolCall(
            id=call.id, name=final.name if final else call.name, arguments=arguments
        )
        self.output[out_index] = function_item(
            complete, item_id, custom=self.custom, namespaces=self.namespaces
        )
        return out_index, item_id, arguments

    def _close_call(self, final: ToolCall | None = None) -> list[tuple[str, dict[str, Any]]]:
        """The open call's closing events (none open: none)."""
        if self._open_call is None:
            return []
        index, self._open_call = self._open_call, None
        out_index, item_id, arguments = self._complete(index, final)
        events = []
        if self._calls[index][2].name not in self.custom:
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item_id,
                    output_index=out_index,
                    arguments=arguments,
                )
            )
        events.append(
            self._event(
                "response.output_item.done", output_index=out_index, item=self.output[out_index]
            )
        )
        return events

    def finish(
        self, result: RoutedResult, text_if_unstreamed: str = ""
    ) -> list[tuple[str, dict[str, Any]]]:
        events: list[tuple[str, dict[str, Any]]] = []
        if text_if_unstreamed:
            events += self.delta(Delta(text=text_if_unstreamed))
        events += self._close_text()
        final_calls = {i: c for i, c in enumerate(result.tool_calls)}
        for index, call in final_calls.items():
            if index not in self._calls:  # a backend that gave calls only at the end
                events += self.delta(
                    Delta(
                        tool_calls=[
                            ToolCallDelta(
                                index=index, id=call.id, name=call.name, arguments=call.arguments
                            )
                        ]
                    )
                )
        if self._open_call is not None:
            events += self._close_call(final_calls.get(self._open_call))
        for index in self._calls:  # closed before: the final response holds their calls
            self._complete(index, final_calls.get(index))
        status = responses_status(result)
        events.append(self._event(f"response.{status}", response=self._response(status, result)))
        return events


def response_complete(
    response_id: str,
    model: str,
    result: RoutedResult,
    previous: str | None,
    *,
    custom: frozenset[str] = frozenset(),
    namespaces: dict[str, str] | None = None,
    echo: dict[str, Any] | None = None,
) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if result.text:
        output.append(message_item(f"msg_{response_id[5:]}_0", result.text))
    for call in result.tool_calls:
        item_id = f"fc_{response_id[5:]}_{len(output)}"
        output.append(function_item(call, item_id, custom=custom, namespaces=namespaces))
    return response_object(
        response_id,
        model,
        status=responses_status(result),
        output=output,
        result=result,
        previous=previous,
        created=int(time.time()),
        echo=echo,
    )


def sse(data: dict[str, Any], event: str | None = None) -> bytes:
    line = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {line}\n\n".encode()
