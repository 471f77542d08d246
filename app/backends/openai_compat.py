"""The OpenAI-compatible backend: vLLM, the llama.cpp server, Ollama, OpenAI, DeepSeek, Kimi.

One class, :class:`OpenAICompatBackend`, over the ``openai`` SDK built on a client from
:mod:`app.backends.http` (so the local_only guard sits in its transport). The SDK's own
retries are off: retries, backoff and fallbacks belong to the router, which reads the
``kind`` of the :class:`~app.backends.base.BackendError` this module raises.

The local runtimes' chat streams (vLLM, the llama.cpp server, Ollama) skip the SDK: the
same request goes out on the client's aiohttp twin, behind the same guard
(:mod:`.openai_local`; the SDK's own cost dominated the gateway's local route).
Where servers differ (the ``flavor``), the request is built by :mod:`.openai_request`
(structured output, GR-012; sampling and token fields) and the stream is read by
:mod:`.openai_stream` (usage, reasoning deltas). Every SDK and transport failure is mapped
by :mod:`.provider_errors`, whose table of error kinds holds here; the streaming call is
driven by :func:`.provider_common.relay`, shared with the Anthropic backend. The names
callers import from here (``flavor_for``, ``scrub``, ``HealthCache`` …) are re-exported.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any, cast

import httpx
import httpx2
import openai
from openai.types.chat import ChatCompletionChunk

from app.backends.base import BackendError, ChatRequest, ChatResult, Delta, Health
from app.backends.http import stream_client
from app.backends.openai_local import LOCAL_FLAVORS, chat_body, open_chat
from app.backends.openai_request import (
    CLOUD_FLAVORS,
    Flavor,
    StructuredField,
    chat_messages,
    chat_params,
    flavor_for,
    prompt_texts,
)
from app.backends.openai_stream import ChunkState, field_of
from app.backends.provider_common import (
    MALFORMED,
    HealthCache,
    SdkStream,
    no_key_message,
    relay,
)
from app.backends.provider_errors import (
    ErrorMapper,
    SdkErrors,
    is_context_length,
    local_only_refusal,
    retry_after_seconds,
    scrub,
    transport_kind,
)
from app.backends.schema_notes import json_only_instruction
from app.backends.stops import StopScanner
from app.backends.tool_calls import ToolCallAssembler, request_seed
from app.clock import Clock, SystemClock

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

AsyncHttpClient = httpx.AsyncClient | httpx2.AsyncClient

#: what the SDK is given as a key for servers that want none (vLLM without --api-key …)
_NO_KEY_PLACEHOLDER = "sk-no-key-required"
_SDK_ERRORS = SdkErrors.of(openai, base=openai.OpenAIError)
#: an embeddings reply that is not the API's: not text, not JSON, or not its shape
_MALFORMED_EMBEDDINGS: tuple[type[Exception], ...] = (*MALFORMED, TypeError, AttributeError)


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
        reasoning_tokens: int = 0,
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
        self._chat_url = f"{self.base_url}/chat/completions"
        self.key_env = key_env
        self.reasoning_effort = reasoning_effort
        #: the thinking budget added to a reply's room when reasoning_effort is set
        self.reasoning_tokens = reasoning_tokens
        self.health_timeout_s = health_timeout_s
        self.structured_field: StructuredField = structured_field
        self._api_key = api_key or None
        self._client = client
        self._clock: Clock = clock or SystemClock()
        self._needs_key = runtime == "cloud" or flavor in CLOUD_FLAVORS
        self._sdk: openai.AsyncOpenAI | None = None
        self._health = HealthCache(health_ttl_s, self._clock)
        self._errors = ErrorMapper(
            _SDK_ERRORS,
            label=f"{model_id} ({flavor})",
            base_url=self.base_url,
            api_key=self._api_key,
            clock=self._clock,
        )

    def __repr__(self) -> str:  # never the key
        return (
            f"OpenAICompatBackend(model_id={self.model_id!r}, flavor={self.flavor!r}, "
            f"runtime={self.runtime!r}, base_url={self.base_url!r})"
        )

    # ── chat ──────────────────────────────────────────────────────────────────────────

    def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        """Text, reasoning and tool-call deltas, then one :class:`ChatResult`; raises
        BackendError.

        Nothing is sent before the first step of the iteration (a missing key raises there).
        """
        messages = chat_messages(request, self.flavor)
        params = chat_params(
            request,
            self.flavor,
            reasoning_effort=self.reasoning_effort,
            structured_field=self.structured_field,
            reasoning_tokens=self.reasoning_tokens,
        )

        streams = stream_client(self._client) if self.flavor in LOCAL_FLAVORS else None
        if streams is not None:  # a local runtime: the SDK's request, without the SDK
            body = chat_body(self.served_name, messages, params)

            async def open_stream() -> SdkStream:
                self._check_key()
                return await open_chat(
                    streams,
                    self._chat_url,
                    body,
                    api_key=self._api_key,
                    timeouts=self._client.timeout,
                    errors=self._errors,
                )

        else:

            async def open_stream() -> SdkStream:
                chunks: openai.AsyncStream[ChatCompletionChunk]
                chunks = await self._require_sdk().chat.completions.create(
                    model=self.served_name,
                    messages=cast(Any, messages),
                    stream=True,
                    stream_options={"include_usage": True},
                    **params,
                )
                return chunks

        # both only when needed: no usage in the stream (llama.cpp), a call without an id
        prompt = partial(prompt_texts, messages, params)
        calls = ToolCallAssembler(seed=partial(request_seed, request))
        state = ChunkState(model=self.served_name, calls=calls)
        if request.stop and "stop" not in params:  # (a reasoning model takes none)
            state.scanner = StopScanner(request.stop)
        # the cap the server was sent (a reasoning model's thinking budget in it)
        cap = params.get("max_completion_tokens") or params.get("max_tokens")
        return relay(open_stream, state, prompt, errors=self._errors, clock=self._clock, cap=cap)

    # ── embeddings ────────────────────────────────────────────────────────────────────

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order, from ``/v1/embeddings``."""
        if not texts:
            return []
        sdk = self._require_sdk()
        failure = None
        vectors: list[list[float]] = []
        try:
            reply = await sdk.embeddings.create(
                model=self.served_name, input=texts, encoding_format="float"
            )
            data = sorted(reply.data, key=lambda d: d.index)
            vectors = [[float(x) for x in d.embedding] for d in data]
            if len(vectors) != len(texts):
                failure = self._errors.error(
                    "bad_output", f"{len(vectors)} embeddings for {len(texts)} texts"
                )
        except self._errors.catches as exc:  # read whole before it returns: never "started"
            failure = self._errors.map(exc, started=False)
        except _MALFORMED_EMBEDDINGS as exc:
            failure = self._errors.error(
                "bad_output", f"malformed embeddings ({type(exc).__name__})"
            )
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
            return Health(ok=False, detail=no_key_message(self.key_env))
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
            n_ctx = field_of(field_of(props.json(), "default_generation_settings"), "n_ctx")
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

    # ── the SDK ───────────────────────────────────────────────────────────────────────

    def _check_key(self) -> None:
        if self._needs_key and self._api_key is None:
            raise BackendError("no_key", no_key_message(self.key_env))

    def _require_sdk(self) -> openai.AsyncOpenAI:
        self._check_key()
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


def _models_of(body: object, served_name: str) -> tuple[list[str], int | None]:
    """Model ids from a ``/models`` reply, and the served model's ``max_model_len``."""
    data = field_of(body, "data")
    if not isinstance(data, list):
        raise ValueError("no data list in /models")
    models: list[str] = []
    window: int | None = None
    for entry in data:
        ident = field_of(entry, "id")
        if not isinstance(ident, str):
            continue
        models.append(ident)
        max_len = field_of(entry, "max_model_len")
        if ident == served_name and isinstance(max_len, int) and max_len > 0:
            window = max_len
    return models, window
