"""A loopback port nobody listens on, for the whole test run.

A port found free and let go could be taken a moment later by a server of another test
running at the same time (pytest-xdist's other worker): the test that points a runtime
there would then reach that server. The socket is bound and kept, never listening, so a
connection to the port is refused and no one else can bind it.
"""

from __future__ import annotations

import socket

_HELD: list[socket.socket] = []


def closed_port() -> int:
    """A port on 127.0.0.1 that refuses connections until this process ends."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    _HELD.append(s)
    port: int = s.getsockname()[1]
    return port
