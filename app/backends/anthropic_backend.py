"""The Anthropic backend: Claude over the ``anthropic`` SDK's Messages API.

Built on an ``httpx2`` client from :func:`app.backends.http.make_async_client_httpx2`
(the only HTTP stack this SDK accepts), so the local_only guard sits in its transport;
the SDK's own retries are off, as for every backend.

* Streaming: ``text_delta`` → :attr:`Delta.text`, ``thinking_delta`` → :attr:`Delta.reasoning`.
* Usage: input tokens from ``message_start`` (cache writes and reads included, so the
  router's estimate errs high), output tokens from the last ``message_delta``. The router
  prices it; the backend only reports it. If a stream carried no usage at all, the tokens
  are counted locally and the usage says so.
* Structured output (GR-012): the schema goes into the system prompt with a JSON-only
  instruction; the router validates the reply.
* Sampling: this SDK's Messages API takes no temperature or seed, so none is sent.
* Auth: the SDK sends the key and its own ``anthropic-version``; 2.x sends the key as
  ``Authorization: Bearer``.
* Errors: the same kinds as :mod:`app.backends.openai_compat` (its table applies), with
  Anthropic's own words: ``prompt is too long`` → ``context_length``; 529
  ``overloaded_error`` → ``server_error``; an ``error`` event inside a stream is mapped by
  its type (``overloaded_error``/``api_error`` → ``server_error``, ``rate_limit_error`` →
  ``rate_limited``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import anthropic
import anyio
import httpx2
import pydantic

from app.backends.base import (
    BackendError,
    ChatRequest,
    ChatResult,
    Delta,
    ErrorKind,
    Health,
    Usage,
)
from app.backends.openai_compat import (
    HealthCache,
    error_message_of,
    is_context_length,
    json_only_instruction,
    local_only_refusal,
    retry_after_seconds,
    scrub,
    status_kind,
    transport_kind,
)
from app.clock import Clock, SystemClock
from app.tokens import count_messages, count_text

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
_ERRORS = (anthropic.AnthropicError, httpx2.HTTPError, anyio.EndOfStream, OSError)


class _BadEvent(Exception):
    """A stream event that parsed as JSON but is not what the Messages API sends."""


@dataclass
class _Stream:
    model: str
    started: bool = False
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    stop_reason: str | None = None
    stopped: bool = False
    tokens_in: int | None = None
    tokens_out: int | None = None

    def feed(self, event: object) -> Delta | None:
        kind = getattr(event, "type", None)
        if kind == "message_start":
            message = getattr(event, "message", None)
            model = getattr(message, "model", None)
            if isinstance(model, str) and model:
                self.model = model
            usage = getattr(message, "usage", None)
            tokens = [getattr(usage, n, None) for n in _INPUT_FIELDS]
            if isinstance(tokens[0], int):
                self.tokens_in = sum(t for t in tokens if isinstance(t, int))
            out = getattr(usage, "output_tokens", None)
            if isinstance(out, int):
                self.tokens_out = out
        elif kind == "content_block_delta":
            delta = getattr(event, "delta", None)
            delta_type = getattr(delta, "type", None)
            if delta_type == "text_delta":
                text = getattr(delta, "text", None)
                if not isinstance(text, str):
                    raise _BadEvent("text_delta without text")
                self.text.append(text)
                return Delta(text=text) if text else None
            if delta_type == "thinking_delta":
                thought = getattr(delta, "thinking", None)
                if not isinstance(thought, str):
                    raise _BadEvent("thinking_delta without thinking")
                self.reasoning.append(thought)
                return Delta(reasoning=thought) if thought else None
        elif kind == "message_delta":
            stop = getattr(getattr(event, "delta", None), "stop_reason", None)
            if isinstance(stop, str):
                self.stop_reason = stop
            out = getattr(getattr(event, "usage", None), "output_tokens", None)
            if isinstance(out, int):
                self.tokens_out = out
        elif kind == "message_stop":
            self.stopped = True
        elif not isinstance(kind, str):
            raise _BadEvent("event without a type")
        return None


_INPUT_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


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

    def __repr__(self) -> str:  # never the key
        return f"AnthropicBackend(model_id={self.model_id!r}, base_url={self.base_url!r})"

    # ── chat ──────────────────────────────────────────────────────────────────────────

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        """Yield text/thinking deltas, then one :class:`ChatResult`; raise BackendError."""
        sdk = self._require_sdk()
        system, messages = self._split(request)
        state = _Stream(model=self.served_name)
        t0 = self._clock.monotonic()
        ttft: float | None = None
        failure: BackendError | None = None
        try:
            events = await sdk.messages.create(
                model=self.served_name,
                max_tokens=request.max_tokens,
                messages=cast(Any, messages),
                stream=True,
                **self._params(request, system),
            )
            state.started = True
            try:
                async for event in events:
                    delta = state.feed(event)
                    if delta is not None:
                        if ttft is None:
                            ttft = (self._clock.monotonic() - t0) * 1000.0
                        yield delta
            finally:
                await events.close()
        except _ERRORS as exc:
            failure = self._map(exc, started=state.started)
        except (json.JSONDecodeError, pydantic.ValidationError, _BadEvent) as exc:
            failure = self._error("bad_output", f"malformed reply ({type(exc).__name__})")
        if failure is not None:
            raise failure
        yield self._result(state, system, messages, t0, ttft)

    def _split(self, request: ChatRequest) -> tuple[str, list[dict[str, str]]]:
        """Anthropic takes system text apart from the turns."""
        system = [m.content for m in request.messages if m.role == "system"]
        if request.json_schema is not None:
            system.append(json_only_instruction(request.json_schema))
        turns = [
            {"role": m.role, "content": m.content} for m in request.messages if m.role != "system"
        ]
        return "\n\n".join(system), turns

    def _params(self, request: ChatRequest, system: str) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if system:
            params["system"] = system
        if request.stop:
            params["stop_sequences"] = list(request.stop)
        return params

    def _result(
        self,
        state: _Stream,
        system: str,
        messages: list[dict[str, str]],
        t0: float,
        ttft: float | None,
    ) -> ChatResult:
        if not state.stopped and state.stop_reason is None:
            if not state.text and not state.reasoning:
                raise self._error("bad_output", "the stream ended without a reply")
            raise self._error("server_error", "the stream ended before message_stop (cut?)")
        if state.tokens_in is not None and state.tokens_out is not None:
            usage = Usage(tokens_in=state.tokens_in, tokens_out=state.tokens_out)
        else:
            contents = ([system] if system else []) + [m["content"] for m in messages]
            usage = Usage(
                tokens_in=count_messages(contents),
                tokens_out=count_text("".join(state.text)) + count_text("".join(state.reasoning)),
                counted_locally=True,
            )
        return ChatResult(
            text="".join(state.text),
            reasoning="".join(state.reasoning),
            usage=usage,
            finish_reason=state.stop_reason or "end_turn",
            model=state.model,
            latency_ms=(self._clock.monotonic() - t0) * 1000.0,
            ttft_ms=ttft,
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
            return Health(ok=False, detail=self._no_key_message())
        sdk = self._require_sdk()
        t0 = self._clock.monotonic()
        try:
            page = await sdk.models.list(limit=100, timeout=self.health_timeout_s)
            models = [m.id for m in page.data]
        except Exception as exc:  # a probe reports; it never raises
            return Health(ok=False, detail=self._map(exc, started=False).args[0])
        return Health(
            ok=True,
            detail="ok",
            latency_ms=(self._clock.monotonic() - t0) * 1000.0,
            models=models,
        )

    # ── errors ────────────────────────────────────────────────────────────────────────

    def _require_sdk(self) -> anthropic.AsyncAnthropic:
        if self._api_key is None:
            raise BackendError("no_key", self._no_key_message())
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

    def _no_key_message(self) -> str:
        return f"unavailable: no key ({self.key_env or 'API key'} not set)"

    def _error(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> BackendError:
        text = scrub(f"{self.model_id} (anthropic): {message}", [self._api_key])
        return BackendError(kind, text, status=status, retry_after=retry_after)

    def _map(self, exc: BaseException, *, started: bool) -> BackendError:
        refused = local_only_refusal(exc)
        if refused is not None:
            return self._error("local_only", str(refused))
        if isinstance(exc, anthropic.APITimeoutError):
            return self._error("timeout", "timed out" + (" mid-stream" if started else ""))
        if isinstance(exc, anthropic.APIConnectionError):
            if started:
                return self._error("server_error", "the stream was cut mid-way")
            return self._error("connect", f"cannot reach {self.base_url}")
        if isinstance(exc, anthropic.APIStatusError):
            status = exc.status_code
            message, type_, code = error_message_of(exc.body)
            if status < 400:  # an ``error`` event inside a 200 stream
                if is_context_length(message, type_, code):
                    kind: ErrorKind = "context_length"
                else:
                    kind = _TYPE_KINDS.get(type_, "server_error")
                return self._error(kind, f"error in stream: {message or type_ or 'error'}")
            kind = status_kind(status, message, type_, code)
            if kind == "server_error" and type_ in _TYPE_KINDS and status < 500:
                kind = _TYPE_KINDS[type_]
            retry_after = None
            if kind == "rate_limited":
                retry_after = retry_after_seconds(exc.response.headers, self._clock.now())
            return self._error(
                kind,
                f"HTTP {status}: {message or type_ or 'error'}",
                status=status,
                retry_after=retry_after,
            )
        if isinstance(exc, anthropic.APIResponseValidationError):
            return self._error("bad_output", "the reply does not fit the API's schema")
        transport = transport_kind(exc, started=started)
        if transport is not None:
            what = {
                "timeout": "timed out" + (" mid-stream" if started else ""),
                "connect": f"cannot reach {self.base_url}",
                "server_error": "the stream was cut mid-way",
            }[transport]
            return self._error(transport, f"{what} ({type(exc).__name__})")
        return self._error("server_error", f"unexpected failure ({type(exc).__name__})")
