"""GR-009 with a GPU box on the LAN: the transport lets exactly the named local endpoints
through, checked by the address each resolves to at connect time, and connects to the
address it checked. The "LAN" is a loopback alias (127.0.0.2) and names resolve through
an injected resolver: no test reaches a non-loopback address or a DNS server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import httpx2
import pytest

from app.backends.http import (
    GuardedAsyncTransport,
    GuardedAsyncTransport2,
    GuardedTransport,
    LocalOnlyRefused,
)
from tests.integration.test_http_guard_live import RecordingSink
from tests.socket_guard import SocketGuard, block_non_loopback

ALIAS = "127.0.0.2"


class AliasServer:
    """An HTTP server on a loopback alias that records each request's Host header."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.hosts.append(self.headers.get("Host", ""))
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer((ALIAS, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[AliasServer]:
    srv = AliasServer()
    yield srv
    srv.close()


@pytest.fixture
def guard() -> Iterator[SocketGuard]:
    with block_non_loopback() as g:
        yield g


def resolver_for(table: dict[str, list[str]]) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        return table.get(host, [])

    return resolve


async def test_a_named_lan_host_passes_under_local_only_pinned_to_its_address(
    server: AliasServer, guard: SocketGuard
) -> None:
    named = frozenset({("gpu-box.lan", server.port)})
    transport = GuardedAsyncTransport(
        True, named=named, resolver=resolver_for({"gpu-box.lan": [ALIAS]})
    )
    async with httpx.AsyncClient(transport=transport) as client:
        reply = await client.get(f"http://gpu-box.lan:{server.port}/v1/models")
    assert reply.status_code == 200 and reply.json() == {"ok": True}
    # the server was reached at the checked address, and saw the host's own name
    assert server.hosts == [f"gpu-box.lan:{server.port}"]
    assert guard.attempts == []


async def test_a_cloud_vm_called_gpu_box_is_refused_and_audited(
    server: AliasServer, guard: SocketGuard
) -> None:
    sink = RecordingSink()
    named = frozenset({("gpu-box.lan", server.port)})
    transport = GuardedAsyncTransport(
        True,
        audit=sink,
        session="s1",
        named=named,
        resolver=resolver_for({"gpu-box.lan": ["203.0.113.7"]}),
    )
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(LocalOnlyRefused) as info:
            await client.get(f"http://gpu-box.lan:{server.port}/v1/models")
    assert "203.0.113.7" in info.value.why
    assert server.hosts == [] and guard.attempts == []
    (call,) = sink.calls
    assert call["codes"] == ["GR009_LOCAL_ONLY"] and "203.0.113.7" in call["values"]["why"]


async def test_a_host_the_policy_does_not_name_is_refused_without_a_lookup(
    server: AliasServer, guard: SocketGuard
) -> None:
    looked_up: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return [ALIAS]

    named = frozenset({("gpu-box.lan", server.port)})
    transport = GuardedAsyncTransport(True, named=named, resolver=resolve)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(LocalOnlyRefused):
            await client.get(f"http://other-box.lan:{server.port}/")
        with pytest.raises(LocalOnlyRefused):  # the named host on another port
            await client.get(f"http://gpu-box.lan:{server.port + 1}/")
    assert looked_up == [] and server.hosts == []


async def test_httpx2_holds_the_same_rule(server: AliasServer, guard: SocketGuard) -> None:
    named = frozenset({("gpu-box.lan", server.port)})
    url = f"http://gpu-box.lan:{server.port}/v1/models"
    t2 = GuardedAsyncTransport2(True, named=named, resolver=resolver_for({"gpu-box.lan": [ALIAS]}))
    async with httpx2.AsyncClient(transport=t2) as client2:
        assert (await client2.get(url)).status_code == 200
    assert server.hosts == [f"gpu-box.lan:{server.port}"] and guard.attempts == []


def test_the_sync_transport_holds_the_same_rule(server: AliasServer, guard: SocketGuard) -> None:
    named = frozenset({("gpu-box.lan", server.port)})
    url = f"http://gpu-box.lan:{server.port}/v1/models"
    sync = GuardedTransport(True, named=named, resolver=lambda host, port: [ALIAS])
    with httpx.Client(transport=sync) as client:
        assert client.get(url).status_code == 200
    bad = GuardedTransport(True, named=named, resolver=lambda host, port: ["8.8.8.8"])
    with httpx.Client(transport=bad) as client, pytest.raises(LocalOnlyRefused):
        client.get(url)
    assert server.hosts == [f"gpu-box.lan:{server.port}"] and guard.attempts == []


async def test_local_only_off_needs_no_lookup(server: AliasServer, guard: SocketGuard) -> None:
    async def never(host: str, port: int) -> list[str]:
        raise AssertionError("no lookup is needed when local_only is off")

    transport = GuardedAsyncTransport(False, resolver=never)
    async with httpx.AsyncClient(transport=transport) as client:
        reply = await client.get(f"http://{ALIAS}:{server.port}/")
    assert reply.status_code == 200
