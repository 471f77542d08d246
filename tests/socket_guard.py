"""A test helper that proves no packet leaves the machine.

``block_non_loopback()`` patches the points every Python network stack goes through
(``socket.getaddrinfo``, ``socket.create_connection``, ``socket.socket.connect`` /
``connect_ex`` / ``sendto``) and refuses any destination that is not loopback, recording
each attempt. Loopback traffic passes untouched, so real loopback servers keep working.

Usage::

    from tests.socket_guard import block_non_loopback

    with block_non_loopback() as guard:
        ...
    assert guard.attempts == []

or, as a fixture, import ``socket_guard`` into a conftest (``pytest_plugins`` or a plain
import) and ask for it by name.

It is deliberately independent of ``app.backends.http.is_loopback_host``: a test helper
that shared the product's classifier would share its bugs.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

__all__ = ["Attempt", "NetworkBlocked", "SocketGuard", "block_non_loopback", "socket_guard"]


class NetworkBlocked(OSError):
    """Raised in place of a non-loopback connection or lookup (an OSError, like a real
    network failure, so the code under test takes its ordinary error path)."""


@dataclass(frozen=True)
class Attempt:
    call: str  # getaddrinfo | create_connection | connect | connect_ex | sendto
    host: str
    port: int | None


@dataclass
class SocketGuard:
    #: every refused non-loopback destination, in order
    attempts: list[Attempt] = field(default_factory=list)
    #: loopback destinations that were let through (handy when debugging a test)
    allowed: list[Attempt] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, call: str, host: Any, port: Any) -> bool:
        """Record one destination; True when it may proceed."""
        attempt = Attempt(call, _host_str(host), port if isinstance(port, int) else None)
        ok = is_loopback_destination(host)
        with self._lock:  # getaddrinfo runs in executor threads
            (self.allowed if ok else self.attempts).append(attempt)
        return ok

    def assert_no_attempts(self) -> None:
        assert self.attempts == [], f"non-loopback network attempts: {self.attempts}"


def _host_str(host: Any) -> str:
    if isinstance(host, bytes):
        return host.decode("ascii", "replace")
    return "" if host is None else str(host)


def is_loopback_destination(host: Any) -> bool:
    """Loopback IP literals and the name ``localhost``; every other name is external."""
    if host is None:  # getaddrinfo(None, port): the local/passive address
        return True
    h = _host_str(host).strip().lower()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if h in ("localhost", "localhost."):
        return True
    try:
        ip = ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _split_address(address: Any) -> tuple[Any, Any] | None:
    """(host, port) for an INET address; None for AF_UNIX paths (always local)."""
    if isinstance(address, tuple) and len(address) >= 2:
        return address[0], address[1]
    return None


@contextmanager
def block_non_loopback() -> Iterator[SocketGuard]:
    guard = SocketGuard()
    real_getaddrinfo = socket.getaddrinfo
    real_create_connection = socket.create_connection
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_sendto = socket.socket.sendto

    def blocked(call: str, host: Any, port: Any) -> NetworkBlocked:
        return NetworkBlocked(
            errno.ENETUNREACH, f"socket_guard: {call} to {_host_str(host)!r}:{port} blocked"
        )

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if not guard.record("getaddrinfo", host, port):
            raise blocked("getaddrinfo", host, port)
        return real_getaddrinfo(host, port, *args, **kwargs)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        host, port = address[0], address[1]
        if not guard.record("create_connection", host, port):
            raise blocked("create_connection", host, port)
        return real_create_connection(address, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> None:
        parts = _split_address(address)
        if parts is not None and not guard.record("connect", *parts):
            raise blocked("connect", *parts)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        parts = _split_address(address)
        if parts is not None and not guard.record("connect_ex", *parts):
            return errno.ENETUNREACH
        return real_connect_ex(self, address)

    def sendto(self: socket.socket, data: Any, *args: Any) -> int:
        # UDP (a DNS query, say) never calls connect; the address is the last argument.
        parts = _split_address(args[-1]) if args else None
        if parts is not None and not guard.record("sendto", *parts):
            raise blocked("sendto", *parts)
        return real_sendto(self, data, *args)

    patches: list[tuple[Any, str, Any]] = [
        (socket, "getaddrinfo", getaddrinfo),
        (socket, "create_connection", create_connection),
        (socket.socket, "connect", connect),
        (socket.socket, "connect_ex", connect_ex),
        (socket.socket, "sendto", sendto),
    ]
    saved = [(target, name, getattr(target, name)) for target, name, _ in patches]
    for target, name, replacement in patches:
        setattr(target, name, replacement)
    try:
        yield guard
    finally:
        for target, name, original in saved:
            setattr(target, name, original)


@pytest.fixture
def socket_guard() -> Iterator[SocketGuard]:
    """Block and record every non-loopback destination for the duration of a test."""
    with block_non_loopback() as guard:
        yield guard
