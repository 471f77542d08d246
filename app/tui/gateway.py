"""The gateway hosted in the workbench (``switchyard serve --tui``): what to serve, and
the messages its worker posts.

The worker itself is on the app (:meth:`~app.tui.core.CoreApp.start_gateway`), like every
worker; this module only runs the server (``app.gateway.server.serve``, imported when the
gateway starts so the first frame never waits for uvicorn) and turns uvicorn's way of
failing to bind (``sys.exit``) into one clear error.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.message import Message

from app.errors import SwitchyardError
from app.hosts import bind_error, http_url

if TYPE_CHECKING:
    from app.gateway.app import GatewayConfig
    from app.router.session import Session

#: ``serve(session, host=, port=, config=, on_ready=)``: the real one is
#: :func:`app.gateway.server.serve`; tests and pictures may plug in scripted traffic
Serve = Callable[..., Awaitable[int | None]]


@dataclass(frozen=True)
class GatewaySpec:
    host: str
    port: int
    config: GatewayConfig
    serve: Serve | None = None


class GatewayFailed(SwitchyardError):
    """The gateway could not listen (the port is taken, the address is not ours)."""


class GatewayListening(Message):
    def __init__(self, address: str) -> None:
        super().__init__()
        #: the base address clients use, e.g. ``http://127.0.0.1:4000``
        self.address = address


class GatewayStopped(Message):
    """The server returned (told to exit); the workbench stays open."""


def logs_to_ours() -> None:
    """uvicorn points its loggers at stderr, which is the screen here: send what it logs
    where the workbench's diagnostics go (``tui.log``; nowhere when there is none)."""
    ours = logging.getLogger("switchyard").handlers or [logging.NullHandler()]
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logger = logging.getLogger(name)
        logger.handlers = list(ours) if name == "uvicorn" else []
        logger.propagate = name != "uvicorn"


def _served() -> Serve:
    from app.gateway.server import serve

    return serve


async def host(spec: GatewaySpec, session: Session, ready: Callable[[str], None]) -> None:
    """Serve ``session`` on ``spec`` until cancelled; ``ready(address)`` once listening."""
    serve = spec.serve or _served()

    def on_ready(bound_host: str, bound_port: int) -> None:
        logs_to_ours()  # uvicorn has configured its logging by now
        ready(http_url(bound_host, bound_port))  # as the headless serve spells it

    kwargs: dict[str, Any] = {"host": spec.host, "port": spec.port, "config": spec.config}
    try:
        await serve(session, on_ready=on_ready, **kwargs)
    except SystemExit:
        # uvicorn logs why it could not bind and exits the process: say it here instead
        why = bind_error(spec.host, spec.port) or "see the log"
        raise GatewayFailed(f"cannot listen on {spec.host}:{spec.port}: {why}") from None
