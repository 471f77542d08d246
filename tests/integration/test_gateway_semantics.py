"""What each protocol's fields mean, carried to the backend as the real APIs mean them: an
audit of the gateway with the openai and anthropic SDKs found requests served with a
200 whose meaning had changed on the way (instructions carried over, a structured
output ignored, text parts run together, a temperature invented). A real `switchyard
serve` on loopback; what the fake vLLM received and what the client got are asserted."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.integration import test_gateway
from tests.integration.test_gateway import REPLY, Gateway, lines_of

# the gateway test module's own: a real `switchyard serve` before loopback fakes,
# every escalation denied
fakes = test_gateway.fakes
gw = test_gateway.gw

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"


def sent_messages(gw: Gateway) -> list[dict[str, Any]]:
    """The messages of the last request the fake vLLM received."""
    return list(gw.vllm.chat_requests[-1]["messages"])


def test_a_previous_responses_instructions_are_not_carried_over(gw: Gateway) -> None:
    """A chained request with new instructions reached vLLM as [system A, user, assistant,
    system B, user]: OpenAI carries no previous response's instructions over. System
    and developer messages sent in ``input`` are the conversation's, and stay in it."""
    client = gw.openai
    first = client.responses.create(
        model="tutor",
        instructions="You are A.",
        input=[
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "what is a closure?"},
        ],
    )
    second = client.responses.create(
        model="tutor",
        instructions="You are B.",
        input="and a generator?",
        previous_response_id=first.id,
    )
    assert [(m["role"], m["content"]) for m in sent_messages(gw)] == [
        ("system", "You are B."),
        ("system", "Answer in English."),
        ("user", "what is a closure?"),
        ("assistant", REPLY),
        ("user", "and a generator?"),
    ]
    # a third turn with no instructions has none: B's are not kept either
    client.responses.create(model="tutor", input="and a coroutine?", previous_response_id=second.id)
    assert [m["content"] for m in sent_messages(gw)] == [
        "Answer in English.",
        "what is a closure?",
        REPLY,
        "and a generator?",
        REPLY,
        "and a coroutine?",
    ]


PLAN_SCHEMA = {
    "type": "object",
    "properties": {"goal": {"type": "string"}},
    "required": ["goal"],
    "additionalProperties": False,
}


def test_a_messages_output_format_is_the_replys_schema(gw: Gateway) -> None:
    """``output_config.format`` (Anthropic's structured outputs) was ignored: the reply
    was whatever the model wrote. It is the request's schema now, as Chat's
    ``response_format`` is: constrained decoding on vLLM, the check and one repair."""
    gw.vllm.script.queue("not json", json.dumps({"goal": "fix parse"}))
    msg = gw.anthropic.messages.create(
        model="tutor",
        max_tokens=64,
        messages=[{"role": "user", "content": "plan"}],
        output_config={"format": {"type": "json_schema", "schema": PLAN_SCHEMA}},
    )
    assert json.loads(msg.content[0].text) == {"goal": "fix parse"}  # type: ignore[union-attr]
    assert gw.vllm.chat_requests[0]["structured_outputs"]["json"] == PLAN_SCHEMA
    assert len(gw.vllm.chat_requests) == 2  # the rejected reply and its one repair
    assert [ln["reason_codes"] for ln in lines_of("repair")] == [["GR012_REPAIR"]]
    # streamed, the reply is released whole once it fits
    gw.vllm.script.queue(json.dumps({"goal": "ship"}))
    with gw.anthropic.messages.stream(
        model="tutor",
        max_tokens=64,
        messages=[{"role": "user", "content": "plan"}],
        output_config={"format": {"type": "json_schema", "schema": PLAN_SCHEMA}},
    ) as stream:
        assert json.loads(stream.get_final_text()) == {"goal": "ship"}
    assert gw.vllm.chat_requests[-1]["structured_outputs"]["json"] == PLAN_SCHEMA


def test_a_messages_output_format_that_cannot_be_honoured_is_refused(gw: Gateway) -> None:
    body = {"model": "tutor", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        for config, said in (
            ({"format": {"type": "xml"}}, "output_config.format.type: 'xml' is not supported"),
            (
                {"format": {"type": "json_schema", "schema": {"type": "objet"}}},
                "output_config.format.schema.type: 'objet' is not a JSON schema type",
            ),
        ):
            refused = http.post(MESSAGES, json={**body, "output_config": config})
            assert refused.status_code == 400 and refused.json()["type"] == "error"
            assert refused.json()["error"]["message"].startswith(said)
    assert gw.vllm.chat_requests == []


def test_text_parts_are_joined_with_a_line_break_on_every_protocol(gw: Gateway) -> None:
    """Parts were run together ("Helloworld", "Line one.Line two."); vLLM's own chat
    parsing joins a message's text parts with a line break."""
    parts: Any = [{"type": "text", "text": "Hello"}, {"type": "text", "text": "world"}]
    gw.openai.chat.completions.create(
        model="tutor",
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "Line one."}] * 2},
            {"role": "user", "content": parts},
        ],
    )
    assert [m["content"] for m in sent_messages(gw)] == ["Line one.\nLine one.", "Hello\nworld"]
    gw.openai.responses.create(
        model="tutor",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Hello"},
                    {"type": "input_text", "text": "world"},
                ],
            }
        ],
    )
    assert [m["content"] for m in sent_messages(gw)] == ["Hello\nworld"]
    gw.anthropic.messages.create(
        model="tutor",
        max_tokens=10,
        system=[{"type": "text", "text": "Line one."}, {"type": "text", "text": "Line two."}],
        messages=[{"role": "user", "content": parts}],
    )
    assert [m["content"] for m in sent_messages(gw)] == ["Line one.\nLine two.", "Hello\nworld"]


def test_sampling_is_carried_as_sent_and_none_is_invented(gw: Gateway) -> None:
    """A request with no temperature reached vLLM with 0.2 (ChatRequest's default, the
    product roles' own), where the API's default applies; ``top_p`` was dropped on all
    three protocols."""
    user: Any = [{"role": "user", "content": "x"}]
    gw.openai.chat.completions.create(model="tutor", messages=user)
    gw.openai.responses.create(model="tutor", input="x")
    gw.anthropic.messages.create(model="tutor", max_tokens=10, messages=user)
    for sent in gw.vllm.chat_requests:
        assert "temperature" not in sent and "top_p" not in sent, sent
    before = len(gw.vllm.chat_requests)
    gw.openai.chat.completions.create(model="tutor", messages=user, temperature=1.5, top_p=0.9)
    gw.openai.responses.create(model="tutor", input="x", temperature=0, top_p=0.5)
    gw.anthropic.messages.create(
        model="tutor",
        max_tokens=10,
        messages=user,
        extra_body={"temperature": 1, "top_p": 0.25},  # (this SDK sends neither itself)
    )
    assert [(s["temperature"], s["top_p"]) for s in gw.vllm.chat_requests[before:]] == [
        (1.5, 0.9),
        (0, 0.5),
        (1, 0.25),
    ]


def test_sampling_the_apis_refuse_is_refused_naming_the_field(gw: Gateway) -> None:
    """A seed of "abc" was dropped silently; a Messages temperature of 1.5 was served
    (Anthropic's range is 0 to 1, OpenAI's 0 to 2)."""
    user: Any = [{"role": "user", "content": "x"}]
    chat = {"model": "tutor", "messages": user}
    messages = {"model": "tutor", "max_tokens": 10, "messages": user}
    cases: list[tuple[str, dict[str, Any], str]] = [
        (CHAT, {**chat, "seed": "abc"}, 'seed: expected an integer, got "abc"'),
        (CHAT, {**chat, "seed": 1.5}, "seed: expected an integer, got 1.5"),
        (CHAT, {**chat, "temperature": 2.5}, "temperature: expected a number from 0 to 2"),
        (CHAT, {**chat, "top_p": 1.1}, "top_p: expected a number from 0 to 1, got 1.1"),
        (RESPONSES, {"model": "tutor", "input": "x", "top_p": "0.5"}, "top_p: expected a number"),
        (MESSAGES, {**messages, "temperature": 1.5}, "temperature: expected a number from 0 to 1"),
        (MESSAGES, {**messages, "temperature": True}, "temperature: expected a number"),
    ]
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        for path, body, said in cases:
            refused = http.post(path, json=body)
            assert refused.status_code == 400, (body, refused.text)
            assert refused.json()["error"]["message"].startswith(said), refused.text
    assert gw.vllm.chat_requests == []


def ignored_line(gw: Gateway) -> list[Any]:
    """The last request's opening audit line's ``ignored_fields`` ([] when it has none)."""
    opened = [ln for ln in lines_of("request") if "GATEWAY_REQUEST" in ln["reason_codes"]]
    return list(opened[-1]["values"].get("ignored_fields", []))


def test_chat_fields_are_carried_or_named_never_dropped_silently(gw: Gateway) -> None:
    """Each was dropped with a 200 and nothing said. The penalties reach vLLM; what no
    backend is given is named in the reply's header and in the request's audit line."""
    tool: Any = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object"}, "strict": True},
    }
    raw = gw.openai.chat.completions.with_raw_response.create(
        model="tutor",
        messages=[{"role": "user", "content": "x", "name": "ada"}],
        tools=[tool],
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias={"50256": -100},
        logprobs=True,
        top_logprobs=2,
        user="",  # empty: asks for nothing, not named
        extra_body={"top_k": 20, "min_p": 0.1, "repetition_penalty": 1.1, "made_up": 1},
    )
    assert raw.parse().choices[0].message.content == REPLY
    named = (
        "logit_bias,logprobs,made_up,messages[].name,min_p,repetition_penalty,"
        "tools[].function.strict,top_k,top_logprobs"
    )
    assert raw.headers["x-switchyard-ignored"] == named
    assert ignored_line(gw) == named.split(",")
    sent = gw.vllm.chat_requests[-1]
    assert (sent["presence_penalty"], sent["frequency_penalty"]) == (0.5, -0.5)
    assert not {"logit_bias", "logprobs", "top_k", "min_p", "made_up"} & set(sent)
    # streamed too; and a request with nothing left out says nothing
    with gw.openai.chat.completions.with_streaming_response.create(
        model="tutor",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        extra_body={"top_k": 5},
    ) as streamed:
        assert streamed.headers["x-switchyard-ignored"] == "top_k"
    plain = gw.openai.chat.completions.with_raw_response.create(
        model="tutor", messages=[{"role": "user", "content": "x"}]
    )
    assert "x-switchyard-ignored" not in plain.headers and ignored_line(gw) == []


def test_responses_and_messages_fields_are_named(gw: Gateway) -> None:
    raw = gw.openai.responses.with_raw_response.create(
        model="tutor",
        input="x",
        reasoning={"effort": "high"},
        include=["reasoning.encrypted_content"],
        text={"verbosity": "low"},
    )
    assert raw.parse().output_text == REPLY
    assert raw.headers["x-switchyard-ignored"] == "include,reasoning,text.verbosity"
    cached: Any = {"type": "ephemeral"}
    msg = gw.anthropic.messages.with_raw_response.create(
        model="tutor",
        max_tokens=2048,
        system=[{"type": "text", "text": "be brief", "cache_control": cached}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "x", "cache_control": cached}]}
        ],
        thinking={"type": "enabled", "budget_tokens": 1024},
        metadata={"user_id": "u-1"},
        extra_body={"top_k": 40},
    )
    assert msg.parse().content[0].text == REPLY  # type: ignore[union-attr]
    assert msg.headers["x-switchyard-ignored"] == "cache_control,metadata,thinking,top_k"
    assert ignored_line(gw) == ["cache_control", "metadata", "thinking", "top_k"]
    assert "top_k" not in gw.vllm.chat_requests[-1]


def test_mcp_servers_are_refused_not_dropped(gw: Gateway) -> None:
    """The client relies on the API to run an MCP server's tools (as a server tool's,
    also refused): dropped, the model would answer without the tools it was promised."""
    body = {
        "model": "tutor",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "x"}],
        "mcp_servers": [{"type": "url", "url": "https://mcp.example/sse", "name": "docs"}],
    }
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        refused = http.post(MESSAGES, json=body)
        assert refused.status_code == 400
        assert refused.json()["error"]["message"].startswith("mcp_servers: MCP servers run by")
        assert http.post(MESSAGES, json={**body, "mcp_servers": []}).status_code == 200
    assert len(gw.vllm.chat_requests) == 1


def test_a_messages_reply_says_the_input_the_backend_reported(gw: Gateway) -> None:
    """A request (an escalated one, in the audit) told the client 105 input tokens, the
    gateway's own count, where the provider reported and the ledger recorded 23. The
    final usage is the backend's; where it reported none believable, the gateway's count
    stands. ``message_start`` comes before any backend has counted: the count, still."""
    ask: Any = {"model": "tutor", "max_tokens": 64, "messages": [{"role": "user", "content": "x"}]}
    counted = gw.anthropic.messages.count_tokens(
        model="tutor", messages=ask["messages"]
    ).input_tokens
    gw.vllm.usage_override = {"prompt_tokens": 23, "completion_tokens": 7, "total_tokens": 30}
    whole = gw.anthropic.messages.create(**ask)
    with gw.anthropic.messages.stream(**ask) as stream:
        events = list(stream)
        final = stream.get_final_message()
    started = next(e for e in events if e.type == "message_start").message.usage.input_tokens
    assert (started, whole.usage.input_tokens, final.usage.input_tokens) == (counted, 23, 23)
    assert [ln["values"]["tokens_in"] for ln in lines_of("call")] == [23, 23]
    # a usage no call can have: counted here, and the reply says the gateway's count
    gw.vllm.usage_override = {"prompt_tokens": -5, "completion_tokens": 7, "total_tokens": 2}
    assert gw.anthropic.messages.create(**ask).usage.input_tokens == counted


def test_responses_store_false_is_honoured_and_the_echo_is_what_was_sent(gw: Gateway) -> None:
    """``store: false`` was ignored (kept, and the reply said ``"store": true``); the echo
    fields were fixed values (instructions null, temperature null, tools [], …)."""
    client = gw.openai
    unkept = client.responses.create(model="tutor", input="x", store=False)
    assert unkept.store is False and unkept.output_text == REPLY
    with pytest.raises(openai.BadRequestError, match="previous_response_id"):
        client.responses.create(model="tutor", input="y", previous_response_id=unkept.id)
    tools: Any = [{"type": "function", "name": "read_file", "parameters": {"type": "object"}}]
    fmt: Any = {"type": "json_schema", "name": "plan", "schema": PLAN_SCHEMA}
    asked: Any = {
        "model": "tutor",
        "input": "plan",
        "instructions": "be brief",
        "max_output_tokens": 50,
        "temperature": 0.3,
        "top_p": 0.8,
        "tools": tools,
        "text": {"format": fmt},
    }
    gw.vllm.script.queue(json.dumps({"goal": "a"}), json.dumps({"goal": "b"}))
    whole = client.responses.create(**asked)
    with client.responses.stream(**asked) as stream:
        streamed = stream.get_final_response()
    for reply in (whole, streamed):
        echo = reply.model_dump(mode="json", by_alias=True)
        assert echo["instructions"] == "be brief" and echo["store"] is True
        assert (echo["max_output_tokens"], echo["temperature"], echo["top_p"]) == (50, 0.3, 0.8)
        assert [t["name"] for t in echo["tools"]] == ["read_file"]
        assert echo["text"]["format"]["schema"] == PLAN_SCHEMA
    # kept (store defaults to true): the chain goes on
    client.responses.create(model="tutor", input="more", previous_response_id=whole.id)


def test_a_body_sent_as_another_content_type_is_refused_with_415(gw: Gateway) -> None:
    """``text/plain`` and the form types (what a web page may send cross-origin without a
    preflight) were served as JSON. No content type, and JSON with parameters, are
    served."""
    bodies = {
        CHAT: {"model": "tutor", "messages": [{"role": "user", "content": "x"}]},
        RESPONSES: {"model": "tutor", "input": "x"},
        MESSAGES: {
            "model": "tutor",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "x"}],
        },
    }
    served = 0
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        for path, body in bodies.items():
            content = json.dumps(body)
            for kind in (
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
            ):
                refused = http.post(path, content=content, headers={"content-type": kind})
                assert refused.status_code == 415, (path, kind, refused.text)
                error = refused.json()["error"]
                assert error["message"] == (
                    f"Content-Type {kind!r} is not accepted: send the body as application/json"
                )
                assert error["type"] == "invalid_request_error"
                if path == MESSAGES:
                    assert refused.json()["type"] == "error"
            assert len(gw.vllm.chat_requests) == served  # none of those reached a model
            served += 2
            for headers in ({}, {"content-type": "application/json; charset=utf-8"}):
                assert http.post(path, content=content, headers=headers).status_code == 200
    refused_lines = [ln for ln in lines_of("request") if "GATEWAY_REJECTED" in ln["reason_codes"]]
    assert [ln["values"]["status"] for ln in refused_lines] == [415] * 9


def test_a_prefill_is_continued_by_vllm(gw: Gateway) -> None:
    """A request ending in an assistant turn reached vLLM as an ordinary final message:
    its template closed the turn and the model started another. vLLM continues it only
    when told (``continue_final_message``, no ``add_generation_prompt``)."""
    prefill: Any = [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "The colour is"},
    ]
    gw.anthropic.messages.create(model="tutor", max_tokens=10, messages=prefill)
    gw.openai.chat.completions.create(model="tutor", messages=prefill)
    gw.openai.chat.completions.create(model="tutor", messages=prefill[:1])
    flags = [
        (s.get("continue_final_message"), s.get("add_generation_prompt"))
        for s in gw.vllm.chat_requests
    ]
    assert flags == [(True, False), (True, False), (None, None)]
    assert sent_messages(gw)[-1] == {"role": "user", "content": "Name a colour."}
    assert gw.vllm.chat_requests[0]["messages"][-1] == prefill[-1]


def test_an_empty_reply_is_an_empty_string_on_every_protocol_never_null(gw: Gateway) -> None:
    """A reply cut by ``stop`` at its first token (vLLM sends the text cut: "") answered
    ``"content": null``, where OpenAI's API says a string, empty here, when the message
    carries no tool calls: whole, and added up from the stream as the openai SDK does.
    Responses and Messages say it as the providers do: no text (``output_text`` ""), and
    Anthropic's ``content: []``, the same whole and streamed."""
    from openai.lib.streaming.chat import ChatCompletionStreamState

    from tests.fakes.script import Scripted

    gw.vllm.script.queue(*[Scripted(text="")] * 7)
    client = gw.openai
    asked: list[Any] = [{"role": "user", "content": "say The"}]
    whole = client.chat.completions.create(model="implementer", messages=asked, stop=["The"])
    assert whole.choices[0].message.content == ""
    assert whole.choices[0].finish_reason == "stop"
    with httpx.Client(base_url=gw.url, timeout=60) as http:
        raw = http.post(CHAT, json={"model": "implementer", "messages": asked, "stop": ["The"]})
    assert raw.json()["choices"][0]["message"]["content"] == ""  # (the wire, not the SDK)
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in client.chat.completions.create(
        model="implementer", messages=asked, stop=["The"], stream=True
    ):
        state.handle_chunk(chunk)
    streamed = state.get_final_completion().choices[0]
    assert (streamed.message.content, streamed.finish_reason) == ("", "stop")

    response = client.responses.create(model="implementer", input="say The")
    assert (response.status, response.output_text) == ("completed", "")
    with client.responses.stream(model="implementer", input="say The") as events:
        final = events.get_final_response()
    assert (final.status, final.output_text) == ("completed", "")

    said = gw.anthropic.messages.create(
        model="implementer", max_tokens=64, messages=asked, stop_sequences=["The"]
    )
    assert said.content == []
    with gw.anthropic.messages.stream(
        model="implementer", max_tokens=64, messages=asked, stop_sequences=["The"]
    ) as stream:
        assert stream.get_final_message().content == []
    assert len(gw.vllm.chat_requests) == 7


def test_an_escalate_header_that_is_none_of_its_spellings_is_refused(gw: Gateway) -> None:
    """``x-switchyard-escalate: garbage`` was read as "off" without a word (the request
    served locally, the client believing it had asked for the cloud), where a bad
    ``x-switchyard-signal`` is a 400. Its spellings either way are served as before."""
    asked = {"model": "tutor", "messages": [{"role": "user", "content": "why?"}]}
    with httpx.Client(base_url=gw.url, timeout=60) as http:
        bad = http.post(CHAT, json=asked, headers={"x-switchyard-escalate": "garbage"})
        off = http.post(CHAT, json=asked, headers={"x-switchyard-escalate": "off"})
        on = http.post(CHAT, json=asked, headers={"x-switchyard-escalate": "yes"})
    assert bad.status_code == 400, bad.text
    assert bad.json()["error"]["message"] == (
        "x-switchyard-escalate: expected 1, true, yes, on (escalate) or 0, false, no, off "
        "(do not), got 'garbage'"
    )
    # (every escalation is denied here: asked for, it is denied and served locally)
    assert (off.status_code, on.status_code) == (200, 200)
    assert off.json()["choices"][0]["message"]["content"] == REPLY
    assert on.json()["choices"][0]["message"]["content"] == REPLY
    # the "yes" alone asked for the cloud (and was denied): "off" did not
    requests = lines_of("request")
    assert requests[0]["values"]["status"] == 400  # the refusal, audited
    asked_runs = {ln["run"] for ln in lines_of("denial")}
    assert asked_runs == {requests[-1]["run"]}, lines_of("denial")
