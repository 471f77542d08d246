"""Running the gateway: uvicorn (with uvloop and httptools when installed) in this
process's event loop, on the session the caller opened."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable

import uvicorn

from app.gateway.app import GatewayConfig, build_app
from app.gateway.flow import Stopping
from app.heap import freeze_startup_heap, thaw_heap
from app.router.session import Session


def fast_stack() -> dict[str, str]:
    """httptools when installed: FACTS.md measured the stack's own cost on this machine."""
    return {"http": "httptools"} if importlib.util.find_spec("httptools") else {}


async def serve(
    session: Session,
    *,
    host: str,
    port: int,
    config: GatewayConfig,
    on_ready: Callable[[str, int], None] | None = None,
) -> int | None:
    """Serve until cancelled or told to stop by a signal; the signal's number, if one.

    Cancelled (the workbench quits, its worker is cancelled): stop listening, cancel the
    requests in flight so each writes its closing audit line while the session is still
    open, and close the connections; then the cancellation goes on.

    Stopped by SIGINT or SIGTERM: the same, and the signal is returned, not raised again
    as uvicorn does. Raised again, it cancelled the caller mid-way through closing the
    session's stores (an idle server's Ctrl-C then hung on the database's thread, and a
    second Ctrl-C ended it with a traceback), or, SIGTERM, ended the process on the spot.
    The caller closes the session, then exits as the signal says.
    """
    stopping = Stopping()
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(session, config, stopping),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            # a client's stream must not wait for a buffer to fill: every chunk is sent
            # as it is written (uvicorn flushes each body message)
            timeout_keep_alive=75,
            # told to stop (Ctrl-C, SIGTERM): requests in flight get this long to finish,
            # then they are cancelled (each writes its closing line and settles)
            timeout_graceful_shutdown=int(STOP_WAIT_S),
            **fast_stack(),  # type: ignore[arg-type]
        )
    )
    server.config.setup_event_loop = lambda: None  # type: ignore[method-assign]
    started = server.startup

    async def startup(sockets: object = None) -> None:
        await started(sockets)  # type: ignore[arg-type]
        # up and about to serve: full collections stop walking the start-up heap
        freeze_startup_heap()
        if on_ready is not None:
            bound = server.servers[0].sockets[0].getsockname() if server.servers else (host, port)
            on_ready(str(bound[0]), int(bound[1]))

    server.startup = startup  # type: ignore[method-assign]
    stopped = server.shutdown

    async def shutdown(sockets: object = None) -> None:
        # Told to stop by a signal. The requests in flight end now, each with its closing
        # line (uvicorn would wait for them to finish, then cancel them under the app,
        # a traceback each); whatever is still unwinding is waited for, and what was
        # written is committed, before it lets go.
        stopping.set()  # the requests in flight end now, each with its closing line
        await stopped(sockets)  # type: ignore[arg-type]
        await _unwind(server)
        await session.audit.flush()
        await session.ledger.flush()
        caught = getattr(server, "_captured_signals", None)
        if isinstance(caught, list) and caught:
            signals.extend(caught)
            caught.clear()  # returned to the caller, not raised again by uvicorn

    signals: list[int] = []
    server.shutdown = shutdown  # type: ignore[method-assign]
    try:
        await server.serve()
    except asyncio.CancelledError:
        stopping.set()
        await _stop(server)
        raise
    finally:
        thaw_heap()
    return signals[0] if signals else None


#: how long a cancelled server waits for its requests' handlers to finish unwinding
STOP_WAIT_S = 5.0


async def _stop(server: uvicorn.Server) -> None:
    """Cancelled: stop listening; the requests in flight (told by ``Stopping``) end on
    their own, and what has not ended in ``STOP_WAIT_S`` is cancelled."""
    server.should_exit = server.force_exit = True
    for listening in getattr(server, "servers", []):
        listening.close()
    ending = [task for task in server.server_state.tasks if not task.done()]
    if ending:
        await asyncio.wait(ending, timeout=STOP_WAIT_S)
    await _unwind(server)
    for connection in list(server.server_state.connections):
        connection.shutdown()


async def _unwind(server: uvicorn.Server) -> None:
    """Cancel the requests still in flight and wait (bounded) for their clean-up."""
    tasks = [task for task in server.server_state.tasks if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=STOP_WAIT_S)
