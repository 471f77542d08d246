"""The one small async protocol every backend speaks.

A call takes messages, optional tools and an optional JSON schema; it streams deltas
(text, reasoning, tool-call fragments), ends with a :class:`ChatResult` carrying the
text, the complete tool calls and the usage (and whether usage was counted by us), and
can be cancelled by cancelling the task that iterates it.

Tool calls are the OpenAI shape, which every protocol maps onto: a call has an id, a
function name and its arguments as the JSON text the model wrote (streamed in fragments,
like OpenAI's ``function.arguments``); a tool result is a ``tool`` message naming the
call it answers. Adapters translate to their API (Anthropic ``tool_use``/``tool_result``
blocks; the in-process model's prompted ``<tool_call>`` blocks). Backends know nothing of roles,
escalation or budgets: they raise :class:`BackendError` with a ``kind`` and the router
decides what to do (retry, fall back, stop) and audits it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from app.errors import BackendUnavailable

ErrorKind = Literal[
    "rate_limited",
    "server_error",
    "timeout",
    "connect",
    "context_length",
    #: the backend refused the request itself as invalid (HTTP 400, 413, 422): the same
    #: request is refused again, so it is never retried, nothing is marked down, and no
    #: other model is tried (the caller is told the backend's words)
    "bad_request",
    "bad_output",
    "auth",
    "no_key",
    "local_only",
    "cancelled",
]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ToolSpec(Frozen):
    """A function the model may call (OpenAI ``tools[].function``)."""

    name: str = Field(min_length=1, max_length=128)
    description: str = ""
    #: JSON schema of the arguments (an object schema)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class ToolCall(Frozen):
    """A call the model made: ``arguments`` is the JSON text it wrote."""

    id: str
    name: str
    arguments: str = "{}"


class Message(Frozen):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    #: an assistant turn's calls (its ``content`` may be empty, or text before them)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    #: a ``tool`` message: the call it answers (``content`` is the result)
    tool_call_id: str | None = None
    #: a tool result may say it is an error (Anthropic's ``is_error``)
    is_error: bool = False
    #: an assistant turn's reasoning as the model streamed it: DeepSeek's and Kimi's
    #: thinking modes refuse a tool-call turn sent back without its ``reasoning_content``
    reasoning: str = ""


#: ``auto``/``none``/``required``, or the name of the one tool the model must call
ToolChoice = str


class ChatRequest(Frozen):
    messages: list[Message]
    max_tokens: int = Field(default=1024, gt=0)
    #: None: not given (a gateway client sent none), so none is sent and the server's own
    #: default applies; the product's roles keep 0.2
    temperature: float | None = Field(default=0.2, ge=0, le=2)
    #: nucleus sampling; None: the server's own default
    top_p: float | None = Field(default=None, ge=0, le=1)
    #: OpenAI's penalties (-2 to 2); None: the server's own default
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    #: a JSON schema for constrained output (GR-012); the backend maps it to its server's
    #: structured-output fields or a llama.cpp grammar
    json_schema: dict[str, Any] | None = None
    #: a GBNF grammar for constrained plain text (the Implementer's edit blocks); the
    #: in-process llama.cpp backend decodes with it, other backends ignore it
    grammar: str | None = None
    seed: int | None = 0
    stop: list[str] = Field(default_factory=list)
    tools: list[ToolSpec] = Field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    #: provider headers a client asked to pass on unchanged (``anthropic-beta``, …); an
    #: adapter sends only the ones its API knows
    passthrough_headers: dict[str, str] = Field(default_factory=dict)


def tools_callable(request: ChatRequest) -> bool:
    """Whether a reply to ``request`` may call a tool: it offers some, and not with
    ``tool_choice`` none. A schema then holds the final answer only (a reply that calls a
    tool is free of it), as OpenAI's structured output with tools."""
    return bool(request.tools) and request.tool_choice != "none"


#: no model's window holds this many tokens (the largest hold ~10M): a provider's usage
#: beyond it, or below zero, is no count of the call (and 1e24 overflowed the ledger)
USAGE_CEILING = 100_000_000


class Usage(Frozen):
    #: the whole prompt, its cached parts included (OpenAI's ``prompt_tokens``; Anthropic's
    #: ``input_tokens`` plus its two cache counts)
    tokens_in: int = Field(ge=0)
    tokens_out: int = Field(ge=0)
    #: of ``tokens_in``, those the provider read from its prompt cache (Anthropic's
    #: ``cache_read_input_tokens``, OpenAI's ``prompt_tokens_details.cached_tokens``,
    #: DeepSeek's ``prompt_cache_hit_tokens``): priced at the model's cache-read price
    tokens_cached: int = Field(default=0, ge=0)
    #: of ``tokens_in``, those the provider wrote to its prompt cache (Anthropic's
    #: ``cache_creation_input_tokens``): priced at the model's cache-write price
    tokens_cache_write: int = Field(default=0, ge=0)
    #: True when the server sent no usage and we counted the tokens ourselves
    counted_locally: bool = False
    #: the usage the server sent when it was not believed ("-5 in / 1e24 out"): counted
    #: here instead, and a cloud call settles at no less than its estimate
    refused: str | None = None


def plausible_usage(
    tokens_in: int, tokens_out: int, tokens_cached: int = 0, tokens_cache_write: int = 0
) -> bool:
    """Whether a server's usage can be this call's: counts in 0..USAGE_CEILING, and the
    prompt's cached parts (read from the cache, written to it) within the prompt (a cache
    read past it would price tokens never sent at the cache's lower rate)."""
    return (
        0 <= tokens_in <= USAGE_CEILING
        and 0 <= tokens_out <= USAGE_CEILING
        and min(tokens_cached, tokens_cache_write) >= 0
        and tokens_cached + tokens_cache_write <= tokens_in
    )


class ToolCallDelta(Frozen):
    """A fragment of the ``index``-th call: id and name come first, arguments in pieces."""

    index: int = Field(ge=0)
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class Delta(Frozen):
    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = Field(default_factory=list)
    #: the request's stop sequence that ended the reply, on the stream's last delta, from
    #: a backend that can tell (as Anthropic's stream says it in its ``message_delta``):
    #: a finish reason of ``stop`` does not say whether the model ended or a stop did
    stop_sequence: str | None = None


class ChatResult(Frozen):
    text: str
    reasoning: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: Usage
    finish_reason: str
    model: str
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    #: how many of the environment's secrets the router masked in this reply (a cloud
    #: reply that sent a key back: :mod:`app.router.reply_mask`); backends leave it 0
    secrets_masked: int = 0
    #: the server went on past the request's ``max_tokens`` (by our count, well past it)
    #: and the relay ended the reply there (:func:`app.backends.provider_common.relay`):
    #: finish ``length``, the usage the larger of the server's and ours
    cut_past_cap: bool = False


class Health(Frozen):
    ok: bool
    detail: str = ""
    latency_ms: float | None = None
    context_window: int | None = None
    models: list[str] = Field(default_factory=list)


class BackendError(BackendUnavailable):
    """A call failed. ``kind`` tells the router which retry rule applies."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        started: bool = False,
        no_answer: bool = False,
        accepted: bool = False,
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.status = status
        self.retry_after = retry_after
        #: the provider's reply had begun (its stream was open) when the transport failed:
        #: the request was taken, and what the model did before the cut (a reasoning
        #: model's hidden thinking too) is billed even when no text came
        self.started = started
        #: the host said nothing at all before the wait ran out (a transport timeout, not
        #: a 408, an error event, or a wait for this process's own connection pool): what
        #: rests the host's other models (app.router.cloud_step)
        self.no_answer = no_answer
        #: a time-out after the provider took the request (connected and the request
        #: written, then no reply within the wait, or a stream gone quiet): it may still be
        #: processed and billed, so a cloud try is settled at its estimate, as a cancelled
        #: call is (app.router.cloud_step); a time-out to connect, or a wait for this
        #: process's own pool, sent nothing and costs nothing
        self.accepted = accepted or (kind == "timeout" and started)


@runtime_checkable
class Backend(Protocol):
    """One model on one runtime or provider."""

    #: catalog model id this backend serves
    model_id: str
    #: where it runs: "vllm", "llamacpp_server", "llamacpp_inprocess", "cloud"
    runtime: str

    def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        """Yield deltas, then exactly one ChatResult. Raise BackendError on failure."""
        ...

    async def health(self) -> Health: ...

    async def context_window(self) -> int | None:
        """The window of the model that actually serves, when the backend can tell."""
        ...

    async def aclose(self) -> None: ...


async def collect(stream: AsyncIterator[Delta | ChatResult]) -> ChatResult:
    """Drain a stream and return its final result."""
    result: ChatResult | None = None
    async for item in stream:
        if isinstance(item, ChatResult):
            result = item
    if result is None:
        raise BackendError("bad_output", "stream ended without a result")
    return result
