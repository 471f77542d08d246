"""A reply's text made whole: no lone surrogate in it.

JSON may spell a UTF-16 surrogate alone (``"\\ud800"``), and Python decodes it into a
``str`` that no UTF-8 writer takes: a provider's reply carrying one was billed, then
crashed the gateway as it wrote the answer (a bare 500, or a stream cut off: an audit).
Each piece is mended where it enters, at the backend's edge: a pair spelt as two escapes
in one string is joined into its character, a lone half becomes U+FFFD, as a decoder
does with bytes it cannot read. A pair split across two pieces of a stream comes out as
two U+FFFD in the stream; the call's whole text, mended at its end, keeps the character.
"""

from __future__ import annotations

import re

from app.backends.base import ChatResult, Delta, ToolCall, ToolCallDelta

_SURROGATE = re.compile("[\ud800-\udfff]")


def _mended(text: str) -> bool:
    """Whether ``text`` holds a surrogate (ASCII, nearly every piece, is looked at once)."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def whole(text: str) -> str:
    """``text`` with its surrogate pairs joined and every lone surrogate as U+FFFD."""
    if not _mended(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def whole_delta(delta: Delta) -> Delta:
    """``delta`` as it was when all of it is whole (nearly always), else a mended copy."""
    calls = delta.tool_calls
    if not (
        _mended(delta.text)
        or _mended(delta.reasoning)
        or any(_mended(c.arguments) or _mended(c.name or "") for c in calls)
    ):
        return delta
    return delta.model_copy(
        update={
            "text": whole(delta.text),
            "reasoning": whole(delta.reasoning),
            "tool_calls": [_call_delta(c) for c in calls],
        }
    )


def _call_delta(call: ToolCallDelta) -> ToolCallDelta:
    name = None if call.name is None else whole(call.name)
    return call.model_copy(update={"name": name, "arguments": whole(call.arguments)})


def whole_result(result: ChatResult) -> ChatResult:
    """``result`` as it was when all of it is whole, else a mended copy."""
    calls = result.tool_calls
    if not (
        _mended(result.text)
        or _mended(result.reasoning)
        or any(_mended(c.arguments) or _mended(c.name) for c in calls)
    ):
        return result
    return result.model_copy(
        update={
            "text": whole(result.text),
            "reasoning": whole(result.reasoning),
            "tool_calls": [_call(c) for c in calls],
        }
    )


def _call(call: ToolCall) -> ToolCall:
    return call.model_copy(update={"name": whole(call.name), "arguments": whole(call.arguments)})
