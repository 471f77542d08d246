"""A structured reply and the client's output cap (GR-012 through the gateway): the repair
stays within the cap the client set, a reply cut off at it is released as cut off, and
the usage told is every attempt's. A real `switchyard serve` on loopback, the openai and
anthropic SDKs as clients, a fake vLLM behind it (which cuts a reply at its max_tokens
and counts a word a token)."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.script import pieces
from tests.integration import test_gateway
from tests.integration.test_gateway import Gateway, lines_of

# the gateway test module's own: a real `switchyard serve` before loopback fakes,
# every escalation denied
fakes = test_gateway.fakes
gw = test_gateway.gw

SCHEMA: Any = {"type": "object", "properties": {"goal": {"type": "string"}}, "required": ["goal"]}
#: a valid reply of 12 words: past a cap of 4
LONG = json.dumps({"goal": "fix the loop that stops one short of the last token"})
CUT = "".join(pieces(LONG)[:4])
USER: list[Any] = [{"role": "user", "content": "plan the fix"}]


def sent_caps(gw: Gateway) -> list[int]:
    return [r.get("max_completion_tokens") or r["max_tokens"] for r in gw.vllm.chat_requests]


def test_a_reply_cut_off_at_the_clients_cap_is_released_cut_off_not_repaired_past_it(
    gw: Gateway,
) -> None:
    """A user audit: ``max_tokens: 4`` with a schema got a reply of 8 tokens (the repair
    was given twice the cap) and that repair's usage alone. No repair fits in the cap
    the first reply filled: the reply goes out as cut off, as OpenAI sends one."""
    gw.vllm.script.queue(LONG, LONG, LONG, LONG)
    chat_format: Any = {"type": "json_schema", "json_schema": {"name": "plan", "schema": SCHEMA}}
    whole = gw.openai.chat.completions.create(
        model="architect", messages=USER, max_tokens=4, response_format=chat_format
    )
    assert whole.choices[0].finish_reason == "length"
    assert whole.choices[0].message.content == CUT
    assert whole.usage is not None and whole.usage.completion_tokens == 4
    streamed: list[str] = []
    finish, usage = None, None
    for chunk in gw.openai.chat.completions.create(
        model="architect",
        messages=USER,
        max_tokens=4,
        response_format=chat_format,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.choices:
            streamed.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        usage = chunk.usage or usage
    assert "".join(streamed) == CUT and finish == "length"
    assert usage is not None and usage.completion_tokens == 4
    text_format: Any = {"format": {"type": "json_schema", "name": "plan", "schema": SCHEMA}}
    response = gw.openai.responses.create(
        model="architect", input="plan the fix", max_output_tokens=4, text=text_format
    )
    assert response.status == "incomplete" and response.output_text == CUT
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    message = gw.anthropic.messages.create(
        model="architect",
        max_tokens=4,
        messages=USER,
        output_config={"format": {"type": "json_schema", "schema": SCHEMA}},
    )
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 4
    assert sent_caps(gw) == [4, 4, 4, 4]  # one call each, none past the cap
    assert lines_of("repair") == []
    closed = [ln for ln in lines_of("request") if "GATEWAY_DONE" in ln["reason_codes"]]
    assert [ln["values"]["finish_reason"] for ln in closed] == ["length"] * 4


def test_a_repair_is_held_to_the_cap_and_both_are_billed(gw: Gateway) -> None:
    """The client was told the repair's usage only, where the ledger and the call lines
    count both calls; the repair is held to the client's cap (a reply cut off at it got
    twice it: below)."""
    bad = json.dumps({"aim": "fix"})  # 2 words, not the schema
    good = json.dumps({"goal": "fix"})
    gw.vllm.script.queue(bad, good, bad, good)
    reply = gw.openai.chat.completions.create(
        model="architect",
        messages=USER,
        max_tokens=10,
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}},
    )
    assert json.loads(reply.choices[0].message.content or "") == {"goal": "fix"}
    message = gw.anthropic.messages.create(
        model="architect",
        max_tokens=10,
        messages=USER,
        output_config={"format": {"type": "json_schema", "schema": SCHEMA}},
    )
    assert json.loads(message.content[0].text) == {"goal": "fix"}  # type: ignore[union-attr]
    assert sent_caps(gw) == [10, 10, 10, 10]  # each repair held to the cap, no more
    assert len(lines_of("repair")) == 2
    calls = [ln["values"] for ln in lines_of("call")]
    assert reply.usage is not None
    assert reply.usage.completion_tokens == calls[0]["tokens_out"] + calls[1]["tokens_out"] == 4
    assert reply.usage.prompt_tokens == calls[0]["tokens_in"] + calls[1]["tokens_in"]
    assert message.usage.output_tokens == calls[2]["tokens_out"] + calls[3]["tokens_out"]
    assert message.usage.input_tokens == calls[2]["tokens_in"] + calls[3]["tokens_in"]
    closed = [ln["values"] for ln in lines_of("request") if "GATEWAY_DONE" in ln["reason_codes"]]
    assert [c["tokens_out"] for c in closed] == [4, 4]
