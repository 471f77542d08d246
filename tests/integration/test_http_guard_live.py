"""GR-009 end to end: factory clients against real loopback HTTP servers, and the SDKs.

Every test runs under the socket guard: allowed traffic goes to 127.0.0.1, refused
traffic must not even reach a DNS lookup. No test names a real external host as a
destination that could be reached.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import httpx
import openai
import pytest

from app.audit.types import AuditLine
from app.backends.http import (
    REFUSAL_KIND,
    LocalOnlyRefused,
    make_async_client,
    make_async_client_httpx2,
    make_client,
)
from app.errors import LocalOnlyViolation
from tests.socket_guard import SocketGuard, block_non_loopback

# ── helpers ──────────────────────────────────────────────────────────────────────────────


class RecordingSink:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def append(
        self,
        kind: str,
        *,
        session: str,
        run: str | None = None,
        role: str | None = None,
        from_: str | None = None,
        to: str | None = None,
        reason_codes: Sequence[str] = (),
        values: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
        detail: str = "",
    ) -> AuditLine:
        self.calls.append(
            {"kind": kind, "session": session, "codes": list(reason_codes), "values": values}
        )
        return AuditLine(
            seq=len(self.calls),
            ts="2026-01-01T12:00:00.000Z",
            session=session,
            kind=kind,
            prev_hash="0" * 64,
            hash="1" * 64,
        )


class LoopbackServer:
    """A tiny HTTP server on 127.0.0.1:0 that records request lines."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                server.requests.append(f"GET {self.path}")
                if self.path.startswith("/redirect"):
                    # 198.51.100.1 is TEST-NET-2: documentation only, and never followed.
                    self._reply(302, {}, {"Location": "http://198.51.100.1/v1/models"})
                elif self.path.endswith("/models"):
                    self._reply(
                        200,
                        {
                            "object": "list",
                            "data": [
                                {"id": "qwen", "object": "model", "created": 0, "owned_by": "me"}
                            ],
                        },
                    )
                else:
                    self._reply(200, {"path": self.path})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def guard() -> Iterator[SocketGuard]:
    with block_non_loopback() as g:
        yield g


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    return chain


# ── the httpx factory ────────────────────────────────────────────────────────────────────


async def test_local_only_lets_loopback_through(server: LoopbackServer, guard: SocketGuard) -> None:
    sink = RecordingSink()
    async with make_async_client(local_only=True, audit=sink, base_url=server.url) as client:
        r = await client.get("/health")
        r2 = await client.get(f"http://localhost:{server.port}/v1/models")
    assert r.status_code == 200 and r.json() == {"path": "/health"}
    assert r2.status_code == 200
    assert server.requests == ["GET /health", "GET /v1/models"]
    guard.assert_no_attempts()
    assert guard.allowed  # the loopback connections really went through the socket layer
    assert sink.calls == []


async def test_local_only_refuses_external_host_without_any_connection(
    guard: SocketGuard,
) -> None:
    sink = RecordingSink()
    async with make_async_client(local_only=True, audit=sink, session="s") as client:
        with pytest.raises(LocalOnlyRefused):
            await client.get("https://api.openai.com/v1/models")
        # A name that resolves to loopback is still a name: refused, and not even resolved.
        with pytest.raises(LocalOnlyRefused):
            await client.get("http://127.0.0.1.nip.io:8000/v1/models")
    guard.assert_no_attempts()
    assert guard.allowed == []
    assert [(c["kind"], c["values"]["host"]) for c in sink.calls] == [
        (REFUSAL_KIND, "api.openai.com"),
        (REFUSAL_KIND, "127.0.0.1.nip.io"),
    ]


async def test_local_only_off_forwards(server: LoopbackServer, guard: SocketGuard) -> None:
    async with make_async_client(local_only=False) as client:
        r = await client.get(f"{server.url}/v1/models")
    assert r.status_code == 200
    assert server.requests == ["GET /v1/models"]
    guard.assert_no_attempts()


async def test_local_only_flips_mid_session(server: LoopbackServer, guard: SocketGuard) -> None:
    state = {"on": False}
    sink = RecordingSink()
    async with make_async_client(local_only=lambda: state["on"], audit=sink) as client:
        assert (await client.get(f"{server.url}/a")).status_code == 200
        state["on"] = True
        assert (await client.get(f"{server.url}/b")).status_code == 200
        with pytest.raises(LocalOnlyViolation):
            await client.get("https://api.deepseek.com/v1/models")
    assert server.requests == ["GET /a", "GET /b"]
    assert len(sink.calls) == 1
    guard.assert_no_attempts()


async def test_redirect_to_another_host_is_not_followed(
    server: LoopbackServer, guard: SocketGuard
) -> None:
    sink = RecordingSink()
    async with make_async_client(local_only=True, audit=sink) as client:
        r = await client.get(f"{server.url}/redirect")
        assert r.status_code == 302  # visible, not silently followed
        # A caller that opts in to redirects still has every hop checked by the guard.
        with pytest.raises(LocalOnlyRefused):
            await client.get(f"{server.url}/redirect", follow_redirects=True)
    guard.assert_no_attempts()
    assert [c["values"]["host"] for c in sink.calls] == ["198.51.100.1"]


async def test_environment_proxy_does_not_reroute(
    server: LoopbackServer, guard: SocketGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LoopbackServer() as proxy:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        # Control: a plain httpx client does go through the environment's proxy.
        async with httpx.AsyncClient() as plain:
            await plain.get(f"{server.url}/via-env")
        assert proxy.requests and server.requests == []
        proxy.requests.clear()

        async with make_async_client(local_only=False) as client:
            await client.get(f"{server.url}/direct")
        assert proxy.requests == []
        assert server.requests == ["GET /direct"]
    guard.assert_no_attempts()


def test_sync_client(server: LoopbackServer, guard: SocketGuard) -> None:
    refused: list[str] = []
    with make_client(local_only=True, on_refusal=refused.append) as client:
        assert client.get(f"{server.url}/health").status_code == 200
        with pytest.raises(LocalOnlyRefused):
            client.get("https://api.openai.com/v1/models")
    assert refused == ["api.openai.com"]
    assert server.requests == ["GET /health"]
    guard.assert_no_attempts()


# ── the SDKs on factory clients ──────────────────────────────────────────────────────────


async def test_openai_sdk_surfaces_refusal_as_connection_error(guard: SocketGuard) -> None:
    sink = RecordingSink()
    client = openai.AsyncOpenAI(
        base_url="https://api.openai.com/v1",
        api_key="sk-test-not-a-real-key-000000",
        # openai types http_client as httpx2 but accepts httpx at runtime (see the factory).
        http_client=make_async_client(local_only=True, audit=sink, session="s"),  # type: ignore[arg-type]
        max_retries=0,
    )
    async with client:
        with pytest.raises(openai.APIConnectionError) as info:
            await client.models.list()
    refusals = [e for e in _causes(info.value) if isinstance(e, LocalOnlyRefused)]
    assert refusals and refusals[0].host == "api.openai.com"
    guard.assert_no_attempts()
    assert [c["values"] for c in sink.calls] == [{"host": "api.openai.com", "scheme": "https"}]
    assert "sk-test" not in repr(sink.calls)


async def test_openai_sdk_reaches_loopback_under_local_only(
    server: LoopbackServer, guard: SocketGuard
) -> None:
    client = openai.AsyncOpenAI(
        base_url=f"{server.url}/v1",
        api_key="x",
        http_client=make_async_client(local_only=True),  # type: ignore[arg-type]
        max_retries=0,
    )
    async with client:
        models = await client.models.list()
    assert [m.id for m in models.data] == ["qwen"]
    guard.assert_no_attempts()


async def test_openai_sdk_on_the_httpx2_factory(server: LoopbackServer, guard: SocketGuard) -> None:
    sink = RecordingSink()
    refused = openai.AsyncOpenAI(
        base_url="https://api.deepseek.com/v1",
        api_key="x",
        http_client=make_async_client_httpx2(local_only=True, audit=sink),
        max_retries=0,
    )
    local = openai.AsyncOpenAI(
        base_url=f"{server.url}/v1",
        api_key="x",
        http_client=make_async_client_httpx2(local_only=True, audit=sink),
        max_retries=0,
    )
    async with refused, local:
        with pytest.raises(openai.APIConnectionError) as info:
            await refused.models.list()
        assert [m.id for m in (await local.models.list()).data] == ["qwen"]
    assert any(isinstance(e, LocalOnlyRefused) for e in _causes(info.value))
    assert [c["values"]["host"] for c in sink.calls] == ["api.deepseek.com"]
    guard.assert_no_attempts()


async def test_anthropic_sdk_on_the_httpx2_factory(guard: SocketGuard) -> None:
    sink = RecordingSink()
    client = anthropic.AsyncAnthropic(
        api_key="x",
        base_url="https://api.anthropic.com",
        http_client=make_async_client_httpx2(local_only=True, audit=sink),
        max_retries=0,
    )
    async with client:
        with pytest.raises(anthropic.APIConnectionError) as info:
            await client.messages.create(
                model="claude-x", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
            )
    assert any(isinstance(e, LocalOnlyViolation) for e in _causes(info.value))
    guard.assert_no_attempts()
    assert [c["values"]["host"] for c in sink.calls] == ["api.anthropic.com"]
