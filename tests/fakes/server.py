"""A small real HTTP/1.1 server on 127.0.0.1 for protocol fakes, with fault injection.

The server runs its own asyncio loop in a daemon thread, so a test of any kind (sync,
async on pytest-asyncio's loop, a subprocess talking to the port) reaches it over a real
loopback socket, and a server that sleeps (``slow_first_byte``) never blocks the test's
loop. Subclasses implement :meth:`LoopbackServer.handle` and the few hooks that word an
error the way their real server does; everything else lives here:

* request parsing (Content-Length and chunked bodies, keep-alive),
* replies as one body (Content-Length) or as SSE events (chunked transfer encoding,
  one chunk per event, flushed as it is written),
* a record of every request (auth header values replaced by ``<redacted>``), and of
  how far each streamed reply got (``streamed``: a client that hung up is seen there),
* faults for the next N requests (:meth:`LoopbackServer.fail_next`) and a whole-server
  ``down()`` / ``up()``.

Fault kinds (``opts`` in brackets):

``"429"`` [retry_after=1 (seconds; None omits the header), retry_after_date=False (send an
    HTTP date instead), retry_after_ms=None (also send ``retry-after-ms``)],
``"401"``, ``"403"``, ``"404"``, ``"500"``, ``"502"``, ``"503"``, ``"504"``, ``"529"``: that
    status with an error body in the server's own wording;
``"400"``, ``"413"``, ``"422"`` [message=None (the server's own words for that status)]: the
    request refused as invalid, in the server's own shape;
``"slow_first_byte"`` [seconds=3.0]: wait before the status line, then answer normally;
``"stall"`` [after=1, seconds=3.0]: send ``after`` events (or half a body), then go quiet;
``"cut_stream"`` [after=2]: send ``after`` events (a body: half of it) and close the
    connection without finishing the message;
``"reset"``: read the request and close the connection without a byte of reply;
``"hang"``: read the request and never answer (a host that accepts and says nothing);
    the connection is closed when the client gives up;
``"invalid_json"`` [after=1]: a body that is not JSON; in a stream, the event at index
    ``after`` is replaced by one whose data is not JSON;
``"undecodable"`` [after=1, form="utf8"]: like ``invalid_json``, with bytes no decoder
    reads: ``"utf8"`` not UTF-8 at all, ``"nested"`` JSON nested past any decoder's depth;
``"context_length"``: a 400 in the server's own context-window wording;
``"error_event"`` [after=2]: (servers that have one, Anthropic) an SSE ``error`` event
    mid-stream;
``"down"``: the whole server stops listening until :meth:`LoopbackServer.up` (``times`` is
    ignored; it is the same as calling :meth:`LoopbackServer.down`).

Every fault takes ``path=`` to hit only requests to that path (default: any request).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.utils import formatdate
from types import TracebackType
from typing import Any, Self

__all__ = [
    "AUTH_HEADERS",
    "FAULT_KINDS",
    "STATUS_FAULTS",
    "Fault",
    "LoopbackServer",
    "RecordedRequest",
    "Reply",
    "Request",
    "undecodable",
]

STATUS_FAULTS = frozenset(
    {"400", "401", "403", "404", "413", "422", "429", "500", "502", "503", "504", "529"}
)
FAULT_KINDS = STATUS_FAULTS | {
    "slow_first_byte",
    "stall",
    "cut_stream",
    "reset",
    "hang",
    "invalid_json",
    "undecodable",
    "context_length",
    "error_event",
    "down",
}
#: header values never kept in the record (their names are)
AUTH_HEADERS = frozenset(
    {"authorization", "x-api-key", "api-key", "proxy-authorization", "cookie", "x-goog-api-key"}
)
REDACTED = "<redacted>"

_REASONS = {529: "Overloaded"}
_MAX_BODY = 32 * 1024 * 1024


@dataclass(frozen=True)
class Fault:
    kind: str
    opts: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def opt(self, name: str, default: Any) -> Any:
        return self.opts.get(name, default)


@dataclass(frozen=True)
class Request:
    """What a handler sees: the full request, auth values included."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    raw_body: bytes

    @property
    def json(self) -> Any:
        """The body parsed as JSON, or None when it is empty or not JSON."""
        if not self.raw_body:
            return None
        try:
            return json.loads(self.raw_body)
        except ValueError:
            return None

    def bearer(self) -> str | None:
        value = self.headers.get("authorization", "")
        if value.lower().startswith("bearer "):
            return value[7:].strip() or None
        return None


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake saw it, safe to print: auth header values are redacted."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    #: the body parsed as JSON, the raw text when it is not JSON, or None when empty
    body: Any
    #: the fault injected into this request's reply, if any
    fault: str | None = None

    @property
    def json(self) -> dict[str, Any]:
        assert isinstance(self.body, dict), f"body is not a JSON object: {self.body!r}"
        return self.body


@dataclass
class Reply:
    """A reply: one body, or SSE events (each written and flushed as one chunk)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    events: list[bytes] | None = None
    #: seconds between events (a stream that trickles)
    event_delay: float = 0.0

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(
            status=status,
            headers={"content-type": "application/json", **(headers or {})},
            body=json.dumps(obj).encode(),
        )

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain") -> Reply:
        return cls(status=status, headers={"content-type": content_type}, body=text.encode())

    @classmethod
    def sse(cls, events: list[bytes], event_delay: float = 0.0) -> Reply:
        return cls(
            status=200,
            headers={"content-type": "text/event-stream", "cache-control": "no-cache"},
            events=events,
            event_delay=event_delay,
        )


class _Abort(Exception):
    """Close the connection now, without finishing the reply."""


class LoopbackServer:
    """Base class: an HTTP/1.1 server on 127.0.0.1:<free port> in its own thread.

    Use as ``with Server() as s:`` / ``async with Server() as s:`` or ``start()`` /
    ``stop()``. ``url`` is ``http://127.0.0.1:<port>``.
    """

    name = "fake"

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.requests: list[RecordedRequest] = []
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._is_down = False
        #: each streamed reply as it ended: (events written, events it had); fewer written
        #: than it had when the client closed the connection first (or a fault cut it)
        self.streamed: list[tuple[int, int]] = []

    # ── lifecycle ──────────────────────────────────────────────────────────────────

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def is_down(self) -> bool:
        return self._is_down

    def start(self) -> Self:
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-server", daemon=True)
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()
        self._loop = None
        self._thread = None

    def down(self) -> None:
        """Stop listening and drop every open connection: connects are refused."""
        if self._loop is not None and not self._is_down:
            self._call(self._go_down())

    def up(self) -> None:
        """Listen again on the same port."""
        if self._loop is not None and self._is_down:
            self._call(self._listen())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ── test-facing API ────────────────────────────────────────────────────────────

    def fail_next(self, kind: str, times: int = 1, *, path: str | None = None, **opts: Any) -> None:
        """Inject ``kind`` into the next ``times`` requests (to ``path``, if given)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(FAULT_KINDS)}")
        if kind == "down":
            self.down()
            return
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.extend(Fault(kind, dict(opts), path) for _ in range(times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if r.path == path and (method is None or r.method == method.upper())
        ]

    async def stream_ended(self, wait_s: float = 10.0) -> tuple[int, int]:
        """The last streamed reply's (events written, events it had), once it ended: a
        client that hung up is seen at the server's next write."""
        for _ in range(int(wait_s / 0.02)):
            if self.streamed:
                return self.streamed[-1]
            await asyncio.sleep(0.02)
        raise AssertionError(f"{self.name}: no streamed reply ended within {wait_s:g}s")

    @property
    def last(self) -> RecordedRequest:
        assert self.requests, "no request was made"
        return self.requests[-1]

    # ── subclass hooks ─────────────────────────────────────────────────────────────

    async def handle(self, request: Request) -> Reply:
        return Reply.json({"error": "not found"}, status=404)

    def error_reply(self, status: int, request: Request, fault: Fault) -> Reply:
        """The body this server sends with ``status`` (subclasses word it)."""
        return Reply.json({"error": {"code": status, "message": http_reason(status)}}, status)

    def context_length_reply(self, request: Request) -> Reply:
        return Reply.json({"error": "context length exceeded"}, status=400)

    def invalid_event(self) -> bytes:
        """An SSE event whose data is not JSON."""
        return b'data: {"id": "broken", "choices": [{"delta": {"content": "x"\n\n'

    def error_event(self, fault: Fault) -> bytes | None:
        """A mid-stream SSE error event, for servers that have one."""
        return None

    def undecodable_event(self, data: bytes) -> bytes:
        """An SSE event carrying ``data`` (:func:`undecodable`) where a chunk would be."""
        return b"data: " + data + b"\n\n"

    # ── internals ──────────────────────────────────────────────────────────────────

    def _run(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._serve_connection, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._is_down = False

    async def _go_down(self) -> None:
        self._is_down = True
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        await self._cancel_tasks()

    async def _shutdown(self) -> None:
        await self._go_down()

    async def _cancel_tasks(self) -> None:
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.path is None or fault.path == path:
                    del self._faults[i]
                    return fault
        return None

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                keep_alive = await self._respond(request, reader, writer)
                if not keep_alive:
                    break
        except (_Abort, ConnectionError, asyncio.IncompleteReadError, ValueError):
            writer.transport.abort()
        except asyncio.CancelledError:
            writer.transport.abort()
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.close()

    async def _respond(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        fault = self._take_fault(request.path)
        self.requests.append(_record(request, fault))
        if fault is not None and fault.kind == "reset":
            raise _Abort
        if fault is not None and fault.kind == "hang":
            await reader.read()  # (until the client hangs up: EOF)
            raise _Abort
        if fault is not None and fault.kind == "slow_first_byte":
            await asyncio.sleep(float(fault.opt("seconds", 3.0)))
        reply = await self._reply_for(request, fault)
        await self._write(writer, reply, fault)
        return request.headers.get("connection", "").lower() != "close"

    async def _reply_for(self, request: Request, fault: Fault | None) -> Reply:
        if fault is not None and fault.kind in STATUS_FAULTS:
            status = int(fault.kind)
            reply = self.error_reply(status, request, fault)
            if status == 429:
                reply.headers.update(_retry_after_headers(fault))
            return reply
        if fault is not None and fault.kind == "context_length":
            return self.context_length_reply(request)
        reply = await self.handle(request)
        if fault is not None and fault.kind == "invalid_json":
            if reply.events is not None:
                at = min(int(fault.opt("after", 1)), len(reply.events))
                reply.events = [*reply.events[:at], self.invalid_event(), *reply.events[at + 1 :]]
            else:
                reply.body = b'{"id": "broken", "object": "chat.completion", "choices": [{'
                reply.headers["content-type"] = "application/json"
        if fault is not None and fault.kind == "undecodable":
            data = undecodable(str(fault.opt("form", "utf8")))
            if reply.events is not None:
                at = min(int(fault.opt("after", 1)), len(reply.events))
                bad = self.undecodable_event(data)
                reply.events = [*reply.events[:at], bad, *reply.events[at + 1 :]]
            else:
                reply.body = data
                reply.headers["content-type"] = "application/json"
        if fault is not None and fault.kind == "error_event" and reply.events is not None:
            event = self.error_event(fault)
            if event is not None:
                at = min(int(fault.opt("after", 2)), len(reply.events))
                reply.events = [*reply.events[:at], event]
        return reply

    async def _write(self, writer: asyncio.StreamWriter, reply: Reply, fault: Fault | None) -> None:
        kind = fault.kind if fault is not None else None
        opts = fault.opts if fault is not None else {}
        headers = {k.lower(): v for k, v in reply.headers.items()}
        streamed = reply.events is not None
        if streamed:
            headers["transfer-encoding"] = "chunked"
        else:
            headers["content-length"] = str(len(reply.body))
        headers.setdefault("date", formatdate(usegmt=True))
        head = f"HTTP/1.1 {reply.status} {http_reason(reply.status)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(head.encode("latin-1"))
        await writer.drain()

        if not streamed:
            body = reply.body
            if kind in ("cut_stream", "stall"):
                writer.write(body[: len(body) // 2])
                await writer.drain()
                if kind == "stall":
                    await asyncio.sleep(float(opts.get("seconds", 3.0)))
                await _flush_and_abort(writer)
            writer.write(body)
            await writer.drain()
            return

        events = reply.events or []
        cut_at = int(opts.get("after", 2)) if kind == "cut_stream" else None
        stall_at = int(opts.get("after", 1)) if kind == "stall" else None
        written = 0
        try:
            for i, event in enumerate(events):
                if i == cut_at:
                    await _flush_and_abort(writer)
                if i == stall_at:
                    await asyncio.sleep(float(opts.get("seconds", 3.0)))
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
                written += 1
                if reply.event_delay:
                    await asyncio.sleep(reply.event_delay)
                elif writer.transport.is_closing():
                    break  # (the client hung up: as a server stops writing)
            if cut_at is not None:
                await _flush_and_abort(writer)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            self.streamed.append((written, len(events)))


# ── helpers ────────────────────────────────────────────────────────────────────────


def http_reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return _REASONS.get(status, "Error")


def undecodable(form: str) -> bytes:
    """A chunk's data no decoder reads: ``"utf8"``, bytes that are not UTF-8 (beginning
    as JSON does, so no decoder takes them for UTF-16); ``"nested"``, JSON nested deeper
    than a decoder recurses."""
    if form == "utf8":
        return b'{"id": "\xff\xfe\x00garbage\xc3\x28"}'
    if form == "nested":
        return b"[" * 100_000 + b"]" * 100_000
    raise ValueError(f"unknown undecodable form {form!r}; one of utf8, nested")


def _retry_after_headers(fault: Fault) -> dict[str, str]:
    headers: dict[str, str] = {}
    seconds = fault.opt("retry_after", 1)
    if seconds is not None:
        if fault.opt("retry_after_date", False):
            headers["retry-after"] = formatdate(time.time() + float(seconds), usegmt=True)
        else:
            headers["retry-after"] = str(seconds)
    ms = fault.opt("retry_after_ms", None)
    if ms is not None:
        headers["retry-after-ms"] = str(ms)
    return headers


def _record(request: Request, fault: Fault | None) -> RecordedRequest:
    headers = {k: (REDACTED if k in AUTH_HEADERS else v) for k, v in request.headers.items()}
    body: Any = None
    if request.raw_body:
        parsed = request.json
        body = parsed if parsed is not None else request.raw_body.decode("utf-8", "replace")
    return RecordedRequest(
        method=request.method,
        path=request.path,
        query=request.query,
        headers=headers,
        body=body,
        fault=fault.kind if fault is not None else None,
    )


async def _flush_and_abort(writer: asyncio.StreamWriter) -> None:
    """Let what was written reach the socket, then drop the connection mid-message."""
    transport = writer.transport
    for _ in range(100):
        if transport.get_write_buffer_size() == 0:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.02)
    raise _Abort


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    line = await reader.readline()
    if not line:
        return None
    while line in (b"\r\n", b"\n"):  # tolerate stray CRLF between requests
        line = await reader.readline()
        if not line:
            return None
    try:
        method, target, _version = line.decode("latin-1").split()
    except ValueError as exc:
        raise ValueError(f"bad request line {line!r}") from exc
    headers: dict[str, str] = {}
    while True:
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts: list[bytes] = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                break
            parts.append(await reader.readexactly(size))
            await reader.readline()
        body = b"".join(parts)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if length > _MAX_BODY:
            raise ValueError("body too large")
        body = await reader.readexactly(length)
    path, _, query = target.partition("?")
    return Request(method.upper(), path, query, headers, body)
