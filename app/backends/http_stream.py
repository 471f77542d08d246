"""The streamed reply of :class:`app.backends.http.StreamClient` (aiohttp), read as the
httpx stacks would be: the same error types, so one error table (:mod:`.provider_errors`)
covers both.

aiohttp's failures are raised as httpx2's: a refused or unreachable host as
``ConnectError``, a connect timeout as ``ConnectTimeout``, a silence longer than the read
timeout as ``ReadTimeout``, a connection dropped before or during the reply (a cut
stream) as ``RemoteProtocolError``, anything else on the wire as ``ReadError``. The
original is the ``__cause__``. Clients are built only in :mod:`app.backends.http`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import aiohttp
import httpx2
import yarl

__all__ = ["StreamReply", "Target", "client_timeout", "translated"]

#: at most this much of an error reply is read (its message is all we keep of it)
MAX_ERROR_BODY = 1 << 20


@dataclass(frozen=True)
class Target:
    """A URL, parsed once: what the guard reads and what aiohttp is given."""

    url: yarl.URL
    scheme: str
    host: str
    #: the explicit port, None for the scheme's default (as httpx reports it)
    port: int | None
    #: ``host[:port]`` as the Host header says it
    authority: str

    @classmethod
    @lru_cache(maxsize=256)  # a handful of endpoints in practice
    def of(cls, url: str) -> Target:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
        shown = f"[{host}]" if ":" in host else host
        return cls(
            url=yarl.URL(url, encoded=False),
            scheme=parts.scheme.lower(),
            host=host,
            port=port,
            authority=shown if port is None else f"{shown}:{port}",
        )


@lru_cache(maxsize=64)
def client_timeout(
    connect: float | None, read: float | None, pool: float | None
) -> aiohttp.ClientTimeout:
    """An httpx timeout's parts as aiohttp's: the read timeout is the longest silence, as
    there; waiting for a free connection counts against the pool timeout."""
    return aiohttp.ClientTimeout(total=None, connect=pool, sock_connect=connect, sock_read=read)


def translated(exc: BaseException) -> httpx2.TransportError:
    """aiohttp's failure as the httpx2 error of the same meaning (see the module doc)."""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx2.ConnectTimeout(message)
    if isinstance(exc, TimeoutError):  # SocketTimeoutError, ServerTimeoutError, asyncio's
        return httpx2.ReadTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.InvalidURL):
        return httpx2.ConnectError(message)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx2.RemoteProtocolError(message)
    return httpx2.ReadError(message)


class StreamReply:
    """One reply, its body read as it arrives. :meth:`close` always (``async with``)."""

    __slots__ = ("_resp",)

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp

    @property
    def status(self) -> int:
        return self._resp.status

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive, as the httpx stacks' are."""
        return self._resp.headers

    async def chunk(self) -> bytes:
        """The next bytes of the body as they came; ``b""`` at its end."""
        try:
            return await self._resp.content.readany()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise translated(exc) from exc

    async def read(self) -> bytes:
        """The rest of the body (an error reply), at most :data:`MAX_ERROR_BODY`."""
        parts: list[bytes] = []
        size = 0
        while size < MAX_ERROR_BODY and (data := await self.chunk()):
            parts.append(data)
            size += len(data)
        return b"".join(parts)[:MAX_ERROR_BODY]

    async def drain(self, seconds: float) -> None:
        """Read to the body's end within ``seconds`` (after the last event: the end is on
        its way), so :meth:`close` can keep the connection; never raises."""
        content = self._resp.content
        if content.at_eof():
            return
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with asyncio.timeout(seconds):
                while await content.readany():
                    pass

    def close(self) -> None:
        """Give the connection back when the body was read whole, else drop it."""
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()

    async def __aenter__(self) -> StreamReply:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
