"""A cloud reply's text stays whole and in order around a tool call while its keys are
masked. The masker holds back a text's last word (it may go on as a key's run does):
held to the stream's end, the end of "Let me read parser" came after the call, a text
block after the ``tool_use`` for Claude Code and a message after the ``function_call``
for Codex, whose history then said "Let me read \\n\\nparser" (a user audit). Each
protocol is read with its real SDK against `switchyard serve`, the cloud a loopback fake
that streams the text a word a piece, then the call."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fakes.script import Scripted, ScriptedCall
from tests.integration import test_gateway_tools
from tests.integration.test_gateway import Gateway
from tests.integration.test_gateway_tools import READ

#: ends mid-word, in letters a key's run is made of: the masker holds "parser" back
TEXT = "Let me read parser"
CALL = ScriptedCall("read_file", {"path": "parser.py"}, id="call_p")
REPLY = Scripted(TEXT, tool_calls=(CALL,))
#: the cloud route (the architect unsure escalates to the OpenAI cloud), as in
#: test_gateway_tools' masking test: the gateway's environment has both cloud keys
SIGNAL = {"x-switchyard-signal": "confidence=0.5"}


# the tools tests' gateway: vLLM, the OpenAI cloud and Claude fakes, --approve allow
gw = test_gateway_tools.gw


def test_a_chat_client_gets_the_whole_text_before_the_call(gw: Gateway) -> None:
    gw.cloud.script.queue(
        Scripted(TEXT, reasoning="the bound stops one short", tool_calls=(CALL,)), REPLY
    )
    asked: dict[str, Any] = {
        "model": "architect",
        "tools": [{"type": "function", "function": READ}],
        "messages": [{"role": "user", "content": "why does parse drop a token?"}],
        "extra_headers": SIGNAL,
    }
    order: list[tuple[str, str]] = []  # (what, its piece) in the order the chunks came
    for chunk in gw.openai.chat.completions.create(stream=True, **asked):
        for choice in chunk.choices:
            thought = getattr(choice.delta, "reasoning_content", None)
            if thought:
                order.append(("reasoning", thought))
            if choice.delta.content:
                order.append(("text", choice.delta.content))
            for c in choice.delta.tool_calls or []:
                order.append(("call", (c.function and c.function.arguments) or ""))
    kinds = [kind for kind, _ in order]
    # each part whole and in its place: the thinking, the text, then the call
    assert kinds == sorted(kinds, key=["reasoning", "text", "call"].index), kinds
    said = {k: "".join(p for kind, p in order if kind == k) for k in ("reasoning", "text")}
    assert said == {"reasoning": "the bound stops one short", "text": TEXT}
    assert json.loads("".join(p for kind, p in order if kind == "call")) == {"path": "parser.py"}
    whole = gw.openai.chat.completions.create(**asked).choices[0].message
    assert whole.content == TEXT and whole.tool_calls is not None
    assert whole.tool_calls[0].function.arguments == CALL.arguments_text


@pytest.mark.parametrize("cloud", ["openai", "anthropic"])
def test_a_messages_client_gets_one_text_block_before_the_tool_use(gw: Gateway, cloud: str) -> None:
    """Claude Code showed the text's last word as a block of its own after the call."""
    if cloud == "openai":
        gw.cloud.script.queue(REPLY, REPLY)
        route: dict[str, Any] = {"model": "architect", "extra_headers": SIGNAL}
    else:  # (the tutor escalates to the Anthropic cloud on the user's request)
        gw.claude.script.queue(REPLY, REPLY)
        route = {"model": "tutor+escalate"}
    tools = [
        {"name": "read_file", "description": "Read a file", "input_schema": READ["parameters"]}
    ]
    asked: dict[str, Any] = {
        "max_tokens": 500,
        "tools": tools,
        "messages": [{"role": "user", "content": "why does parse drop a token?"}],
        **route,
    }
    with gw.anthropic.messages.stream(**asked) as stream:
        starts = [e.content_block.type for e in stream if e.type == "content_block_start"]
        final = stream.get_final_message()
    assert starts == ["text", "tool_use"]
    blocks = [(b.type, getattr(b, "text", None), getattr(b, "input", None)) for b in final.content]
    assert blocks == [("text", TEXT, None), ("tool_use", None, {"path": "parser.py"})]
    whole = gw.anthropic.messages.create(**asked)
    assert [(b.type, getattr(b, "text", None)) for b in whole.content] == [
        ("text", TEXT),
        ("tool_use", None),
    ]
    served = gw.cloud.chat_requests if cloud == "openai" else gw.claude.message_requests
    assert len(served) == 2


def test_a_responses_client_gets_one_message_before_the_function_call(gw: Gateway) -> None:
    """Codex CLI sends the output back as its next request's history: a second message
    after the call made the assistant's text "Let me read \\n\\nparser"."""
    gw.cloud.script.queue(REPLY, REPLY)
    asked: dict[str, Any] = {
        "model": "architect",
        "input": "why does parse drop a token?",
        "tools": [{"type": "function", **READ}],
        "extra_headers": SIGNAL,
    }
    with gw.openai.responses.stream(**asked) as stream:
        events = list(stream)
        final = stream.get_final_response()
    added = [e.item.type for e in events if e.type == "response.output_item.added"]
    assert added == ["message", "function_call"]
    texts = [e.text for e in events if e.type == "response.output_text.done"]
    assert texts == [TEXT]
    output = [(o.type, getattr(o, "arguments", None)) for o in final.output]
    assert output == [("message", None), ("function_call", CALL.arguments_text)]
    assert final.output_text == TEXT
    whole = gw.openai.responses.create(**asked)
    assert [o.type for o in whole.output] == ["message", "function_call"]
    assert whole.output_text == TEXT
