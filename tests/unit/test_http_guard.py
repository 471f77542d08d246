"""GR-009 at the transport: the guard's decisions, without real sockets.

Forwarding is shown with an in-memory inner transport; the loopback-server versions of
these tests live in tests/integration/test_http_guard_live.py.
"""

from __future__ import annotations

import ast
import asyncio
import errno
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest

from app.audit.types import AuditLine, AuditSink
from app.backends.http import (
    REFUSAL_KIND,
    REFUSAL_REASON,
    GuardedAsyncTransport,
    GuardedAsyncTransport2,
    GuardedTransport,
    LocalOnlyRefused,
    guard_url,
    is_loopback_host,
    make_async_client,
    make_async_client_httpx2,
    make_client,
)
from app.errors import BackendUnavailable, LocalOnlyViolation, SwitchyardError
from tests.socket_guard import NetworkBlocked, block_non_loopback

APP = Path(__file__).resolve().parents[2] / "app"


class RecordingSink:
    """An AuditSink that keeps the calls."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail

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
        if self.fail:
            raise OSError("disk full")
        call = {
            "kind": kind,
            "session": session,
            "reason_codes": list(reason_codes),
            "values": dict(values or {}),
            "detail": detail,
        }
        self.calls.append(call)
        return AuditLine(
            seq=len(self.calls),
            ts="2026-01-01T12:00:00.000Z",
            session=session,
            kind=kind,
            reason_codes=list(reason_codes),
            values=dict(values or {}),
            prev_hash="0" * 64,
            hash="1" * 64,
        )


def _sink_is_an_audit_sink(sink: RecordingSink) -> AuditSink:
    return sink  # mypy checks the protocol here


class Inner(httpx.AsyncBaseTransport):
    """Stands in for the network: records what would have been sent."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(str(request.url))
        return httpx.Response(200, json={"ok": True})


# ── is_loopback_host / guard_url ─────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("localhost.", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("192.168.1.10", False),
        ("example.com", False),
        ("api.openai.com", False),
        ("127.0.0.1.nip.io", False),
        ("localhost.example.com", False),
        ("foo.localhost", False),
        ("127.1", False),  # shorthand the OS accepts; refused, never guessed
        ("0x7f000001", False),
        ("", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_guard_url() -> None:
    guard_url("http://127.0.0.1:8000/v1", local_only=True)
    guard_url("http://[::1]:8000/v1", local_only=True)
    guard_url("https://api.openai.com/v1", local_only=False)
    with pytest.raises(LocalOnlyRefused) as info:
        guard_url("https://api.openai.com/v1/models?key=sk-secret", local_only=True)
    assert (info.value.host, info.value.scheme) == ("api.openai.com", "https")
    assert "sk-secret" not in str(info.value)


def test_refusal_is_a_connect_error_of_both_stacks_and_ours() -> None:
    exc = LocalOnlyRefused("api.openai.com", "https")
    assert isinstance(exc, httpx.ConnectError)
    assert isinstance(exc, httpx2.ConnectError)
    assert isinstance(exc, LocalOnlyViolation)
    assert isinstance(exc, BackendUnavailable)
    assert isinstance(exc, SwitchyardError)
    request = httpx.Request("GET", "https://api.openai.com/")
    assert LocalOnlyRefused("api.openai.com", request=request).request is request


# ── the async transport ──────────────────────────────────────────────────────────────────


async def test_local_only_refuses_audits_and_never_touches_the_network() -> None:
    sink = RecordingSink()
    inner = Inner()
    transport = GuardedAsyncTransport(True, audit=_sink_is_an_audit_sink(sink), inner=inner)
    with block_non_loopback() as guard:
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(LocalOnlyRefused) as info:
                await client.get(
                    "https://api.openai.com/v1/models?api_key=sk-secret",
                    headers={"Authorization": "Bearer sk-secret"},
                )
    assert inner.seen == []
    guard.assert_no_attempts()
    assert info.value.request.url.host == "api.openai.com"
    assert sink.calls == [
        {
            "kind": REFUSAL_KIND,
            "session": "",
            "reason_codes": [REFUSAL_REASON],
            "values": {"host": "api.openai.com", "scheme": "https"},
            "detail": "non-loopback host refused while local_only is on",
        }
    ]
    assert "sk-secret" not in repr(sink.calls)


async def test_factory_client_refuses_with_session_in_the_audit_line() -> None:
    sink = RecordingSink()
    with block_non_loopback() as guard:
        async with make_async_client(local_only=True, audit=sink, session="s1") as client:
            with pytest.raises(LocalOnlyViolation):
                await client.post("http://10.0.0.1:8000/v1/chat/completions", json={})
    guard.assert_no_attempts()
    assert [(c["kind"], c["session"], c["values"]) for c in sink.calls] == [
        (REFUSAL_KIND, "s1", {"host": "10.0.0.1", "scheme": "http"})
    ]


async def test_loopback_passes_while_local_only_is_on() -> None:
    sink = RecordingSink()
    inner = Inner()
    transport = GuardedAsyncTransport(True, audit=sink, inner=inner)
    async with httpx.AsyncClient(transport=transport) as client:
        for url in ("http://127.0.0.1:8000/v1", "http://[::1]:8/x", "http://LOCALHOST:1/"):
            assert (await client.get(url)).status_code == 200
    assert len(inner.seen) == 3
    assert sink.calls == []


async def test_local_only_off_forwards_any_host() -> None:
    inner = Inner()
    async with httpx.AsyncClient(transport=GuardedAsyncTransport(False, inner=inner)) as client:
        assert (await client.get("https://api.openai.com/v1/models")).status_code == 200
    assert inner.seen == ["https://api.openai.com/v1/models"]


async def test_callable_local_only_is_read_on_every_request() -> None:
    state = {"on": False}
    sink = RecordingSink()
    inner = Inner()
    transport = GuardedAsyncTransport(lambda: state["on"], audit=sink, inner=inner)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("https://api.deepseek.com/v1/models")
        state["on"] = True  # a spec turned local_only on mid-session
        with pytest.raises(LocalOnlyRefused):
            await client.get("https://api.deepseek.com/v1/models")
        await client.get("http://127.0.0.1:9/health")  # loopback still fine
        state["on"] = False
        await client.get("https://api.deepseek.com/v1/models")
    assert inner.seen == [
        "https://api.deepseek.com/v1/models",
        "http://127.0.0.1:9/health",
        "https://api.deepseek.com/v1/models",
    ]
    assert len(sink.calls) == 1


async def test_refusal_stands_when_the_audit_sink_fails() -> None:
    inner = Inner()
    transport = GuardedAsyncTransport(True, audit=RecordingSink(fail=True), inner=inner)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(LocalOnlyRefused) as info:
            await client.get("https://api.openai.com/")
    assert isinstance(info.value.audit_error, OSError)
    assert inner.seen == []


async def test_refusal_without_a_sink_still_refuses() -> None:
    with block_non_loopback() as guard:
        async with make_async_client(local_only=True) as client:
            with pytest.raises(LocalOnlyRefused):
                await client.get("https://api.moonshot.cn/v1/models")
    guard.assert_no_attempts()


async def test_httpx2_transport_has_the_same_guard() -> None:
    sink = RecordingSink()
    seen: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(str(request.url))
        return httpx2.Response(200)

    state = {"on": True}
    transport = GuardedAsyncTransport2(
        lambda: state["on"], audit=sink, session="s2", inner=httpx2.MockTransport(handler)
    )
    async with httpx2.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx2.ConnectError) as info:
            await client.get("https://api.anthropic.com/v1/messages")
        assert isinstance(info.value, LocalOnlyViolation)
        await client.get("http://127.0.0.1:1/")
        state["on"] = False
        await client.get("https://api.anthropic.com/v1/messages")
    assert seen == ["http://127.0.0.1:1/", "https://api.anthropic.com/v1/messages"]
    assert [c["values"] for c in sink.calls] == [{"host": "api.anthropic.com", "scheme": "https"}]
    assert sink.calls[0]["session"] == "s2"

    with block_non_loopback() as guard:
        async with make_async_client_httpx2(local_only=True, audit=sink) as client2:
            with pytest.raises(LocalOnlyRefused):
                await client2.get("https://api.anthropic.com/v1/messages")
    guard.assert_no_attempts()


# ── the sync twin ────────────────────────────────────────────────────────────────────────


def test_sync_transport_refuses_and_calls_on_refusal() -> None:
    refused: list[str] = []
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(204)

    transport = GuardedTransport(
        True, on_refusal=refused.append, inner=httpx.MockTransport(handler)
    )
    with httpx.Client(transport=transport) as client:
        with pytest.raises(LocalOnlyRefused):
            client.get("https://api.openai.com/v1/models?key=sk-secret")
        assert client.get("http://localhost:8000/health").status_code == 204
    assert refused == ["api.openai.com"]
    assert seen == ["http://localhost:8000/health"]

    with (
        block_non_loopback() as guard,
        make_client(local_only=True) as sync_client,
        pytest.raises(LocalOnlyViolation),
    ):
        sync_client.get("https://example.com/")
    guard.assert_no_attempts()


# ── client settings ──────────────────────────────────────────────────────────────────────


async def test_factory_clients_ignore_env_proxies_and_do_not_follow_redirects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://proxy.example.com:3128")
    async with make_async_client(local_only=True) as client:
        assert client.trust_env is False
        assert client.follow_redirects is False
        # With trust_env on, httpx would mount proxy transports here that skip our guard.
        assert client._mounts == {}
    with make_client(local_only=True) as sync_client:
        assert sync_client.trust_env is False
        assert sync_client.follow_redirects is False
        assert sync_client._mounts == {}
    async with make_async_client_httpx2(local_only=True) as client2:
        assert client2.trust_env is False
        assert client2.follow_redirects is False
        assert client2._mounts == {}


def test_factory_passes_base_url_headers_and_timeout() -> None:
    client = make_async_client(
        local_only=True, base_url="http://127.0.0.1:8000/v1", headers={"X-A": "1"}, timeout=3.0
    )
    assert str(client.base_url) == "http://127.0.0.1:8000/v1/"
    assert client.headers["x-a"] == "1"
    assert client.timeout == httpx.Timeout(3.0)


# ── one factory (GR-009): nothing else in app/ builds an HTTP client ─────────────────────

_CLIENT_CTORS = {"Client", "AsyncClient", "HTTPTransport", "AsyncHTTPTransport"}
_SDK_CTORS = {"OpenAI", "AsyncOpenAI", "Anthropic", "AsyncAnthropic"}
#: what opens connections in the other stacks: aiohttp (the StreamClient's), and the
#: connection pools under httpx/httpx2, which carry no guard of their own
_STACK_CTORS = {
    "aiohttp": {"ClientSession", "TCPConnector", "UnixConnector", "NamedPipeConnector", "request"},
    "httpcore": {"AsyncConnectionPool", "ConnectionPool", "AsyncHTTPConnection", "HTTPConnection"},
}
_STACK_CTORS["httpcore2"] = _STACK_CTORS["httpcore"]


def _factory_problems(rel: str, source: str) -> list[str]:
    tree = ast.parse(source)
    # names imported from a stack (``from aiohttp import ClientSession as S``) count too
    imported = {
        alias.asname or alias.name: (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        base = func.value if isinstance(func, ast.Attribute) else None
        base_name = getattr(base, "id", "")
        if isinstance(func, ast.Name) and name in imported:
            module, original = imported[name]
            base_name, name = module.split(".")[0], original
        if name in _CLIENT_CTORS and base_name in ("httpx", "httpx2"):
            problems.append(f"{rel}:{node.lineno}: {base_name}.{name}() outside the factory")
        if name in _STACK_CTORS.get(base_name, ()):
            problems.append(f"{rel}:{node.lineno}: {base_name}.{name}() outside the factory")
        if name in _SDK_CTORS and not any(k.arg == "http_client" for k in node.keywords):
            problems.append(f"{rel}:{node.lineno}: {name}() without http_client=")
    return problems


def test_only_the_factory_builds_http_clients() -> None:
    problems = []
    for path in sorted(APP.rglob("*.py")):
        rel = path.relative_to(APP.parent).as_posix()
        if rel != "app/backends/http.py":
            problems += _factory_problems(rel, path.read_text(encoding="utf-8"))
    assert problems == []


@pytest.mark.parametrize(
    "source",
    [
        "import httpx\nhttpx.AsyncClient()",
        "import aiohttp\naiohttp.ClientSession()",
        "import aiohttp\naiohttp.TCPConnector(limit=1)",
        "import aiohttp\naiohttp.request('GET', 'http://x')",
        "from aiohttp import ClientSession as S\nS()",
        "from aiohttp.connector import TCPConnector\nTCPConnector()",
        "import httpcore2\nhttpcore2.AsyncConnectionPool()",
        "from httpcore import ConnectionPool\nConnectionPool()",
        "import openai\nopenai.AsyncOpenAI(api_key='x')",
    ],
)
def test_the_factory_check_sees_every_stack(source: str) -> None:
    assert len(_factory_problems("app/x.py", source)) == 1


def test_the_factory_builds_the_stream_client_only_inside_http_py() -> None:
    source = (APP / "backends" / "http.py").read_text(encoding="utf-8")
    assert _factory_problems("app/backends/http.py", source)  # it is where they are built


# ── the socket guard itself (tests/socket_guard.py) ──────────────────────────────────────


def _tripwire(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("passed through to the real network call")


@pytest.fixture
def tripwired(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 'real' network calls become tripwires, so a broken guard fails without a packet."""
    monkeypatch.setattr(socket, "getaddrinfo", _tripwire)
    monkeypatch.setattr(socket, "create_connection", _tripwire)
    monkeypatch.setattr(socket.socket, "connect", _tripwire)
    monkeypatch.setattr(socket.socket, "connect_ex", _tripwire)
    monkeypatch.setattr(socket.socket, "sendto", _tripwire)


@pytest.mark.usefixtures("tripwired")
def test_socket_guard_blocks_and_records_external_destinations() -> None:
    with block_non_loopback() as guard:
        with pytest.raises(NetworkBlocked):
            socket.getaddrinfo("api.openai.com", 443)
        with pytest.raises(NetworkBlocked):
            socket.create_connection(("192.0.2.1", 443))
        with socket.socket() as sock:
            with pytest.raises(NetworkBlocked):
                sock.connect(("127.0.0.1.nip.io", 80))
            assert sock.connect_ex(("10.0.0.1", 80)) == errno.ENETUNREACH
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
            pytest.raises(NetworkBlocked),
        ):
            udp.sendto(b"q", ("8.8.8.8", 53))
    assert [(a.call, a.host, a.port) for a in guard.attempts] == [
        ("getaddrinfo", "api.openai.com", 443),
        ("create_connection", "192.0.2.1", 443),
        ("connect", "127.0.0.1.nip.io", 80),
        ("connect_ex", "10.0.0.1", 80),
        ("sendto", "8.8.8.8", 53),
    ]
    with pytest.raises(AssertionError, match="non-loopback"):
        guard.assert_no_attempts()


@pytest.mark.usefixtures("tripwired")
def test_socket_guard_lets_loopback_through_and_restores() -> None:
    patched = socket.getaddrinfo
    with block_non_loopback() as guard:
        for call in (
            lambda: socket.getaddrinfo("localhost", 80),
            lambda: socket.create_connection(("127.0.0.1", 80)),
            lambda: socket.socket().connect(("::1", 80)),
        ):
            with pytest.raises(AssertionError, match="passed through"):
                call()
    guard.assert_no_attempts()
    assert [a.host for a in guard.allowed] == ["localhost", "127.0.0.1", "::1"]
    assert socket.getaddrinfo is patched


async def test_socket_guard_covers_asyncio(tripwired: None) -> None:
    with block_non_loopback() as guard:
        with pytest.raises(OSError):
            await asyncio.open_connection("api.openai.com", 443)
        with pytest.raises(OSError):
            await asyncio.open_connection("192.0.2.1", 443)
    assert {a.host for a in guard.attempts} == {"api.openai.com", "192.0.2.1"}


@pytest.mark.parametrize(
    ("host", "numeric"),
    [
        ("127.1", True),
        ("0x7f000001", True),
        ("2130706433", True),
        ("0x7f.1", True),
        ("10.1.2.3", True),
        ("127.1.evil.example", False),
        ("1.2.3.4 evil.example", False),  # inet_aton alone takes it
        ("1e3", False),
        ("localhost", False),
        ("", False),
    ],
)
def test_is_numeric_ipv4(host: str, numeric: bool) -> None:
    from app.hosts import is_numeric_ipv4

    assert is_numeric_ipv4(host) is numeric
