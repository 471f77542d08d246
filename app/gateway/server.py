"""Running the gateway: uvicorn (with uvloop and httptools when installed) in this
process's event loop, on the session the caller opened."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import uvicorn

from app.gateway.app import GatewayConfig, build_app
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
) -> None:
    """Serve until cancelled (or the server is told to exit)."""
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(session, config),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            # a client's stream must not wait for a buffer to fill: every chunk is sent
            # as it is written (uvicorn flushes each body message)
            timeout_keep_alive=75,
            **fast_stack(),  # type: ignore[arg-type]
        )
    )
    server.config.setup_event_loop = lambda: None  # type: ignore[method-assign]
    if on_ready is not None:
        started = server.startup

        async def startup(sockets: object = None) -> None:
            await started(sockets)  # type: ignore[arg-type]
            bound = server.servers[0].sockets[0].getsockname() if server.servers else (host, port)
            on_ready(str(bound[0]), int(bound[1]))

        server.startup = startup  # type: ignore[method-assign]
    await server.serve()
