"""One gateway request through the router: decide, approval, budget, the call, the audit.

:func:`run_request` yields events as they happen: each delta the moment the backend
sends it (nothing is buffered), a keep-alive while the request waits (an approval held
for the human, a slow first token), then the result or a failure. A structured request
(``response_format``/``text.format`` with a schema) goes through GR-012's one owner, so
its reply is validated (and repaired once) before it is released: that one is not
streamed token by token.

The request is bracketed by two ``request`` audit lines (who asked, for which model and
role; how it ended) around the router's own route/escalation/call lines, all under one
run id (``gw-…``). A client that disconnects cancels the call: a cloud reservation is
settled at its estimate by the router, and the closing line says the client went away.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from app.backends.base import Delta
from app.dollars import dollars
from app.errors import SwitchyardError
from app.gateway.errors import GatewayError, Kind
from app.gateway.inbound import Inbound
from app.router.routed import Watching, tokens_text
from app.router.service import BadRequest, RoutedResult, RouteFailed, RouteRefused
from app.router.session import Session
from app.router.structured import complete_structured, schema_parser
from app.router.types import Signals

log = logging.getLogger("app.gateway")


def store_down(exc: SwitchyardError) -> GatewayError:
    """A store the request needs (the audit log, the budget ledger: the team's database
    gone away) failed it: the request fails closed, answered in the protocol's shape as
    a 503 a client may retry, not a bare 500 and a traceback."""
    return GatewayError(503, "unavailable", f"the request cannot be recorded: {exc}")


class Stopping:
    """The server is stopping (Ctrl-C, SIGTERM, the workbench quitting): each request in
    flight ends now, its work cancelled (a cloud call settled at its estimate) and its
    closing line written, and answers 503, instead of being cancelled under the server,
    which printed a traceback per request and wrote nothing."""

    def __init__(self) -> None:
        self.stopping = False
        self._wakes: set[Callable[[], None]] = set()

    def set(self) -> None:
        self.stopping = True
        for wake in list(self._wakes):
            wake()

    def watch(self, wake: Callable[[], None]) -> None:
        self._wakes.add(wake)

    def unwatch(self, wake: Callable[[], None]) -> None:
        self._wakes.discard(wake)


@dataclass(frozen=True)
class KeepAlive:
    """Nothing to send yet (an approval is held, the model is thinking)."""


@dataclass(frozen=True)
class Done:
    result: RoutedResult
    #: the validated value of a structured request
    value: Any = None
    #: the client's stop sequence that ended the reply, when the backend said which
    stop_sequence: str | None = None


def matched_stop(result: RoutedResult, stops: list[str], said: str | None) -> str | None:
    """The stop sequence that ended ``result`` (pure): the one the backend's stream said,
    if it is one the client gave and the reply did end there (not at its limit, not in
    tool calls)."""
    if said is None or said not in stops or result.tool_calls:
        return None
    return said if result.finish_reason in ("stop", "stop_sequence") else None


Event = Delta | KeepAlive | Done


def new_request_id() -> str:
    return "gw-" + uuid.uuid4().hex[:16]


async def run_request(
    session: Session,
    inbound: Inbound,
    role: str,
    signals: Signals,
    *,
    request_id: str,
    client: str,
    keepalive_s: float,
    stopping: Stopping | None = None,
) -> AsyncIterator[Event]:
    """Events for one request; raises :class:`GatewayError` for an audited failure."""
    router = session.router
    request = inbound.request
    try:
        await _open_line(session, inbound, role, signals, request_id, client)
    except SwitchyardError as exc:
        raise store_down(exc) from None
    router.run_origins[request_id] = client  # (its approval prompt names the client)
    # One waiter at a time, woken by a delta, the end of the work or the keep-alive timer
    # (a task and asyncio.wait per delta cost more than the rest of the relay).
    pending: deque[Delta] = deque()
    waiter: asyncio.Future[None] | None = None
    structured = request.json_schema is not None
    # the router's result carries no backend extras: the stream's last delta says which
    # stop sequence ended it (a later delta is another attempt's output, after a retry)
    said_stop: str | None = None

    def wake() -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def on_delta(delta: Delta) -> None:
        nonlocal said_stop
        if delta.stop_sequence is not None:
            said_stop = delta.stop_sequence
        elif delta.text or delta.tool_calls:
            said_stop = None
        if not structured:
            pending.append(delta)
            wake()

    async def work() -> tuple[RoutedResult, Any]:
        if structured:
            assert request.json_schema is not None
            answer = await complete_structured(
                router,
                role,
                request,
                schema_parser(request.json_schema),
                signals,
                run=request_id,
                digests=inbound.digests,
                # a cap the client set bounds the repair too (one it left unset is the
                # role's, which a reply cut off at it may be given more room than)
                hard_cap=not inbound.cap_unset,
            )
            # the usage the client is told is every generation it paid for, the rejected
            # first reply's too, as the ledger and the call lines count them
            billed = answer.billed()
            if answer.value is None and billed is not None and billed.tool_calls:
                # tool calls: the schema is the final answer's; released whole, as a
                # structured reply is (its text before the calls with it)
                return billed, CALLED_TOOLS
            if answer.cut and billed is not None:
                # Cut off at the client's own cap: released as the cut reply it is
                # (finish_reason length, Responses' incomplete, Messages' max_tokens), as
                # OpenAI answers a structured reply cut off at max_tokens and the gateway
                # a plain one; never as a reply that fits. (A 502, the answer when no
                # repair is made, is retried by the SDKs, to be cut off at the same cap.)
                return billed, CUT_OFF
            if answer.value is None:
                if answer.failure is not None:
                    raise answer.failure  # (a bad request stays one: the client's 400)
                if answer.route_failed or answer.result is None:
                    raise RouteFailed(
                        answer.error or "no step could serve", too_long=answer.too_long
                    )
                raise GatewayError(
                    502, "upstream", f"the reply does not fit the schema: {answer.error}"
                )
            assert billed is not None
            return billed, answer.value
        # a whole reply is sent only once it is done: a cut stream may be retried then
        hook = on_delta if inbound.stream else Watching(on_delta)
        result = await router.complete(
            role, request, signals, run=request_id, on_delta=hook, digests=inbound.digests
        )
        return result, None

    task = asyncio.create_task(work())
    task.add_done_callback(lambda _: wake())
    loop = asyncio.get_running_loop()
    outcome = "client went away"
    if stopping is not None:
        stopping.watch(wake)
    try:
        while True:
            while pending:  # every delta before the result
                yield pending.popleft()
            if task.done():
                result, value = _finished(task)
                outcome = "ok"
                await _close_line(session, request_id, role, "ok", result)
                yield Done(result, value, matched_stop(result, request.stop, said_stop))
                return
            if stopping is not None and stopping.stopping:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise GatewayError(503, "unavailable", "the server is stopping")
            waiter = loop.create_future()
            timer = loop.call_later(keepalive_s, wake)
            try:
                await waiter
            finally:
                timer.cancel()
                waiter = None
            if not pending and not task.done() and not (stopping and stopping.stopping):
                yield KeepAlive()  # the timer woke us: nothing yet (a stop goes on above)
    except GatewayError as err:
        outcome = f"error: {err.message}"
        await _close_line(session, request_id, role, outcome, None, status=err.status)
        err.audited = True
        raise
    finally:
        router.run_origins.pop(request_id, None)
        if stopping is not None:
            stopping.unwatch(wake)
        # The server cancels a disconnected client's stream with an anyio cancel scope,
        # which cancels every await inside it again: the clean-up needs a shielded scope.
        with anyio.CancelScope(shield=True):
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await _close_line(session, request_id, role, outcome, None, status=499)


#: the value of a structured request's reply that called tools (not checked against the
#: schema, which is the final answer's): not None, so its text is released with it
CALLED_TOOLS = object()
#: the value of a structured request's reply cut off at the client's own cap (its text
#: released, said to be cut off by its finish reason)
CUT_OFF = object()


async def _open_line(
    session: Session,
    inbound: Inbound,
    role: str,
    signals: Signals,
    request_id: str,
    client: str,
) -> None:
    request = inbound.request
    await session.audit.append(
        "request",
        session=session.id,
        run=request_id,
        role=role,
        reason_codes=["GATEWAY_REQUEST"],
        values={
            "protocol": inbound.protocol,
            "model": inbound.model,
            "client": client,
            "stream": inbound.stream,
            "tools": len(request.tools),
            "tool_actions": signals.tool_calls,
            "user_request": signals.user_request,
            "max_tokens": request.max_tokens,
            # hosted tools (web search, …) only their own provider can run: left out
            **(
                {"dropped_tools": inbound.extra["dropped_tools"]}
                if inbound.extra.get("dropped_tools")
                else {}
            ),
            # the request's fields carried to no backend (app.gateway.ignored)
            **({"ignored_fields": inbound.ignored} if inbound.ignored else {}),
        },
        detail=f"{client}: {inbound.protocol} {inbound.model} → {role}",
    )


def _finished(task: asyncio.Task[tuple[RoutedResult, Any]]) -> tuple[RoutedResult, Any]:
    try:
        return task.result()
    except RouteRefused as exc:
        raise GatewayError(403, "refused", str(exc)) from None
    except BadRequest as exc:
        # The backend refused the request itself (an invalid field, a schema it cannot
        # take): answered as the providers answer it, a 400 (or their 413/422) with their
        # words, which a client does not retry; not a 503, which it retries for a minute.
        status = exc.status if exc.status in (400, 413, 422) else 400
        kind: Kind = "too_large" if status == 413 else "invalid_request"
        raise GatewayError(status, kind, str(exc)) from None
    except RouteFailed as exc:
        if exc.too_long:
            # Said as the providers say it ("prompt is too long", context_length_exceeded),
            # so that a client shortens or compacts instead of retrying a 503 for a minute.
            raise GatewayError(
                400,
                "invalid_request",
                f"prompt is too long for every model that can serve it now: {exc}",
                code="context_length_exceeded",
            ) from None
        raise GatewayError(503, "unavailable", f"no model could serve the request: {exc}") from None
    except SwitchyardError as exc:  # a store gone away mid-request (the reservation, a line)
        raise store_down(exc) from None


async def _close_line(
    session: Session,
    request_id: str,
    role: str,
    outcome: str,
    result: RoutedResult | None,
    *,
    status: int = 200,
) -> None:
    values: dict[str, Any] = {"outcome": outcome, "status": status}
    detail = f"{role}: {outcome}"
    if result is not None:
        values.update(
            model=result.model,
            runtime=result.runtime,
            escalated=result.escalated,
            tokens_in=result.tokens_in,
            tokens_out=result.tokens_out,
            cost_usd=round(result.cost_usd, 9),
            latency_ms=round(result.latency_ms, 1),
            finish_reason=result.finish_reason,
        )
        # of tokens_in, the prompt cache's reads and writes (said when there were some)
        if result.tokens_cached:
            values["tokens_cached"] = result.tokens_cached
        if result.tokens_cache_write:
            values["tokens_cache_write"] = result.tokens_cache_write
        tokens = tokens_text(
            result.tokens_in, result.tokens_out, result.tokens_cached, result.tokens_cache_write
        )
        detail = (
            f"{role} served by {result.model} ({result.runtime}): {tokens}, "
            f"{dollars(result.cost_usd)}"
        )
    try:
        await session.audit.append(
            "request",
            session=session.id,
            run=request_id,
            role=role,
            reason_codes=["GATEWAY_DONE" if status == 200 else "GATEWAY_FAILED"],
            values=values,
            detail=detail,
        )
    except SwitchyardError as exc:
        # What the request did is on record already (its route, escalation and call
        # lines were written before and after the effect); only this summary is lost,
        # and failing the answer now would make the client pay for the call again.
        log.warning("request %s: its closing audit line was not written: %s", request_id, exc)
