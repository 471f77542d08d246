"""The one factory for HTTP clients, with the local_only guard in the transport (GR-009).

Every HTTP client in the process comes from here. Its transport looks at the request's
host before anything touches a socket: loopback always passes; while ``local_only`` is
on, a local runtime endpoint the policy names on another host (a GPU box on the LAN)
passes only when every address it resolves to is loopback or private, and the request
then goes to the address that was checked (:mod:`app.hosts`); any other host is
refused, one audit line is written and :class:`LocalOnlyRefused` is raised. Policy
checks above this are a courtesy; this is the guarantee.

Three HTTP stacks live in the process: ``httpx`` (our own calls: health probes, the CLI),
``httpx2``, which the openai and anthropic SDKs are built on, and ``aiohttp`` for the hot
path: :class:`StreamClient`, the streamed chat completions of local runtimes, which
every async client here carries (:func:`stream_client`) behind the same guard, with
the same timeout, closed with it. The anthropic SDK refuses httpx clients, and the openai
SDK types ``http_client`` as httpx2 (it accepts httpx at run time only), so SDK clients
take :func:`make_async_client_httpx2`.
"""

from __future__ import annotations

import ipaddress
import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import httpx
import httpx2

from app.audit.types import AuditSink
from app.backends.http_stream import StreamReply, Target, client_timeout, translated
from app.errors import LocalOnlyViolation
from app.hosts import (
    HostPort,
    Resolver,
    SyncResolver,
    default_port,
    named_host_refusal,
    normal_host,
    resolve,
    resolve_sync,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_TIMEOUT2",
    "REFUSAL_KIND",
    "REFUSAL_REASON",
    "GuardedAsyncTransport",
    "GuardedAsyncTransport2",
    "GuardedTransport",
    "LocalOnly",
    "LocalOnlyRefused",
    "StreamClient",
    "guard_url",
    "is_loopback_host",
    "make_async_client",
    "make_async_client_httpx2",
    "make_client",
    "stream_client",
]

log = logging.getLogger(__name__)

REFUSAL_KIND = "local_only_refusal"
REFUSAL_REASON = "GR009_LOCAL_ONLY"

# Local generation can be slow; connecting to anything should not be.
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=5.0)
DEFAULT_TIMEOUT2 = httpx2.Timeout(120.0, connect=5.0)

#: ``local_only`` as a fixed value, or read on every request (a spec may turn it on).
LocalOnly = bool | Callable[[], bool]


class LocalOnlyRefused(httpx.ConnectError, httpx2.ConnectError, LocalOnlyViolation):  # type: ignore[misc]
    """A request to a non-loopback host while local_only is on. Nothing was sent.

    It is a ``ConnectError`` of both HTTP stacks, so the openai and anthropic SDKs surface
    it as their ``APIConnectionError`` (with this as ``__cause__``), and a
    :class:`~app.errors.LocalOnlyViolation`, so our code catches it by meaning.
    (The ignore: the two stacks type ``.request`` with their own Request classes.)
    """

    def __init__(
        self,
        host: str,
        scheme: str = "",
        *,
        request: httpx.Request | httpx2.Request | None = None,
        why: str = "",
    ) -> None:
        self.host = host
        self.scheme = scheme
        #: why a named local host was refused ("" for a host the policy does not name)
        self.why = why
        #: set when the audit line could not be written; the refusal stands regardless
        self.audit_error: BaseException | None = None
        message = f"local_only is on: refused non-loopback host {host!r} (GR-009)"
        if why:
            message += f": {why}"
        super().__init__(message, request=request)  # type: ignore[arg-type]


# ── Pure checks ──────────────────────────────────────────────────────────────────────────


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 (bracketed or not) and the name ``localhost``.

    No DNS: any other name is not loopback, even one that resolves there
    (``127.0.0.1.nip.io``), because what it resolves to can change under us.
    """
    h = host.strip().lower()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if h in ("localhost", "localhost."):
        return True
    try:
        addr = ipaddress.ip_address(h)
    except ValueError:
        # Includes shorthand like "127.1" or "0x7f000001": the OS would accept them,
        # we refuse them; being strict only costs a clear error.
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def _is_local_only(local_only: LocalOnly) -> bool:
    return bool(local_only() if callable(local_only) else local_only)


def guard_url(url: str, local_only: bool) -> None:
    """Raise :class:`LocalOnlyRefused` if ``url`` may not be reached (no audit line).

    For code that wants to fail before building a client; the transport checks anyway.
    """
    parsed = httpx.URL(url)
    if local_only and not is_loopback_host(parsed.host):
        raise LocalOnlyRefused(parsed.host, parsed.scheme)


# ── The guard, shared by every transport ─────────────────────────────────────────────────


Request = httpx.Request | httpx2.Request
#: a request's fate: None (go as asked), the checked address to go to instead (a named
#: local host, pinned), or the refusal
Verdict = LocalOnlyRefused | str | None


class _Guard:
    """The GR-009 decision, over a URL's parts, for every stack (httpx, httpx2, aiohttp)."""

    def __init__(
        self,
        local_only: LocalOnly,
        audit: AuditSink | None,
        session: str,
        on_refusal: Callable[[str], None] | None,
        named: frozenset[HostPort] = frozenset(),
        resolver: Resolver = resolve,
        sync_resolver: SyncResolver = resolve_sync,
    ) -> None:
        self.local_only = local_only
        self.audit = audit
        self.session = session
        self.on_refusal = on_refusal
        self.named = named
        self.resolver = resolver
        self.sync_resolver = sync_resolver

    def _key(self, scheme: str, host: str, port: int | None) -> HostPort | None:
        """(host, port) when the request needs the named-host check, None when it passes
        at once (loopback, or local_only off). Raises nothing."""
        # Read on every request: local_only may be switched on mid-session.
        if is_loopback_host(host) or not _is_local_only(self.local_only):
            return None
        return normal_host(host), port or default_port(scheme)

    def _verdict(
        self,
        scheme: str,
        host: str,
        key: HostPort,
        addresses: list[str],
        request: Request | None,
    ) -> LocalOnlyRefused | str:
        if key not in self.named:
            return LocalOnlyRefused(host, scheme, request=request)
        why = named_host_refusal(key[0], key[1], self.named, addresses)
        if why is not None:
            return LocalOnlyRefused(host, scheme, request=request, why=why)
        return addresses[0]

    async def decide(
        self, scheme: str, host: str, port: int | None, request: Request | None = None
    ) -> Verdict:
        key = self._key(scheme, host, port)
        if key is None:
            return None
        addresses = await self.resolver(*key) if key in self.named else []
        return self._verdict(scheme, host, key, addresses, request)

    def decide_sync(
        self, scheme: str, host: str, port: int | None, request: Request | None = None
    ) -> Verdict:
        key = self._key(scheme, host, port)
        if key is None:
            return None
        addresses = self.sync_resolver(*key) if key in self.named else []
        return self._verdict(scheme, host, key, addresses, request)

    async def admit(self, request: Request) -> LocalOnlyRefused | None:
        url = request.url
        return _applied(request, await self.decide(url.scheme, url.host, url.port, request))

    def admit_sync(self, request: Request) -> LocalOnlyRefused | None:
        url = request.url
        return _applied(request, self.decide_sync(url.scheme, url.host, url.port, request))

    async def audit_refusal(self, refused: LocalOnlyRefused) -> None:
        if self.audit is None:
            return
        try:
            # Host and scheme only: the path, query and headers may carry keys.
            await self.audit.append(
                REFUSAL_KIND,
                session=self.session,
                reason_codes=[REFUSAL_REASON],
                values={"host": refused.host, "scheme": refused.scheme}
                | ({"why": refused.why} if refused.why else {}),
                detail="non-loopback host refused while local_only is on"
                + (f": {refused.why}" if refused.why else ""),
            )
        except Exception as exc:
            # The refusal must stand even if the log is broken; keep the failure visible.
            log.exception("could not audit a local_only refusal of %s", refused.host)
            refused.audit_error = exc

    def notify(self, refused: LocalOnlyRefused) -> None:
        if self.on_refusal is None:
            return
        try:
            self.on_refusal(refused.host)
        except Exception as exc:
            log.exception("on_refusal callback failed for %s", refused.host)
            refused.audit_error = exc


class GuardedAsyncTransport(httpx.AsyncBaseTransport):
    """httpx async transport that refuses non-loopback hosts while local_only is on."""

    def __init__(
        self,
        local_only: LocalOnly,
        *,
        audit: AuditSink | None = None,
        session: str = "",
        inner: httpx.AsyncBaseTransport | None = None,
        named: frozenset[HostPort] = frozenset(),
        resolver: Resolver = resolve,
    ) -> None:
        self._guard = _Guard(local_only, audit, session, None, named, resolver)
        # trust_env here only means SSL_CERT_FILE/DIR (corporate CAs); proxies from the
        # environment are a client-level setting, switched off in the factory.
        self._inner = inner if inner is not None else httpx.AsyncHTTPTransport()
        self.streams = StreamClient(self._guard)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        refused = await self._guard.admit(request)
        if refused is not None:
            await self._guard.audit_refusal(refused)
            raise refused
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.streams.aclose()
        await self._inner.aclose()


class GuardedTransport(httpx.BaseTransport):
    """Sync twin (health probes, CLI). It cannot await an audit sink: the caller passes
    ``on_refusal(host)`` and writes the audit line itself, or catches the exception."""

    def __init__(
        self,
        local_only: LocalOnly,
        *,
        on_refusal: Callable[[str], None] | None = None,
        inner: httpx.BaseTransport | None = None,
        named: frozenset[HostPort] = frozenset(),
        resolver: SyncResolver = resolve_sync,
    ) -> None:
        self._guard = _Guard(local_only, None, "", on_refusal, named, sync_resolver=resolver)
        self._inner = inner if inner is not None else httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        refused = self._guard.admit_sync(request)
        if refused is not None:
            self._guard.notify(refused)
            raise refused
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


class GuardedAsyncTransport2(httpx2.AsyncBaseTransport):
    """The same guard for httpx2 (the anthropic SDK accepts only httpx2 clients)."""

    def __init__(
        self,
        local_only: LocalOnly,
        *,
        audit: AuditSink | None = None,
        session: str = "",
        inner: httpx2.AsyncBaseTransport | None = None,
        named: frozenset[HostPort] = frozenset(),
        resolver: Resolver = resolve,
    ) -> None:
        self._guard = _Guard(local_only, audit, session, None, named, resolver)
        self._inner = inner if inner is not None else httpx2.AsyncHTTPTransport()
        self.streams = StreamClient(self._guard)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        refused = await self._guard.admit(request)
        if refused is not None:
            await self._guard.audit_refusal(refused)
            raise refused
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.streams.aclose()
        await self._inner.aclose()


class StreamClient:
    """Streamed POSTs on aiohttp (a third of httpx2's CPU per call, P7's breakdown), behind
    the guard of the transport that owns it: loopback passes, a named local host goes to
    its checked address (the Host header and TLS name stay its own), anything else is
    audited and refused before a socket is touched. No proxies or ``.netrc`` from the
    environment, no redirects followed, no cookies kept."""

    def __init__(self, guard: _Guard) -> None:
        self._guard = guard
        self._session: aiohttp.ClientSession | None = None

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeouts: httpx.Timeout | httpx2.Timeout,
    ) -> StreamReply:
        """The reply once its head is in; raises LocalOnlyRefused or an httpx2 error."""
        target = Target.of(url)
        verdict = await self._guard.decide(target.scheme, target.host, target.port)
        if isinstance(verdict, LocalOnlyRefused):
            await self._guard.audit_refusal(verdict)
            raise verdict
        dest, sni = target.url, None
        if verdict is not None:  # a named local host: to the address that was checked
            dest, headers = dest.with_host(verdict), {**headers, "Host": target.authority}
            sni = target.host if target.scheme == "https" else None
        try:
            resp = await self._open().request(
                "POST",
                dest,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=client_timeout(timeouts.connect, timeouts.read, timeouts.pool),
                server_hostname=sni,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise translated(exc) from exc
        return StreamReply(resp)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                # under the 5 s idle limit of uvicorn (vLLM) and llama.cpp's server, so a
                # kept connection is not reused as the server closes it
                connector=aiohttp.TCPConnector(keepalive_timeout=4.0),
                trust_env=False,  # no proxies (or .netrc) from the environment
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


#: each factory client's stream client (the one its transport owns)
_STREAMS: weakref.WeakKeyDictionary[Any, StreamClient] = weakref.WeakKeyDictionary()


def stream_client(client: httpx.AsyncClient | httpx2.AsyncClient) -> StreamClient | None:
    """The :class:`StreamClient` of a client from this factory (None for any other)."""
    return _STREAMS.get(client)


# ── Factories ────────────────────────────────────────────────────────────────────────────

# Shared client settings, and why:
#  trust_env=False: HTTP(S)_PROXY/ALL_PROXY would mount proxy transports that bypass
#    our host check and send loopback traffic off the machine; .netrc could add secrets.
#  follow_redirects=False: a redirect to another host must be a visible response, not a
#    silent hop (the guard would still check each hop if a caller turns it on).
_CLIENT_DEFAULTS: dict[str, Any] = {"trust_env": False, "follow_redirects": False}


def make_async_client(
    *,
    local_only: LocalOnly,
    audit: AuditSink | None = None,
    session: str = "",
    timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    base_url: str = "",
    headers: Mapping[str, str] | None = None,
    named: frozenset[HostPort] = frozenset(),
) -> httpx.AsyncClient:
    """An httpx AsyncClient whose transport enforces local_only (GR-009).

    A refusal raises :class:`LocalOnlyRefused`; an SDK on this client (openai accepts it
    at run time) reports ``APIConnectionError`` with the refusal in its cause chain.
    """
    transport = GuardedAsyncTransport(local_only, audit=audit, session=session, named=named)
    client = httpx.AsyncClient(
        transport=transport, timeout=timeout, base_url=base_url, headers=headers, **_CLIENT_DEFAULTS
    )
    _STREAMS[client] = transport.streams
    return client


def make_client(
    *,
    local_only: LocalOnly,
    on_refusal: Callable[[str], None] | None = None,
    timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    base_url: str = "",
    headers: Mapping[str, str] | None = None,
    named: frozenset[HostPort] = frozenset(),
) -> httpx.Client:
    """A sync httpx Client with the same guard (health probes, CLI)."""
    return httpx.Client(
        transport=GuardedTransport(local_only, on_refusal=on_refusal, named=named),
        timeout=timeout,
        base_url=base_url,
        headers=headers,
        **_CLIENT_DEFAULTS,
    )


def make_async_client_httpx2(
    *,
    local_only: LocalOnly,
    audit: AuditSink | None = None,
    session: str = "",
    timeout: httpx2.Timeout | float = DEFAULT_TIMEOUT2,
    base_url: str = "",
    headers: Mapping[str, str] | None = None,
    named: frozenset[HostPort] = frozenset(),
) -> httpx2.AsyncClient:
    """An httpx2 AsyncClient with the guard: the one to give ``openai.AsyncOpenAI`` and
    ``anthropic.AsyncAnthropic`` as ``http_client``."""
    transport = GuardedAsyncTransport2(local_only, audit=audit, session=session, named=named)
    client = httpx2.AsyncClient(
        transport=transport, timeout=timeout, base_url=base_url, headers=headers, **_CLIENT_DEFAULTS
    )
    _STREAMS[client] = transport.streams
    return client


def _applied(request: Request, verdict: Verdict) -> LocalOnlyRefused | None:
    """An httpx request after its verdict: pinned to the checked address, or refused."""
    if isinstance(verdict, str):
        _pin(request, verdict)
        return None
    return verdict


def _pin(request: Request, address: str) -> None:
    """Send ``request`` to the address that was checked, not to whatever the name
    resolves to a moment later (the Host header and TLS name stay the host's)."""
    host = request.url.host
    request.url = request.url.copy_with(host=address)
    if request.url.scheme == "https":
        request.extensions = {**request.extensions, "sni_hostname": host}
