"""GR-009 end to end for the aiohttp StreamClient (the local runtimes' chat streams):
real servers on loopback and on a loopback alias, every test under the socket guard.

Mirrors tests/integration/test_http_guard_live.py (loopback passes, external hosts are
refused and audited before a lookup, local_only read per request, no redirects, no
environment proxies) and tests/integration/test_named_local_hosts.py (a named LAN host
passes pinned to the address it was checked at, with its own Host header; a cloud VM of
that name is refused). The "LAN" is 127.0.0.2; names resolve through injected resolvers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
import pytest

from app.backends.http import (
    REFUSAL_KIND,
    GuardedAsyncTransport2,
    LocalOnlyRefused,
    StreamClient,
    make_async_client,
    make_async_client_httpx2,
    stream_client,
)
from app.errors import LocalOnlyViolation
from tests.integration.test_http_guard_live import RecordingSink
from tests.socket_guard import SocketGuard, block_non_loopback

TIMEOUT = httpx2.Timeout(2.0)
ALIAS = "127.0.0.2"


class SseServer:
    """Answers every POST with two SSE events (or a 302 under /redirect), recording the
    path and Host header of each request."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests.append((self.path, self.headers.get("Host", "")))
                if self.path.startswith("/redirect"):
                    # 198.51.100.1 is TEST-NET-2: documentation only, and never followed.
                    self.send_response(302)
                    self.send_header("Location", "http://198.51.100.1/v1/chat/completions")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b'data: {"n": 1}\n\ndata: [DONE]\n\n'
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[SseServer]:
    srv = SseServer()
    yield srv
    srv.close()


@pytest.fixture
def alias_server() -> Iterator[SseServer]:
    srv = SseServer(ALIAS)
    yield srv
    srv.close()


@pytest.fixture
def guard() -> Iterator[SocketGuard]:
    with block_non_loopback() as g:
        yield g


async def post(streams: StreamClient, url: str) -> tuple[int, bytes]:
    reply = await streams.post(url, b"{}", {"content-type": "application/json"}, TIMEOUT)
    async with reply:
        return reply.status, await reply.read()


def streams_of(client: Any) -> StreamClient:
    streams = stream_client(client)
    assert streams is not None
    return streams


# ── loopback and external hosts ──────────────────────────────────────────────────────────


async def test_local_only_lets_loopback_through(server: SseServer, guard: SocketGuard) -> None:
    sink = RecordingSink()
    async with make_async_client_httpx2(local_only=True, audit=sink) as client:
        streams = streams_of(client)
        first = await post(streams, f"{server.url}/v1/chat/completions")
        second = await post(streams, f"http://localhost:{server.port}/v1/chat/completions")
    assert first == second == (200, b'data: {"n": 1}\n\ndata: [DONE]\n\n')
    assert [path for path, _ in server.requests] == ["/v1/chat/completions"] * 2
    guard.assert_no_attempts()
    assert guard.allowed  # the connections really went through the socket layer
    assert sink.calls == []


async def test_local_only_refuses_external_hosts_without_any_connection(
    guard: SocketGuard,
) -> None:
    sink = RecordingSink()
    async with make_async_client(local_only=True, audit=sink, session="s") as client:
        streams = streams_of(client)
        with pytest.raises(LocalOnlyRefused):
            await post(streams, "https://api.openai.com/v1/chat/completions")
        # A name that resolves to loopback is still a name: refused, and not even resolved.
        with pytest.raises(LocalOnlyRefused):
            await post(streams, "http://127.0.0.1.nip.io:8000/v1/chat/completions")
    guard.assert_no_attempts()
    assert guard.allowed == []
    assert [(c["kind"], c["session"], c["values"]["host"]) for c in sink.calls] == [
        (REFUSAL_KIND, "s", "api.openai.com"),
        (REFUSAL_KIND, "s", "127.0.0.1.nip.io"),
    ]


async def test_local_only_flips_mid_session(server: SseServer, guard: SocketGuard) -> None:
    state = {"on": False}
    sink = RecordingSink()
    async with make_async_client_httpx2(local_only=lambda: state["on"], audit=sink) as client:
        streams = streams_of(client)
        assert (await post(streams, f"{server.url}/a"))[0] == 200
        state["on"] = True
        assert (await post(streams, f"{server.url}/b"))[0] == 200
        with pytest.raises(LocalOnlyViolation):
            await post(streams, "https://api.deepseek.com/chat/completions")
    assert [path for path, _ in server.requests] == ["/a", "/b"]
    assert len(sink.calls) == 1
    guard.assert_no_attempts()


async def test_a_redirect_is_a_reply_never_followed(server: SseServer, guard: SocketGuard) -> None:
    sink = RecordingSink()
    async with make_async_client_httpx2(local_only=True, audit=sink) as client:
        status, _ = await post(streams_of(client), f"{server.url}/redirect")
    assert status == 302  # visible, not silently followed
    assert [path for path, _ in server.requests] == ["/redirect"]
    guard.assert_no_attempts()  # not even the refused hop was tried
    assert sink.calls == []


async def test_environment_proxies_are_ignored(
    server: SseServer, guard: SocketGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = SseServer()
    try:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "HTTPS_PROXY"):
            monkeypatch.setenv(name, proxy.url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        async with make_async_client_httpx2(local_only=False) as client:
            assert (await post(streams_of(client), f"{server.url}/direct"))[0] == 200
        assert proxy.requests == []
        assert [path for path, _ in server.requests] == ["/direct"]
    finally:
        proxy.close()
    guard.assert_no_attempts()


async def test_the_stream_client_closes_with_its_client(server: SseServer) -> None:
    client = make_async_client_httpx2(local_only=True)
    streams = streams_of(client)
    await post(streams, f"{server.url}/x")
    session = streams._session
    assert session is not None and not session.closed
    await client.aclose()
    assert session.closed and streams._session is None


# ── a GPU box on the LAN (a loopback alias, names from an injected resolver) ─────────────


def resolver_for(table: dict[str, list[str]], looked: list[str] | None = None) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        if looked is not None:
            looked.append(host)
        return table.get(host, [])

    return resolve


async def test_a_named_lan_host_passes_pinned_to_its_checked_address(
    alias_server: SseServer, guard: SocketGuard
) -> None:
    named = frozenset({("gpu-box.lan", alias_server.port)})
    transport = GuardedAsyncTransport2(
        True, named=named, resolver=resolver_for({"gpu-box.lan": [ALIAS]})
    )
    try:
        url = f"http://gpu-box.lan:{alias_server.port}/v1/chat/completions"
        assert (await post(transport.streams, url))[0] == 200
    finally:
        await transport.aclose()
    # reached at the checked address, and the server saw the host's own name
    assert alias_server.requests == [("/v1/chat/completions", f"gpu-box.lan:{alias_server.port}")]
    assert guard.attempts == []


async def test_a_cloud_vm_called_gpu_box_is_refused_and_audited(
    alias_server: SseServer, guard: SocketGuard
) -> None:
    sink = RecordingSink()
    named = frozenset({("gpu-box.lan", alias_server.port)})
    transport = GuardedAsyncTransport2(
        True,
        audit=sink,
        session="s1",
        named=named,
        resolver=resolver_for({"gpu-box.lan": ["203.0.113.7"]}),
    )
    try:
        with pytest.raises(LocalOnlyRefused) as info:
            await post(transport.streams, f"http://gpu-box.lan:{alias_server.port}/v1/x")
    finally:
        await transport.aclose()
    assert "203.0.113.7" in info.value.why
    assert alias_server.requests == [] and guard.attempts == []
    (call,) = sink.calls
    assert call["codes"] == ["GR009_LOCAL_ONLY"] and "203.0.113.7" in call["values"]["why"]


async def test_a_host_the_policy_does_not_name_is_refused_without_a_lookup(
    alias_server: SseServer, guard: SocketGuard
) -> None:
    looked: list[str] = []
    named = frozenset({("gpu-box.lan", alias_server.port)})
    transport = GuardedAsyncTransport2(
        True, named=named, resolver=resolver_for({"gpu-box.lan": [ALIAS]}, looked)
    )
    try:
        with pytest.raises(LocalOnlyRefused):
            await post(transport.streams, f"http://other-box.lan:{alias_server.port}/")
        with pytest.raises(LocalOnlyRefused):  # the named host on another port
            await post(transport.streams, f"http://gpu-box.lan:{alias_server.port + 1}/")
    finally:
        await transport.aclose()
    assert looked == [] and alias_server.requests == [] and guard.attempts == []


async def test_local_only_off_needs_no_lookup(alias_server: SseServer, guard: SocketGuard) -> None:
    async def never(host: str, port: int) -> list[str]:
        raise AssertionError("no lookup is needed when local_only is off")

    transport = GuardedAsyncTransport2(False, resolver=never)
    try:
        assert (await post(transport.streams, f"{alias_server.url}/v1/x"))[0] == 200
    finally:
        await transport.aclose()
    assert guard.attempts == []
