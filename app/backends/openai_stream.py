"""Reading an OpenAI-compatible chat stream, chunk by chunk, across the servers' dialects.

* usage: every flavor is asked for ``stream_options.include_usage``; Kimi puts usage in the
  last choice; the llama.cpp server sends none in a stream, so the tokens are counted
  locally (:mod:`app.tokens`) and the usage says ``counted_locally``. The prompt's tokens
  read from the server's prompt cache are its ``tokens_cached`` part (:func:`cached_tokens`
  reads each dialect's field).
* reasoning: DeepSeek's ``reasoning_content`` (and vLLM's ``reasoning`` /
  ``reasoning_content``) deltas become :attr:`Delta.reasoning`.
* tool calls: ``delta.tool_calls`` fragments (``index``, ``id``, ``function.name``, then
  ``function.arguments`` in pieces) go through the state's assembler, which evens out
  the servers' habits (see :mod:`app.backends.tool_calls`); a reply with calls that a
  server ends with ``stop`` (Ollama, older llama.cpp servers) finishes ``tool_calls``.
* stop sequences: vLLM names the one that ended the reply in the choice's
  ``stop_reason``; it is passed on as :attr:`Delta.stop_sequence` (other servers do not
  say, and their reply simply ends with ``stop``). A reasoning model takes no ``stop``
  (OpenAI answers 400): the reply is cut here instead (``scanner``), the text past the
  sequence never released and the stream read to its end for the usage, which bills it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.backends.base import Delta, ToolCallDelta
from app.backends.provider_common import BadStreamItem, StreamState
from app.backends.stops import StopScanner

__all__ = ["ChunkState", "cached_tokens", "field_of"]


def field_of(obj: object, name: str) -> Any:
    """A field of a chunk parsed as JSON (a dict: the local runtimes' path, so first), of
    an SDK model (extra fields included) or of another mapping, else None."""
    if isinstance(obj, dict):
        return obj.get(name)
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


@dataclass
class ChunkState(StreamState):
    """What one streamed chat completion has gathered so far."""

    finish_reason: str | None = None
    #: the request's stop sequences, applied here when the server was not sent them
    scanner: StopScanner | None = None

    def finish(self) -> str | None:
        if self.finish_reason == "stop" and self.calls.started:
            return "tool_calls"
        if self.finish_reason is not None and self.scanner and self.scanner.matched:
            return "stop"  # (the server went on, to its own end or its cap)
        return self.finish_reason

    def end(self) -> Delta | None:
        tail = self.scanner.flush() if self.scanner else ""
        if not tail:
            return None
        self.text.append(tail)
        return Delta(text=tail)

    def feed(self, item: object) -> Delta | None:
        model = field_of(item, "model")
        if isinstance(model, str) and model:
            self.model = model
        self._usage(field_of(item, "usage"))
        choices = field_of(item, "choices")
        if choices is None:
            return None
        if not isinstance(choices, list):
            raise BadStreamItem("choices is not a list")
        text, reasoning = "", ""
        calls: list[ToolCallDelta] = []
        stop_sequence: str | None = None
        for choice in choices[:1]:
            delta = field_of(choice, "delta")
            if delta is not None:
                content = field_of(delta, "content")
                thought = field_of(delta, "reasoning_content") or field_of(delta, "reasoning")
                if content is not None and not isinstance(content, str):
                    raise BadStreamItem("delta content is not a string")
                if thought is not None and not isinstance(thought, str):
                    raise BadStreamItem("delta reasoning is not a string")
                text, reasoning = content or "", thought or ""
                calls = self._tool_calls(field_of(delta, "tool_calls"))
            finish = field_of(choice, "finish_reason")
            if isinstance(finish, str) and finish:
                self.finish_reason = finish
                # vLLM's: the stop string (or a stop token's id: not a sequence of ours)
                said = field_of(choice, "stop_reason")
                if finish == "stop" and isinstance(said, str) and said:
                    stop_sequence = said
            self._usage(field_of(choice, "usage"))  # Kimi's place for it
        if self.scanner is not None and (text or reasoning or calls):
            seen = self.scanner.matched
            text = self.scanner.feed(text)
            if self.scanner.matched is not None:
                if seen is None:
                    stop_sequence = self.scanner.matched
                reasoning, calls = "", []  # (nothing past the stop reaches the client)
        if text:
            self.text.append(text)
        if reasoning:
            self.reasoning.append(reasoning)
        if not (text or reasoning or calls or stop_sequence):
            return None
        return Delta(text=text, reasoning=reasoning, tool_calls=calls, stop_sequence=stop_sequence)

    def _tool_calls(self, fragments: object) -> list[ToolCallDelta]:
        if fragments is None:
            return []
        if not isinstance(fragments, list):
            raise BadStreamItem("delta tool_calls is not a list")
        out: list[ToolCallDelta] = []
        for fragment in fragments:
            index, ident = field_of(fragment, "index"), field_of(fragment, "id")
            function = field_of(fragment, "function")
            name, arguments = field_of(function, "name"), field_of(function, "arguments")
            if index is not None and (not isinstance(index, int) or index < 0):
                raise BadStreamItem("tool call index is not a count")
            for value in (ident, name, arguments):
                if value is not None and not isinstance(value, str):
                    raise BadStreamItem("tool call id, name or arguments is not a string")
            out += self.calls.feed(index, ident, name, arguments or "")
        return out

    def _usage(self, usage: object) -> None:
        if usage is None:
            return
        prompt = field_of(usage, "prompt_tokens")
        completion = field_of(usage, "completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            self.tokens_in, self.tokens_out = prompt, completion
            self.tokens_cached = cached_tokens(usage)


def cached_tokens(usage: object) -> int:
    """Of a usage's ``prompt_tokens``, those the server read from its prompt cache, in
    each dialect that says it: ``prompt_tokens_details.cached_tokens`` (OpenAI, vLLM,
    DeepSeek lately), ``prompt_cache_hit_tokens`` (DeepSeek, beside its misses) and a
    top-level ``cached_tokens`` (Moonshot). Two that disagree: the fewer (a cached token
    is the cheaper one, so the charge is never below the bill); none: 0."""
    said = [
        n
        for n in (
            field_of(field_of(usage, "prompt_tokens_details"), "cached_tokens"),
            field_of(usage, "prompt_cache_hit_tokens"),
            field_of(usage, "cached_tokens"),
        )
        if isinstance(n, int) and not isinstance(n, bool)
    ]
    return min(said) if said else 0
