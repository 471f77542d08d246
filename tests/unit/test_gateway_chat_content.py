"""A Chat Completions message's ``content`` as OpenAI's API gives it: a string, empty when
the reply was (a ``stop`` that cut it at its first token), and null only beside tool calls
with no text; the same whole and added up from the stream."""

from __future__ import annotations

from typing import Any

from app.backends.base import Delta, ToolCall
from app.gateway.openai_out import ChatStream, chat_completion
from app.router.routed import RoutedResult
from app.router.types import Decision


def result(text: str, calls: bool = False) -> RoutedResult:
    return RoutedResult(
        text=text,
        reasoning="",
        model="m",
        runtime="vllm",
        provider="local",
        tokens_in=7,
        tokens_out=0,
        usage_counted_locally=False,
        cost_usd=0.0,
        latency_ms=1.0,
        finish_reason="tool_calls" if calls else "stop",
        decision=Decision(role="tutor", action="local", policy_version="1.0.0", target="m"),
        escalated=False,
        tool_calls=[ToolCall(id="c", name="f", arguments="{}")] if calls else [],
    )


def added_up(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The message a client makes of the chunks' deltas (a key is there once sent)."""
    message: dict[str, Any] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            for key, value in choice["delta"].items():
                if key == "content":
                    message["content"] = message.get("content", "") + value
                else:
                    message.setdefault(key, value)
    return message


def whole_content(r: RoutedResult) -> Any:
    return chat_completion("chatcmpl-1", "auto", r)["choices"][0]["message"]["content"]


def test_an_empty_reply_says_an_empty_string_not_null() -> None:
    assert whole_content(result("")) == ""
    stream = ChatStream("chatcmpl-1", "auto", include_usage=False)
    assert added_up(stream.done(result(""))).get("content") == ""
    # (its reasoning streamed first changes nothing)
    stream = ChatStream("chatcmpl-1", "auto", include_usage=False)
    chunks = stream.delta(Delta(reasoning="think")) + stream.done(result(""))
    assert added_up(chunks).get("content") == ""


def test_tool_calls_without_text_keep_content_null() -> None:
    assert whole_content(result("", calls=True)) is None
    assert whole_content(result("I'll look", calls=True)) == "I'll look"
    stream = ChatStream("chatcmpl-1", "auto", include_usage=False)
    message = added_up(stream.done(result("", calls=True)))
    assert "content" not in message and message["tool_calls"][0]["id"] == "c"


def test_a_streamed_reply_with_text_gets_no_empty_piece_added() -> None:
    stream = ChatStream("chatcmpl-1", "auto", include_usage=False)
    chunks = stream.delta(Delta(text="hi")) + stream.done(result("hi"))
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["hi", None]
