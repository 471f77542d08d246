"""What a routed request returns and how it fails: the result, the errors, the
resolver protocol the router gets its backends from, and small pure helpers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _ascii
from typing import Any, Protocol

from app.audit.types import Appended, AuditLine
from app.backends.base import (
    Backend,
    BackendError,
    ChatRequest,
    ChatResult,
    Delta,
    ToolCall,
    Usage,
)
from app.backends.schema_notes import schema_note
from app.compact_json import encoder
from app.errors import SwitchyardError
from app.remembered import Digests, digest
from app.router.types import Decision, Skip
from app.tokens import count_messages, count_text

RUNTIME_LABEL = {
    "vllm": "vLLM",
    "llamacpp_server": "llama.cpp server",
    "llamacpp_inprocess": "in-process",
    "sentence_transformers": "sentence-transformers",
    "cloud": "cloud",
}

#: each delta of a reply as it comes; a hook passes it on to a reader (a client's stream,
#: the terminal), so once one has gone no retry or fallback may follow (StreamBroken)
DeltaHook = Callable[[Delta], Awaitable[None]]


class Watching:
    """An ``on_delta`` hook that passes nothing on to a reader: it only watches (for the
    stop sequence a non-streamed reply ended on), so a reply it saw may still be retried."""

    relays = False

    def __init__(self, hook: DeltaHook) -> None:
        self.hook = hook

    async def __call__(self, delta: Delta) -> None:
        await self.hook(delta)


#: writes one audit line for the request at hand (role, session and run filled in)
Write = Callable[..., Awaitable[Appended]]


class RouteRefused(SwitchyardError):
    """The router cannot serve this request at all (e.g. CV/Camera, no local runtime)."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        why = "; ".join(decision.notes) or decision.refusal_code or "refused"
        super().__init__(f"{decision.role}: {decision.refusal_code}: {why}")


class RouteStaysLocal(SwitchyardError):
    """``complete(..., cloud_only=True)`` would have served the request locally (no
    trigger, denied, unavailable): raised before any call, so a prompt sized for a cloud
    window never reaches a small local model."""

    def __init__(
        self, decision: Decision, inputs: dict[str, Any] | None = None, req: int | None = None
    ) -> None:
        self.decision = decision
        #: what the decision read (app.router.recorded) when it was the request's first:
        #: then no line carries it, and the caller records it (a ``check``)
        self.inputs = inputs
        #: the seq of the request's first line when the decision wrote some (the cloud
        #: steps it skipped): the caller's check names it in ``values["req"]``, so it is
        #: read with them as one request
        self.req = req
        super().__init__("; ".join(decision.notes) or "the router chose a local model")


#: A route's ``failed`` map says why each step did not serve as ``kind: detail``. These
#: kinds: a model refused the prompt for its size; a cloud model cannot be called at all
#: (no key) or not within the budget, which no retry soon changes.
TOO_LONG = "context_length"
UNAVAILABLE = "unavailable"
OVER_BUDGET = "budget"


def too_long(failed: dict[str, str], last: str | None = None) -> bool:
    """The route failed for the prompt's size: some model refused it for its size (``last``:
    the error kind of the failure at hand, not yet in ``failed``), and every other step
    that failed cannot serve for a lasting reason. A step that failed otherwise (a 500, a
    time-out) might serve a retry. A local runtime that failed is marked down instead (its
    cooldown would keep a retry off it too), so it is not in ``failed``."""
    kinds = [why.partition(":")[0] for why in failed.values()]
    if last is not None:
        kinds.append(last)
    return TOO_LONG in kinds and all(k in (TOO_LONG, UNAVAILABLE, OVER_BUDGET) for k in kinds)


class StreamBroken(SwitchyardError):
    """A backend failed after part of its reply had been passed on (``on_delta``): no
    retry and no other step may continue that reply, which the reader already holds in
    part (a client's stream got the same text twice, and tool calls spliced together).
    """

    def __init__(self, model: str, error: Exception) -> None:
        super().__init__(f"{model} failed after part of its reply was sent: {error}")
        self.model = model
        self.error = error


def tried(
    failed: Mapping[str, str], denied: Iterable[str], skipped: Mapping[str, str] | None = None
) -> str:
    """What became of the steps before the last, for a failure's message: a client told
    only "prompt is too long" for the embedded model never learnt that the cloud step it
    asked for was over budget or denied. ``skipped``: steps the decision passed over
    (their :func:`skip_text`), said when nothing later says more of them."""
    steps = [f"{step}: {why}" for step, why in failed.items()]
    steps += [f"{model}: denied" for model in sorted(set(denied) - set(failed))]
    steps += [
        text
        for model, text in (skipped or {}).items()
        if model not in failed and model not in denied
    ]
    return f"; before it: {'; '.join(steps)}" if steps else ""


class RouteFailed(SwitchyardError):
    """Every step that could serve failed; the last error is attached.

    ``too_long``: each model tried refused the prompt for its size. Asking again will
    not help, so a client is told to shorten the prompt rather than to retry.
    """

    def __init__(self, message: str, *, too_long: bool = False) -> None:
        super().__init__(message)
        self.too_long = too_long


class BadRequest(RouteFailed):
    """A backend refused the request itself as invalid (``bad_request``: HTTP 400, 413,
    422, in its own words): a retry, another runtime or another cloud model would be sent
    the same request, so the route ends there, nothing marked down and nothing more spent.

    ``status``: the backend's HTTP status; ``model``: the model that refused it. The
    message says the backend's words (scrubbed of keys), for the caller to fix the request
    (a gateway client is answered a 400 of its protocol's shape)."""

    def __init__(self, message: str, *, status: int | None, model: str) -> None:
        super().__init__(message)
        self.status = status
        self.model = model


def bad_request(model: str, where: str, error: BackendError, steps: str = "") -> BadRequest:
    """The route's failure when ``model`` on ``where`` (its runtime's or provider's name)
    refused the request as invalid with ``error`` (of kind ``bad_request``); ``steps``:
    what became of the steps before (:func:`tried`)."""
    return BadRequest(
        f"bad request: {where} refused it as invalid ({error}); not retried, and no other "
        f"model tried{steps}",
        status=error.status,
        model=model,
    )


class BackendResolver(Protocol):
    """Where the router gets backends and what it knows about reachability."""

    def backend(self, model_id: str, runtime: str) -> Backend: ...

    def unavailable(self) -> dict[str, str]:
        """Cloud models that cannot be reached at all (e.g. no API key), with why."""
        ...

    async def runtime_up(self, runtime: str) -> bool:
        """A cached health probe of a local runtime."""
        ...

    def context_windows(self) -> dict[str, int]:
        """Windows of models as they actually serve (GGUF metadata, max_model_len)."""
        ...

    def not_served(self) -> dict[str, bool]:
        """``runtime:<id>:<model>`` → False for the models a local runtime that is up does
        not serve (its server lists others)."""
        ...


@dataclass
class RoutedResult:
    text: str
    reasoning: str
    model: str
    runtime: str
    provider: str
    tokens_in: int
    tokens_out: int
    usage_counted_locally: bool
    cost_usd: float
    latency_ms: float
    finish_reason: str
    decision: Decision
    escalated: bool
    approver: str | None = None
    #: what became of the cloud steps a locally served request passed over ("claude-…:
    #: denied; gpt-…: unavailable: no key"), for a caller that says why it stayed local
    passed_over: str = ""
    #: the request's audit lines, in order, as appended (:attr:`audit` reads them)
    appended: list[Appended] = field(default_factory=list)
    #: the calls the model made (finish_reason "tool_calls")
    tool_calls: list[ToolCall] = field(default_factory=list)
    #: of ``tokens_in``: read from the provider's prompt cache, written to it (each priced
    #: at its own rate; a gateway tells its client both in the client's protocol)
    tokens_cached: int = 0
    tokens_cache_write: int = 0

    @property
    def audit(self) -> list[AuditLine]:
        """The request's audit lines, in order: each read from its text when first asked
        for (nothing on the request path asks)."""
        return [appended.line for appended in self.appended]


#: ``json.dumps(.., sort_keys=True, separators=(",", ":"))``
_HASHED = encoder(sort_keys=True, ensure_ascii=True)
#: what the hash says of its recipe (v1's was ``sha256:``: every text as itself)
INPUT_HASH_PREFIX = "sha256v2:"
#: a text this long is hashed by its digest
DIGESTED_FROM = 128


def input_hash(request: ChatRequest, digest_of: Callable[[str], bytes] = digest) -> str:
    """The request's hash for its provenance (GR-013: provenance without the content).

    ``sha256v2:`` and the SHA-256 of ``json.dumps(.., sort_keys=True, separators=(",",
    ":"))`` of the messages' ``model_dump()``, where each text of 128 code points or
    more (``content``, ``reasoning``, a tool call's ``arguments``) is given as
    ``{"sha256": <hex of its UTF-8, lone surrogates passed>}``; a shorter one is itself.
    (v1, ``sha256:``, hashed every text as itself.) A long text is digested once per
    request (``digest_of``: the request's :class:`~app.remembered.Digests`, which its
    count and its masking share), where encoding it as JSON (v1) cost ~2.2 ns a character
    again: ~95 µs of a coding agent's 40 KB conversation, on every turn. A text is never
    an object, so no request hashes as another's digests would.
    """

    def value(text: str) -> str | dict[str, str]:
        return text if len(text) < DIGESTED_FROM else {"sha256": digest_of(text).hex()}

    parts = []
    for m in request.messages:
        if m.tool_calls:
            fields = m.model_dump()
            fields["content"], fields["reasoning"] = value(m.content), value(m.reasoning)
            for call in fields["tool_calls"]:
                call["arguments"] = value(call["arguments"])
            parts.append(_HASHED(fields))
            continue
        # written out by hand, its fields sorted (tests/unit/test_input_hash.py holds the
        # text to json.dumps' of model_dump(): a new field fails it); each text as value()
        # gives it, written in the loop (no call per message: issue 20)
        content, reasoning = m.content, m.reasoning
        content = (
            _ascii(content)
            if len(content) < DIGESTED_FROM
            else f'{{"sha256":"{digest_of(content).hex()}"}}'
        )
        reasoning = (
            _ascii(reasoning)
            if len(reasoning) < DIGESTED_FROM
            else f'{{"sha256":"{digest_of(reasoning).hex()}"}}'
        )
        call_id = "null" if m.tool_call_id is None else _ascii(m.tool_call_id)
        parts.append(
            f'{{"content":{content},"is_error":{"true" if m.is_error else "false"},'
            f'"reasoning":{reasoning},"role":{_ascii(m.role)},'
            f'"tool_call_id":{call_id},"tool_calls":[]}}'
        )
    blob = "[" + ",".join(parts) + "]"
    return INPUT_HASH_PREFIX + hashlib.sha256(blob.encode()).hexdigest()


def request_tokens(request: ChatRequest, digest_of: Callable[[str], bytes] = digest) -> int:
    """The prompt's tokens by the shared counter (the ``context_estimate`` signal): the
    messages, the calls and results they carry, and the tools on offer (a JSON schema's
    note, which only a cloud model is sent, is :func:`schema_tokens`). (``digest_of``
    shares the messages' texts with the hash and the masking; a call is counted as its
    name and arguments joined, a text of its own.) With a request's ``Digests``, a
    second count of the same messages and tools is the first's."""
    memo = digest_of if isinstance(digest_of, Digests) else None
    key = (id(request.messages), id(request.tools))
    if memo is not None and (found := memo.counts.get(key)) is not None:
        return found
    texts = [m.content for m in request.messages]
    texts += [m.reasoning for m in request.messages if m.reasoning]
    texts += [f"{c.name} {c.arguments}" for m in request.messages for c in m.tool_calls]
    if request.tools:
        texts.append(json.dumps([t.model_dump() for t in request.tools], separators=(",", ":")))
    tokens = count_messages(texts, digest_of)
    if memo is not None:
        memo.counts[key] = tokens
        memo.hold(request.messages, request.tools)
    return tokens


def schema_tokens(request: ChatRequest) -> int:
    """The tokens of the note a cloud model is sent with ``request``'s JSON schema (its
    whole text: app.backends.schema_notes); 0 without one."""
    note = schema_note(request)
    return 0 if note is None else count_text(note)


def skip_text(skip: Skip) -> str:
    if skip.detail.startswith(skip.reason):
        return f"{skip.model}: {skip.detail}"
    reason = skip.reason.replace("_", " ")
    return f"{skip.model}: {reason}{(' — ' + skip.detail) if skip.detail else ''}"


def cache_values(usage: Usage) -> dict[str, int]:
    """A line's account of the prompt's cached parts, beside its ``tokens_in`` (which
    holds them): none when the provider reported none (a line as it always was)."""
    out = {}
    if usage.tokens_cached:
        out["tokens_cached"] = usage.tokens_cached
    if usage.tokens_cache_write:
        out["tokens_cache_write"] = usage.tokens_cache_write
    return out


def tokens_text(tokens_in: int, tokens_out: int, cached: int = 0, written: int = 0) -> str:
    """``"100010 in (100000 cached) / 7 out"``: a line's detail of a call's tokens."""
    parts = [f"{cached} cached"] if cached else []
    parts += [f"{written} written to the cache"] if written else []
    held = f" ({', '.join(parts)})" if parts else ""
    return f"{tokens_in} in{held} / {tokens_out} out"


def call_values(result: ChatResult, cost: float) -> dict[str, Any]:
    return {
        "tokens_in": result.usage.tokens_in,
        **cache_values(result.usage),
        "tokens_out": result.usage.tokens_out,
        "usage_counted_locally": result.usage.counted_locally,
        **({"usage_refused": result.usage.refused} if result.usage.refused else {}),
        "latency_ms": round(result.latency_ms, 1),
        "cost_usd": round(cost, 9),
        "finish_reason": result.finish_reason,
        **({"tool_calls": len(result.tool_calls)} if result.tool_calls else {}),
        **({"reply_secrets_masked": result.secrets_masked} if result.secrets_masked else {}),
        # the server ignored max_tokens: the relay ended the reply well past it
        **({"cut_past_max_tokens": True} if result.cut_past_cap else {}),
    }


def cut_note(result: ChatResult) -> str:
    """What a call line's detail adds when the relay cut the reply off past its cap."""
    if not result.cut_past_cap:
        return ""
    return "; the server went on past max_tokens: cut off there"


def routed(d: Decision, result: ChatResult, cost: float, *, escalated: bool) -> RoutedResult:
    assert d.target is not None
    return RoutedResult(
        text=result.text,
        reasoning=result.reasoning,
        model=d.target,
        runtime=d.runtime or "",
        provider=d.provider or "local",
        tokens_in=result.usage.tokens_in,
        tokens_out=result.usage.tokens_out,
        usage_counted_locally=result.usage.counted_locally,
        cost_usd=cost,
        latency_ms=result.latency_ms,
        finish_reason=result.finish_reason,
        decision=d,
        escalated=escalated,
        tool_calls=list(result.tool_calls),
        tokens_cached=result.usage.tokens_cached,
        tokens_cache_write=result.usage.tokens_cache_write,
    )
