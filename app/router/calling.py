"""One backend call: stream it, forward its deltas, retry what the policy says to retry.

A local runtime is never retried here: it is marked down and the runtime chain moves on
at once. A cloud call is retried on rate limits, server errors and timeouts as the
policy's ``[retries]`` say, with a ``retry`` audit line before each wait (never a request
the backend refused as invalid, ``bad_request``: it is refused again). A malformed
protocol message (``bad_output``: a body or chunk that is not the API's JSON) is a server
fault, retried by the server-error rule with the request unchanged. Whether a reply's
*content* fits its schema is not this layer's business: the structured-output owner
(:mod:`app.router.structured`) validates it and makes the one repair (GR-012).

What leaves the machine is masked (:func:`mask_request`, called by the cloud step for
every cloud call, whoever asked: the pipeline, ``switchyard ask``, the gateway). A local
runtime's request is not: vLLM and llama.cpp run on this machine (or on a host the policy
names as local, GR-009), nothing leaves, and the local model may need the real text, a
configuration line it must quote exactly in a diff's context for the diff to apply.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

from app.audit.masking import Masker
from app.backends.base import Backend, BackendError, ChatRequest, ChatResult, Usage
from app.bus import Bus, TokenDelta
from app.policy.schema import Policy
from app.remembered import digest
from app.router.reply_mask import ReplyMasker, quiet, reply_env, whole_passes
from app.router.retry import backoff_delay, rule_for
from app.router.routed import DeltaHook, StreamBroken, Write, request_tokens
from app.tokens import count_text

#: error kinds the router never repeats (a request the backend refused as invalid is
#: refused again: ``bad_request``)
NEVER_RETRIED = frozenset({"context_length", "bad_request", "local_only", "cancelled"})
#: the retry rule for a malformed protocol message: the server's (``retries.bad_output``
#: is the structured owner's repair count, GR-012)
_RULE_KIND = {"bad_output": "server_error"}


def mask_request(
    request: ChatRequest, digest_of: Callable[[str], bytes] = digest
) -> tuple[ChatRequest, int]:
    """``request`` with every secret in it masked, and how many were masked.

    The messages are most of the prompt (a brief quoting a settings file, test output, a
    diff). The rest is masked too: on the gateway the tools, the JSON schema and the stop
    strings are the client's, and a key in a tool's description reached three providers
    (an audit found it; the schema becomes a system message on the Anthropic face). The
    masked request is what the provider receives on every try. A reply cannot give a
    masked value back: a cloud diff whose context quotes a masked line does not apply, and
    fails its loop like any diff that does not apply.
    """
    masker = Masker.from_environment(digest_of=digest_of)
    messages = list(request.messages)
    text = masker.text
    for i, m in enumerate(messages):
        before = masker.count
        # (no call for an empty text or no calls: a conversation of 108 messages is masked
        # on every turn, issue 20)
        content = text(m.content)
        reasoning = text(m.reasoning) if m.reasoning else m.reasoning
        # a tool's result or a call's arguments can quote a file as well
        arguments = [text(c.arguments) for c in m.tool_calls] if m.tool_calls else []
        # and a client's ids and names are its own text (a key in a call's id reached
        # two providers as it was, an audit): each is replaced whole, the same way
        # wherever it stands, so that a call and its result still pair
        calls = (
            [(_masked_name(masker, c.id), _masked_name(masker, c.name)) for c in m.tool_calls]
            if m.tool_calls
            else []
        )
        answers = _masked_name(masker, m.tool_call_id) if m.tool_call_id else m.tool_call_id
        if masker.count == before:
            continue  # nothing in this message: no copy of it
        messages[i] = m.model_copy(
            update={
                "content": content,
                "reasoning": reasoning,
                "tool_call_id": answers,
                "tool_calls": [
                    c.model_copy(update={"arguments": a, "id": ident, "name": name})
                    for c, a, (ident, name) in zip(m.tool_calls, arguments, calls, strict=True)
                ],
            }
        )
    in_messages = masker.count
    rest = _masked_rest(request, masker) if _has_rest(request) else {}
    if not masker.count:
        return request, 0
    update: dict[str, Any] = {"messages": messages} if in_messages else {}
    return request.model_copy(update={**update, **rest}), masker.count


#: the key of the masked names: a masked id is the same within this process (a call and
#: its result pair, turn after turn) and says nothing of the value to anyone else (a
#: plain hash of a short password could be checked against guesses)
_NAME_KEY = os.urandom(16)


def _masked_name(masker: Masker, value: str) -> str:
    """``value`` (a call's id, a tool's name) as it is when it holds no secret, else
    replaced whole by ``redacted_`` and a keyed digest of it: what every protocol's id
    and name patterns take (``[a-zA-Z0-9_-]``), where ``[REDACTED]`` inside an id would
    be refused."""
    before = masker.count
    masker.text(value)
    if masker.count == before:
        return value
    return "redacted_" + hmac.new(_NAME_KEY, value.encode(), "sha256").hexdigest()[:24]


def _has_rest(request: ChatRequest) -> bool:
    return bool(request.tools or request.json_schema or request.stop or request.passthrough_headers)


def _masked_rest(request: ChatRequest, masker: Masker) -> dict[str, Any]:
    """The fields besides the messages that changed when masked (tools, schema, stop
    strings, passed-on headers), for ``model_copy``."""
    out: dict[str, Any] = {}
    text = masker.text
    before = masker.count
    tools = [
        t.model_copy(
            update={
                "name": _masked_name(masker, t.name),
                "description": text(t.description),
                "parameters": masker.walk(t.parameters),
            }
        )
        for t in request.tools
    ]
    choice = request.tool_choice
    if choice is not None and choice not in ("auto", "none", "required"):
        choice = _masked_name(masker, choice)  # (the one tool's name: as its spec's)
    if masker.count != before:
        out["tools"], out["tool_choice"] = tools, choice
    if request.json_schema:
        before = masker.count
        schema = masker.walk(request.json_schema)
        if masker.count != before:
            out["json_schema"] = schema
    before = masker.count
    stop = [text(s) for s in request.stop]
    headers = {k: text(v) for k, v in request.passthrough_headers.items()}
    if masker.count != before:
        out["stop"], out["passthrough_headers"] = stop, headers
    return out


#: why a try is billed with no result standing for it: its reply was cut short after it
#: began, or it timed out after the provider took the request
BilledTry = Literal["cut", "timeout"]


class Billing(Protocol):
    """What the cloud step keeps of a call's tries as :func:`call_backend` makes them (a
    retried try the provider bills cost nothing against the caps: an audit)."""

    #: the tries cut short after their reply had begun, as counted here (the prompt and
    #: the reply before the cut): billed, charged with the call
    cut: list[Usage]
    #: the reply of the try in flight so far (text, reasoning, call arguments): what was
    #: delivered, when the call ends with no result (cancelled, its stream broken)
    got: list[str]

    async def timed_out(self, counted: Usage) -> None:
        """A try timed out after the provider took it (it may have processed and billed
        it): settled at once, a ledger row of its own (``counted``: its prompt and any
        reply before the silence)."""
        ...

    async def before_retry(self, after: BilledTry) -> bool:
        """Asked before a try that follows a billed one: reserve for it. False: no room
        under the caps, no retry (a reservation covers one try)."""
        ...


async def call_backend(
    backend: Backend,
    request: ChatRequest,
    *,
    policy: Policy,
    session: str,
    role: str,
    cloud: bool,
    write: Write,
    on_delta: DeltaHook | None,
    bus: Bus | None,
    sleep: Callable[[float], Awaitable[None]],
    billing: Billing | None = None,
) -> ChatResult:
    """``request`` on ``backend``, retried as the policy says when ``cloud``.

    ``billing``: a cloud try that failed after its reply had begun is billed by the
    provider (the prompt, and what it generated before the cut), though no result stands
    for it: each such try's usage is added to its ``cut``, counted here, for the caller
    to charge. A try that timed out after the provider took the request (sent whole,
    then no reply within the wait, or its stream gone quiet) may be billed as well: it
    is handed to its ``timed_out``. A try that follows either is reserved for first
    (``before_retry``); the reply of the try in flight is kept in its ``got``."""
    attempt = 0
    sent = False  # part of a reply has been passed on: nothing may follow it but its end
    relays = on_delta is not None and getattr(on_delta, "relays", True)
    while True:
        # a cloud reply is read with the environment's keys masked (a provider can send
        # one back), one masker per try: a failed try's held-back end is not the next's
        env = reply_env() if cloud else None
        masker: ReplyMasker | None = None  # (made at the first delta that needs one)
        got: list[str] | None = None
        if cloud and billing is not None:
            got = billing.got
            got.clear()  # (a try before this one is charged already)
        try:
            final: ChatResult | None = None
            async for item in backend.stream(request):
                if isinstance(item, ChatResult):
                    final = item
                    continue
                if got is not None:
                    got += (item.text, item.reasoning, *(c.arguments for c in item.tool_calls))
                passed = [item]
                if env is not None and (masker is not None or not quiet(env, item)):
                    if masker is None:
                        masker = ReplyMasker(env)
                    # none: all of it held back (it may begin a key); or first the held
                    # end of the part it ends (the text before a call)
                    passed = masker.deltas(item)
                for out in passed:
                    if on_delta is not None:
                        if relays:
                            sent = sent or bool(out.text or out.reasoning or out.tool_calls)
                        await on_delta(out)
                    if bus is not None and out.text:
                        await _publish(bus, session, role, backend.model_id, out.text)
            if final is None:
                raise BackendError("bad_output", "stream ended without a result")
            # the ends held back, no key: passed on at the end
            for rest in masker.rest() if masker is not None else ():
                if on_delta is not None:
                    sent = sent or relays
                    await on_delta(rest)
                if bus is not None and rest.text:
                    await _publish(bus, session, role, backend.model_id, rest.text)
            if env is not None and (masker is not None or not whole_passes(env, final)):
                final = (masker or ReplyMasker(env)).result(final)
            return final
        except BackendError as exc:
            if sent and exc.kind != "cancelled":
                # (this try is settled by the caller as a broken stream: not a cut try
                # too, or it was charged twice, a review)
                raise StreamBroken(backend.model_id, exc) from exc
            billed: BilledTry | None = None
            if got is not None and billing is not None:
                if exc.accepted:
                    # the provider took it and said nothing in time (or went quiet
                    # mid-stream): it may be processed and billed all the same, so it is
                    # settled as a cancelled call is, on its own row, before any retry
                    billed = "timeout"
                    await billing.timed_out(_cut_short(request, got))
                elif any(got) or exc.started:
                    # billed: a reply begun (text came), or a stream the provider opened
                    # before the transport failed (a reasoning model thinks unseen)
                    billed = "cut"
                    billing.cut.append(_cut_short(request, got))
            attempt += 1
            if not cloud or exc.kind in NEVER_RETRIED:
                raise
            rule = rule_for(policy, _RULE_KIND.get(exc.kind, exc.kind))
            delay = backoff_delay(rule, attempt, exc.retry_after) if rule else None
            if delay is None:
                raise
            if (
                billed is not None
                and billing is not None
                and not await billing.before_retry(billed)
            ):
                raise  # (no reservation for another billed try: the caps hold)
            await write(
                "retry",
                to=backend.model_id,
                reason_codes=[f"RETRY_{exc.kind.upper()}"],
                values={"attempt": attempt, "delay_s": delay, "status": exc.status},
                detail=f"{backend.model_id}: {exc}; retry {attempt} in {delay:g}s",
            )
            await sleep(delay)


def _cut_short(request: ChatRequest, got: list[str]) -> Usage:
    """What a try cut short is billed for, as counted here: its prompt and the reply's
    text before the cut (the provider's own count never came)."""
    return Usage(
        tokens_in=request_tokens(request),
        tokens_out=count_text("".join(got)),
        counted_locally=True,
    )


async def _publish(bus: Bus, session: str, role: str, model: str, text: str) -> None:
    await bus.publish(TokenDelta(session=session, role=role, model=model, text=text))
