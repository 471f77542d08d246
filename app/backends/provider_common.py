"""What the SDK adapters share besides their error mapping (:mod:`.provider_errors`).

Used by :mod:`app.backends.openai_compat` and :mod:`app.backends.anthropic_backend`;
imports neither SDK.

* :func:`relay` drives one streamed call: it opens the SDK's stream, feeds each item to
  the adapter's :class:`StreamState`, yields the deltas (timing the first), closes the
  stream, maps any failure, and ends with one :class:`ChatResult`. Tool-call fragments
  go through the state's :class:`~app.backends.tool_calls.ToolCallAssembler`; when the
  server sent no usage, the calls the model wrote count as output tokens. A server that
  goes on well past the ``max_tokens`` it was sent (:func:`past_cap`, by the shared
  counter) is cut off there: its stream closed, the reply ended ``length``
  (:meth:`StreamState.capped_result`).
* :data:`MALFORMED`: what reading a provider's bytes raises when they are not the API's
  messages (not JSON, not its shape, not even text): a ``bad_output``, for the relay and
  for a call read whole (embeddings).
* :class:`HealthCache`: one health probe shared by concurrent callers, reused a while.

The schema's notes (GR-012 for a model without constrained decoding) are in
:mod:`app.backends.schema_notes`, which the router counts from as well.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import pydantic

from app.backends.base import ChatResult, Delta, Health, Usage, plausible_usage
from app.backends.provider_errors import ErrorMapper
from app.backends.tool_calls import IncompleteToolCall, ToolCallAssembler, calls_tokens
from app.backends.whole_text import whole_delta, whole_result
from app.clock import Clock
from app.tokens import TextCount, count_messages, count_text

__all__ = [
    "MALFORMED",
    "UNDECODABLE",
    "BadStreamItem",
    "HealthCache",
    "StreamState",
    "no_key_message",
    "past_cap",
    "relay",
]


def past_cap(max_tokens: int) -> int:
    """The reply's tokens, by the shared counter (:mod:`app.tokens`), past which a server
    sent ``max_tokens`` is taken to ignore it and is cut off: twice the cap and a little.
    The counter errs high and is not the model's tokenizer, so a server that honours its
    cap is never cut (its reply ends by itself first); one that ignores it (a 5-token
    request answered with ~3,000 tokens, 630 KB, over 30 s: an audit) stops within a few
    deltas of this. The reply is the text and the calls' arguments; the reasoning is left
    out (DeepSeek's reasoner thinks beyond its ``max_tokens``)."""
    return 2 * max_tokens + 16


#: the texts a call sent, or how to list them (only needed when the server sends no usage)
Prompt = list[str] | Callable[[], list[str]]


class BadStreamItem(Exception):
    """A stream item that parsed as JSON but is not what the API sends."""


#: what decoding a provider's bytes raises besides JSONDecodeError: bytes that are not
#: UTF-8 (both SDKs' SSE decoders and ``json.loads`` decode strictly; the SDKs let it
#: through, and it ended a gateway request as a bare 500 with no fallback, an audit) and
#: JSON nested past the decoder's depth (CPython's ``json`` raises RecursionError). Named
#: one by one: a broad ValueError would hide our own bugs as a provider's bad reply.
UNDECODABLE: tuple[type[Exception], ...] = (UnicodeDecodeError, RecursionError)
#: a reply that is not the API's messages: not text, not JSON, or not their shape
MALFORMED: tuple[type[Exception], ...] = (
    json.JSONDecodeError,
    pydantic.ValidationError,
    BadStreamItem,
    *UNDECODABLE,
)


@dataclass
class StreamState(ABC):
    """What one streamed call has gathered so far; a subclass reads its API's items."""

    #: the served model, until the stream names it
    model: str
    #: the response began (see the cut rule in :mod:`.provider_errors`)
    started: bool = False
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tokens_in: int | None = None
    tokens_out: int | None = None
    #: of ``tokens_in``: read from the provider's prompt cache, written to it
    tokens_cached: int = 0
    tokens_cache_write: int = 0
    calls: ToolCallAssembler = field(default_factory=ToolCallAssembler)
    #: the relay cut the reply off: it went on past its cap (:func:`past_cap`)
    capped: bool = False

    #: what a complete stream ends with, for the message when it did not
    END = "its finish"

    @abstractmethod
    def feed(self, item: object) -> Delta | None:
        """Take one item of the stream; the delta it carries, if any. Raise BadStreamItem."""

    @abstractmethod
    def finish(self) -> str | None:
        """The finish reason, or None while the stream has not ended properly."""

    def end(self) -> Delta | None:
        """At the stream's end, before :meth:`result`: a last delta of text held back
        while it could have begun a stop sequence (see ChunkState), if any."""
        return None

    def result(
        self, prompt: Prompt, *, errors: ErrorMapper, latency_ms: float, ttft_ms: float | None
    ) -> ChatResult:
        """The call's result; ``prompt`` (the texts sent, or how to list them) is counted
        if usage never came."""
        if self.capped:
            return self.capped_result(prompt, latency_ms=latency_ms, ttft_ms=ttft_ms)
        finish = self.finish()
        if finish is None:
            if not self.text and not self.reasoning and not self.calls.started:
                raise errors.error("bad_output", "the stream ended without a reply")
            raise errors.error("server_error", f"the stream ended before {self.END} (cut?)")
        calls, failure = [], None
        try:
            calls = self.calls.calls()
        except IncompleteToolCall as exc:  # raised below: no exception context rides along
            failure = errors.error("bad_output", f"malformed reply ({exc})")
        if failure is not None:
            raise failure
        text, reasoning = "".join(self.text), "".join(self.reasoning)
        tokens_in, tokens_out = self.tokens_in, self.tokens_out
        cached, written = self.tokens_cached, self.tokens_cache_write
        refused = None
        if tokens_in is not None and tokens_out is not None:
            if plausible_usage(tokens_in, tokens_out, cached, written):
                usage = Usage(
                    tokens_in=tokens_in,
                    tokens_out=tokens_out,
                    tokens_cached=cached,
                    tokens_cache_write=written,
                )
            else:  # a negative count raised a ValidationError past the call's audit line
                said = _parts(cached, written)
                refused = f"{_shown(tokens_in)} in{said} / {_shown(tokens_out)} out"
        if refused is not None or tokens_in is None or tokens_out is None:
            usage = Usage(
                tokens_in=count_messages(prompt() if callable(prompt) else prompt),
                tokens_out=count_text(text) + count_text(reasoning) + calls_tokens(calls),
                counted_locally=True,
                refused=refused,
            )
        return ChatResult(
            text=text,
            reasoning=reasoning,
            tool_calls=calls,
            usage=usage,
            finish_reason=finish,
            model=self.model,
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
        )

    def capped_result(
        self, prompt: Prompt, *, latency_ms: float, ttft_ms: float | None
    ) -> ChatResult:
        """The result of a reply cut off past its cap: what was passed on, finish
        ``length``, and no tool calls (a call cut off is not one to run; its fragments,
        passed on, are counted). Its output is the larger of what the server said so far
        (a provider's running count) and the count of what was passed on, so it settles
        at no less than what was delivered; its prompt is the server's when it said it."""
        text, reasoning = "".join(self.text), "".join(self.reasoning)
        calls = self.calls.calls(named_only=True)
        counted = count_text(text) + count_text(reasoning) + calls_tokens(calls)
        said_in, said_out = self.tokens_in, self.tokens_out
        if said_in is None or not plausible_usage(said_in, 0):
            said_in = count_messages(prompt() if callable(prompt) else prompt)
        if said_out is not None and not plausible_usage(0, said_out):
            said_out = None
        usage = Usage(
            tokens_in=said_in,
            tokens_out=max(counted, said_out or 0),
            counted_locally=said_out is None or counted > said_out,
        )
        return ChatResult(
            text=text,
            reasoning=reasoning,
            usage=usage,
            finish_reason="length",
            model=self.model,
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            cut_past_cap=True,
        )


def _parts(cached: int, written: int) -> str:
    """A refused usage's cache counts, as the server said them (none: nothing)."""
    parts = [f"{_shown(cached)} cached"] if cached else []
    parts += [f"{_shown(written)} written to the cache"] if written else []
    return f" ({', '.join(parts)})" if parts else ""


def _shown(count: int) -> str:
    """A server's token count as a line can hold it (a 5,000-digit int cannot be a str)."""
    if abs(count) < 10**18:
        return str(count)
    return "> 1e18" if count > 0 else "< -1e18"


class SdkStream(Protocol):
    """An SDK's async stream (``openai.AsyncStream``, ``anthropic.AsyncStream``)."""

    def __aiter__(self) -> AsyncIterator[Any]: ...

    async def close(self) -> None: ...


async def relay(
    open_stream: Callable[[], Awaitable[SdkStream]],
    state: StreamState,
    prompt: Prompt,
    *,
    errors: ErrorMapper,
    clock: Clock,
    cap: int | None = None,
) -> AsyncIterator[Delta | ChatResult]:
    """Yield the deltas of the stream ``open_stream`` opens, then one :class:`ChatResult`.

    Every failure is raised as a :class:`~app.backends.base.BackendError`, outside the
    ``except`` block, so the SDK's exception (whose request carries the key) is not its
    context. Whatever ``open_stream`` raises itself (no key) goes through untouched.

    ``cap``: the ``max_tokens`` the server was sent. A reply that goes past
    :func:`past_cap` of it is ended there: the stream is closed (the server sees the
    connection go) and the result is :meth:`StreamState.capped_result`. Counted cheaply:
    a token is never fewer characters than one, so only the characters are summed per
    delta, and the text is counted (each piece once) only when they could reach the
    limit; a reply within its cap in characters is never counted here.
    """
    t0 = clock.monotonic()
    ttft: float | None = None
    failure = None
    limit = past_cap(cap) if cap is not None else None
    # characters of the reply passed on, and no count before ``count_at`` of them; the
    # reply's text (state.text's first ``seen`` pieces) and the calls' arguments counted
    chars, seen = 0, 0
    count_at = limit
    arguments: list[str] = []
    reply, called = TextCount(), TextCount()
    try:
        items = await open_stream()
        state.started = True
        try:
            async for item in items:
                delta = state.feed(item)
                if delta is not None:
                    if ttft is None:
                        ttft = (clock.monotonic() - t0) * 1000.0
                    yield whole_delta(delta)
                    if count_at is not None:
                        chars += len(delta.text)
                        if delta.tool_calls:
                            for call in delta.tool_calls:
                                arguments.append(call.arguments)
                                chars += len(call.arguments)
                        if chars > count_at:
                            assert limit is not None
                            counted = reply.add("".join(state.text[seen:]))
                            counted += called.add("".join(arguments))
                            seen, arguments = len(state.text), []
                            if counted > limit:
                                state.capped = True
                                break
                            count_at = chars + limit - counted
            if not state.capped and (last := state.end()) is not None:
                yield whole_delta(last)
        finally:
            await items.close()
    except errors.catches as exc:
        failure = errors.map(exc, started=state.started)
    except MALFORMED as exc:
        failure = errors.error("bad_output", f"malformed reply ({type(exc).__name__})")
    if failure is not None:
        raise failure
    latency = (clock.monotonic() - t0) * 1000.0
    yield whole_result(state.result(prompt, errors=errors, latency_ms=latency, ttft_ms=ttft))


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


def no_key_message(key_env: str | None) -> str:
    """Why a cloud backend without its key is unavailable (the key is never shown)."""
    return f"unavailable: no key ({key_env or 'API key'} not set)"
