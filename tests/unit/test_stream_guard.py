"""GR-009 for the third HTTP stack: the decision every stack shares, and the aiohttp
StreamClient refusing before any socket is touched.

The decision (``_Guard.decide``) is tested over URL parts with injected resolvers; the
client's loopback and named-host runs against real servers live in
tests/integration/test_stream_client_live.py.
"""

from __future__ import annotations

import httpx
import httpx2
import pytest

from app.backends.http import (
    REFUSAL_KIND,
    REFUSAL_REASON,
    GuardedAsyncTransport,
    GuardedAsyncTransport2,
    LocalOnlyRefused,
    _Guard,
    make_async_client,
    make_async_client_httpx2,
    stream_client,
)
from app.backends.http_stream import Target, client_timeout, translated
from app.errors import LocalOnlyViolation
from tests.socket_guard import block_non_loopback
from tests.unit.test_http_guard import RecordingSink

NAMED = frozenset({("gpu-box.lan", 8000)})


def guard(local_only: bool = True, table: dict[str, list[str]] | None = None) -> _Guard:
    looked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        looked.append(host)
        return (table or {}).get(host, [])

    g = _Guard(local_only, None, "", None, NAMED, resolve, lambda h, p: (table or {}).get(h, []))
    g.looked = looked  # type: ignore[attr-defined]
    return g


# ── the decision, shared by httpx, httpx2 and aiohttp ────────────────────────────────────


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "127.9.9.9"])
async def test_loopback_goes_as_asked_without_a_lookup(host: str) -> None:
    g = guard()
    assert await g.decide("http", host, 8000) is None
    assert g.decide_sync("http", host, 8000) is None
    assert g.looked == []  # type: ignore[attr-defined]


async def test_local_only_off_goes_as_asked_without_a_lookup() -> None:
    g = guard(local_only=False)
    assert await g.decide("https", "api.openai.com", None) is None
    assert await g.decide("http", "gpu-box.lan", 8000) is None
    assert g.looked == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("scheme", "host", "port"),
    [
        ("https", "api.openai.com", None),
        ("http", "10.0.0.1", 8000),  # private, but not named
        ("http", "127.0.0.1.nip.io", 8000),  # a name is not loopback
        ("http", "gpu-box.lan", 8001),  # the named host on another port
        ("https", "gpu-box.lan", None),  # … and on the scheme's default port
    ],
)
async def test_a_host_the_policy_does_not_name_is_refused_without_a_lookup(
    scheme: str, host: str, port: int | None
) -> None:
    g = guard(table={"gpu-box.lan": ["192.168.1.20"]})
    verdict = await g.decide(scheme, host, port)
    assert isinstance(verdict, LocalOnlyRefused)
    assert (verdict.host, verdict.scheme, verdict.why) == (host, scheme, "")
    assert isinstance(g.decide_sync(scheme, host, port), LocalOnlyRefused)
    assert g.looked == []  # type: ignore[attr-defined]


async def test_a_named_host_goes_to_the_private_address_it_was_checked_at() -> None:
    g = guard(table={"gpu-box.lan": ["192.168.1.20", "fd00::5"]})
    assert await g.decide("http", "GPU-Box.lan", 8000) == "192.168.1.20"
    assert g.decide_sync("http", "gpu-box.lan", 8000) == "192.168.1.20"
    assert g.looked == ["gpu-box.lan"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("addresses", "why"),
    [
        (["203.0.113.7"], "203.0.113.7"),  # a cloud VM called gpu-box
        (["192.168.1.20", "8.8.8.8"], "8.8.8.8"),  # every address must be private
        (["169.254.169.254"], "169.254.169.254"),  # link-local: the metadata service
        ([], "does not resolve"),
    ],
)
async def test_a_named_host_that_resolves_outside_is_refused(
    addresses: list[str], why: str
) -> None:
    g = guard(table={"gpu-box.lan": addresses})
    verdict = await g.decide("http", "gpu-box.lan", 8000)
    assert isinstance(verdict, LocalOnlyRefused) and why in verdict.why
    sync = g.decide_sync("http", "gpu-box.lan", 8000)
    assert isinstance(sync, LocalOnlyRefused) and sync.why == verdict.why


async def test_local_only_is_read_on_every_decision() -> None:
    state = {"on": False}
    g = _Guard(lambda: state["on"], None, "", None)
    assert await g.decide("https", "api.deepseek.com", None) is None
    state["on"] = True
    assert isinstance(await g.decide("https", "api.deepseek.com", None), LocalOnlyRefused)


# ── the StreamClient: refused before a socket, audited as the httpx stacks audit ─────────


async def test_the_stream_client_refuses_and_audits_like_the_httpx_transports() -> None:
    by_stack: dict[str, list[dict[str, object]]] = {}
    url = "https://api.openai.com/v1/chat/completions?key=sk-secret"
    with block_non_loopback() as sockets:
        for stack, make in (("httpx", make_async_client), ("httpx2", make_async_client_httpx2)):
            sink = RecordingSink()
            async with make(local_only=True, audit=sink, session="s1") as client:
                with pytest.raises(LocalOnlyRefused):
                    await client.post(url, json={})
                streams = stream_client(client)
                assert streams is not None
                with pytest.raises(LocalOnlyRefused) as info:
                    await streams.post(
                        url, b"{}", {"authorization": "Bearer sk-secret"}, client.timeout
                    )
                assert streams._session is None  # aiohttp was never even set up
            by_stack[stack] = sink.calls
    sockets.assert_no_attempts()
    assert isinstance(info.value, httpx2.ConnectError) and isinstance(
        info.value, LocalOnlyViolation
    )
    line = {
        "kind": REFUSAL_KIND,
        "session": "s1",
        "reason_codes": [REFUSAL_REASON],
        "values": {"host": "api.openai.com", "scheme": "https"},
        "detail": "non-loopback host refused while local_only is on",
    }
    # one line per refusal, the same from the transport and from its stream client
    assert by_stack == {"httpx": [line, line], "httpx2": [line, line]}
    assert "sk-secret" not in repr(by_stack)


async def test_a_refusal_stands_when_the_audit_sink_fails() -> None:
    transport = GuardedAsyncTransport2(True, audit=RecordingSink(fail=True))
    with block_non_loopback() as sockets, pytest.raises(LocalOnlyRefused) as info:
        await transport.streams.post(
            "http://10.0.0.1:8000/v1/chat/completions", b"{}", {}, httpx2.Timeout(1.0)
        )
    sockets.assert_no_attempts()
    assert isinstance(info.value.audit_error, OSError)
    await transport.aclose()


async def test_each_factory_client_has_its_transports_stream_client() -> None:
    one = make_async_client(local_only=True)
    two = make_async_client_httpx2(local_only=True)
    assert stream_client(one) is not None and stream_client(two) is not None
    assert stream_client(one) is not stream_client(two)
    # a client from anywhere else has none (and the backend keeps it on the SDK)
    async with httpx.AsyncClient(transport=GuardedAsyncTransport(True)) as other:
        assert stream_client(other) is None
    await one.aclose()
    await two.aclose()


# ── the pieces ───────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "authority"),
    [
        ("http://127.0.0.1:8000/v1/chat/completions", "http", "127.0.0.1", 8000, "127.0.0.1:8000"),
        ("https://GPU-Box.lan/v1", "https", "gpu-box.lan", None, "gpu-box.lan"),
        ("http://[fd00::5]:8000/v1", "http", "fd00::5", 8000, "[fd00::5]:8000"),
    ],
)
def test_a_target_reads_as_httpx_reads_a_url(
    url: str, scheme: str, host: str, port: int | None, authority: str
) -> None:
    target = Target.of(url)
    parsed = httpx.URL(url)
    assert (target.scheme, target.host, target.port) == (scheme, host, port)
    assert (parsed.scheme, parsed.host, parsed.port) == (scheme, host, port)
    assert target.authority == authority


def test_timeouts_map_to_aiohttp() -> None:
    t = httpx2.Timeout(120.0, connect=5.0)
    limits = client_timeout(t.connect, t.read, t.pool)
    assert (limits.total, limits.sock_connect, limits.sock_read, limits.connect) == (
        None,
        5.0,
        120.0,
        120.0,
    )


def test_aiohttp_failures_become_the_httpx2_errors_the_mapper_knows() -> None:
    import aiohttp

    assert isinstance(translated(aiohttp.ConnectionTimeoutError()), httpx2.ConnectTimeout)
    assert isinstance(translated(aiohttp.SocketTimeoutError()), httpx2.ReadTimeout)
    assert isinstance(translated(TimeoutError()), httpx2.ReadTimeout)
    assert isinstance(translated(aiohttp.ServerDisconnectedError()), httpx2.RemoteProtocolError)
    assert isinstance(translated(aiohttp.ClientPayloadError("cut")), httpx2.RemoteProtocolError)
    assert isinstance(translated(aiohttp.ClientOSError(104, "reset")), httpx2.ReadError)
