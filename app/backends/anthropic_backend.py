"""The Anthropic backend: Claude over the ``anthropic`` SDK's Messages API.

Built on an ``httpx2`` client from :func:`app.backends.http.make_async_client_httpx2`
(the only HTTP stack this SDK accepts), so the local_only guard sits in its transport;
the SDK's own retries are off, as for every backend.

* Streaming: ``text_delta`` → :attr:`Delta.text`, ``thinking_delta`` → :attr:`Delta.reasoning`;
  a ``tool_use`` block's ``content_block_start`` (id, name) and its ``input_json_delta``
  pieces → :attr:`Delta.tool_calls` fragments (a call with no input streamed gets ``{}``
  at its ``content_block_stop``); ``stop_reason: tool_use`` → finish ``tool_calls``.
* Requests (tools, tool calls and results, tool_choice, passthrough headers): see
  :mod:`app.backends.anthropic_request`.
* Usage: the prompt from ``message_start`` in its three parts (``input_tokens``, the
  tokens past the cache; ``cache_creation_input_tokens``, written to it;
  ``cache_read_input_tokens``, read from it), their sum the usage's ``tokens_in`` and the
  two cache counts its parts; a ``message_delta`` that says them again (cumulative, as the
  API's does) is the last word; output tokens from the last ``message_delta``. The router
  prices each part; the backend only reports it. If a stream carried no usage at all, the
  tokens are counted locally and the usage says so.
* Structured output (GR-012): the schema goes into the system prompt with a JSON-only
  instruction; the router validates the reply.
* Sampling: this SDK's Messages API takes no temperature or seed, so none is sent; nor
  ``top_p`` (API version 2026-10-21, which the SDK sends, answers 400 to temperature,
  ``top_p`` and ``top_k``, even at their defaults), nor OpenAI's penalties (it has none).
* Auth: the SDK sends the key and its own ``anthropic-version``; 2.x sends the key as
  ``Authorization: Bearer``.
* Errors: mapped by :mod:`app.backends.provider_errors` (its table applies), as for the
  OpenAI-compatible backend, whose streaming loop this backend shares
  (:func:`app.backends.provider_common.relay`); with Anthropic's own words: ``prompt is
  too long`` → ``context_length``; 529 ``overloaded_error`` → ``server_error``; an
  ``error`` event inside a stream is mapped by its type (``overloaded_error``/``api_error``
  → ``server_error``, ``rate_limit_error`` → ``rate_limited``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import anthropic
import httpx2
from anthropic.types import RawMessageStreamEvent

from app.backends.anthropic_request import anthropic_request
from app.backends.base import (
    BackendError,
    ChatRequest,
    ChatResult,
    Delta,
    ErrorKind,
    Health,
    ToolCallDelta,
)
from app.backends.provider_common import (
    BadStreamItem,
    HealthCache,
    SdkStream,
    StreamState,
    no_key_message,
    relay,
)
from app.backends.provider_errors import ErrorMapper, SdkErrors
from app.backends.tool_calls import ToolCallAssembler, request_seed
from app.clock import Clock, SystemClock

__all__ = ["AnthropicBackend"]

#: error ``type`` in a body → kind, for errors whose HTTP status says nothing (stream events)
_TYPE_KINDS: dict[str, ErrorKind] = {
    "rate_limit_error": "rate_limited",
    "overloaded_error": "server_error",
    "api_error": "server_error",
    "authentication_error": "auth",
    "permission_error": "auth",
    "billing_error": "auth",
    "timeout_error": "timeout",
    "request_too_large": "context_length",
}
_SDK_ERRORS = SdkErrors.of(anthropic, base=anthropic.AnthropicError)
_INPUT_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


@dataclass
class _Events(StreamState):
    """What one streamed Messages call has gathered so far."""

    stop_reason: str | None = None
    stopped: bool = False
    #: a tool_use block's index in the message → the call's index
    tool_blocks: dict[int, int] = field(default_factory=dict)
    #: every block started, by index (a server tool's input is not a call of ours)
    started_blocks: set[int] = field(default_factory=set)

    END = "message_stop"

    def finish(self) -> str | None:
        if not self.stopped and self.stop_reason is None:
            return None
        reason = self.stop_reason or "end_turn"
        if reason == "tool_use" or (reason == "end_turn" and self.calls.started):
            return "tool_calls"
        return reason

    def feed(self, event: object) -> Delta | None:
        kind = getattr(event, "type", None)
        if kind == "message_start":
            message = getattr(event, "message", None)
            model = getattr(message, "model", None)
            if isinstance(model, str) and model:
                self.model = model
            usage = getattr(message, "usage", None)
            self._input_usage(usage)
            out = getattr(usage, "output_tokens", None)
            if isinstance(out, int):
                self.tokens_out = out
        elif kind == "content_block_start":
            return self._block_start(event)
        elif kind == "content_block_stop":
            return self._block_stop(event)
        elif kind == "content_block_delta":
            delta = getattr(event, "delta", None)
            delta_type = getattr(delta, "type", None)
            if delta_type == "input_json_delta":
                return self._input_piece(event, getattr(delta, "partial_json", None))
            if delta_type == "text_delta":
                text = getattr(delta, "text", None)
                if not isinstance(text, str):
                    raise BadStreamItem("text_delta without text")
                self.text.append(text)
                return Delta(text=text) if text else None
            if delta_type == "thinking_delta":
                thought = getattr(delta, "thinking", None)
                if not isinstance(thought, str):
                    raise BadStreamItem("thinking_delta without thinking")
                self.reasoning.append(thought)
                return Delta(reasoning=thought) if thought else None
        elif kind == "message_delta":
            stop = getattr(getattr(event, "delta", None), "stop_reason", None)
            if isinstance(stop, str):
                self.stop_reason = stop
            usage = getattr(event, "usage", None)
            # cumulative: the API's message_delta says it again; a part it leaves out is
            # the message_start's, as the SDK's own accumulator reads it
            self._input_usage(usage, earlier=True)
            out = getattr(usage, "output_tokens", None)
            if isinstance(out, int):
                self.tokens_out = out
            matched = getattr(getattr(event, "delta", None), "stop_sequence", None)
            if stop == "stop_sequence" and isinstance(matched, str) and matched:
                return Delta(stop_sequence=matched)
        elif kind == "message_stop":
            self.stopped = True
        elif not isinstance(kind, str):
            raise BadStreamItem("event without a type")
        return None

    def _input_usage(self, usage: object, *, earlier: bool = False) -> None:
        """The prompt's tokens in their parts, when ``usage`` says them: ``input_tokens``
        (past the cache) and the cache's writes and reads, each a part of the whole. A
        cache count not given is 0 (its tokens are then charged at the input price), or
        with ``earlier`` the one said before."""
        fresh, written, read = (getattr(usage, n, None) for n in _INPUT_FIELDS)
        if not isinstance(fresh, int):
            return
        if not isinstance(written, int):
            written = self.tokens_cache_write if earlier else 0
        if not isinstance(read, int):
            read = self.tokens_cached if earlier else 0
        if earlier and fresh + written + read < (self.tokens_in or 0):
            # a delta saying fewer than the start (a compatible endpoint's 0): the start's
            # stand, never a prompt charged below what was said of it (a review)
            return
        self.tokens_in = fresh + written + read
        self.tokens_cached, self.tokens_cache_write = read, written

    def _block_start(self, event: object) -> Delta | None:
        block = getattr(event, "content_block", None)
        if isinstance(getattr(event, "index", None), int):
            self.started_blocks.add(getattr(event, "index", -1))
        if getattr(block, "type", None) != "tool_use":
            return None
        index, ident, name = (
            getattr(event, "index", None),
            getattr(block, "id", None),
            getattr(block, "name", None),
        )
        if not isinstance(index, int) or not isinstance(ident, str) or not isinstance(name, str):
            raise BadStreamItem("tool_use block without an index, id or name")
        position = len(self.tool_blocks)
        self.tool_blocks[index] = position
        # the input streams as input_json_delta; a block that carries it whole is read too
        given = getattr(block, "input", None)
        first = json.dumps(given) if isinstance(given, dict) and given else ""
        return self._calls(self.calls.feed(position, ident, name, first))

    def _input_piece(self, event: object, piece: object) -> Delta | None:
        index = getattr(event, "index", -1)
        position = self.tool_blocks.get(index)
        if position is None and index in self.started_blocks:
            return None  # a server tool's input (server_tool_use): the API runs it
        if position is None or not isinstance(piece, str):
            raise BadStreamItem("input_json_delta outside a tool_use block")
        return self._calls(self.calls.feed(position, None, None, piece))

    def _block_stop(self, event: object) -> Delta | None:
        position = self.tool_blocks.get(getattr(event, "index", -1))
        if position is None or self.calls.has_arguments(position):
            return None
        return self._calls(self.calls.feed(position, None, None, "{}"))  # a call with no input

    @staticmethod
    def _calls(calls: list[ToolCallDelta]) -> Delta | None:
        return Delta(tool_calls=calls) if calls else None


class AnthropicBackend:
    """One Claude model (see the module docstring).

    ``client`` (an ``httpx2.AsyncClient`` from ``make_async_client_httpx2``) belongs to the
    caller and is left open by :meth:`aclose`. ``key_env`` names the key's environment
    variable for the no-key message; the key itself is never shown.
    """

    runtime = "cloud"

    def __init__(
        self,
        *,
        model_id: str,
        served_name: str,
        base_url: str,
        api_key: str | None,
        key_env: str | None,
        client: httpx2.AsyncClient,
        health_ttl_s: float = 5.0,
        health_timeout_s: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        self.model_id = model_id
        self.served_name = served_name
        self.base_url = base_url.rstrip("/")
        self.key_env = key_env
        self.health_timeout_s = health_timeout_s
        self._api_key = api_key or None
        self._client = client
        self._clock: Clock = clock or SystemClock()
        self._sdk: anthropic.AsyncAnthropic | None = None
        self._health = HealthCache(health_ttl_s, self._clock)
        self._errors = ErrorMapper(
            _SDK_ERRORS,
            label=f"{model_id} (anthropic)",
            base_url=self.base_url,
            api_key=self._api_key,
            clock=self._clock,
            type_kinds=_TYPE_KINDS,
        )

    def __repr__(self) -> str:  # never the key
        return f"AnthropicBackend(model_id={self.model_id!r}, base_url={self.base_url!r})"

    # ── chat ──────────────────────────────────────────────────────────────────────────

    def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        """Text, thinking and tool-call deltas, then one :class:`ChatResult`; raises
        BackendError.

        Nothing is sent before the first step of the iteration (a missing key raises there).
        """
        sent = anthropic_request(request)

        async def open_stream() -> SdkStream:
            events: anthropic.AsyncStream[RawMessageStreamEvent]
            events = await self._require_sdk().messages.create(
                model=self.served_name,
                max_tokens=request.max_tokens,
                messages=cast(Any, sent.messages),
                stream=True,
                **sent.params,
            )
            return events

        calls = ToolCallAssembler(seed=request_seed(request))
        state = _Events(model=self.served_name, calls=calls)
        return relay(
            open_stream,
            state,
            sent.prompt,
            errors=self._errors,
            clock=self._clock,
            cap=request.max_tokens,
        )

    # ── health ────────────────────────────────────────────────────────────────────────

    async def health(self) -> Health:
        """A ``GET /v1/models`` probe, cached ``health_ttl_s``; no key → not ok, no request."""
        return await self._health.get(self._probe)

    async def context_window(self) -> int | None:
        """Anthropic does not say; the catalog's figure stands."""
        return None

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client belongs to the caller."""
        self._sdk = None

    async def _probe(self) -> Health:
        if self._api_key is None:
            return Health(ok=False, detail=no_key_message(self.key_env))
        sdk = self._require_sdk()
        t0 = self._clock.monotonic()
        try:
            page = await sdk.models.list(limit=100, timeout=self.health_timeout_s)
            models = [m.id for m in page.data]
        except Exception as exc:  # a probe reports; it never raises
            return Health(ok=False, detail=self._errors.map(exc, started=False).args[0])
        return Health(
            ok=True,
            detail="ok",
            latency_ms=(self._clock.monotonic() - t0) * 1000.0,
            models=models,
        )

    # ── the SDK ───────────────────────────────────────────────────────────────────────

    def _require_sdk(self) -> anthropic.AsyncAnthropic:
        if self._api_key is None:
            raise BackendError("no_key", no_key_message(self.key_env))
        if self._sdk is None:
            self._sdk = anthropic.AsyncAnthropic(
                api_key=self._api_key,
                base_url=self.base_url,
                http_client=self._client,
                max_retries=0,
                # explicit: the SDK ignores a client timeout equal to httpx's default
                timeout=self._client.timeout,
            )
        return self._sdk
