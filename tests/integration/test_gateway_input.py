"""Client mistakes are 400s that name the field, each with its GATEWAY_REJECTED audit
line, and never reach a model: a real `switchyard serve` on loopback, raw HTTP (some of
these bodies no SDK would send) and the openai and anthropic SDKs for the model
endpoints; loopback fakes behind it."""

from __future__ import annotations

import json
from typing import Any

import anthropic
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
USER: list[Any] = [{"role": "user", "content": "x"}]
READ = {"name": "read_file", "parameters": {"type": "object"}}


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "tutor", "messages": USER, **fields}


def responses(**fields: Any) -> dict[str, Any]:
    return {"model": "tutor", "input": "x", **fields}


def messages(**fields: Any) -> dict[str, Any]:
    return {"model": "tutor", "max_tokens": 10, "messages": USER, **fields}


def refusal(http: httpx.Client, path: str, body: dict[str, Any] | bytes) -> tuple[int, str]:
    """The status and the error message, read from either protocol's error shape. A
    body is sent as JSON with every non-ASCII character escaped, lone surrogates too."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = http.post(path, content=content, headers={"content-type": "application/json"})
    error = resp.json()["error"]  # OpenAI: {"error": {...}}; Anthropic: {"type", "error"}
    if path.startswith(MESSAGES):
        assert resp.json()["type"] == "error"
    return resp.status_code, str(error["message"])


def check_refused(gw: Gateway, cases: list[tuple[str, dict[str, Any] | bytes, str]]) -> None:
    """Each case is refused with a 400 whose message starts with the given text, and
    audited; no model was asked."""
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        got = [(path, *refusal(http, path, body)) for path, body, _ in cases]
    wanted = [(path, 400, said) for path, _, said in cases]
    assert [(p, s, m[: len(w[2])]) for (p, s, m), w in zip(got, wanted, strict=True)] == wanted, got
    rejected = [ln for ln in lines_of("request") if "GATEWAY_REJECTED" in ln["reason_codes"]]
    assert [(ln["values"]["path"], ln["values"]["status"]) for ln in rejected] == [
        (path, 400) for path, _, _ in cases
    ]
    assert gw.vllm.chat_requests == []


def test_malformed_tool_definitions(gw: Gateway) -> None:
    """Each was a 500 with a traceback and no audit line (pydantic's error escaped)."""
    long_name = {"type": "function", "function": {**READ, "name": "f" * 129}}
    check_refused(
        gw,
        [
            (CHAT, chat(tools=[long_name]), "tools[0].function.name: at most 128 characters"),
            (
                CHAT,
                chat(tools=[{"type": "function", "function": {**READ, "description": 5}}]),
                "tools[0].function.description: expected a string, got 5",
            ),
            (
                MESSAGES,
                messages(tools=[{"name": "read_file", "description": ["x"]}]),
                'tools[0].description: expected a string, got ["x"]',
            ),
            (
                CHAT,
                chat(tools=[{"type": "function", "function": {**READ, "name": "a\ud800"}}]),
                "tools[0].function.name: invalid text (a lone surrogate)",
            ),
            (
                RESPONSES,
                responses(tools=[{"type": "namespace", "name": "fs", "tools": 5}]),
                "tools[0].tools: expected a list",
            ),
            (
                RESPONSES,
                responses(tools=[{"type": "namespace", "name": "fs", "tools": [{"name": ""}]}]),
                "tools[0].tools[0].name: a tool needs a name",
            ),
        ],
    )


def test_json_the_decoder_refuses(gw: Gateway) -> None:
    """A RecursionError and Python's integer digit limit were 500s with no audit line."""
    deep_schema: Any = {"type": "object"}
    for _ in range(150):  # parses, but deeper than any client sends
        deep_schema = {"type": "object", "properties": {"a": deep_schema}}
    check_refused(
        gw,
        [
            (CHAT, b"[" * 100_000, "malformed JSON: nested too deeply"),
            (
                MESSAGES,
                b'{"model": "tutor", "max_tokens": ' + b"9" * 5000 + b"}",
                "malformed JSON: Exceeds the limit (4300 digits)",
            ),
            (
                CHAT,
                chat(tools=[{"type": "function", "function": {**READ, "parameters": deep_schema}}]),
                "tools[0].function.parameters.properties.a.properties.a",
            ),
        ],
    )
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        digits = http.post(MESSAGES, content=b'{"max_tokens": ' + b"9" * 5000 + b"}")
    assert "set_int_max_str_digits" not in digits.text  # no advice for Python programmers


def test_lone_surrogates_are_refused_where_they_are(gw: Gateway) -> None:
    """They reached llama.cpp, failed to encode, and came back as a retryable 503 /
    ``overloaded_error``, which both SDKs retry."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\udc00}"}}
    check_refused(
        gw,
        [
            (
                CHAT,
                chat(messages=[{"role": "user", "content": "hi \ud800 there"}]),
                "messages[0].content: invalid text (a lone surrogate)",
            ),
            (
                MESSAGES,
                messages(messages=[{"role": "user", "content": "hi\udfff"}]),
                "messages[0].content: invalid text",
            ),
            (MESSAGES, messages(system="be \ud800 brief"), "system: invalid text"),
            (
                MESSAGES,
                messages(
                    messages=[
                        {
                            "role": "user",
                            "content": [
                                {"type": "tool_result", "tool_use_id": "t", "content": "\ud801"}
                            ],
                        }
                    ]
                ),
                "messages[0].content[0].content: invalid text",
            ),
            (RESPONSES, responses(instructions="\udbff"), "instructions: invalid text"),
            (
                CHAT,
                chat(messages=[*USER, {"role": "assistant", "tool_calls": [call]}]),
                "messages[1].tool_calls[0].function.arguments: invalid text",
            ),
            ("/v1/embeddings", {"input": ["ok", "\udc80"]}, "input[1]: invalid text"),
        ],
    )
    # an emoji escaped as a surrogate pair is one character, and fine
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        body = json.dumps(chat(messages=[{"role": "user", "content": "ok \U0001f600"}]))
        assert "\\ud83d\\ude00" in body
        ok = http.post(CHAT, content=body, headers={"content-type": "application/json"})
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == REPLY


def test_client_mistakes_that_were_silently_accepted(gw: Gateway) -> None:
    fn = {"type": "function", "function": READ}
    typo = {"type": "function", "function": {**READ, "parameters": {"type": "objct"}}}
    named = {"type": "function", "name": "nope"}
    check_refused(
        gw,
        [
            (CHAT, chat(stream="false"), 'stream: expected true or false, got "false"'),
            (MESSAGES, messages(stream=1), "stream: expected true or false, got 1"),
            (
                CHAT,
                chat(tools=[fn], tool_choice={"type": "function", "function": {"name": "nope"}}),
                "tool_choice.function.name: no tool named 'nope' in tools",
            ),
            (
                RESPONSES,
                responses(tools=[{"type": "function", **READ}], tool_choice=named),
                "tool_choice.name: no tool named 'nope' in tools",
            ),
            (
                MESSAGES,
                messages(tools=[{"name": "read_file"}], tool_choice={"type": "tool", "name": "x"}),
                "tool_choice.name: no tool named 'x' in tools",
            ),
            (CHAT, chat(tool_choice="required"), "tool_choice: 'required' needs tools"),
            (RESPONSES, responses(tool_choice="required"), "tool_choice: 'required' needs tools"),
            (MESSAGES, messages(tool_choice={"type": "any"}), "tool_choice.type: 'any' needs"),
            (RESPONSES, responses(text={"format": {"type": "xml"}}), "text.format.type: 'xml'"),
            (
                RESPONSES,
                responses(text={"format": {"type": "json_schema", "name": "p"}}),
                "text.format.schema: expected a JSON schema object",
            ),
            (RESPONSES, responses(tool_choice="banana"), "tool_choice: expected auto, none"),
            (RESPONSES, responses(tool_choice={"type": "banana"}), "tool_choice.type: 'banana'"),
            (MESSAGES, messages(tool_choice="auto"), "tool_choice: expected a JSON object"),
            (MESSAGES, messages(tool_choice={"type": "banana"}), "tool_choice.type: 'banana'"),
            (
                CHAT,
                chat(tools=[typo]),
                "tools[0].function.parameters.type: 'objct' is not a JSON schema type",
            ),
            (
                RESPONSES,
                responses(tools=[{"type": "function", "name": "f", "parameters": "{}"}]),
                "tools[0].parameters: expected a JSON schema object",
            ),
            (
                MESSAGES,
                messages(tools=[{"name": "f", "input_schema": {"type": "strin"}}]),
                "tools[0].input_schema.type: 'strin' is not a JSON schema type",
            ),
            (MESSAGES, messages(tools={"name": "f"}), "tools: expected a list"),
            (MESSAGES, messages(tools="read_file"), "tools: expected a list"),
            (
                MESSAGES,
                messages(messages=[{"role": "user", "content": [{"type": "image", "source": {}}]}]),
                "messages[0].content[0]: content of type 'image' is not supported",
            ),
            # a model given as a number was "model: required"
            (CHAT, chat(model=123), "model: expected a string (a role such as implementer)"),
            (RESPONSES, responses(model=["x"]), "model: expected a string"),
            (MESSAGES, messages(model=1.5), "model: expected a string"),
            (CHAT, chat(model=""), "model: required"),
            # a user turn with no content was answered as an empty prompt
            (
                CHAT,
                chat(messages=[{"role": "user"}]),
                "messages[0].content: required for a user message",
            ),
            (
                RESPONSES,
                responses(input=[{"role": "user"}]),
                "input[0].content: required for a user message",
            ),
        ],
    )


def test_a_field_of_the_wrong_type_is_refused_not_dropped(gw: Gateway) -> None:
    """A user audit: each was a 200 with the field dropped (a conversation, a lead, a
    usage chunk, a tool-call rule) and named nowhere, not even in x-switchyard-ignored,
    which names only fields the gateway does not read; two were 500s."""
    schema = {"type": "object"}
    check_refused(
        gw,
        [
            (
                RESPONSES,
                responses(previous_response_id=5),
                "previous_response_id: expected a string, got 5",
            ),
            (RESPONSES, responses(instructions=5), "instructions: expected a string, got 5"),
            (
                RESPONSES,
                responses(instructions={"a": 1}),
                'instructions: expected a string, got {"a": 1}',
            ),
            (
                RESPONSES,
                responses(parallel_tool_calls="x"),
                'parallel_tool_calls: expected true or false, got "x"',
            ),
            (RESPONSES, responses(tools=0), "tools: expected a list, got 0"),
            (
                RESPONSES,
                responses(input=[{"type": "reasoning", "summary": 5}]),
                "input[0].summary: expected a list, got 5",
            ),
            (CHAT, chat(stream_options="x"), "stream_options: expected a JSON object"),
            (
                CHAT,
                chat(stream_options={"include_usage": "yes"}),
                'stream_options.include_usage: expected true or false, got "yes"',
            ),
            (
                CHAT,
                chat(parallel_tool_calls="x"),
                'parallel_tool_calls: expected true or false, got "x"',
            ),
            (CHAT, chat(n=True), "n: Switchyard's gateway serves one choice per request"),
            (
                CHAT,
                chat(
                    response_format={
                        "type": "json_schema",
                        "json_schema": {"name": 5, "schema": schema},
                    }
                ),
                "response_format.json_schema.name: expected a string, got 5",
            ),
            (
                CHAT,
                chat(messages=[*USER, {"role": "assistant", "tool_calls": 5}]),
                "messages[1].tool_calls: expected a list, got 5",
            ),
            (MESSAGES, messages(system=0), "system: content must be a string or a list"),
        ],
    )


def test_what_is_right_is_still_served(gw: Gateway) -> None:
    """The checks above refuse mistakes only: a named tool that is offered, ``required``
    with tools, a JSON schema text format and ``stream: false`` are served."""
    chat_tools: Any = [{"type": "function", "function": READ}]
    reply = gw.openai.chat.completions.create(
        model="tutor",
        messages=USER,
        stream=False,
        tools=chat_tools,
        tool_choice={"type": "function", "function": {"name": "read_file"}},
    )
    assert reply.choices[0].message.content == REPLY
    assert gw.vllm.chat_requests[-1]["tool_choice"]["function"]["name"] == "read_file"
    response_tools: Any = [{"type": "function", **READ}]
    done = gw.openai.responses.create(
        model="tutor", input="x", tools=response_tools, tool_choice="required"
    )
    assert done.output_text == REPLY
    msg = gw.anthropic.messages.create(
        model="tutor",
        max_tokens=10,
        messages=USER,
        tools=[{"name": "read_file", "input_schema": {"type": "object"}}],
        tool_choice={"type": "tool", "name": "read_file"},
    )
    assert msg.content[0].text == REPLY  # type: ignore[union-attr]


def test_a_model_can_be_retrieved_and_unknown_routes_answer_in_json(gw: Gateway) -> None:
    """``models.retrieve`` was a 404 for both SDKs; an unknown path or method was a
    plain-text ``Not Found`` / ``Method Not Allowed`` no SDK could read."""
    assert gw.openai.models.retrieve("tutor").id == "tutor"
    model = gw.anthropic.models.retrieve("claude-sonnet-4-5-20250929")  # an alias pattern
    assert model.id == "claude-sonnet-4-5-20250929" and model.type == "model"
    assert model.created_at.year >= 2024
    with pytest.raises(openai.NotFoundError) as oai_missing:
        gw.openai.models.retrieve("gpt-9")
    assert oai_missing.value.code == "model_not_found"
    with pytest.raises(anthropic.NotFoundError) as ant_missing:
        gw.anthropic.models.retrieve("gpt-9")
    assert ant_missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    listed = gw.anthropic.models.list()
    assert "tutor" in [m.id for m in listed.data]
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        nowhere = http.get("/v1/nowhere")
        wrong = http.get(CHAT)
        ant_nowhere = http.post("/v1/messages/batches", headers={"anthropic-version": "x"})
    assert nowhere.status_code == 404
    assert nowhere.json()["error"]["type"] == "not_found_error"
    assert nowhere.json()["error"]["message"] == "GET /v1/nowhere: no such endpoint"
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["message"] == "GET /v1/chat/completions: method not allowed"
    assert ant_nowhere.status_code == 404 and ant_nowhere.json()["type"] == "error"
    rejected = [ln for ln in lines_of("request") if "GATEWAY_REJECTED" in ln["reason_codes"]]
    assert [ln["values"]["status"] for ln in rejected] == [404, 404]  # the unknown models


def test_an_openai_error_names_the_field_it_is_about_in_param(gw: Gateway) -> None:
    """``param`` was null on every error, even where the message named the field
    (``max_tokens: expected a positive integer``: a user audit). Now it is the field the
    gateway's own check names; null where no field is at fault (the body itself); the
    Anthropic shape has no ``param``."""
    with pytest.raises(openai.BadRequestError) as capped:
        gw.openai.chat.completions.create(model="tutor", messages=USER, max_tokens=0)
    assert capped.value.param == "max_tokens"
    assert str(capped.value.message).endswith("max_tokens: expected a positive integer")
    cases: list[tuple[str, dict[str, Any] | bytes, str | None]] = [
        (CHAT, chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
        (
            CHAT,
            chat(messages=[*USER, {"role": "assistant", "tool_calls": 5}]),
            "messages[1].tool_calls",
        ),
        (CHAT, chat(temperature=3), "temperature"),
        (
            CHAT,
            chat(tools=[{"type": "function", "function": {**READ, "name": ""}}]),
            "tools[0].function.name",
        ),
        (CHAT, {"messages": USER}, "model"),
        (RESPONSES, responses(previous_response_id="resp_never_made"), "previous_response_id"),
        (RESPONSES, responses(input=[{"type": "reasoning", "summary": 5}]), "input[0].summary"),
        ("/v1/embeddings", {"model": "auto", "input": "x", "dimensions": 0}, "dimensions"),
        (CHAT, b"{not json", None),
        (CHAT, b"[1]", None),
    ]
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        got = []
        for path, body, _ in cases:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            resp = http.post(path, content=content, headers={"content-type": "application/json"})
            assert resp.status_code == 400, resp.text
            got.append(resp.json()["error"]["param"])
        said = http.post(MESSAGES, json=messages(max_tokens=0)).json()
    assert got == [param for _, _, param in cases]
    assert said["type"] == "error" and "param" not in said["error"]
