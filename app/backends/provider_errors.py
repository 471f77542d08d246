"""How a provider SDK's failures become a :class:`~app.backends.base.BackendError`.

One mapping for both cloud-capable adapters (:mod:`app.backends.openai_compat`,
:mod:`app.backends.anthropic_backend`). The ``openai`` and ``anthropic`` SDKs are
generated alike (the same exception hierarchy under the same names), so an adapter hands
its SDK's classes to an :class:`ErrorMapper` (:meth:`SdkErrors.of`) and this module never
imports either SDK. Retries, backoff and fallbacks belong to the router, which reads the
``kind``.

Error kinds (every SDK and transport failure ends as one of these, never as a traceback):

====================================================  =========================================
failure                                               kind
====================================================  =========================================
429 (Retry-After / retry-after-ms → ``retry_after``)   ``rate_limited``
429 ``insufficient_quota`` (no credit: waiting won't   ``auth``
help)
500, 502, 503, 504, 529, any other 5xx                ``server_error``
a read/connect/write timeout, 408                      ``timeout`` (``accepted`` when the
                                                      request was written: a read time-out)
refused, reset or dropped before the response began   ``connect``
dropped after the response began (a cut stream)        ``server_error``
401, 403                                               ``auth``
the server's own context-window wording (vLLM,         ``context_length``
llama.cpp, OpenAI, DeepSeek, Kimi, Anthropic)
an ``error`` event inside a stream                     by its words and ``type`` (the adapter's
                                                      table), else ``server_error``
a body or chunk that is not JSON (not even UTF-8, or   ``bad_output``
nested past the decoder's depth) or not the expected
shape; a stream that ends without a result
the local_only guard refused the host (GR-009)         ``local_only``
no API key for a cloud provider (no request is sent)   ``no_key``
400, 413, 422: the request itself refused (a field    ``bad_request`` (``status`` is kept)
out of range, a schema the server cannot take, a
body too large)
400, 413, 422 that name our account (a credit          ``auth``
balance too low, a billing limit reached)
404 (model not served), other 4xx                      ``server_error`` (``status`` is kept)
====================================================  =========================================

A 4xx whose body's ``type`` is in the adapter's table is mapped by the table (Anthropic's
413 ``request_too_large`` is ``context_length``, its ``billing_error`` ``auth``).

Why ``bad_request`` is apart: the same request is refused again, by a retry and most
likely by any other model, and says nothing of the server's health. The router neither
retries it nor marks the runtime or model down nor walks on to another step (another
approval, another reservation); the caller is told the server's words (a gateway client
gets them as a 400 in its protocol's shape). Not among its statuses: 401/403 (our key),
408 (a time-out), 429 (a rate limit), a context-window refusal (its own kind, an
escalation trigger), 404 (the policy's model is not served there: a deployment's fault,
not the caller's; a gateway client never names the provider's model), 409 and the other
4xx (the server's state, or ours, not the request's).

Why a cut splits in two: before the response began nothing reached the caller and the
server may be gone, so it is a ``connect`` failure (fall back); once the response began
the server was up and the caller may have seen deltas, so it is a ``server_error`` (the
router may retry the call from the start). A non-streamed call is read whole by the SDK
before it returns, so any drop there counts as ``connect``.

Keys never appear in messages, logs or exceptions: every message is scrubbed, and the
SDK's exception (whose request carries the key) is never chained to ours (callers raise
the mapped error outside their ``except`` block, so ``__context__`` is empty too).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from types import ModuleType
from typing import Protocol, TypeVar

import anyio
import httpx
import httpx2

from app.audit.masking import mask_text
from app.audit.secret_forms import mask_spans, secret_forms
from app.backends.base import BackendError, ErrorKind
from app.clock import Clock
from app.errors import LocalOnlyViolation

__all__ = [
    "TRANSPORT_ERRORS",
    "ErrorMapper",
    "SdkErrors",
    "error_message_of",
    "is_context_length",
    "local_only_refusal",
    "retry_after_seconds",
    "scrub",
    "status_kind",
    "transport_kind",
]

#: what a call may raise, besides its SDK's own errors, that is the server's or the network's
#: doing (either HTTP stack)
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    httpx.HTTPError,
    httpx2.HTTPError,
    anyio.EndOfStream,
    OSError,
)
_MAX_MESSAGE = 300
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
#: a key, or a key shown in part (its ends, stars between: as a provider's 401 words it)
_KEY_SHAPES = re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-*]{6,}")
#: the statuses that refuse the request itself, as it was sent (``bad_request``)
_BAD_REQUEST = frozenset({400, 413, 422})
#: a 400 about our account, not the request: Anthropic's "Your credit balance is too low
#: to access the Anthropic API", OpenAI's ``billing_hard_limit_reached``
_ACCOUNT_WORDING = re.compile(
    r"credit balance|billing_hard_limit_reached|billing hard limit", re.IGNORECASE
)
#: a 400 that is this provider's content filter, not a request no provider would take:
#: Moonshot's and Azure's ``content_filter``, DeepSeek's "Content Exists Risk". Another
#: provider may serve it, so it fails the step (``server_error``), not the route (a review)
_FILTER_WORDING = re.compile(r"content[_ ]filter|content exists risk", re.IGNORECASE)


# ── The pieces ─────────────────────────────────────────────────────────────────────────────


def is_context_length(*texts: object) -> bool:
    """True when any of the texts (message, code, type) is a context-window refusal."""
    return any(isinstance(t, str) and _CONTEXT_WORDING.search(t) for t in texts)


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without the given secrets or anything shaped like an API key, shortened."""
    given = tuple(sorted({s for s in secrets if s and len(s) >= 4}, key=lambda s: (-len(s), s)))
    for secret in given:
        text = text.replace(secret, "[redacted]")
    if given:  # and in part, in another case or form (as a relay may echo it)
        text = mask_spans(text, secret_forms(given).spans(text), "[redacted]")
    text = _KEY_SHAPES.sub("[redacted]", text)
    text = mask_text(text)[0]  # the shared masker: every other key shape, env values
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


E = TypeVar("E", bound=BaseException)


def _behind(exc: BaseException, kind: type[E] | tuple[type[E], ...]) -> E | None:
    """The exception of ``kind`` that ``exc`` is or wraps (the SDKs wrap what httpx and
    our transport raised), if there is one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def local_only_refusal(exc: BaseException) -> LocalOnlyViolation | None:
    """The local_only refusal behind ``exc`` (the SDKs wrap it), if there is one."""
    return _behind(exc, LocalOnlyViolation)


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
    if status in _BAD_REQUEST:
        if any(_ACCOUNT_WORDING.search(t) for t in (message, type_, code) if t):
            return "auth"
        if any(_FILTER_WORDING.search(t) for t in (message, type_, code) if t):
            return "server_error"
        return "bad_request"
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


def _pool_wait(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps: the SDKs wrap httpx's) is a wait for a free
    connection of this process's own pool, which says nothing of the host."""
    return _behind(exc, (httpx.PoolTimeout, httpx2.PoolTimeout)) is not None


def _reply_wait(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is a wait for the reply that ran out: a read
    time-out, raised only once the request was written (aiohttp's socket read time-out
    is translated to it, :mod:`.http_stream`)."""
    return _behind(exc, (httpx.ReadTimeout, httpx2.ReadTimeout)) is not None


def _str(value: object) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


# ── One SDK's errors, mapped ───────────────────────────────────────────────────────────────


class _Headers(Protocol):
    @property
    def headers(self) -> Mapping[str, str]: ...


class _ApiError(Protocol):
    """``APIError``: what both SDKs' errors below their base have."""

    @property
    def message(self) -> str: ...

    @property
    def body(self) -> object: ...


class _StatusError(_ApiError, Protocol):
    """``APIStatusError``: an HTTP error status, or an ``error`` event in a 200 stream."""

    @property
    def status_code(self) -> int: ...

    @property
    def response(self) -> _Headers: ...


@dataclass(frozen=True)
class SdkErrors:
    """One SDK's exception classes, as the ``openai`` and ``anthropic`` SDKs both name them."""

    #: the root of everything the SDK raises (``OpenAIError``, ``AnthropicError``)
    base: type[Exception]
    #: ``APIError``: raised bare for an ``error`` event inside an OpenAI-protocol stream
    api: type[_ApiError]
    status: type[_StatusError]
    connection: type[Exception]
    #: a connection error too
    timeout: type[Exception]
    validation: type[Exception]

    @classmethod
    def of(cls, sdk: ModuleType, *, base: type[Exception]) -> SdkErrors:
        """The classes of ``sdk`` (the module), whose root error is ``base``."""
        return cls(
            base=base,
            api=sdk.APIError,
            status=sdk.APIStatusError,
            connection=sdk.APIConnectionError,
            timeout=sdk.APITimeoutError,
            validation=sdk.APIResponseValidationError,
        )


class ErrorMapper:
    """One backend's failures as :class:`BackendError`: labelled, scrubbed, of one kind.

    ``label`` starts every message (``"<model id> (<flavor>)"``); ``base_url`` is named
    when the server cannot be reached; ``api_key`` is scrubbed from every message.
    ``type_kinds`` maps an error body's ``type`` to a kind, for errors whose HTTP status
    says nothing (an ``error`` event inside a stream) or less than the type (a 4xx of no
    other kind, a ``bad_request``).
    """

    def __init__(
        self,
        sdk: SdkErrors,
        *,
        label: str,
        base_url: str,
        api_key: str | None,
        clock: Clock,
        type_kinds: Mapping[str, ErrorKind] | None = None,
    ) -> None:
        self._sdk = sdk
        self._label = label
        self._base_url = base_url
        self._api_key = api_key
        self._clock = clock
        self._type_kinds: Mapping[str, ErrorKind] = type_kinds or {}
        #: what a call catches and hands to :meth:`map`
        self.catches: tuple[type[BaseException], ...] = (sdk.base, *TRANSPORT_ERRORS)

    def error(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        started: bool = False,
        no_answer: bool = False,
        accepted: bool = False,
    ) -> BackendError:
        """A :class:`BackendError` of ``kind``, its message labelled and scrubbed."""
        text = scrub(f"{self._label}: {message}", [self._api_key])
        return BackendError(
            kind,
            text,
            status=status,
            retry_after=retry_after,
            started=started,
            no_answer=no_answer,
            accepted=accepted,
        )

    def map(self, exc: BaseException, *, started: bool) -> BackendError:
        """The error for a failure of a call; ``started``: the response had begun."""
        refused = local_only_refusal(exc)
        if refused is not None:
            return self.error("local_only", str(refused))
        transport = self._transport_kind(exc, started=started)
        if transport is not None:
            what = {
                "timeout": "timed out" + (" mid-stream" if started else ""),
                "connect": f"cannot reach {self._base_url}",
                "server_error": "the stream was cut mid-way",
            }[transport]
            if not isinstance(exc, self._sdk.connection):  # a raw one: say which
                what += f" ({type(exc).__name__})"
            silent = transport == "timeout" and not started and not _pool_wait(exc)
            # the request went out whole and the wait for its reply ran out: the provider
            # took it (a time-out to connect, to write it, or for a pooled connection sent
            # nothing it would process)
            taken = transport == "timeout" and (started or _reply_wait(exc))
            return self.error(transport, what, started=started, no_answer=silent, accepted=taken)
        if isinstance(exc, self._sdk.status):
            return self._status(exc)
        if isinstance(exc, self._sdk.validation):
            return self.error("bad_output", "the reply does not fit the API's schema")
        if isinstance(exc, self._sdk.api):  # an error event inside an OpenAI-protocol stream
            message, type_, code = error_message_of(exc.body)
            return self._stream_event(message or exc.message, type_, code)
        return self.error("server_error", f"unexpected failure ({type(exc).__name__})")

    def _transport_kind(self, exc: BaseException, *, started: bool) -> ErrorKind | None:
        if isinstance(exc, self._sdk.timeout):
            return "timeout"
        if isinstance(exc, self._sdk.connection):
            return "server_error" if started else "connect"
        return transport_kind(exc, started=started)

    def _status(self, exc: _StatusError) -> BackendError:
        if exc.status_code < 400:  # an ``error`` event inside a 200 stream (Anthropic's SDK)
            return self._stream_event(*error_message_of(exc.body))
        return self.status_error(exc.status_code, exc.body, exc.response.headers)

    def status_error(
        self, status: int, body: object, headers: Mapping[str, str] | None
    ) -> BackendError:
        """An HTTP error reply as the SDKs' status errors are mapped: ``body`` parsed (a
        JSON value, else its text), ``headers`` for ``Retry-After``. For a call made
        without an SDK."""
        message, type_, code = error_message_of(body)
        kind = status_kind(status, message, type_, code)
        if kind in ("server_error", "bad_request") and type_ in self._type_kinds and status < 500:
            kind = self._type_kinds[type_]
        retry_after = None
        if kind == "rate_limited":
            retry_after = retry_after_seconds(headers, self._clock.now())
        return self.error(
            kind,
            f"HTTP {status}: {message or type_ or 'error'}",
            status=status,
            retry_after=retry_after,
        )

    def event_error(self, error: object) -> BackendError:
        """The ``error`` member of an item inside a 200 stream, as the openai SDK raises
        it (:class:`APIError`) and :meth:`map` maps it. For a call made without an SDK."""
        message, type_, code = error_message_of(error)
        return self._stream_event(message or "An error occurred during streaming", type_, code)

    def _stream_event(self, message: str, type_: str, code: str) -> BackendError:
        kind: ErrorKind
        if is_context_length(message, type_, code):
            kind = "context_length"
        else:
            kind = self._type_kinds.get(type_, "server_error")
        return self.error(kind, f"error in stream: {message or type_ or 'error'}")
