"""A streamed chat completion from a local runtime (vLLM, the llama.cpp server, Ollama),
without the openai SDK: the hot path of the gateway's local route.

The SDK costs about 3 ms of CPU per call on top of its HTTP client (P7's breakdown,
``bench/gateway_parts.py``); here the same request body goes out on the factory's
:class:`~app.backends.http.StreamClient` (aiohttp, the same local_only guard) and the
SSE reply is read as the SDK reads it:

* the body is what the SDK would send: the model, the messages, ``stream``,
  ``stream_options.include_usage`` and the flavor's params, ``extra_body`` merged in;
* an HTTP error status is read whole and mapped by the backend's
  :class:`~app.backends.provider_errors.ErrorMapper` as the SDK's status errors are
  (kind, status, ``Retry-After``, the context-window wording);
* events are split by blank lines, their ``data:`` lines joined; comments and other
  fields are skipped; ``data: [DONE]`` ends the stream; every other event is one JSON
  chunk (not JSON: the relay's ``bad_output``), and a chunk that carries an ``error``
  raises it as the SDK does (:meth:`ErrorMapper.event_error`);
* the chunks go to :class:`~app.backends.openai_stream.ChunkState` as dicts, through the
  same :func:`~app.backends.provider_common.relay` as the SDK's.

Cloud flavors stay on the SDK (their retries of nothing, TLS and keys gain nothing here).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
import httpx2

from app.backends.http import StreamClient
from app.backends.http_stream import StreamReply
from app.backends.provider_errors import ErrorMapper

__all__ = ["LOCAL_FLAVORS", "LocalChatStream", "SseDecoder", "chat_body", "open_chat"]

#: the flavors streamed this way: local runtimes, OpenAI-compatible
LOCAL_FLAVORS = frozenset({"vllm", "llamacpp", "ollama"})
#: seconds to wait for the body's end after ``[DONE]`` (to keep the connection), as the SDK
_DRAIN_S = 0.1


def chat_body(served_name: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> bytes:
    """The JSON body the SDK sends for ``chat.completions.create(stream=True, …)``."""
    body: dict[str, Any] = {
        "model": served_name,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    extra = params.get("extra_body")
    body.update((k, v) for k, v in params.items() if k != "extra_body")
    if extra:
        body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode()


async def open_chat(
    streams: StreamClient,
    url: str,
    body: bytes,
    *,
    api_key: str | None,
    timeouts: httpx.Timeout | httpx2.Timeout,
    errors: ErrorMapper,
) -> LocalChatStream:
    """POST the request; the stream once a 2xx head is in. An error status raises its
    :class:`~app.backends.base.BackendError`; the transport's failures go up unmapped
    (the relay maps them)."""
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    reply = await streams.post(url, body, headers, timeouts)
    if 200 <= reply.status < 300:
        return LocalChatStream(reply, errors.event_error)
    async with reply:
        raw = await reply.read()
    text = raw.decode("utf-8", "replace").strip()
    parsed: object = text
    with contextlib.suppress(ValueError):
        parsed = json.loads(text)
    raise errors.status_error(reply.status, parsed, reply.headers)


class SseDecoder:
    """Server-sent events from byte chunks cut anywhere: each event's data, lines joined."""

    __slots__ = ("_data", "_rest")

    def __init__(self) -> None:
        self._rest = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """The data of every event this chunk completes (events without data: none)."""
        lines = (self._rest + chunk).split(b"\n") if self._rest else chunk.split(b"\n")
        self._rest = lines.pop()
        out: list[bytes] = []
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            if not line:
                if self._data:
                    out.append(self._data[0] if len(self._data) == 1 else b"\n".join(self._data))
                    self._data = []
            elif line[:5] == b"data:":
                self._data.append(line[6:] if line[5:6] == b" " else line[5:])
            # ":" comments, event:, id: and retry: say nothing a chat completion needs
        return out


class LocalChatStream:
    """The chunks of one reply, as dicts; the shape of the SDK's stream for the relay."""

    def __init__(self, reply: StreamReply, event_error: Callable[[object], Exception]) -> None:
        self._reply = reply
        self._event_error = event_error

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Any]:
        decoder, reply = SseDecoder(), self._reply
        while chunk := await reply.chunk():
            for data in decoder.feed(chunk):
                if data[:6] == b"[DONE]":
                    await reply.drain(_DRAIN_S)
                    return
                item = json.loads(data)
                if isinstance(item, Mapping) and item.get("error"):
                    raise self._event_error(item["error"])
                yield item

    async def close(self) -> None:
        self._reply.close()
