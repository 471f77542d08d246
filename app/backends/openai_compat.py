"""The OpenAI-compatible backend: vLLM, the llama.cpp server, Ollama, OpenAI, DeepSeek, Kimi.

One class, :class:`OpenAICompatBackend`, over the ``openai`` SDK built on a client from
:mod:`app.backends.http` (so the local_only guard sits in its transport). The SDK's own
retries are off: retries, backoff and fallbacks belong to the router, which reads the
``kind`` of the :class:`~app.backends.base.BackendError` this module raises.

Where servers differ (the ``flavor``):

* structured output (GR-012): vLLM gets ``structured_outputs: {"json": schema}`` (vLLM
  >= 0.10.2; ``structured_field="guided_json"`` for older servers); the llama.cpp server
  gets ``response_format: {"type": "json_object", "schema": schema}`` (it answers 500 to
  ``json_schema``); Ollama gets ``response_format`` ``json_schema``; cloud flavors get
  ``response_format: {"type": "json_object"}`` plus the schema in a system message. The
  router validates the reply either way.
* usage: every flavor is asked for ``stream_options.include_usage``; Kimi puts usage in the
  last choice; the llama.cpp server sends none in a stream, so the tokens are counted
  locally (:mod:`app.backends.tokens`) and the usage says ``counted_locally``.
* reasoning: DeepSeek's ``reasoning_content`` (and vLLM's ``reasoning`` /
  ``reasoning_content``) deltas become :attr:`Delta.reasoning`; ``reasoning_effort`` is
  sent when the catalog sets it (GPT-5.1), and then no temperature (reasoning models
  refuse one). OpenAI gets ``max_completion_tokens``, the others ``max_tokens``.

Error kinds (every SDK and transport failure ends as one of these, never as a traceback):

====================================================  =========================================
failure                                               kind
====================================================  =========================================
429 (Retry-After / retry-after-ms → ``retry_after``)   ``rate_limited``
429 ``insufficient_quota`` (no credit: waiting won't   ``auth``
help)
500, 502, 503, 504, 529, any other 5xx                ``server_error``
a read/connect/write timeout, 408                      ``timeout``
refused, reset or dropped before the response began   ``connect``
dropped after the response began (a cut stream)        ``server_error``
401, 403                                               ``auth``
the server's own context-window wording (vLLM,         ``context_length``
llama.cpp, OpenAI, DeepSeek, Kimi, Anthropic)
a body or chunk that is not JSON or not the expected   ``bad_output``
shape; a stream that ends without a result
the local_only guard refused the host (GR-009)         ``local_only``
no API key for a cloud provider (no request is sent)   ``no_key``
404 (model not served), other 4xx                      ``server_error`` (``status`` is kept)
====================================================  =========================================

Why a cut splits in two: before the response began nothing reached the caller and the
server may be gone, so it is a ``connect`` failure (fall back); once the response began
the server was up and the caller may have seen deltas, so it is a ``server_error`` (the
router may retry the call from the start). A non-streamed call (:meth:`embed`) is read
whole by the SDK before it returns, so any drop there counts as ``connect``.

Keys never appear in messages, logs or exceptions: error text taken from a server is
scrubbed, and the SDK's exception (whose request carries the key) is never chained to
ours (errors are raised outside the ``except`` block, so ``__context__`` is empty too).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, cast

import anyio
import httpx
import httpx2
import openai
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
from app.clock import Clock, SystemClock
from app.errors import LocalOnlyViolation
from app.tokens import count_messages, count_text

__all__ = [
    "CLOUD_FLAVORS",
    "Flavor",
    "HealthCache",
    "OpenAICompatBackend",
    "StructuredField",
    "flavor_for",
    "is_context_length",
    "json_only_instruction",
    "retry_after_seconds",
    "scrub",
]

Flavor = Literal["vllm", "llamacpp", "openai", "deepseek", "moonshot", "ollama"]
StructuredField = Literal["structured_outputs", "guided_json"]
AsyncHttpClient = httpx.AsyncClient | httpx2.AsyncClient

CLOUD_FLAVORS: frozenset[str] = frozenset({"openai", "deepseek", "moonshot"})
#: flavors that honour ``seed`` (the cloud ones that don't may reject or ignore it)
_SEED_FLAVORS = frozenset({"vllm", "llamacpp", "ollama", "openai"})
#: what the SDK is given as a key for servers that want none (vLLM without --api-key …)
_NO_KEY_PLACEHOLDER = "sk-no-key-required"
_MAX_MESSAGE = 300
#: what a call may raise that is the server's or the network's doing
_TRANSPORT_ERRORS = (
    openai.OpenAIError,
    httpx.HTTPError,
    httpx2.HTTPError,
    anyio.EndOfStream,
    OSError,
)


# ── Error mapping shared with the Anthropic backend ────────────────────────────────────────

_CONTEXT_WORDING = re.compile(
    r"maximum context length"  # OpenAI, vLLM, DeepSeek
    r"|context_length_exceeded"  # OpenAI's code
    r"|longer than the maximum model length"  # vLLM: "The decoder prompt (length N) is …"
    r"|exceeds? the available context size"  # llama.cpp server
    r"|exceed_context_size_error"  # llama.cpp server's type
    r"|exceeded model token limit"  # Kimi (Moonshot)
    r"|prompt is too long"  # Anthropic
    r"|exceed context limit"  # Anthropic: "input length and `max_tokens` exceed context limit"
    r"|context window",
    re.IGNORECASE,
)
_KEY_SHAPES = re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{6,}")


def is_context_length(*texts: object) -> bool:
    """True when any of the texts (message, code, type) is a context-window refusal."""
    return any(isinstance(t, str) and _CONTEXT_WORDING.search(t) for t in texts)


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without the given secrets or anything shaped like an API key, shortened."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    text = _KEY_SHAPES.sub("[redacted]", text)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def retry_after_seconds(headers: Mapping[str, str] | None, now: datetime) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``Retry-After`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def local_only_refusal(exc: BaseException) -> LocalOnlyViolation | None:
    """The local_only refusal behind ``exc`` (the SDKs wrap it), if there is one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, LocalOnlyViolation):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def error_message_of(body: object) -> tuple[str, str, str]:
    """(message, type, code) from an error body in any of the servers' shapes."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            return (
                _str(inner.get("message")),
                _str(inner.get("type")),
                _str(inner.get("code")),
            )
        if isinstance(inner, str):
            return inner, "", ""
    if isinstance(body, str):
        return body, "", ""
    return "", "", ""


def status_kind(status: int, message: str, type_: str, code: str) -> ErrorKind:
    """The error kind for an HTTP error status and the server's words."""
    if is_context_length(message, type_, code):
        return "context_length"
    if status == 429:
        if "insufficient_quota" in (type_, code):
            return "auth"
        return "rate_limited"
    if status in (401, 403):
        return "auth"
    if status == 408:
        return "timeout"
    return "server_error"


def transport_kind(exc: BaseException, *, started: bool) -> ErrorKind | None:
    """The kind of a raw transport failure from either HTTP stack (None: not one)."""
    if isinstance(exc, httpx.TimeoutException | httpx2.TimeoutException | TimeoutError):
        return "timeout"
    if isinstance(
        exc,
        httpx.TransportError | httpx2.TransportError | anyio.EndOfStream | ConnectionError,
    ):
        return "server_error" if started else "connect"
    return None


def json_only_instruction(schema: Mapping[str, Any]) -> str:
    """The system message that asks a model without constrained decoding for JSON."""
    return (
        "Reply with a single JSON object and nothing else: no prose, no Markdown fences. "
        "It must validate against this JSON Schema:\n"
        + json.dumps(schema, sort_keys=True, separators=(",", ":"))
    )


def _str(value: object) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _get(obj: object, name: str) -> Any:
    """A field of an SDK model (extra fields included) or of a dict, else None."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


class HealthCache:
    """One probe result, reused for ``ttl_s``; concurrent callers share one probe."""

    def __init__(self, ttl_s: float, clock: Clock) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._value: Health | None = None
        self._at = 0.0
        self._lock: anyio.Lock | None = None

    def _fresh(self) -> Health | None:
        if self._value is not None and self._clock.monotonic() - self._at < self.ttl_s:
            return self._value
        return None

    async def get(self, probe: Callable[[], Awaitable[Health]]) -> Health:
        cached = self._fresh()
        if cached is not None:
            return cached
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            cached = self._fresh()  # a concurrent caller probed while we waited
            if cached is not None:
                return cached
            value = await probe()
            self._value, self._at = value, self._clock.monotonic()
            return value


_RUNTIME_FLAVORS: dict[str, Flavor] = {
    "vllm": "vllm",
    "llamacpp_server": "llamacpp",
    "ollama": "ollama",
}


def flavor_for(*, runtime: str | None, provider: str) -> Flavor:
    """The flavor for a catalog model: by its local runtime kind, else by its provider.

    ``runtime`` is a policy ``RuntimeKind`` ("vllm", "llamacpp_server", "ollama") or None
    for a cloud model; ``provider`` is the policy's provider name. An OpenAI-protocol
    provider we have no dialect for is spoken to as plain OpenAI.
    """
    if runtime is not None:
        if runtime not in _RUNTIME_FLAVORS:
            raise ValueError(f"no OpenAI-compatible flavor for runtime {runtime!r}")
        return _RUNTIME_FLAVORS[runtime]
    if provider in ("deepseek", "moonshot"):
        return cast(Flavor, provider)
    return "openai"


# ── The backend ────────────────────────────────────────────────────────────────────────────


class _BadChunk(Exception):
    """A stream chunk that parsed as JSON but is not a chat completion chunk."""


@dataclass
class _Stream:
    """What one streamed call has gathered so far."""

    model: str
    started: bool = False
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None

    def feed(self, chunk: object) -> Delta | None:
        model = _get(chunk, "model")
        if isinstance(model, str) and model:
            self.model = model
        self._usage(_get(chunk, "usage"))
        choices = _get(chunk, "choices")
        if choices is None:
            return None
        if not isinstance(choices, list):
            raise _BadChunk("choices is not a list")
        text, reasoning = "", ""
        for choice in choices[:1]:
            delta = _get(choice, "delta")
            if delta is not None:
                content = _get(delta, "content")
                thought = _get(delta, "reasoning_content") or _get(delta, "reasoning")
                if content is not None and not isinstance(content, str):
                    raise _BadChunk("delta content is not a string")
                if thought is not None and not isinstance(thought, str):
                    raise _BadChunk("delta reasoning is not a string")
                text, reasoning = content or "", thought or ""
            finish = _get(choice, "finish_reason")
            if isinstance(finish, str) and finish:
                self.finish_reason = finish
            self._usage(_get(choice, "usage"))  # Kimi's place for it
        if text:
            self.text.append(text)
        if reasoning:
            self.reasoning.append(reasoning)
        return Delta(text=text, reasoning=reasoning) if text or reasoning else None

    def _usage(self, usage: object) -> None:
        if usage is None:
            return
        prompt, completion = _get(usage, "prompt_tokens"), _get(usage, "completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            self.tokens_in, self.tokens_out = prompt, completion


class OpenAICompatBackend:
    """One model behind an OpenAI-compatible HTTP API (see the module docstring).

    ``client`` comes from :func:`app.backends.http.make_async_client` (an ``httpx``
    client; an ``httpx2`` one from ``make_async_client_httpx2`` works too) and is owned by
    the caller: :meth:`aclose` leaves it open. Its timeout is the call's timeout.
    ``key_env`` names the environment variable the key comes from, for the no-key
    message; the key itself is never shown.
    """

    def __init__(
        self,
        *,
        model_id: str,
        served_name: str,
        runtime: str,
        flavor: Flavor,
        base_url: str,
        api_key: str | None,
        client: AsyncHttpClient,
        key_env: str | None = None,
        reasoning_effort: str | None = None,
        health_ttl_s: float = 5.0,
        health_timeout_s: float = 1.0,
        structured_field: StructuredField = "structured_outputs",
        clock: Clock | None = None,
    ) -> None:
        self.model_id = model_id
        self.served_name = served_name
        self.runtime = runtime
        self.flavor: Flavor = flavor
        self.base_url = base_url.rstrip("/")
        self.key_env = key_env
        self.reasoning_effort = reasoning_effort
        self.health_timeout_s = health_timeout_s
        self.structured_field: StructuredField = structured_field
        self._api_key = api_key or None
        self._client = client
        self._clock: Clock = clock or SystemClock()
        self._needs_key = runtime == "cloud" or flavor in CLOUD_FLAVORS
        self._sdk: openai.AsyncOpenAI | None = None
        self._health = HealthCache(health_ttl_s, self._clock)

    def __repr__(self) -> str:  # never the key
        return (
            f"OpenAICompatBackend(model_id={self.model_id!r}, flavor={self.flavor!r}, "
            f"runtime={self.runtime!r}, base_url={self.base_url!r})"
        )

    # ── chat ──────────────────────────────────────────────────────────────────────────

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        """Yield text/reasoning deltas, then one :class:`ChatResult`; raise BackendError."""
        sdk = self._require_sdk()
        messages = self._messages(request)
        state = _Stream(model=self.served_name)
        t0 = self._clock.monotonic()
        ttft: float | None = None
        failure: BackendError | None = None
        try:
            chunks = await sdk.chat.completions.create(
                model=self.served_name,
                messages=cast(Any, messages),
                stream=True,
                stream_options={"include_usage": True},
                **self._params(request),
            )
            state.started = True
            try:
                async for chunk in chunks:
                    delta = state.feed(chunk)
                    if delta is not None:
                        if ttft is None:
                            ttft = (self._clock.monotonic() - t0) * 1000.0
                        yield delta
            finally:
                await chunks.close()
        except _TRANSPORT_ERRORS as exc:
            failure = self._map(exc, started=state.started)
        except (json.JSONDecodeError, pydantic.ValidationError, _BadChunk) as exc:
            failure = self._error("bad_output", f"malformed reply ({type(exc).__name__})")
        if failure is not None:
            raise failure
        yield self._result(state, messages, t0, ttft)

    def _result(
        self, state: _Stream, messages: list[dict[str, str]], t0: float, ttft: float | None
    ) -> ChatResult:
        if state.finish_reason is None:
            if not state.text and not state.reasoning:
                raise self._error("bad_output", "the stream ended without a reply")
            raise self._error("server_error", "the stream ended before its finish (cut?)")
        if state.tokens_in is not None and state.tokens_out is not None:
            usage = Usage(tokens_in=state.tokens_in, tokens_out=state.tokens_out)
        else:
            usage = Usage(
                tokens_in=count_messages(m["content"] for m in messages),
                tokens_out=count_text("".join(state.text)) + count_text("".join(state.reasoning)),
                counted_locally=True,
            )
        return ChatResult(
            text="".join(state.text),
            reasoning="".join(state.reasoning),
            usage=usage,
            finish_reason=state.finish_reason,
            model=state.model,
            latency_ms=(self._clock.monotonic() - t0) * 1000.0,
            ttft_ms=ttft,
        )

    def _messages(self, request: ChatRequest) -> list[dict[str, str]]:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        if request.json_schema is not None and self.flavor in CLOUD_FLAVORS:
            # After the caller's own system messages, so it is the last word on format.
            at = next((i for i, m in enumerate(messages) if m["role"] != "system"), len(messages))
            messages.insert(
                at, {"role": "system", "content": json_only_instruction(request.json_schema)}
            )
        return messages

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        if self.flavor == "openai":
            params["max_completion_tokens"] = request.max_tokens
        else:
            params["max_tokens"] = request.max_tokens
        if self.reasoning_effort:
            params["reasoning_effort"] = self.reasoning_effort
        else:
            params["temperature"] = request.temperature
        if request.seed is not None and self.flavor in _SEED_FLAVORS:
            params["seed"] = request.seed
        if request.stop:
            params["stop"] = list(request.stop)
        schema = request.json_schema
        if schema is not None:
            if self.flavor == "vllm":
                if self.structured_field == "guided_json":
                    extra["guided_json"] = schema
                else:
                    extra["structured_outputs"] = {"json": schema}
            elif self.flavor == "llamacpp":
                params["response_format"] = {"type": "json_object", "schema": schema}
            elif self.flavor == "ollama":
                params["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "reply", "schema": schema},
                }
            else:
                params["response_format"] = {"type": "json_object"}
        if extra:
            params["extra_body"] = extra
        return params

    # ── embeddings ────────────────────────────────────────────────────────────────────

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order, from ``/v1/embeddings``."""
        if not texts:
            return []
        sdk = self._require_sdk()
        failure: BackendError | None = None
        vectors: list[list[float]] = []
        try:
            reply = await sdk.embeddings.create(
                model=self.served_name, input=texts, encoding_format="float"
            )
            data = sorted(reply.data, key=lambda d: d.index)
            vectors = [[float(x) for x in d.embedding] for d in data]
            if len(vectors) != len(texts):
                failure = self._error(
                    "bad_output", f"{len(vectors)} embeddings for {len(texts)} texts"
                )
        except _TRANSPORT_ERRORS as exc:
            failure = self._map(exc, started=False)
        except (json.JSONDecodeError, pydantic.ValidationError, TypeError, AttributeError) as exc:
            failure = self._error("bad_output", f"malformed embeddings ({type(exc).__name__})")
        if failure is not None:
            raise failure
        return vectors

    # ── health ────────────────────────────────────────────────────────────────────────

    async def health(self) -> Health:
        """A probe of ``/health`` (vLLM, llama.cpp) and ``/models``, cached ``health_ttl_s``."""
        return await self._health.get(self._probe)

    async def context_window(self) -> int | None:
        """vLLM's ``max_model_len`` / llama.cpp's ``n_ctx`` for the served model, else None."""
        return (await self.health()).context_window

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client belongs to the caller."""
        self._sdk = None

    async def _probe(self) -> Health:
        if self._needs_key and self._api_key is None:
            return Health(ok=False, detail=self._no_key_message())
        t0 = self._clock.monotonic()
        root = self.base_url.removesuffix("/v1")
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        try:
            if self.flavor in ("vllm", "llamacpp"):
                live = await self._get(f"{root}/health", {})
                if live.status_code != 200:
                    what = "loading" if live.status_code == 503 else f"HTTP {live.status_code}"
                    return Health(ok=False, detail=f"/health answered {what}")
            listed = await self._get(f"{self.base_url}/models", headers)
            if listed.status_code != 200:
                return Health(ok=False, detail=f"/models answered HTTP {listed.status_code}")
            models, window = _models_of(listed.json(), self.served_name)
            if self.flavor == "llamacpp":
                window = await self._llamacpp_n_ctx(root)
        except Exception as exc:  # a probe reports; it never raises
            return Health(ok=False, detail=self._probe_failure(exc))
        latency = (self._clock.monotonic() - t0) * 1000.0
        if self.flavor in ("vllm", "ollama") and self.served_name not in models:
            return Health(
                ok=False,
                detail=f"serves {', '.join(models) or 'no model'}, not {self.served_name}",
                latency_ms=latency,
                models=models,
            )
        return Health(
            ok=True, detail="ok", latency_ms=latency, context_window=window, models=models
        )

    async def _get(self, url: str, headers: dict[str, str]) -> httpx.Response | httpx2.Response:
        return await self._client.get(url, headers=headers, timeout=self.health_timeout_s)

    async def _llamacpp_n_ctx(self, root: str) -> int | None:
        try:
            props = await self._get(f"{root}/props", {})
            if props.status_code != 200:
                return None
            n_ctx = _get(_get(props.json(), "default_generation_settings"), "n_ctx")
        except Exception:  # an old server without /props: the window is just unknown
            return None
        return n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None

    def _probe_failure(self, exc: BaseException) -> str:
        if local_only_refusal(exc) is not None:
            return "refused: local_only is on (GR-009)"
        kind = transport_kind(exc, started=False)
        if kind == "timeout":
            return f"no answer within {self.health_timeout_s:g} s"
        if kind == "connect":
            return "unreachable"
        if isinstance(exc, ValueError):
            return "malformed /models reply"
        return scrub(f"probe failed: {type(exc).__name__}", [self._api_key])

    # ── errors ────────────────────────────────────────────────────────────────────────

    def _require_sdk(self) -> openai.AsyncOpenAI:
        if self._needs_key and self._api_key is None:
            raise BackendError("no_key", self._no_key_message())
        if self._sdk is None:
            timeout = self._client.timeout
            self._sdk = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self._api_key or _NO_KEY_PLACEHOLDER,
                http_client=cast(httpx2.AsyncClient, self._client),
                max_retries=0,
                # explicit: the SDK ignores a client timeout equal to httpx's default
                timeout=httpx2.Timeout(**timeout.as_dict()),
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
        text = scrub(f"{self.model_id} ({self.flavor}): {message}", [self._api_key])
        return BackendError(kind, text, status=status, retry_after=retry_after)

    def _map(self, exc: BaseException, *, started: bool) -> BackendError:
        refused = local_only_refusal(exc)
        if refused is not None:
            return self._error("local_only", str(refused))
        if isinstance(exc, openai.APITimeoutError):
            return self._error("timeout", "timed out" + (" mid-stream" if started else ""))
        if isinstance(exc, openai.APIConnectionError):
            if started:
                return self._error("server_error", "the stream was cut mid-way")
            return self._error("connect", f"cannot reach {self.base_url}")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            message, type_, code = error_message_of(exc.body)
            kind = status_kind(status, message, type_, code)
            retry_after = None
            if kind == "rate_limited":
                retry_after = retry_after_seconds(exc.response.headers, self._clock.now())
            return self._error(
                kind,
                f"HTTP {status}: {message or type_ or 'error'}",
                status=status,
                retry_after=retry_after,
            )
        if isinstance(exc, openai.APIResponseValidationError):
            return self._error("bad_output", "the reply does not fit the API's schema")
        if isinstance(exc, openai.APIError):  # an error event inside a stream
            message, type_, code = error_message_of(exc.body)
            message = message or exc.message
            if is_context_length(message, type_, code):
                return self._error("context_length", message)
            return self._error("server_error", f"error in stream: {message}")
        transport = transport_kind(exc, started=started)
        if transport is not None:
            what = {
                "timeout": "timed out" + (" mid-stream" if started else ""),
                "connect": f"cannot reach {self.base_url}",
                "server_error": "the stream was cut mid-way",
            }[transport]
            return self._error(transport, f"{what} ({type(exc).__name__})")
        return self._error("server_error", f"unexpected failure ({type(exc).__name__})")


def _models_of(body: object, served_name: str) -> tuple[list[str], int | None]:
    """Model ids from a ``/models`` reply, and the served model's ``max_model_len``."""
    data = _get(body, "data")
    if not isinstance(data, list):
        raise ValueError("no data list in /models")
    models: list[str] = []
    window: int | None = None
    for entry in data:
        ident = _get(entry, "id")
        if not isinstance(ident, str):
            continue
        models.append(ident)
        max_len = _get(entry, "max_model_len")
        if ident == served_name and isinstance(max_len, int) and max_len > 0:
            window = max_len
    return models, window
