"""P7's upstream: a fast loopback fake of an OpenAI-compatible runtime (vLLM's endpoints).

A bare asyncio protocol on uvloop (no framework: the upstream's own cost should be as
small and as steady as possible, since every side of the benchmark pays it), with
``TCP_NODELAY`` on every accepted socket (FACTS.md: without it a fake stalls ~40 ms on
delayed ACKs) and HTTP/1.1 keep-alive.

- ``GET /health`` → 200; ``GET /v1/models`` → the names given with ``--models``;
- ``POST /v1/chat/completions``: JSON, or an SSE stream (chunked) of a role chunk, the
  reply, a finish chunk, a usage chunk and ``data: [DONE]`` in one write;
- a paced stream when the last message asks for one (``pace 10x20ms``): ten content
  chunks, 20 ms apart on the loop's clock (``call_at`` from the first, so no drift), the
  first one with the response head. Each chunk's text is ``<k:NS>``: ``NS`` is
  ``time.monotonic_ns()`` right before the write, the same clock in every process on
  the machine, so a client can tell the gaps as sent from the gaps as received.

Prints ``port N`` on stdout when it listens. Run: python -m bench.gateway_fake --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import time
from typing import Any, ClassVar

PACE = re.compile(r"pace (\d+)x(\d+)ms")
REPLY = "ok"
CREATED = 1_760_000_000


def _head(status: str, ctype: str, length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"content-type: {ctype}"]
    lines.append(
        f"content-length: {length}" if length is not None else "transfer-encoding: chunked"
    )
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class Upstream(asyncio.Protocol):
    models: ClassVar[list[str]] = []

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a paced stream is being written on this connection
        self.seq = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while not self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            method, path, _ = head[0].split(" ", 2)
            self.handle(method, path.split("?", 1)[0], body)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(data)

    def handle(self, method: str, path: str, body: bytes) -> None:
        path = path.removeprefix("/v1")
        if method == "GET" and path == "/health":
            self.write(_head("200 OK", "application/json", 0))
        elif method == "GET" and path == "/models":
            data = [
                {"id": m, "object": "model", "owned_by": "vllm", "max_model_len": 32768}
                for m in self.models
            ]
            out = json.dumps({"object": "list", "data": data}).encode()
            self.write(_head("200 OK", "application/json", len(out)) + out)
        elif method == "POST" and path == "/chat/completions":
            self.chat(json.loads(body))
        else:
            out = b'{"object":"error","message":"no such route"}'
            self.write(_head("404 Not Found", "application/json", len(out)) + out)

    def chat(self, req: dict[str, Any]) -> None:
        self.seq += 1
        ident, model = f"chatcmpl-bench-{self.seq}", str(req.get("model"))
        usage = {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}
        if not req.get("stream"):
            message = {"role": "assistant", "content": REPLY}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            obj = {
                "id": ident,
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "choices": [choice],
                "usage": usage,
            }
            out = json.dumps(obj, separators=(",", ":")).encode()
            self.write(_head("200 OK", "application/json", len(out)) + out)
            return

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            obj = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "choices": [choice],
            }
            return _sse(obj)

        tail = event({}, "stop")
        if (req.get("stream_options") or {}).get("include_usage"):
            tail += _sse(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": CREATED,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
        tail = _chunk(tail + b"data: [DONE]\n\n") + b"0\r\n\r\n"
        head = _head("200 OK", "text/event-stream", None)
        messages = req.get("messages") or [{}]
        pace = PACE.search(str(messages[-1].get("content", "")))
        if pace is None:
            first = event({"role": "assistant", "content": ""}) + event({"content": REPLY})
            self.write(head + _chunk(first) + tail)
            return
        count, gap_s = int(pace.group(1)), int(pace.group(2)) / 1000
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.busy = True

        def send(k: int) -> None:
            text = f"<{k}:{time.monotonic_ns()}>"
            delta: dict[str, Any] = {"content": text}
            if k == 0:
                delta["role"] = "assistant"
            data = _chunk(event(delta))
            if k == 0:
                data = head + data
            if k == count - 1:
                data += tail
            self.write(data)
            if k + 1 < count:
                loop.call_at(start + (k + 1) * gap_s, send, k + 1)
            else:
                self.busy = False
                if self.buf:
                    self.data_received(b"")

        send(0)


async def serve(port: int, models: list[str]) -> None:
    Upstream.models = models
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, "127.0.0.1", port, backlog=128)
    bound = server.sockets[0].getsockname()[1]
    print(f"port {bound}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--models", default="", help="comma-separated names for /v1/models")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.port, models))
    else:
        uvloop.run(serve(args.port, models))


if __name__ == "__main__":
    main()
