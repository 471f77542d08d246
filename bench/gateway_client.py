"""P7's client: one blocking keep-alive HTTP/1.1 connection per target, timed to the byte.

No HTTP library: every side of the benchmark is measured by this same small loop, so
what it costs is the same on each and drops out of "through the proxy minus direct"; a
blocking socket with ``TCP_NODELAY`` also time-stamps each arrival without an event
loop's scheduling in between. Times are ``time.monotonic_ns()`` (CLOCK_MONOTONIC, the
clock the fake upstream stamps its chunks with).

- :meth:`Client.call`: a non-streaming request, the wall time to the last body byte;
- :meth:`Client.stream`: a streaming request; the time of the response head, of every
  SSE event (when the ``recv`` that completed it returned), and of the last byte.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any

MARK = re.compile(r"<(\d+):(\d+)>")


@dataclass
class Streamed:
    start_ns: int
    head_ns: int = 0
    end_ns: int = 0
    #: (chunk index, the fake's send time, our receive time) per paced chunk, in order
    chunks: list[tuple[int, int, int]] = field(default_factory=list)
    events: int = 0


class HttpError(RuntimeError):
    pass


class Client:
    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.port = port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock: socket.socket | None = None
        self.buf = b""

    # ── the connection ──────────────────────────────────────────────────────────────

    def _connect(self) -> socket.socket:
        idle = self.sock is not None and select.select([self.sock], [], [], 0)[0]
        if idle and self.sock is not None and not self.sock.recv(1, socket.MSG_PEEK):
            self.close()  # the server closed the idle keep-alive connection (untimed)
        if self.sock is None:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock, self.buf = sock, b""
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""

    def _recv(self) -> int:
        assert self.sock is not None
        data = self.sock.recv(262144)
        now = time.monotonic_ns()
        if not data:
            raise HttpError("connection closed mid-response")
        self.buf += data
        return now

    def _until(self, marker: bytes) -> bytes:
        while (i := self.buf.find(marker)) < 0:
            self._recv()
        out, self.buf = self.buf[:i], self.buf[i + len(marker) :]
        return out

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._recv()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _request(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], int]:
        """Send; read the head. (status, headers, the time the request was sent)."""
        payload = json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{self.port}\r\n"
            f"content-type: application/json\r\n{self.extra}"
            f"content-length: {len(payload)}\r\n\r\n"
        ).encode()
        sock = self._connect()
        t0 = time.monotonic_ns()
        sock.sendall(head + payload)
        lines = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, t0

    def _body(self, headers: dict[str, str]) -> bytes:
        if "content-length" in headers:
            out = self._exactly(int(headers["content-length"]))
        else:
            parts = []
            while size := int(self._until(b"\r\n").split(b";")[0], 16):
                parts.append(self._exactly(size))
                self._exactly(2)
            self._until(b"\r\n")  # trailers end
            out = b"".join(parts)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return out

    # ── the two measurements ────────────────────────────────────────────────────────

    def call(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A non-streaming request: (nanoseconds to the last byte, the parsed reply)."""
        try:
            status, headers, t0 = self._request(path, body)
            data = self._body(headers)
            elapsed = time.monotonic_ns() - t0
        except (OSError, HttpError):
            self.close()
            raise
        if status != 200:
            raise HttpError(f"HTTP {status}: {data[:300]!r}")
        reply: dict[str, Any] = json.loads(data)
        return elapsed, reply

    def stream(self, path: str, body: dict[str, Any]) -> Streamed:
        """A streaming request, every SSE event time-stamped as it arrives."""
        try:
            return self._stream(path, body)
        except (OSError, HttpError):
            self.close()
            raise

    def _stream(self, path: str, body: dict[str, Any]) -> Streamed:
        status, headers, t0 = self._request(path, body)
        out = Streamed(start_ns=t0, head_ns=time.monotonic_ns())
        if status != 200:
            raise HttpError(f"HTTP {status}: {self._body(headers)[:300]!r}")
        chunked = "content-length" not in headers
        remaining = -1 if chunked else int(headers["content-length"])
        text = b""  # decoded body not yet split into events
        now = out.head_ns
        while True:
            if chunked:
                while (i := self.buf.find(b"\r\n")) < 0:
                    now = self._recv()
                size = int(self.buf[:i].split(b";")[0], 16)
                while len(self.buf) < i + 2 + size + 2:
                    now = self._recv()
                piece = self.buf[i + 2 : i + 2 + size]
                self.buf = self.buf[i + 2 + size + 2 :]
                done = size == 0
            else:
                if not self.buf and remaining:
                    now = self._recv()
                piece, self.buf = self.buf[:remaining], self.buf[remaining:]
                remaining -= len(piece)
                done = remaining == 0
            text += piece
            while (j := text.find(b"\n\n")) >= 0:
                event, text = text[:j], text[j + 2 :]
                self._event(event, now, out)
            if done:
                break
        out.end_ns = now
        if headers.get("connection", "").lower() == "close":
            self.close()
        return out

    @staticmethod
    def _event(event: bytes, now: int, out: Streamed) -> None:
        out.events += 1
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]" or b"<" not in data:
                continue
            obj = json.loads(data)
            for choice in obj.get("choices") or []:
                content = (choice.get("delta") or {}).get("content") or ""
                for k, sent in MARK.findall(content):
                    out.chunks.append((int(k), int(sent), now))
