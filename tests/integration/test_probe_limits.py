"""The runtime probe (`local status`, the supervisor's health wait): an answer that never
ends and a URL that is no URL each come back as a state, never a hang or a traceback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from app.backends.probe import probe_endpoint


@pytest.fixture
def dripping() -> Iterator[int]:
    """A loopback server that promises 100 kB and sends a byte every 0.2 s (for 10 s)."""
    yield from _dripper(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")


#: set when a connection got its whole drip: a probe still waiting then was not bounded
FINISHED = threading.Event()


@pytest.fixture
def dripping_headers() -> Iterator[int]:
    """A loopback server whose headers never end: a byte of one every 0.2 s (for 10 s)."""
    FINISHED.clear()
    yield from _dripper(b"HTTP/1.1 200 OK\r\nX-Slow: ")


def _dripper(head: bytes) -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(head)
                for _ in range(50):
                    if stop.is_set():
                        return
                    try:
                        conn.sendall(b"x")
                    except OSError:
                        break
                    time.sleep(0.2)
                else:
                    FINISHED.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=15)


def test_an_answer_that_never_ends_is_down_within_the_limit(dripping: int) -> None:
    """httpx's timeout bounds each read: a server that sends a byte every 0.2 s kept
    `local status` waiting for ever (it answered nothing for 60 s, then was killed)."""
    status = probe_endpoint("vllm", f"http://127.0.0.1:{dripping}/v1", timeout=1.0)
    assert status.state == "down" and status.detail == "no answer in 1s"


def test_headers_that_never_end_are_down_within_the_limit(dripping_headers: int) -> None:
    """httpx's timeout bounds each read of the headers too: `local status`, `route
    explain --probe` and `ask` waited on such a server until it gave up (10 s here)."""
    status = probe_endpoint("vllm", f"http://127.0.0.1:{dripping_headers}/v1", timeout=1.0)
    assert status.state == "down" and status.detail == "no answer in 1s"
    assert not FINISHED.is_set()  # it answered before the server was done with it


async def test_the_routers_probe_of_such_a_server_says_down(dripping_headers: int) -> None:
    from app.backends.registry import BackendRegistry
    from app.policy import load_policy

    url = f"http://127.0.0.1:{dripping_headers}/v1"
    registry = BackendRegistry(load_policy().policy, local_only=False, runtime_urls={"vllm": url})
    try:
        assert await registry.runtime_up("vllm") is False
        assert not FINISHED.is_set()  # it answered before the server was done with it
    finally:
        await registry.aclose()


@pytest.mark.parametrize("url", ["http://127.0.0.1:abc/v1", "http://[::1/v1"])
def test_a_url_that_is_no_url_is_an_error_state(url: str) -> None:
    """SWITCHYARD_VLLM_URL with a typo was an httpx.InvalidURL traceback."""
    status = probe_endpoint("vllm", url, timeout=1.0)
    assert status.state == "error" and status.detail.startswith("not a URL")
