"""The agent's stdio, kept for the protocol alone.

* **stdout carries protocol messages and nothing else.** The client's stdout is moved to a
  private descriptor for the SDK's writer; descriptors 1 and 2 then point at the log file,
  so a stray ``print``, a warning or a C library's chatter cannot corrupt the stream. The
  SDK's client side never reads the agent's stderr (a full pipe would block the agent),
  which is why stderr goes to the file too.
* **stdin is read by the SDK alone.** Descriptor 0 becomes ``/dev/null``: no child process
  (git, the sandboxed test command) can swallow protocol bytes.
* **Bad lines get an answer.** The SDK logs and drops a line that is not JSON, and its
  receive loop stops on a JSON value that is not an object (the agent would exit); it
  never reads ``jsonrpc``. A guard between the pipe and the SDK passes on only JSON-RPC
  2.0 objects and answers the rest with the SDK's own errors (parse error, invalid
  request), as JSON-RPC 2.0 asks; a response it cannot pass on as it came reaches the
  SDK as an error for the request it answers (a response is never answered).
* **Params mean what they say.** A message's ``params._meta`` is dropped (the SDK merged
  it over the validated params), and a ``session/cancel`` that does not validate is
  dropped with a line in the log (it has no one to answer).
* **Every request is answered before the hang-up.** When the client closes stdin the SDK
  cancels every request still at work and exits: a ``session/new`` sent just before EOF
  got no answer, and its half-opened stores were left to a closed loop. The guard keeps
  the EOF back until each request it passed on has its response written (the turns at
  work are stopped first, so a prompt answers ``cancelled`` with its evidence sealed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from acp import RequestError
from acp.schema import CancelNotification
from pydantic import ValidationError

from app.errors import ConfigError

#: the SDK's own default buffer for agent/client messages
LIMIT = 50 * 1024 * 1024
#: how much of a message too long to take is read for its id
ID_SCAN = 64 * 1024
#: how long a hang-up waits for the requests at work to be answered
HANG_UP_WAIT_S = 60.0

log = logging.getLogger("app.acp")


def log_to_file(path: Path) -> None:
    """Diagnostics (ours and the SDK's, which logs at the root) go to ``path``, masked."""
    from app.audit.redact import RedactingFormatter
    from app.paths import ensure_dir

    # a data dir that cannot hold the log is one line (exit 2) on stderr, said before
    # the protocol takes it: it was a traceback there (an ACP audit)
    ensure_dir(path.parent)
    try:
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the log {path}: {exc.strerror or exc}") from None
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    for name in ("app", "switchyard"):
        logging.getLogger(name).setLevel(logging.INFO)


def stream_problem(fd: int) -> str | None:
    """Why descriptor ``fd`` cannot carry the protocol (None when it can): asyncio reads
    and writes pipes, sockets and terminals only; a regular file or ``/dev/null`` failed
    inside the loop, with nothing said but a traceback in the log."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        return f"not open ({exc.strerror})"
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or (stat.S_ISCHR(mode) and os.isatty(fd)):
        return None
    return "a regular file" if stat.S_ISREG(mode) else "not a pipe, socket or terminal"


def take_protocol_fds(log_path: Path) -> tuple[int, int]:
    """Move the client's pipes aside (returns their new descriptors: in, out) and point
    descriptors 0, 1 and 2 at /dev/null and the log file."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sink = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(sink, 1)
    os.dup2(sink, 2)
    os.close(sink)
    return proto_in, proto_out


class Pending:
    """The ids of the requests passed on to the SDK that have no response written yet."""

    def __init__(self) -> None:
        self.ids: set[Any] = set()
        self._none = asyncio.Event()
        self._none.set()

    def asked(self, mid: Any) -> None:
        self.ids.add(mid)
        self._none.clear()

    def answered(self, data: bytes) -> None:
        """``data``: one frame the SDK writes; a response takes its id off the list."""
        if not self.ids or (b'"result"' not in data and b'"error"' not in data):
            return  # a notification or a request of ours: the common case, unparsed
        with contextlib.suppress(ValueError):
            msg = json.loads(data)
            if isinstance(msg, dict) and "method" not in msg:
                self.ids.discard(msg.get("id"))
        if not self.ids:
            self._none.set()

    async def all_answered(self, limit_s: float, gone: Callable[[], bool]) -> bool:
        """Until every request is answered, ``gone()`` says the client can read nothing
        more (its end of stdout closed: the SDK's writer is dead and nothing it queues is
        written), or ``limit_s`` has passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while self.ids and not gone() and loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._none.wait(), 0.1)
        return not self.ids


class _Watched(asyncio.StreamWriter):
    """The SDK's writer (it must be a StreamWriter), each frame shown to
    :class:`Pending` once written.

    Once the client can read nothing more (its end of stdout closed: the editor died), a
    frame is dropped and ``drain`` returns: the SDK's send loop ended at the first broken
    pipe and left every later send waiting for good, so the turn at work (its updates,
    its response) and the agent's close never ended, and the agent outlived its editor
    (an ACP audit). Nothing written then reaches anyone; nothing waits for it either."""

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        protocol: asyncio.BaseProtocol,
        loop: asyncio.AbstractEventLoop,
        pending: Pending,
    ) -> None:
        super().__init__(transport, protocol, None, loop)
        self._pending = pending

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.transport.is_closing():
            super().write(data)
        self._pending.answered(bytes(data))

    async def drain(self) -> None:
        if self.transport.is_closing():
            return
        try:
            await super().drain()
        except ConnectionError:  # (closed between the check and the wait)
            return


HangUp = Callable[[], Awaitable[None]]


async def protocol_streams(
    in_fd: int, out_fd: int, hang_up: HangUp | None = None
) -> tuple[asyncio.StreamWriter, asyncio.StreamReader]:
    """The SDK's (writer, reader) pair over the protocol descriptors, with the guard.
    ``hang_up`` runs when the client closes stdin, before the SDK sees the end."""
    loop = asyncio.get_running_loop()
    raw = asyncio.StreamReader(limit=LIMIT)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(raw), os.fdopen(in_fd, "rb", buffering=0)
    )
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(out_fd, "wb", buffering=0)
    )
    pending = Pending()
    writer = _Watched(transport, protocol, loop, pending)
    guarded = asyncio.StreamReader(limit=LIMIT)
    pump = asyncio.create_task(
        _guard(raw, guarded, writer, pending, hang_up), name="acp.stdio.guard"
    )
    _TASKS.add(pump)
    pump.add_done_callback(_TASKS.discard)
    return writer, guarded


_TASKS: set[asyncio.Task[None]] = set()


def frame_problem(line: bytes) -> tuple[RequestError, Any] | None:
    """Why ``line`` is no JSON-RPC message the SDK can take, with the id to answer (None
    when it is one)."""
    try:
        msg = json.loads(line, parse_constant=_no_constant)
    except ValueError as exc:
        return RequestError.parse_error({"details": f"not JSON: {exc}"}), None
    except RecursionError:  # it killed the guard, and the agent went deaf
        return RequestError.parse_error({"details": "nested too deeply"}), None
    if _depth_over(msg, MAX_DEPTH):
        why = f"nested deeper than {MAX_DEPTH} levels"
        return RequestError.invalid_request({"details": why}), _top_id(msg)
    if not isinstance(msg, dict):
        why = f"a message is a JSON object, not {type(msg).__name__}"
        return RequestError.invalid_request({"details": why}), None
    mid = msg.get("id")
    if "id" in msg and (isinstance(mid, bool) or not (mid is None or isinstance(mid, (str, int)))):
        # (a fraction is a number JSON-RPC allows and advises against; the SDK takes none:
        # answered with its own id, where "must be a number" was said of 1.5, an audit)
        why = "id must be a string, an integer or null"
        return RequestError.invalid_request({"details": why}), mid if _fraction(mid) else None
    if "method" in msg and not isinstance(msg["method"], str):
        return RequestError.invalid_request({"details": "method must be a string"}), mid
    if "method" in msg and not speaks_2_0(msg):
        # JSON-RPC 2.0: jsonrpc "MUST be exactly "2.0""; the SDK never looks, and a
        # "1.0" request was served (an ACP audit). A response is never answered:
        # :func:`well_formed_response` makes it an error of ours instead
        why = f"jsonrpc must be exactly {JSONRPC!r}, not {_shown(msg, 'jsonrpc')}"
        return RequestError.invalid_request({"details": why}), mid
    if "method" not in msg and not ("id" in msg and ("result" in msg or "error" in msg)):
        why = "neither a request (method) nor a response (id with result or error)"
        return RequestError.invalid_request({"details": why}), mid
    return None


#: the one version a message may name (JSON-RPC 2.0, which ACP speaks)
JSONRPC = "2.0"


def speaks_2_0(msg: dict[str, Any]) -> bool:
    """``jsonrpc`` is "2.0", or absent: Zed's Rust SDK sent no member at all before
    v0.2.0-alpha.5 (September 2025) while it already spoke ACP v1 (a review), and README
    promises such releases; a member naming another version ("1.0", the number 2.0) is
    no JSON-RPC 2.0 message."""
    return bool(msg.get("jsonrpc", JSONRPC) == JSONRPC)


def _shown(msg: dict[str, Any], key: str) -> str:
    return json.dumps(msg[key])[:40] if key in msg else "missing"


def _fraction(value: Any) -> bool:
    return isinstance(value, float) and value == value and abs(value) != float("inf")


#: deeper than any ACP message; the SDK's own parsing and validation recurse
MAX_DEPTH = 64


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON: Python reads them, and the SDK then wrote them back
    onto stdout, where a strict client cannot parse the line."""
    raise ValueError(f"{name} is not JSON")


def _depth_over(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def _top_id(msg: Any) -> Any:
    mid = msg.get("id") if isinstance(msg, dict) else None
    return mid if isinstance(mid, (str, int)) and not isinstance(mid, bool) else None


def well_formed_response(msg: dict[str, Any]) -> dict[str, Any]:
    """A response as the SDK can take it: an ``error`` that is no object with an integer
    ``code`` and a string ``message`` (``"error": "denied"``) crashed the SDK's receive
    loop, and the agent answered nothing more and never exited. It becomes an error of
    our own: the request it answers failed (a permission: denied). So does a response
    that names another version than JSON-RPC 2.0 (``"jsonrpc": "1.0"``): its result was
    taken as the answer (a member that is absent is taken as "2.0": :func:`speaks_2_0`)."""
    if not speaks_2_0(msg):
        why = f"jsonrpc must be exactly {JSONRPC!r}, not {_shown(msg, 'jsonrpc')}"
        return {
            "jsonrpc": JSONRPC,
            "id": msg.get("id"),
            "error": {
                "code": -32603,
                "message": f"the client's response is not JSON-RPC 2.0: {why}",
            },
        }
    err = msg.get("error")
    if "result" in msg and err is not None:
        # JSON-RPC 2.0 forbids both: a response that says it failed and answers too is no
        # answer (its result was taken: an approval granted beside an error, an ACP audit)
        return {
            "jsonrpc": JSONRPC,
            "id": msg.get("id"),
            "error": {
                "code": -32603,
                "message": "the client's response carries both a result and an error",
            },
        }
    # a result is the answer when its "error" is null or absent (the SDK reads it first):
    # a client that sends "error": null beside every result had each grant refused
    if (
        "result" in msg
        or "error" not in msg
        or (
            isinstance(err, dict)
            and isinstance(err.get("code"), int)
            and not isinstance(err.get("code"), bool)
            and isinstance(err.get("message"), str)
        )
    ):
        return msg
    return {
        "jsonrpc": "2.0",
        "id": msg.get("id"),
        "error": {"code": -32603, "message": "the client answered with a malformed error"},
    }


def leading_id(head: bytes) -> str | int | None:
    """The ``id`` of the JSON-RPC request whose first bytes are ``head`` (a message too long
    to read whole), when it comes among the top-level members before one cut off, and the
    message is a request; None otherwise."""
    text = head.decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    members: dict[str, Any] = {}
    at = _skip_space(text, 0)
    if not text.startswith("{", at):
        return None
    at += 1
    try:
        while True:
            at = _skip_space(text, at)
            key, at = decoder.raw_decode(text, at)
            at = _skip_space(text, at)
            if not isinstance(key, str) or not text.startswith(":", at):
                break
            value, at = decoder.raw_decode(text, _skip_space(text, at + 1))
            members[key] = value
            at = _skip_space(text, at)
            if not text.startswith(",", at):
                break
            at += 1
    except ValueError:  # a member cut off (the bulk), or no JSON at all
        pass
    mid = members.get("id")
    is_id = isinstance(mid, (str, int)) and not isinstance(mid, bool)
    return mid if is_id and isinstance(members.get("method"), str) else None


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


async def _guard(
    raw: asyncio.StreamReader,
    out: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    pending: Pending,
    hang_up: HangUp | None,
) -> None:
    try:
        while True:
            try:
                line = await raw.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                line = exc.partial  # the last line, without a newline, at the end of input
                if line.strip():
                    _pass_or_answer(line, out, writer, pending)
                break
            except asyncio.LimitOverrunError as exc:
                head = await raw.readexactly(exc.consumed)
                await _discard_line(raw)
                err = RequestError.invalid_request({"details": f"a message over {LIMIT} bytes"})
                # answered with its id when the id comes before the bulk, as clients write
                # it: with none, an SDK client waited on that request for good
                _answer(writer, err, leading_id(head[:ID_SCAN]))
                continue
            if line.strip():
                _pass_or_answer(line, out, writer, pending)
    except (ConnectionError, OSError) as exc:  # the client went away
        log.info("protocol input closed: %s", exc)
    except Exception:  # never a deaf agent: the end of input is still passed on below
        log.exception("the protocol guard failed; ending the session as a hang-up")
    try:
        if hang_up is not None:
            try:
                await asyncio.wait_for(hang_up(), HANG_UP_WAIT_S)
            except TimeoutError:
                log.warning("the turns at work did not stop within %s s", HANG_UP_WAIT_S)
        if not await pending.all_answered(HANG_UP_WAIT_S, writer.transport.is_closing):
            log.warning("hung up with requests unanswered: %s", sorted(map(str, pending.ids)))
    finally:
        out.feed_eof()


def _pass_or_answer(
    line: bytes, out: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: Pending
) -> None:
    problem = frame_problem(line)
    if problem is None:
        msg = json.loads(line)
        if "method" in msg:
            if not notification_passes(msg):
                log.warning("dropped a malformed notification: %r", line[:200])
                return
            if without_meta(msg):
                # ASCII: a lone surrogate (a client's string cut inside an emoji pair) is
                # an escape again, where UTF-8 could not encode it and ended the guard
                line = json.dumps(msg, separators=(",", ":")).encode()
        if "method" in msg and msg.get("id") is not None:  # a request: it will be answered
            pending.asked(msg["id"])
        elif "method" not in msg:
            fixed = well_formed_response(msg)
            if fixed is not msg:
                log.warning("a malformed response, passed on as an error: %r", line[:200])
                line = json.dumps(fixed, separators=(",", ":")).encode("utf-8")
        out.feed_data(line if line.endswith(b"\n") else line + b"\n")
        return
    err, mid = problem
    log.warning("answered a bad message with %s: %r", err.code, line[:200])
    _answer(writer, err, mid)


def without_meta(msg: dict[str, Any]) -> bool:
    """Drop a request's or notification's ``params._meta`` (True when there was one).

    The SDK merges its members into the handler's keyword arguments, over the validated
    params: a ``cwd`` there opened the session on another folder than the one named, and
    a ``client_info`` or ``session_id`` of another type was an internal error with a
    traceback (an ACP audit). ACP reserves ``_meta`` for extensions, whose values no
    implementation may assume; this agent takes none, so none reaches a handler."""
    params = msg.get("params")
    if isinstance(params, dict) and "_meta" in params:
        del params["_meta"]
        return True
    return False


def notification_passes(msg: dict[str, Any]) -> bool:
    """Whether a notification the SDK would fail to validate is fit to pass on: it has no
    one to answer, and the SDK logged each such as an unhandled error with a pydantic
    traceback (an ACP audit). The client sends one: ``session/cancel``."""
    if "id" in msg or msg.get("method") != "session/cancel":
        return True
    try:
        CancelNotification.model_validate(msg.get("params"))
    except ValidationError:
        return False
    return True


def _answer(writer: asyncio.StreamWriter, err: RequestError, mid: Any) -> None:
    """The one frame written outside the SDK: an error response the SDK has no call for
    (it never answers a line it could not parse). One ``write``: lines never interleave."""
    frame = {"jsonrpc": "2.0", "id": mid, "error": err.to_error_obj()}
    with contextlib.suppress(Exception):
        writer.write((json.dumps(frame, separators=(",", ":")) + "\n").encode("utf-8"))


async def _discard_line(raw: asyncio.StreamReader) -> None:
    while True:
        try:
            await raw.readuntil(b"\n")
            return
        except asyncio.LimitOverrunError as exc:
            await raw.readexactly(exc.consumed)
        except asyncio.IncompleteReadError:
            return
