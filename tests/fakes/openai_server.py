"""A loopback fake of the OpenAI-compatible HTTP API, in five flavors.

``FakeOpenAIServer(flavor=...)`` speaks what the real servers speak on the endpoints we
use, and differs where they differ:

============  ==============================================================================
flavor        differences
============  ==============================================================================
vllm          ``GET /health`` (200, empty); ``/v1/models`` entries carry ``max_model_len``;
              structured output through ``structured_outputs: {"json": schema}`` or the older
              ``guided_json``; unknown model → 404; errors are ``{"object": "error", ...}``
llamacpp      ``GET /health`` → ``{"status": "ok"}``; ``GET /props`` with ``n_ctx``; a stream
              never carries usage; ``response_format: {"type": "json_object", "schema": ...}``
              works, ``{"type": "json_schema", ...}`` answers 500 like the real server
openai        Bearer key required; ``response_format`` ``json_object`` / ``json_schema``;
              usage carries ``prompt_tokens_details.cached_tokens`` (0)
deepseek      Bearer key required; API at the root (``/chat/completions``, no ``/v1``);
              model ``deepseek-reasoner`` streams ``reasoning_content`` before ``content``;
              ``json_schema`` response format → 400; usage carries
              ``prompt_cache_hit_tokens`` (0) and ``prompt_cache_miss_tokens`` (all)
moonshot      Bearer key required; a stream's usage rides in the last choice (as Kimi does)
============  ==============================================================================

Every flavor: ``POST /v1/chat/completions`` (JSON, or SSE ``data: {...}`` chunks ending
``data: [DONE]``; ``stream_options.include_usage`` adds a final usage chunk, except on
llamacpp), ``GET /v1/models``, ``POST /v1/embeddings`` (deterministic vectors from a hash of
the text). Paths work with and without the ``/v1`` prefix. Replies come from
:class:`~tests.fakes.script.Script` (``server.script.queue("text", ...)``), faults from
:meth:`~tests.fakes.server.LoopbackServer.fail_next`, and two attributes: ``usage_override``
(the usage every reply reports) and ``ignore_max_tokens`` (a reply is not cut at the
request's cap: a server that streams its whole reply all the same).

Tool calls: a scripted reply with ``tool_calls`` answers with them after its text
(``finish_reason: tool_calls``): whole in ``message.tool_calls``, or streamed as the
servers do: per call, a chunk with ``index``, ``id``, ``type`` and ``function.name``,
then chunks of ``function.arguments`` pieces (``argument_chunk`` characters each). The
request's ``tools``, ``tool_choice`` and tool messages are checked as the servers check
them (:mod:`tests.fakes.openai_tools`); the bodies are kept in :attr:`chat_requests`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from typing import Any, Literal

from tests.fakes.openai_tools import (
    call_ids,
    calls_words,
    check_tools,
    message_calls,
    prompt_words,
    stream_calls,
)
from tests.fakes.script import Script, Scripted, count_words, pieces
from tests.fakes.server import Fault, LoopbackServer, Reply, Request

__all__ = ["CLOUD_FLAVORS", "FLAVORS", "FakeOpenAIServer", "Flavor"]

Flavor = Literal["vllm", "llamacpp", "openai", "deepseek", "moonshot"]
FLAVORS: tuple[Flavor, ...] = ("vllm", "llamacpp", "openai", "deepseek", "moonshot")
CLOUD_FLAVORS = frozenset({"openai", "deepseek", "moonshot"})

_DEFAULT_MODELS: dict[str, list[str]] = {
    "vllm": ["Qwen/Qwen2.5-Coder-32B-Instruct-AWQ"],
    "llamacpp": ["qwen2.5-coder-7b-instruct-q4_k_m.gguf"],
    "openai": ["gpt-5.1", "gpt-4.1-mini"],
    "deepseek": ["deepseek-chat", "deepseek-reasoner"],
    "moonshot": ["kimi-k2-0905-preview", "kimi-k2-thinking", "moonshot-v1-128k"],
}
_CREATED = 1_760_000_000


KeyEcho = Literal["whole", "partial", "upper", "basic", "percent", "escaped", "split"]


def echoed(key: str, how: KeyEcho) -> str:
    """``key`` as an error message may give it back: whole; its first 8 and last 4
    characters with stars between (OpenAI's 401); upper-cased; inside an ``Authorization:
    Basic`` of ``user:key``; percent-encoded; ``\\u``-escaped, as JSON text quoted in a
    text body; or cut by a line break."""
    if how == "partial" and len(key) > 12:
        return key[:8] + "*" * 20 + key[-4:]
    if how == "upper":
        return key.upper()
    if how == "basic":
        return "Authorization: Basic " + base64.b64encode(f"user:{key}".encode()).decode()
    if how == "percent":
        return "".join(f"%{b:02X}" for b in key.encode())
    if how == "escaped":
        return "".join(f"\\u{ord(c):04x}" for c in key)
    if how == "split":
        return key[: len(key) // 3] + "\n" + key[len(key) // 3 :]
    return key


class FakeOpenAIServer(LoopbackServer):
    """An OpenAI-compatible server on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        flavor: Flavor = "vllm",
        *,
        models: list[str] | None = None,
        max_model_len: int = 32768,
        n_ctx: int = 8192,
        api_key: str | None = None,
        replies: list[str | Scripted] | None = None,
        default_reply: str = "Hello from the fake.",
        reasoning: str = "Let me think step by step.",
        embedding_dim: int = 8,
        event_delay: float = 0.0,
        argument_chunk: int = 7,
    ) -> None:
        if flavor not in FLAVORS:
            raise ValueError(f"unknown flavor {flavor!r}; one of {FLAVORS}")
        super().__init__()
        self.flavor: Flavor = flavor
        self.name = f"fake-{flavor}"
        self.models = list(models) if models is not None else list(_DEFAULT_MODELS[flavor])
        self.max_model_len = max_model_len
        self.n_ctx = n_ctx
        #: the key a request must carry; None: cloud flavors accept any non-empty Bearer
        #: key, local flavors need none (as vLLM without ``--api-key``)
        self.api_key = api_key
        self.script = Script(default_reply)
        self.script.extend(replies or [])
        #: reasoning text a reasoning model streams when the scripted reply has none
        self.reasoning = reasoning
        self.embedding_dim = embedding_dim
        self.event_delay = event_delay
        #: characters per streamed piece of a tool call's arguments
        self.argument_chunk = argument_chunk
        #: False: /health answers 503 (a server still loading its model)
        self.healthy = True
        #: how a 401 echoes the wrong key: whole, its first 8 and last 4 characters, or
        #: in another form a provider or a relay in front of it gives it back (see
        #: :func:`echoed`)
        self.key_echo: KeyEcho = "whole"
        #: fault injection: the usage every reply reports, in place of the counted one
        self.usage_override: dict[str, Any] | None = None
        #: fault injection: the reply is not cut at ``max_tokens`` (a server that ignores
        #: it, and streams its whole scripted reply all the same)
        self.ignore_max_tokens = False
        self._seq = 0

    @property
    def base_url(self) -> str:
        """The base URL a client is configured with (DeepSeek's has no ``/v1``)."""
        return self.url if self.flavor == "deepseek" else f"{self.url}/v1"

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        """Bodies of every chat completion request, in order."""
        chats = [r for r in self.requests if r.path.endswith("/chat/completions")]
        return [r.json for r in chats if r.method == "POST"]

    # ── routing ────────────────────────────────────────────────────────────────────

    async def handle(self, request: Request) -> Reply:
        path = request.path.removeprefix("/v1")
        if (request.method, path) == ("GET", "/health") and self.flavor in ("vllm", "llamacpp"):
            return self._health()
        if (request.method, path) == ("GET", "/props") and self.flavor == "llamacpp":
            return self._props()
        denied = self._check_auth(request)
        if denied is not None:
            return denied
        if (request.method, path) == ("GET", "/models"):
            return self._models()
        if (request.method, path) == ("POST", "/chat/completions"):
            return self._chat(request)
        if (request.method, path) == ("POST", "/embeddings"):
            return self._embeddings(request)
        return self._error(404, f"no route {request.method} {request.path}", "not_found_error")

    # ── endpoints ──────────────────────────────────────────────────────────────────

    def _health(self) -> Reply:
        if not self.healthy:
            return self.error_reply(503, None, None, message="Loading model")
        if self.flavor == "llamacpp":
            return Reply.json({"status": "ok"})
        return Reply(status=200)

    def _props(self) -> Reply:
        return Reply.json(
            {
                "default_generation_settings": {"n_ctx": self.n_ctx, "temperature": 0.8},
                "total_slots": 1,
                "model_path": f"/models/{self.models[0]}",
                "chat_template": "",
            }
        )

    def _models(self) -> Reply:
        data: list[dict[str, Any]] = []
        for name in self.models:
            entry: dict[str, Any] = {
                "id": name,
                "object": "model",
                "created": _CREATED,
                "owned_by": {"vllm": "vllm", "llamacpp": "llamacpp"}.get(self.flavor, "system"),
            }
            if self.flavor == "vllm":
                entry |= {"root": name, "parent": None, "max_model_len": self.max_model_len}
            if self.flavor == "llamacpp":
                entry["meta"] = {"n_ctx_train": 32768, "n_vocab": 151936, "n_params": 7_615_616_512}
            data.append(entry)
        return Reply.json({"object": "list", "data": data})

    def _chat(self, request: Request) -> Reply:
        body = request.json
        if not isinstance(body, dict):
            return self._error(400, "request body is not a JSON object", "invalid_request_error")
        model = body.get("model")
        messages = body.get("messages")
        if not isinstance(model, str) or not isinstance(messages, list) or not messages:
            return self._error(400, "'model' and 'messages' are required", "invalid_request_error")
        if self.flavor == "vllm" and model not in self.models:
            return self._error(404, f"The model `{model}` does not exist.", "NotFoundError")
        too_large = self._output_past_window(body, messages)
        if too_large is not None:
            return too_large
        refused = self._check_response_format(body.get("response_format"))
        if refused is not None:
            return refused
        tool_refusal = check_tools(self.flavor, body)
        if tool_refusal is not None:
            return self._error(*tool_refusal)

        scripted = self.script.next(body)
        reasoning = scripted.reasoning
        if reasoning is None and self._is_reasoner(model):
            reasoning = self.reasoning
        text_pieces = pieces(scripted.text)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        finish = "stop"
        if isinstance(limit, int) and len(text_pieces) > limit and not self.ignore_max_tokens:
            text_pieces, finish = text_pieces[:limit], "length"
        reasoning_pieces = pieces(reasoning or "")
        calls = scripted.tool_calls if finish == "stop" else ()
        if calls:
            finish = "tool_calls"
        usage = self._usage(messages, text_pieces, reasoning_pieces, calls_words(calls))
        self._seq += 1
        ident = f"chatcmpl-fake-{self._seq}"
        ids = call_ids(self.flavor, self._seq, calls)

        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": "".join(text_pieces)}
            if reasoning is not None:
                message["reasoning_content"] = reasoning
            if calls:
                message["content"] = message["content"] or None
                message["tool_calls"] = message_calls(calls, ids)
            return Reply.json(
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": _CREATED,
                    "model": model,
                    "choices": [
                        {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
                    ],
                    "usage": usage,
                }
            )

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> bytes:
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            choice |= extra
            obj: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": _CREATED,
                "model": model,
                "choices": [choice],
            }
            return _sse(obj)

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": None, "reasoning_content": p}) for p in reasoning_pieces]
        events += [chunk({"content": p}) for p in text_pieces]
        events += [chunk(d) for d in stream_calls(calls, ids, self.argument_chunk)]
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if self.flavor == "moonshot":
            events.append(chunk({}, finish, usage=usage))
        else:
            events.append(chunk({}, finish))
        if include_usage and self.flavor not in ("llamacpp", "moonshot"):
            events.append(
                _sse(
                    {
                        "id": ident,
                        "object": "chat.completion.chunk",
                        "created": _CREATED,
                        "model": model,
                        "choices": [],
                        "usage": usage,
                    }
                )
            )
        events.append(b"data: [DONE]\n\n")
        return Reply.sse(events, event_delay=self.event_delay)

    def _embeddings(self, request: Request) -> Reply:
        body = request.json
        if not isinstance(body, dict) or "input" not in body:
            return self._error(400, "'input' is required", "invalid_request_error")
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vector = embedding_for(str(text), self.embedding_dim)
            value: Any = vector
            if as_base64:
                value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": value})
        tokens = sum(count_words(str(t)) for t in texts)
        return Reply.json(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", self.models[0]),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    # ── checks and words ───────────────────────────────────────────────────────────

    def _is_reasoner(self, model: str) -> bool:
        return self.flavor == "deepseek" and model == "deepseek-reasoner"

    def _check_auth(self, request: Request) -> Reply | None:
        key = request.bearer()
        if self.api_key is None and self.flavor not in ("openai", "deepseek", "moonshot"):
            return None
        if key and (self.api_key is None or key == self.api_key):
            return None
        if self.flavor == "vllm":
            return Reply.json({"error": "Unauthorized"}, status=401)
        shown = echoed(key or "", self.key_echo)
        # Real servers echo a (masked) key; echo it whole so tests prove we never repeat it.
        return self._error(
            401,
            f"Incorrect API key provided: {shown}. You can find your API key in your account.",
            "invalid_request_error",
            code="invalid_api_key",
        )

    def _check_response_format(self, fmt: Any) -> Reply | None:
        if not isinstance(fmt, dict):
            return None
        kind = fmt.get("type")
        if self.flavor == "llamacpp" and kind not in ("text", "json_object"):
            return self._error(
                500,
                f'"response_format" must be one of "text" or "json_object", but got: {kind}',
                "server_error",
            )
        if self.flavor in ("deepseek", "moonshot") and kind == "json_schema":
            return self._error(
                400, "This response_format type is unavailable now", "invalid_request_error"
            )
        return None

    def _usage(
        self, messages: list[Any], text: list[str], reasoning: list[str], calls: int = 0
    ) -> dict[str, Any]:
        if self.usage_override is not None:
            return dict(self.usage_override)
        prompt = prompt_words(messages)
        completion = len(text) + len(reasoning) + calls
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if reasoning:
            usage["completion_tokens_details"] = {"reasoning_tokens": len(reasoning)}
        # each dialect's prompt-cache fields, as its server sends them (nothing cached
        # here; usage_override says a cache read)
        if self.flavor == "openai":
            usage["prompt_tokens_details"] = {"cached_tokens": 0}
        elif self.flavor == "deepseek":
            usage["prompt_cache_hit_tokens"], usage["prompt_cache_miss_tokens"] = 0, prompt
        return usage

    def _error(self, status: int, message: str, type_: str, code: Any = None) -> Reply:
        if self.flavor == "vllm":
            body: dict[str, Any] = {
                "object": "error",
                "message": message,
                "type": type_,
                "param": None,
                "code": status,
            }
        elif self.flavor == "llamacpp":
            body = {"error": {"code": status, "message": message, "type": type_}}
        else:
            body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
        return Reply.json(body, status=status)

    # ── LoopbackServer hooks ───────────────────────────────────────────────────────

    def error_reply(
        self,
        status: int,
        request: Request | None,
        fault: Fault | None,
        *,
        message: str | None = None,
    ) -> Reply:
        bad = "BadRequestError" if self.flavor == "vllm" else "invalid_request_error"
        words = {
            400: ("Invalid request: the request does not fit the API's schema.", bad, None),
            401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
            403: ("You are not allowed to use this model.", "permission_error", None),
            404: ("The model does not exist.", "not_found_error", "model_not_found"),
            413: ("Request entity too large.", bad, None),
            422: ("Unprocessable entity: a field has an invalid value.", bad, None),
            429: (
                "Rate limit reached for requests. Please try again in 1s.",
                "requests",
                "rate_limit_exceeded",
            ),
            500: ("The server had an error while processing your request.", "server_error", None),
            502: ("Bad gateway.", "server_error", None),
            503: (
                "The engine is currently overloaded, please try again later.",
                "service_unavailable_error",
                None,
            ),
            504: ("Gateway timeout.", "server_error", None),
            529: ("Overloaded.", "server_error", None),
        }
        text, type_, code = words.get(status, ("Error.", "server_error", None))
        if self.flavor == "llamacpp" and status == 503:
            type_ = "unavailable_error"
        if status == 429 and fault is not None and fault.opt("quota", False):
            text, type_, code = (
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                "insufficient_quota",
            )
        if message is None and fault is not None:
            message = fault.opt("message", None)
        return self._error(status, message or text, type_, code=code)

    def _output_past_window(self, body: dict[str, Any], messages: list[Any]) -> Reply | None:
        """vLLM refuses a prompt and an output cap that together pass ``max_model_len``,
        as it words it (the prompt counted here in words, a lower bound of any
        tokenizer's count)."""
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        if self.flavor != "vllm" or not isinstance(cap, int):
            return None
        prompt = sum(
            count_words(m["content"])
            for m in messages
            if isinstance(m, dict) and isinstance(m.get("content"), str)
        )
        if prompt + cap <= self.max_model_len:
            return None
        return Reply.json(
            {
                "object": "error",
                "message": (
                    f"'max_tokens' or 'max_completion_tokens' is too large: {cap}. This "
                    f"model's maximum context length is {self.max_model_len} tokens and your "
                    f"request has {prompt} input tokens ({cap} > {self.max_model_len} - "
                    f"{prompt})."
                ),
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            },
            status=400,
        )

    def context_length_reply(self, request: Request) -> Reply:
        if self.flavor == "vllm":
            return Reply.json(
                {
                    "object": "error",
                    "message": (
                        f"This model's maximum context length is {self.max_model_len} tokens. "
                        "However, you requested 40000 tokens (39000 in the messages, 1000 in "
                        "the completion). Please reduce the length of the messages or "
                        "completion."
                    ),
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                },
                status=400,
            )
        if self.flavor == "llamacpp":
            return Reply.json(
                {
                    "error": {
                        "code": 400,
                        "message": (
                            "the request exceeds the available context size, try increasing it"
                        ),
                        "type": "exceed_context_size_error",
                        "n_prompt_tokens": self.n_ctx + 1200,
                        "n_ctx": self.n_ctx,
                    }
                },
                status=400,
            )
        if self.flavor == "deepseek":
            message = (
                "This model's maximum context length is 131072 tokens. However, you requested "
                "140000 tokens (139000 in the messages, 1000 in the completion). Please reduce "
                "the length of the messages or completion."
            )
            return self._error(400, message, "invalid_request_error", code="invalid_request_error")
        if self.flavor == "moonshot":
            return self._error(
                400,
                "Invalid request: Your request exceeded model token limit: 131072",
                "invalid_request_error",
            )
        return Reply.json(
            {
                "error": {
                    "message": (
                        "This model's maximum context length is 128000 tokens. However, your "
                        "messages resulted in 130000 tokens. Please reduce the length of the "
                        "messages."
                    ),
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            },
            status=400,
        )


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def embedding_for(text: str, dim: int = 8) -> list[float]:
    """A deterministic unit vector from a hash of ``text`` (the fake's embedding model)."""
    values: list[float] = []
    counter = 0
    while len(values) < dim:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        for i in range(0, len(digest), 4):
            if len(values) == dim:
                break
            (n,) = struct.unpack("<I", digest[i : i + 4])
            values.append(n / 0xFFFFFFFF * 2.0 - 1.0)
        counter += 1
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    # Round-trip through float32 so JSON and base64 replies carry the same numbers.
    return [struct.unpack("<f", struct.pack("<f", v / norm))[0] for v in values]
