"""Reading an OpenAI-compatible chat stream, chunk by chunk, across the servers' dialects.

* usage: every flavor is asked for ``stream_options.include_usage``; Kimi puts usage in the
  last choice; the llama.cpp server sends none in a stream, so the tokens are counted
  locally (:mod:`app.tokens`) and the usage says ``counted_locally``.
* reasoning: DeepSeek's ``reasoning_content`` (and vLLM's ``reasoning`` /
  ``reasoning_content``) deltas become :attr:`Delta.reasoning`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.backends.base import Delta
from app.backends.provider_common import BadStreamItem, StreamState

__all__ = ["ChunkState", "field_of"]


def field_of(obj: object, name: str) -> Any:
    """A field of an SDK model (extra fields included) or of a dict, else None."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


@dataclass
class ChunkState(StreamState):
    """What one streamed chat completion has gathered so far."""

    finish_reason: str | None = None

    def finish(self) -> str | None:
        return self.finish_reason

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
            finish = field_of(choice, "finish_reason")
            if isinstance(finish, str) and finish:
                self.finish_reason = finish
            self._usage(field_of(choice, "usage"))  # Kimi's place for it
        if text:
            self.text.append(text)
        if reasoning:
            self.reasoning.append(reasoning)
        return Delta(text=text, reasoning=reasoning) if text or reasoning else None

    def _usage(self, usage: object) -> None:
        if usage is None:
            return
        prompt = field_of(usage, "prompt_tokens")
        completion = field_of(usage, "completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            self.tokens_in, self.tokens_out = prompt, completion
