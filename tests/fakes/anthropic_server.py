"""A loopback fake of Anthropic's Messages API.

``POST /v1/messages``: a JSON message, or (``"stream": true``) the real SSE sequence:
``message_start`` (usage.input_tokens) → ``content_block_start`` → ``ping`` →
``content_block_delta`` (``text_delta``)… → ``content_block_stop`` → ``message_delta``
(stop_reason, usage.output_tokens) → ``message_stop``. A scripted reply with reasoning
streams a ``thinking`` block (``thinking_delta``) first. A key is required (401
otherwise) and so is ``anthropic-version`` (400). The key may come as ``x-api-key`` (the
API's historical header) or as ``Authorization: Bearer`` (what anthropic SDK 2.x sends);
``FakeAnthropicServer(accept_bearer=False)`` insists on ``x-api-key``. ``GET /v1/models``
lists the models.

Usage: the prompt's words and framing are its ``input_tokens`` (no cache read or written).
:attr:`usage_override` replaces any of ``input_tokens``, ``cache_creation_input_tokens``,
``cache_read_input_tokens`` and ``output_tokens`` in every reply (Anthropic's
``input_tokens`` are the prompt's tokens past the cache: a cache read of 100000 beside
``input_tokens: 10`` is a prompt of 100010); streamed, ``message_start`` says the input's
three parts and ``message_delta`` the output, and with :attr:`cumulative_delta` the
``message_delta`` says the three again, cumulative, as the API lately does.

Faults: see :mod:`tests.fakes.server`; ``"529"`` is ``overloaded_error`` and
``"error_event"`` sends an ``event: error`` (overloaded) mid-stream, as the real API can.

Tool use: a scripted reply with ``tool_calls`` ends with ``tool_use`` blocks after its
text (no text block when it has no text) and ``stop_reason: tool_use``; streamed, each
is ``content_block_start`` (id, name, ``input: {}``), an empty ``input_json_delta``,
then the input JSON in ``argument_chunk``-character ``partial_json`` pieces, then
``content_block_stop``. Tools, ``tool_choice`` and tool blocks are checked as the API
checks them (:mod:`tests.fakes.anthropic_tools`); bodies are kept in
:attr:`message_requests`, headers (``anthropic-beta`` …) in :attr:`requests`.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.anthropic_tools import check_tools, content_words, tool_ids, use_input
from tests.fakes.script import Script, Scripted, ScriptedCall, count_words, fragments, pieces
from tests.fakes.server import Fault, LoopbackServer, Reply, Request

__all__ = ["FakeAnthropicServer"]

_ERROR_TYPES = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "model not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    422: ("invalid_request_error", "Unprocessable request."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    500: ("api_error", "Internal server error"),
    502: ("api_error", "Bad gateway"),
    503: ("api_error", "Service unavailable"),
    504: ("api_error", "Gateway timeout"),
    529: ("overloaded_error", "Overloaded"),
}


class FakeAnthropicServer(LoopbackServer):
    """Anthropic's Messages API on 127.0.0.1; see the module docstring."""

    name = "fake-anthropic"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: list[str] | None = None,
        replies: list[str | Scripted] | None = None,
        default_reply: str = "Hello from the fake.",
        event_delay: float = 0.0,
        accept_bearer: bool = True,
        argument_chunk: int = 7,
    ) -> None:
        super().__init__()
        #: the key a request must carry; None accepts any non-empty key
        self.api_key = api_key
        self.accept_bearer = accept_bearer
        self.models = models or ["claude-opus-4-7", "claude-sonnet-4-6", "claude-haiku-4-5"]
        self.script = Script(default_reply)
        self.script.extend(replies or [])
        self.event_delay = event_delay
        #: fault injection: the reply is not cut at ``max_tokens`` (a server that ignores it)
        self.ignore_max_tokens = False
        #: characters per ``partial_json`` piece of a streamed tool input
        self.argument_chunk = argument_chunk
        #: the usage every reply reports, over the counted one (see the module docstring)
        self.usage_override: dict[str, int] | None = None
        #: a stream's message_delta says the input's usage again (cumulative)
        self.cumulative_delta = False
        self._seq = 0

    @property
    def base_url(self) -> str:
        """What the SDK is configured with (it appends ``/v1/messages``)."""
        return self.url

    @property
    def message_requests(self) -> list[dict[str, Any]]:
        return [r.json for r in self.requests_to("/v1/messages", "POST")]

    async def handle(self, request: Request) -> Reply:
        key = request.headers.get("x-api-key")
        if not key and self.accept_bearer:
            key = request.bearer()
        if not key or (self.api_key is not None and key != self.api_key):
            return _error(401)
        if not request.headers.get("anthropic-version"):
            return _error(400, "anthropic-version: header is required")
        if (request.method, request.path) == ("GET", "/v1/models"):
            return self._models()
        if (request.method, request.path) == ("POST", "/v1/messages"):
            return self._messages(request)
        return _error(404, f"Not found: {request.method} {request.path}")

    def _models(self) -> Reply:
        data = [
            {
                "type": "model",
                "id": m,
                "display_name": m,
                "created_at": "2025-09-29T00:00:00Z",
            }
            for m in self.models
        ]
        return Reply.json(
            {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        )

    def _messages(self, request: Request) -> Reply:
        body = request.json
        if not isinstance(body, dict):
            return _error(400, "request body is not a JSON object")
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return _error(400, f"{name}: Field required")
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            return _error(400, "messages: at least one message is required")
        if any(isinstance(m, dict) and m.get("role") == "system" for m in messages):
            return _error(
                400,
                'messages: Unexpected role "system". The Messages API accepts a top-level '
                '`system` parameter, not "system" as an input message role.',
            )
        refused = check_tools(body)
        if refused is not None:
            return _error(400, refused)
        scripted = self.script.next(body)
        text_pieces = pieces(scripted.text)
        stop_reason = "end_turn"
        limit = body["max_tokens"]
        if isinstance(limit, int) and len(text_pieces) > limit and not self.ignore_max_tokens:
            text_pieces, stop_reason = text_pieces[:limit], "max_tokens"
        thinking_pieces = pieces(scripted.reasoning or "")
        calls = scripted.tool_calls if stop_reason == "end_turn" else ()
        if calls:
            stop_reason = "tool_use"
        input_tokens = _input_tokens(body)
        output_tokens = len(text_pieces) + len(thinking_pieces)
        output_tokens += sum(count_words(f"{c.name} {c.arguments_text}") for c in calls)
        given = self.usage_override or {}
        input_tokens = given.get("input_tokens", input_tokens)
        output_tokens = given.get("output_tokens", output_tokens)
        # the cache's writes and reads (none, unless the override says some)
        cache = {
            k: given.get(k, 0) for k in ("cache_creation_input_tokens", "cache_read_input_tokens")
        }
        self._seq += 1
        ident = f"msg_fake{self._seq:04d}"
        ids = tool_ids(self._seq, calls)
        model = body["model"]

        if not body.get("stream"):
            content: list[dict[str, Any]] = []
            if scripted.reasoning is not None:
                content.append(
                    {"type": "thinking", "thinking": scripted.reasoning, "signature": "sig"}
                )
            if text_pieces or not calls:
                content.append({"type": "text", "text": "".join(text_pieces)})
            content += [
                {"type": "tool_use", "id": i, "name": c.name, "input": use_input(c)}
                for c, i in zip(calls, ids, strict=True)
            ]
            return Reply.json(
                {
                    "id": ident,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": input_tokens,
                        **(cache if self.usage_override is not None else {}),
                        "output_tokens": output_tokens,
                    },
                }
            )

        events = [
            _event(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": ident,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": input_tokens, **cache, "output_tokens": 1},
                    },
                },
            )
        ]
        index = 0
        if scripted.reasoning is not None:
            events += _block(
                index,
                {"type": "thinking", "thinking": ""},
                [{"type": "thinking_delta", "thinking": p} for p in thinking_pieces]
                + [{"type": "signature_delta", "signature": "sig"}],
            )
            index += 1
        blocks: list[bytes] = []
        if text_pieces or not calls:
            blocks += _block(
                index,
                {"type": "text", "text": ""},
                [{"type": "text_delta", "text": p} for p in text_pieces],
            )
            index += 1
        for call, call_id in zip(calls, ids, strict=True):
            blocks += self._tool_block(index, call, call_id)
            index += 1
        events += [blocks[0], _event("ping", {"type": "ping"}), *blocks[1:]]
        events += [
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {
                        **(
                            {"input_tokens": input_tokens, **cache} if self.cumulative_delta else {}
                        ),
                        "output_tokens": output_tokens,
                    },
                },
            ),
            _event("message_stop", {"type": "message_stop"}),
        ]
        return Reply.sse(events, event_delay=self.event_delay)

    def _tool_block(self, index: int, call: ScriptedCall, call_id: str) -> list[bytes]:
        start = {"type": "tool_use", "id": call_id, "name": call.name, "input": {}}
        text = call.arguments_text
        deltas = [{"type": "input_json_delta", "partial_json": ""}]
        deltas += [
            {"type": "input_json_delta", "partial_json": p}
            for p in fragments(text, self.argument_chunk)
        ]
        return _block(index, start, deltas)

    # ── LoopbackServer hooks ───────────────────────────────────────────────────────

    def error_reply(self, status: int, request: Request, fault: Fault) -> Reply:
        return _error(status, fault.opt("message", None))

    def context_length_reply(self, request: Request) -> Reply:
        return _error(400, "prompt is too long: 210000 tokens > 200000 maximum")

    def invalid_event(self) -> bytes:
        return (
            b"event: content_block_delta\n"
            b'data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_d\n\n'
        )

    def undecodable_event(self, data: bytes) -> bytes:
        return b"event: content_block_delta\ndata: " + data + b"\n\n"

    def error_event(self, fault: Fault) -> bytes | None:
        type_, message = _ERROR_TYPES[529]
        return _event("error", {"type": "error", "error": {"type": type_, "message": message}})


def _input_tokens(body: dict[str, Any]) -> int:
    total = 0
    system = body.get("system")
    if isinstance(system, str):
        total += count_words(system)
    elif isinstance(system, list):
        total += sum(count_words(str(b.get("text", ""))) for b in system if isinstance(b, dict))
    for message in body["messages"]:
        content = message.get("content", "") if isinstance(message, dict) else ""
        total += 3 + content_words(content)
    return total


def _block(index: int, start: dict[str, Any], deltas: list[dict[str, Any]]) -> list[bytes]:
    return [
        _event(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
        ),
        *(
            _event(
                "content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}
            )
            for d in deltas
        ),
        _event("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _error(status: int, message: str | None = None) -> Reply:
    type_, default = _ERROR_TYPES.get(status, ("api_error", "Error"))
    return Reply.json(
        {
            "type": "error",
            "error": {"type": type_, "message": message or default},
            "request_id": "req_fake",
        },
        status=status,
    )
