"""The gateway's ASGI application (Starlette): routes, authentication, limits, and the
streaming of one request's events in its protocol's shape.

Every request goes through the router (decide, approval, budget, audit, the local_only
transport); this module only parses, calls :func:`app.gateway.flow.run_request`, and
renders. Streams are written chunk by chunk as the backend sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.backends.base import Delta, Message
from app.bus import RequestServed
from app.errors import SwitchyardError
from app.gateway import anthropic_out as ant
from app.gateway import ignored
from app.gateway import openai_out as oai
from app.gateway.embeddings import check_dimensions, embeddings_reply, parse_embeddings
from app.gateway.errors import GatewayError, Protocol, error_body, error_headers
from app.gateway.flow import (
    Done,
    KeepAlive,
    Stopping,
    log,
    new_request_id,
    run_request,
    store_down,
)
from app.gateway.ids import resolve_model, served_ids
from app.gateway.inbound import (
    Inbound,
    parse_chat,
    parse_count_tokens,
    parse_messages,
    parse_responses,
)
from app.gateway.signals import header_values, signals_for
from app.hosts import host_port, is_address, is_loopback_name, is_numeric_ipv4, parse_host_port
from app.router.routed import request_tokens
from app.router.session import Session
from app.tokens import count_messages

if TYPE_CHECKING:
    from app.memory.embeddings import SaidOnce

#: request bodies above this are refused with 413 (Claude Code's long sessions stay far
#: below: 200k tokens of text is about 1 MB)
DEFAULT_MAX_BODY = 16 * 1024 * 1024
#: responses kept for ``previous_response_id`` while the server runs
KEPT_RESPONSES = 256

_T = TypeVar("_T")


@dataclass
class GatewayConfig:
    max_body_bytes: int = DEFAULT_MAX_BODY
    #: every request must carry it (Authorization: Bearer, or x-api-key) when set
    token: str | None = None


@dataclass
class _State:
    session: Session
    config: GatewayConfig
    stopping: Stopping
    responses: OrderedDict[str, list[Message]] = field(default_factory=OrderedDict)
    #: the embedder's degradation line, said once per change of state (made at the first
    #: embeddings request: the memory module imports numpy)
    embeddings_said: SaidOnce | None = None


def build_app(
    session: Session, config: GatewayConfig | None = None, stopping: Stopping | None = None
) -> Starlette:
    """``stopping``: set by the server as it stops; the requests in flight end on it."""
    state = _State(session, config or GatewayConfig(), stopping or Stopping())

    def route(
        protocol: Protocol | None, handler: Callable[[_State, Request], Any]
    ) -> Callable[..., Any]:
        """``protocol`` None: the client's own, from its headers (the models endpoints
        are shared by both SDKs)."""

        async def endpoint(request: Request) -> Response:
            spoken = protocol or _protocol_of(request)
            try:
                _authenticate(state, request)
                _not_from_a_web_page(state, request)
                result: Response = await handler(state, request)
                return result
            except GatewayError as err:
                if not err.audited:
                    await _rejected(state, request, spoken, err)
                return JSONResponse(
                    error_body(spoken, err), status_code=err.status, headers=error_headers(err)
                )
            except SwitchyardError as exc:  # a store gone away where no step said so
                down = store_down(exc)
                await _rejected(state, request, spoken, down)
                return JSONResponse(error_body(spoken, down), status_code=down.status)

        return endpoint

    routes = [
        Route("/v1/chat/completions", route("chat", _chat), methods=["POST"]),
        Route("/v1/responses", route("responses", _responses), methods=["POST"]),
        Route("/v1/messages", route("messages", _messages), methods=["POST"]),
        Route("/v1/messages/count_tokens", route("messages", _count_tokens), methods=["POST"]),
        Route("/v1/models", route(None, _models), methods=["GET"]),
        Route("/v1/models/{model_id:path}", route(None, _model), methods=["GET"]),
        Route("/v1/embeddings", route("chat", _embeddings), methods=["POST"]),
        Route("/health", _health, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _no_route})


def _protocol_of(request: Request) -> Protocol:
    """The protocol a request speaks where the path does not say (the anthropic SDK
    always sends ``anthropic-version``)."""
    path = request.url.path
    if path.startswith("/v1/messages") or "anthropic-version" in request.headers:
        return "messages"
    return "responses" if path.startswith("/v1/responses") else "chat"


async def _no_route(request: Request, exc: Exception) -> Response:
    """An unknown path or method, answered in the client's error shape (an SDK reads a
    plain-text body as an unknown error); not audited, as nothing was asked of a model."""
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 405:
        err = GatewayError(405, "invalid_request", f"{where}: method not allowed")
    elif exc.status_code == 404:
        err = GatewayError(404, "not_found", f"{where}: no such endpoint")
    else:
        err = GatewayError(exc.status_code, "invalid_request", f"{where}: {exc.detail}")
    return JSONResponse(
        error_body(_protocol_of(request), err),
        status_code=err.status,
        headers={**(exc.headers or {}), **error_headers(err)},
    )


async def _rejected(state: _State, request: Request, protocol: Protocol, err: GatewayError) -> None:
    """A request refused before routing (bad input, a wrong token, an unknown model, too
    large) is one audit line too, and shows in the workbench's requests view."""
    rid = new_request_id()
    client = _client(request)
    session = state.session
    try:
        await session.audit.append(
            "request",
            session=session.id,
            run=rid,
            reason_codes=["GATEWAY_REJECTED"],
            values={
                "protocol": protocol,
                "path": request.url.path,
                "client": client,
                "status": err.status,
                "error": err.kind,
            },
            detail=f"{client}: {request.url.path} refused ({err.status}): {err.message[:200]}",
        )
    except SwitchyardError as exc:  # the refusal stands; only its line is lost
        log.warning("%s refused (%s); its audit line was not written: %s", rid, err.status, exc)
    if session.bus is not None:
        session.bus.publish_nowait(
            RequestServed(
                session=session.id,
                request=rid,
                protocol=protocol,
                client=client,
                model_asked="",
                role="",
                status=err.status,
                outcome=err.message[:200],
            )
        )


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _authenticate(state: _State, request: Request) -> None:
    token = state.config.token
    if token is None:
        return
    # Either header may carry it: Claude Code sends both when ANTHROPIC_API_KEY is set in
    # the shell and ANTHROPIC_AUTH_TOKEN is the gateway's (the key alone was compared)
    given = [request.headers.get("x-api-key") or ""]
    auth = request.headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        given.append(auth[7:].strip())
    expected = token.encode()
    if not any(g and secrets.compare_digest(g.encode(), expected) for g in given):
        raise GatewayError(401, "authentication", "missing or wrong gateway token")


def _not_from_a_web_page(state: _State, request: Request) -> None:
    """Refuse what only a browser sends, when no token guards the gateway.

    With no token, anything that reaches 127.0.0.1 is served, and a web page can reach it:
    a form's or ``fetch``'s POST (no preflight for ``text/plain``) spends the budget under
    an approval the session already holds, and DNS rebinding (a name that resolves to
    127.0.0.1) lets the page read replies too. A browser names the page in ``Origin`` on
    every POST, and a rebound name in ``Host``; the clients this serves (SDKs, Codex,
    Claude Code, aider) send neither. A token is the guard when one is set (a page cannot
    learn it)."""
    if state.config.token is not None:
        return
    origin = request.headers.get("origin")
    if origin is not None:
        hp = host_port(origin) if origin != "null" else None
        if hp is None or not is_loopback_name(hp[0]):
            raise GatewayError(
                403,
                "refused",
                f"requests from a web page are refused (Origin: {origin[:80]!r}); "
                "give the gateway a token (--token) to serve one",
            )
    host = request.headers.get("host") or ""
    hp = parse_host_port(host) if host else None
    name = hp[0] if hp else ""
    # an address in any spelling (``127.1`` as curl sends it) is not a rebound name
    if host and not (is_loopback_name(name) or is_address(name) or is_numeric_ipv4(name)):
        raise GatewayError(
            403,
            "refused",
            f"Host {host[:80]!r} is refused: a name that is not localhost reaches a "
            "gateway without a token only by DNS rebinding (give the gateway a token, "
            "--token, to serve it by name)",
        )


async def _body(state: _State, request: Request) -> Any:
    _json_content(request)
    limit = state.config.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise GatewayError(413, "too_large", f"request body over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise GatewayError(413, "too_large", f"request body over the {limit}-byte limit")
            chunks.append(chunk)
    except ClientDisconnect:  # gone while still sending: a 500 and a traceback before
        raise GatewayError(CLIENT_GONE, "invalid_request", "client went away") from None
    return parse_json(b"".join(chunks))


def _json_content(request: Request) -> None:
    """Refuse a body its sender says is not JSON.

    ``text/plain``, a form (``application/x-www-form-urlencoded``, ``multipart/form-data``)
    are what a web page may send to another origin without a preflight, and were served
    as JSON. No Content-Type at all, or JSON with parameters (``; charset=utf-8``), is
    still read as JSON (clients and ``curl -H`` do both)."""
    given = request.headers.get("content-type", "").strip()
    media = given.split(";", 1)[0].strip().lower()
    if not media or media == "application/json" or media.endswith("+json"):
        return
    raise GatewayError(
        415,
        "invalid_request",
        f"Content-Type {given[:80]!r} is not accepted: send the body as application/json",
    )


def parse_json(raw: bytes) -> Any:
    """The body as JSON, or a 400 for whatever the decoder refuses: bad syntax or UTF-8,
    nesting past the recursion limit, an integer past Python's digit limit."""
    try:
        return json.loads(raw or b"null")
    except RecursionError:
        raise GatewayError(400, "invalid_request", "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        # the digit limit's message ends in advice for Python programmers: not for a client
        said = str(exc).partition("; use sys.set_int_max_str_digits")[0]
        raise GatewayError(400, "invalid_request", f"malformed JSON: {said}") from None


def _client(request: Request) -> str:
    agent = request.headers.get("user-agent") or "unknown client"
    session = request.headers.get("x-claude-code-session-id")
    return f"{agent} (session {session})" if session else agent


# ── the three protocols ──────────────────────────────────────────────────────────────────


async def _prepared(
    state: _State, request: Request, inbound: Inbound, prompt: int | None = None
) -> tuple[str, Any, str, str]:
    """``prompt``: the request's tokens when the gateway counted them already (the router
    takes them as its ``context_estimate``, rather than count the prompt a second time)."""
    policy = state.session.policy
    resolved = resolve_model(policy, inbound.model)
    role = policy.roles.get(resolved.role)
    if inbound.cap_unset and role is not None:
        # (cap_unset stays: the role's cap is not the client's, which a repair may not pass)
        inbound.request = inbound.request.model_copy(update={"max_tokens": role.max_output_tokens})
    signals = signals_for(
        inbound.request,
        header_values(request.headers, "x-switchyard-signal"),
        user_request=resolved.user_request,
        heavy_actions=policy.tool_use.librarian_heavy_actions,
        escalate_header=request.headers.get("x-switchyard-escalate"),
    )
    if signals.context_estimate is not None:
        # A client's context_estimate may raise the prompt's size (it knows of more to
        # come), never lower it: the router prices the call and reserves the budget on it,
        # and "1" let a 91k-token prompt past a $0.01 cap and the window's check.
        counted = prompt if prompt is not None else request_tokens(inbound.request, inbound.digests)
        signals = signals.with_estimate(max(counted, signals.context_estimate))
    elif prompt is not None:
        signals = signals.with_estimate(prompt)
    passthrough = {
        k: v for k, v in request.headers.items() if k in ("anthropic-beta", "anthropic-version")
    }
    if passthrough:
        inbound.request = inbound.request.model_copy(update={"passthrough_headers": passthrough})
    return resolved.role, signals, new_request_id(), _client(request)


def served_headers(done: Done) -> dict[str, str]:
    """Who served a whole (non-streamed) reply, beside the body that names the model id
    asked for: a client that asked for ``implementer+escalate`` and was served locally
    (denied, or the cloud unreachable) could not tell from the reply."""
    r = done.result
    return {
        "x-switchyard-model": r.model,
        "x-switchyard-runtime": r.runtime,
        "x-switchyard-escalated": "true" if r.escalated else "false",
    }


def ignored_header(inbound: Inbound) -> dict[str, str]:
    """The fields of the request carried to no backend, named (:mod:`app.gateway.ignored`)."""
    return {ignored.HEADER: ",".join(inbound.ignored)} if inbound.ignored else {}


def _served(
    state: _State,
    rid: str,
    inbound: Inbound,
    role: str,
    client: str,
    done: Done | None,
    status: int,
    outcome: str,
    t0: float,
) -> None:
    """The workbench's requests view hears of every request as it ends."""
    r = done.result if done else None
    bus = state.session.bus
    if bus is None:
        return
    bus.publish_nowait(
        RequestServed(
            session=state.session.id,
            request=rid,
            protocol=inbound.protocol,
            client=client,
            model_asked=inbound.model,
            role=role,
            model=r.model if r else None,
            runtime=r.runtime if r else None,
            escalated=bool(r and r.escalated),
            status=status,
            outcome=outcome,
            tokens_in=r.tokens_in if r else 0,
            tokens_out=r.tokens_out if r else 0,
            cost_usd=r.cost_usd if r else 0.0,
            latency_ms=(time.perf_counter() - t0) * 1000,
        )
    )


async def _events(
    state: _State, request: Request, inbound: Inbound, prompt: int | None = None
) -> tuple[str, str, str, AsyncIterator[Delta | KeepAlive | Done]]:
    role, signals, rid, client = await _prepared(state, request, inbound, prompt)
    events = run_request(
        state.session,
        inbound,
        role,
        signals,
        request_id=rid,
        client=client,
        keepalive_s=state.session.policy.gateway.keepalive_s,
        stopping=state.stopping,
    )
    return role, rid, client, events


async def _collect(events: AsyncIterator[Delta | KeepAlive | Done]) -> Done:
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        async for event in events:
            if isinstance(event, Done):
                return event
    raise GatewayError(502, "upstream", "the request ended without a result")


#: the status a request whose client hung up is recorded with (nginx's, as the
#: streaming path's closing audit line has it)
CLIENT_GONE = 499


async def _whole(
    state: _State,
    request: Request,
    rid: str,
    inbound: Inbound,
    role: str,
    client: str,
    events: AsyncIterator[Delta | KeepAlive | Done],
    t0: float,
) -> Done | None:
    """A non-streamed request's result; None when the client hung up first.

    Nothing is written until the reply is whole, so no failed write can tell that the
    client left: the server's ``http.disconnect`` is watched instead, and the request is
    cancelled on it as a stream is (its closing audit line says the client went away).
    """
    finished, done = await _until_hung_up(
        state, request, rid, inbound, role, client, t0, _collect(events)
    )
    if not finished or done is None:
        return None
    _served(state, rid, inbound, role, client, done, 200, "ok", t0)
    return done


async def _until_hung_up(
    state: _State,
    request: Request,
    rid: str,
    inbound: Inbound,
    role: str,
    client: str,
    t0: float,
    work: Awaitable[_T],
) -> tuple[bool, _T | None]:
    """``(True, work's result)``, or ``(False, None)`` when the client hung up first: the
    work is cancelled then, its clean-up (the request's closing line) waited for, and the
    request recorded as gone. A :class:`GatewayError` from the work is recorded, raised.
    """
    task = asyncio.ensure_future(work)
    watching = asyncio.ensure_future(_hung_up(request))
    try:
        await asyncio.wait((task, watching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
        if not task.done():
            task.cancel()
            # wait(), not gather(): this task cancelled again (the server stopping) must
            # not cancel the request's clean-up, its closing audit line, half-way
            await asyncio.wait((task,))
    if task.cancelled():
        _served(state, rid, inbound, role, client, None, CLIENT_GONE, "client went away", t0)
        return False, None
    try:
        return True, task.result()
    except GatewayError as err:
        _served(state, rid, inbound, role, client, None, err.status, err.message, t0)
        raise


async def _hung_up(request: Request) -> None:
    """Returns once the client has disconnected (the body has been read whole, so the
    server has nothing else to say)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _started(
    state: _State,
    request: Request,
    rid: str,
    inbound: Inbound,
    role: str,
    client: str,
    events: AsyncIterator[Delta | KeepAlive | Done],
    t0: float,
) -> AsyncIterator[Delta | KeepAlive | Done] | None:
    """``events`` with its first event already awaited, before the response starts; None
    when the client hung up first.

    A request that fails before any output (a prompt too long for every model, a refusal,
    nothing up) then gets its own HTTP status and error body, as the providers send them,
    instead of a 200 and an error inside the stream, which clients read as a broken
    connection and retry. The wait is bounded: the first event is a delta, the end, or
    the keep-alive (the policy's ``gateway.keepalive_s``). Nothing is written meanwhile,
    so the client's ``http.disconnect`` is watched, as :func:`_whole` does: a stream whose
    client had gone kept its approval asked until the first keep-alive, and a "y" sent
    it to the cloud, billed (a user audit).
    """
    finished, first = await _until_hung_up(
        state, request, rid, inbound, role, client, t0, _first(events)
    )
    if not finished:
        return None

    async def resumed() -> AsyncIterator[Delta | KeepAlive | Done]:
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            if first is not None:
                yield first
            async for event in events:
                yield event

    return resumed()


async def _first(
    events: AsyncIterator[Delta | KeepAlive | Done],
) -> Delta | KeepAlive | Done | None:
    """The first of ``events``; None when there is none."""
    try:
        return await anext(events)
    except StopAsyncIteration:
        return None


def _structured_text(done: Done) -> str:
    """A structured reply is released whole, once it validated (GR-012), or cut off at the
    client's cap and said to be (flow.CUT_OFF)."""
    return done.result.text if done.value is not None else ""


async def _chat(state: _State, request: Request) -> Response:
    inbound = parse_chat(await _body(state, request))
    role, rid, client, events = await _events(state, request, inbound)
    completion_id = "chatcmpl-" + rid[3:]
    t0 = time.perf_counter()
    if not inbound.stream:
        done = await _whole(state, request, rid, inbound, role, client, events, t0)
        if done is None:
            return Response(status_code=CLIENT_GONE)
        return JSONResponse(
            oai.chat_completion(completion_id, inbound.model, done.result),
            headers={**served_headers(done), **ignored_header(inbound)},
        )
    started = await _started(state, request, rid, inbound, role, client, events, t0)
    if started is None:
        return Response(status_code=CLIENT_GONE)
    events = started
    enc = oai.ChatStream(completion_id, inbound.model, include_usage=inbound.include_usage)

    async def body() -> AsyncIterator[bytes]:
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            try:
                async for event in events:
                    if isinstance(event, KeepAlive):
                        yield b": keep-alive\n\n"
                    elif isinstance(event, Done):
                        _served(state, rid, inbound, role, client, event, 200, "ok", t0)
                        for chunk in enc.done(event.result, _structured_text(event)):
                            yield oai.sse(chunk)
                    else:
                        for chunk in enc.delta(event):
                            yield oai.sse(chunk)
            except GatewayError as err:
                _served(state, rid, inbound, role, client, None, err.status, err.message, t0)
                yield oai.sse(error_body("chat", err))
        yield b"data: [DONE]\n\n"

    return _stream(body(), ignored_header(inbound))


async def _responses(state: _State, request: Request) -> Response:
    inbound = parse_responses(await _body(state, request))
    earlier: list[Message] = []
    if inbound.previous_response_id is not None:
        kept = state.responses.get(inbound.previous_response_id)
        if kept is None:
            raise GatewayError(
                400,
                "invalid_request",
                f"previous_response_id {inbound.previous_response_id!r} is not known: this "
                "server keeps responses only while it runs (send the whole input instead)",
                param="previous_response_id",
            )
        earlier = kept
    # A previous response's instructions are not carried over (OpenAI's semantics): the
    # kept conversation holds none, and this request's own lead it. System or developer
    # messages sent in ``input`` are the conversation's, and are kept with it.
    lead = inbound.request.messages[:1] if inbound.instructions is not None else []
    conversation = [*earlier, *inbound.request.messages[len(lead) :]]
    if earlier:
        inbound.request = inbound.request.model_copy(update={"messages": [*lead, *conversation]})
    role, rid, client, events = await _events(state, request, inbound)
    response_id = "resp_" + rid[3:]
    t0 = time.perf_counter()

    def keep(done: Done) -> None:
        if not inbound.extra["store"]:
            return  # store: false: not kept, and a later previous_response_id to it is unknown
        reply = Message(
            role="assistant", content=done.result.text, tool_calls=done.result.tool_calls
        )
        state.responses[response_id] = [*conversation, reply]
        while len(state.responses) > KEPT_RESPONSES:
            state.responses.popitem(last=False)

    if not inbound.stream:
        done = await _whole(state, request, rid, inbound, role, client, events, t0)
        if done is None:
            return Response(status_code=CLIENT_GONE)
        keep(done)
        body = oai.response_complete(
            response_id,
            inbound.model,
            done.result,
            inbound.previous_response_id,
            custom=frozenset(inbound.extra.get("custom_tools", ())),
            namespaces=inbound.extra.get("namespaces"),
            echo=inbound.extra["echo"],
        )
        return JSONResponse(body, headers={**served_headers(done), **ignored_header(inbound)})
    started = await _started(state, request, rid, inbound, role, client, events, t0)
    if started is None:
        return Response(status_code=CLIENT_GONE)
    events = started
    enc = oai.ResponsesStream(
        response_id,
        inbound.model,
        inbound.previous_response_id,
        custom=frozenset(inbound.extra.get("custom_tools", ())),
        namespaces=inbound.extra.get("namespaces"),
        echo=inbound.extra["echo"],
    )

    async def stream() -> AsyncIterator[bytes]:
        for kind, event in enc.start():
            yield oai.sse(event, kind)
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            try:
                async for item in events:
                    if isinstance(item, KeepAlive):
                        yield b": keep-alive\n\n"
                    elif isinstance(item, Done):
                        keep(item)
                        _served(state, rid, inbound, role, client, item, 200, "ok", t0)
                        for kind, event in enc.finish(item.result, _structured_text(item)):
                            yield oai.sse(event, kind)
                    else:
                        for kind, event in enc.delta(item):
                            yield oai.sse(event, kind)
            except GatewayError as err:
                _served(state, rid, inbound, role, client, None, err.status, err.message, t0)
                failed = {
                    "type": "response.failed",
                    "sequence_number": enc.seq,
                    "response": {
                        **enc._response("failed", None),
                        "error": {"code": err.code or err.kind, "message": err.message},
                    },
                }
                yield oai.sse(failed, "response.failed")

    return _stream(stream(), ignored_header(inbound))


async def _messages(state: _State, request: Request) -> Response:
    inbound = parse_messages(await _body(state, request))
    # One count of the prompt the router routed, tools included: count_tokens says it, a
    # stream's message_start says it before any backend has counted, and every usage
    # says it where the backend reported none (the final usage is the backend's when it
    # did: anthropic_out.input_usage). The router takes it as its context estimate.
    counting = time.perf_counter()
    prompt = request_tokens(inbound.request, inbound.digests)
    counted = time.perf_counter() - counting
    role, rid, client, events = await _events(state, request, inbound, prompt)
    # timed from here, as the other protocols are, the count included as it always was
    t0 = time.perf_counter() - counted
    message_id = "msg_" + rid[3:]
    if not inbound.stream:
        done = await _whole(state, request, rid, inbound, role, client, events, t0)
        if done is None:
            return Response(status_code=CLIENT_GONE)
        return JSONResponse(
            ant.message_object(message_id, inbound.model, done.result, prompt, done.stop_sequence),
            headers={**served_headers(done), **ignored_header(inbound)},
        )
    started = await _started(state, request, rid, inbound, role, client, events, t0)
    if started is None:
        return Response(status_code=CLIENT_GONE)
    events = started
    enc = ant.MessagesStream(message_id, inbound.model, prompt)

    async def stream() -> AsyncIterator[bytes]:
        for kind, event in enc.start():
            yield oai.sse(event, kind)
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            try:
                async for item in events:
                    if isinstance(item, KeepAlive):
                        yield oai.sse({"type": "ping"}, "ping")
                    elif isinstance(item, Done):
                        _served(state, rid, inbound, role, client, item, 200, "ok", t0)
                        finish = enc.finish(item.result, _structured_text(item), item.stop_sequence)
                        for kind, event in finish:
                            yield oai.sse(event, kind)
                    else:
                        for kind, event in enc.delta(item):
                            yield oai.sse(event, kind)
            except GatewayError as err:
                _served(state, rid, inbound, role, client, None, err.status, err.message, t0)
                yield oai.sse(error_body("messages", err), "error")

    return _stream(stream(), ignored_header(inbound))


async def _count_tokens(state: _State, request: Request) -> Response:
    body = await _body(state, request)
    prompt = parse_count_tokens(body)
    # the model a request naming it would be served by, or the 404 it would get: any
    # name was counted (``gpt-4o`` too), where /v1/messages said no such model
    model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(model, str) or not model:
        raise GatewayError(400, "invalid_request", "model: required", param="model")
    resolve_model(state.session.policy, model)
    return JSONResponse({"input_tokens": request_tokens(prompt)})


def model_entry(model_id: str, created: int) -> dict[str, Any]:
    """One model in the shape both SDKs read: OpenAI's ``object``/``created``/``owned_by``
    and Anthropic's ``type``/``display_name``/``created_at``."""
    at = datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z")
    return {
        "id": model_id,
        "object": "model",
        "created": created,
        "owned_by": "switchyard",
        "type": "model",
        "display_name": model_id,
        "created_at": at,
    }


async def _models(state: _State, request: Request) -> Response:
    created = int(time.time())
    data = [model_entry(i, created) for i in served_ids(state.session.policy)]
    return JSONResponse({"object": "list", "data": data, "has_more": False})


async def _model(state: _State, request: Request) -> Response:
    """``GET /v1/models/{id}``: any id a request may name (a role, ``auto``, an alias or
    a name an alias pattern matches), or the 404 a request naming it would get."""
    model_id = str(request.path_params["model_id"])
    resolve_model(state.session.policy, model_id)
    return JSONResponse(model_entry(model_id, int(time.time())))


async def _embeddings(state: _State, request: Request) -> Response:
    """OpenAI's embeddings, made by the local embedding model (the memory's) whatever the
    model id: clients send an embedding model's (LangChain and llama-index default to
    ``text-embedding-ada-002``), and nothing leaves the machine, so no id is refused (a
    404 for them broke those clients: a review). The id is required, a string, and
    audited as asked; its role is chat's reading of it when it names one. The request is
    read, and its reply written, by :mod:`app.gateway.embeddings`."""
    asking = parse_embeddings(await _body(state, request))
    asked, texts = asking.model, list(asking.texts)
    session = state.session
    try:
        role = resolve_model(session.policy, asked).role
    except GatewayError:
        role = "embeddings"  # (an embedding model's id: the role that embeds)
    from app.memory.embeddings import EmbeddingsUnavailable, SaidOnce, choose_embedder

    rid = new_request_id()
    t0 = time.perf_counter()
    said = state.embeddings_said
    if said is None:
        said = state.embeddings_said = SaidOnce()
    # The embedder is chosen on every request (a model put in the cache serves from the
    # next), its degradation line said once per gateway while what is in force stays the
    # same (each request wrote one), and only once the choice serves: a request refused
    # before any embedding is made (its dimensions) writes none.
    embedder, degraded = await choose_embedder(session.policy)
    if embedder is None:
        await said.before_use(degraded, session.audit, session=session.id, run=rid)
        raise GatewayError(503, "unavailable", "no local embedding model can be loaded")
    check_dimensions(asking.dimensions, embedder.key.model_id, embedder.key.dim)
    await said.before_use(degraded, session.audit, session=session.id, run=rid)
    try:
        vectors = await asyncio.to_thread(embedder.embed, texts)
    except EmbeddingsUnavailable as exc:  # (it read as the audit store gone away)
        raise GatewayError(503, "unavailable", f"the embedding model failed: {exc}") from None
    tokens = count_messages(texts)
    client = _client(request)
    model = embedder.key.model_id
    latency_ms = (time.perf_counter() - t0) * 1000
    # One line, not chat's two: nothing is routed, approved or paid for in between, so
    # who asked and how it ended are known together (a refusal has its own line, as
    # every endpoint's has). Written before the vectors go out, as chat's closing line is.
    await session.audit.append(
        "request",
        session=session.id,
        run=rid,
        role=role,
        reason_codes=["GATEWAY_DONE"],
        values={
            "protocol": "embeddings",
            "path": request.url.path,
            "asked": asked,
            "client": client,
            "inputs": len(texts),
            "outcome": "ok",
            "status": 200,
            "model": model,
            "runtime": "sentence-transformers",
            "tokens_in": tokens,
            "tokens_out": 0,
            "cost_usd": 0.0,
            "latency_ms": round(latency_ms, 1),
        },
        detail=f"{client}: embeddings {asked} → {model}: {len(texts)} inputs, {tokens} tokens",
    )
    if session.bus is not None:
        session.bus.publish_nowait(
            RequestServed(
                session=session.id,
                request=rid,
                protocol="embeddings",
                client=client,
                model_asked=asked,
                role=role,
                model=model,
                runtime="sentence-transformers",
                tokens_in=tokens,
                latency_ms=latency_ms,
            )
        )
    return JSONResponse(embeddings_reply(vectors, asking.encoding_format, model, tokens))


def _stream(body: AsyncIterator[bytes], headers: dict[str, str]) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no", **headers},
    )
