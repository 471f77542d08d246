"""The gateway's pure pieces: what a request body may carry (app/gateway/inbound.py), the
JSON it is read from (app/gateway/app.py), the address it is served on
(app.hosts.http_url) and the body limit it is given (app/cli/serve_cmd.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.cli.serve_cmd import body_limit, listening_line
from app.errors import UsageError
from app.gateway.app import parse_json
from app.gateway.errors import GatewayError
from app.gateway.inbound import (
    MAX_DEPTH,
    parse_chat,
    parse_count_tokens,
    parse_messages,
    parse_responses,
    unsendable,
)
from app.hosts import http_url as base_url
from app.router.routed import request_tokens

USER: list[Any] = [{"role": "user", "content": "x"}]


def refused(parse: Any, body: dict[str, Any]) -> str:
    with pytest.raises(GatewayError) as caught:
        parse(body)
    assert caught.value.status == 400
    return caught.value.message


def test_a_lone_surrogate_is_named_by_its_path_and_a_pair_is_text() -> None:
    body = json.loads('{"messages": [{"content": [{"type": "text", "text": "a\\ud800"}]}]}')
    assert unsendable(body) == "messages[0].content[0].text: invalid text (a lone surrogate)"
    in_a_key = unsendable(json.loads('{"k\\udc00": 1}'))
    assert in_a_key == "request: invalid text in a key (a lone surrogate)"
    assert unsendable(json.loads('"\\udfff"')) == "request: invalid text (a lone surrogate)"
    assert unsendable(json.loads('{"a": ["ok \\ud83d\\ude00", 1, null, true]}')) is None


def test_the_first_problem_in_document_order_is_named() -> None:
    body = json.loads('{"a": "\\ud800", "b": ["\\ud800"]}')
    assert unsendable(body) == "a: invalid text (a lone surrogate)"


def test_nesting_is_bounded_and_a_deep_path_is_named_by_its_first_steps() -> None:
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH):
        deep = [deep]
    assert unsendable({"x": deep[0]}) is None  # MAX_DEPTH containers in all
    problem = unsendable({"x": deep})
    assert problem == f"x{'[0]' * 11}…: nested more than {MAX_DEPTH} deep"


def test_a_wide_body_is_walked_without_recursion() -> None:
    wide = {"messages": [{"role": "user", "content": "x"}] * 50_000}
    assert unsendable(wide) is None


def test_tools_are_checked_field_by_field() -> None:
    def chat_tool(**fn: Any) -> dict[str, Any]:
        return {"model": "m", "messages": USER, "tools": [{"type": "function", "function": fn}]}

    assert refused(parse_chat, chat_tool()) == "tools[0].function.name: a tool needs a name"
    assert refused(parse_chat, chat_tool(name="f", parameters=[])) == (
        "tools[0].function.parameters: expected a JSON schema object"
    )
    ok = parse_chat(chat_tool(name="f", description=None))
    assert ok.request.tools[0].parameters == {"type": "object"}
    custom = {"type": "custom", "name": "apply_patch", "description": 1}
    said = refused(parse_responses, {"model": "m", "input": "x", "tools": [custom]})
    assert said == "tools[0].description: expected a string, got 1"


def test_a_tool_choice_must_be_one_the_tools_can_honour() -> None:
    body = {"model": "m", "max_tokens": 5, "messages": USER}
    tools = [{"name": "read_file"}]
    assert parse_messages({**body, "tool_choice": {"type": "auto"}}).request.tool_choice == "auto"
    assert parse_messages({**body, "tool_choice": {"type": "none"}}).request.tool_choice == "none"
    chosen = parse_messages({**body, "tools": tools, "tool_choice": {"type": "any"}})
    assert chosen.request.tool_choice == "required"
    named = {"type": "tool", "name": "read_file", "disable_parallel_tool_use": True}
    forced = parse_messages({**body, "tools": tools, "tool_choice": named})
    assert forced.request.tool_choice == "read_file"
    assert forced.request.parallel_tool_calls is False
    unnamed = refused(parse_messages, {**body, "tools": tools, "tool_choice": {"type": "tool"}})
    assert unnamed == "tool_choice.name: required when tool_choice.type is 'tool'"
    loose = {"type": "auto", "disable_parallel_tool_use": "yes"}
    said = refused(parse_messages, {**body, "tools": tools, "tool_choice": loose})
    assert said == 'tool_choice.disable_parallel_tool_use: expected true or false, got "yes"'


def test_a_read_field_of_its_own_type_or_null_is_taken_as_sent() -> None:
    """The other side of the 400s for a wrongly typed field (test_gateway_input)."""
    chat = {"model": "m", "messages": USER}
    read = parse_chat(
        {**chat, "parallel_tool_calls": False, "stream_options": {"include_usage": True}}
    )
    assert read.request.parallel_tool_calls is False and read.include_usage
    nulls = {"parallel_tool_calls": None, "stream_options": None, "tools": None, "n": None}
    unset = parse_chat({**chat, **nulls})
    assert unset.request.parallel_tool_calls is None and not unset.include_usage
    body = {"model": "m", "input": "x"}
    led = parse_responses({**body, "instructions": "be brief", "previous_response_id": "resp_1"})
    assert (led.instructions, led.previous_response_id) == ("be brief", "resp_1")
    assert led.request.messages[0].content == "be brief"
    bare = parse_responses({**body, "instructions": None, "previous_response_id": None})
    assert (bare.instructions, bare.previous_response_id) == (None, None)
    assert (
        parse_responses({**body, "parallel_tool_calls": False}).request.parallel_tool_calls is False
    )
    said = refused(parse_responses, {**body, "previous_response_id": ["resp_1"]})
    assert said == 'previous_response_id: expected a string, got ["resp_1"]'


def test_a_responses_text_format_is_read_as_chats_response_format_is() -> None:
    body = {"model": "m", "input": "x"}
    schema = {"type": "object", "properties": {"goal": {"type": "string"}}}
    fmt = {"type": "json_schema", "name": "plan", "schema": schema}
    assert parse_responses({**body, "text": {"format": fmt}}).request.json_schema == schema
    plain = parse_responses({**body, "text": {"format": {"type": "text"}}})
    assert plain.request.json_schema is None
    assert parse_responses({**body, "text": {"verbosity": "low"}}).request.json_schema is None
    assert refused(parse_responses, {**body, "text": "json"}) == "text: expected a JSON object"
    bad_schema = {"type": "json_schema", "schema": {"type": "objet"}}
    assert refused(parse_responses, {**body, "text": {"format": bad_schema}}).startswith(
        "text.format.schema.type: 'objet' is not a JSON schema type"
    )


def test_a_responses_turn_of_text_then_calls_is_one_assistant_message() -> None:
    """Codex sends a turn's text and its function calls as separate items: they were two
    assistant messages in a row, which chat templates that want the roles to alternate
    refuse (an audit). A call with no text before it is a message of its own, as ever."""
    items = [
        {"type": "message", "role": "user", "content": "fix calc.py"},
        {"type": "message", "role": "assistant", "content": "Running the fix."},
        {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "done"},
        {"type": "function_call", "call_id": "c2", "name": "shell", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c2", "output": "ok"},
    ]
    messages = parse_responses({"model": "m", "input": items}).request.messages
    assert [(m.role, m.content, [c.id for c in m.tool_calls]) for m in messages] == [
        ("user", "fix calc.py", []),
        ("assistant", "Running the fix.", ["c1"]),
        ("tool", "done", []),
        ("assistant", "", ["c2"]),
        ("tool", "ok", []),
    ]
    # text, calls, then more text: one message, its texts joined
    again = [items[0], items[1], items[2], {**items[1], "content": "Done."}, items[3]]
    messages = parse_responses({"model": "m", "input": again}).request.messages
    assert [(m.role, m.content) for m in messages][1] == ("assistant", "Running the fix.\n\nDone.")
    # the calls first and their text after: one message all the same
    later = [items[0], items[2], items[1], items[3]]
    messages = parse_responses({"model": "m", "input": later}).request.messages
    assert [(m.role, m.content, [c.id for c in m.tool_calls]) for m in messages] == [
        ("user", "fix calc.py", []),
        ("assistant", "Running the fix.", ["c1"]),
        ("tool", "done", []),
    ]


def test_count_tokens_counts_the_prompt_messages_would_route() -> None:
    body = {
        "model": "m",
        "max_tokens": 5,
        "system": "be brief",
        "messages": USER,
        "tools": [{"name": "read_file", "input_schema": {"type": "object"}}],
    }
    assert request_tokens(parse_count_tokens(body)) == request_tokens(parse_messages(body).request)
    assert refused(parse_count_tokens, {**body, "tools": {}}) == "tools: expected a list"


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b"{not json", "malformed JSON: Expecting property name enclosed in double quotes"),
        (b"\xff", "malformed JSON: 'utf-8' codec can't decode byte 0xff"),
        (b"[" * 100_000, "malformed JSON: nested too deeply"),
        (b"1" * 5000, "malformed JSON: Exceeds the limit (4300 digits) for integer string"),
    ],
)
def test_json_the_decoder_refuses_is_a_400(raw: bytes, said: str) -> None:
    with pytest.raises(GatewayError) as caught:
        parse_json(raw)
    assert caught.value.status == 400 and caught.value.message.startswith(said)
    assert "sys.set_int_max_str_digits" not in caught.value.message


def test_an_empty_body_is_null_for_the_parsers_to_refuse() -> None:
    assert parse_json(b"") is None


def test_an_ipv6_literal_is_bracketed_in_a_url() -> None:
    assert base_url("127.0.0.1", 4000) == "http://127.0.0.1:4000"
    assert base_url("localhost", 80) == "http://localhost:80"
    assert base_url("::1", 45315) == "http://[::1]:45315"
    assert base_url("fe80::1%eth0", 4000) == "http://[fe80::1%25eth0]:4000"
    assert listening_line("::1", 4000) == (
        "switchyard serve: listening on http://[::1]:4000 "
        "(OpenAI base URL http://[::1]:4000/v1; Anthropic base URL http://[::1]:4000)"
    )


def test_the_body_limit_is_a_finite_size_of_a_byte_or_more() -> None:
    assert body_limit(16.0) == 16 * 1024 * 1024
    assert body_limit(1 / (1024 * 1024)) == 1
    for size in (float("nan"), float("inf"), float("-inf"), 0.0, -1.0, 1e-9):
        with pytest.raises(UsageError, match="--max-body-mb"):
            body_limit(size)


async def test_the_router_takes_the_gateways_count_of_a_messages_prompt() -> None:
    """The Messages endpoint counts its prompt for the usage it reports; the router takes
    that count as its context estimate rather than count the prompt again, unless the
    client named an estimate of its own."""
    from types import SimpleNamespace

    from starlette.requests import Request

    from app.gateway.app import _prepared
    from app.policy import load_policy

    state: Any = SimpleNamespace(session=SimpleNamespace(policy=load_policy().policy))
    inbound = parse_messages({"model": "tutor", "max_tokens": 10, "messages": USER})
    prompt = request_tokens(inbound.request)

    def asked(*headers: tuple[bytes, bytes]) -> Request:
        return Request({"type": "http", "headers": list(headers)})

    _, signals, _, _ = await _prepared(state, asked(), inbound, prompt)
    assert signals.context_estimate == prompt
    own = (b"x-switchyard-signal", b"context_estimate=5000")
    _, signals, _, _ = await _prepared(state, asked(own), inbound, prompt)
    assert signals.context_estimate == 5000
    _, signals, _, _ = await _prepared(state, asked(), inbound)  # not counted: the router's
    assert signals.context_estimate is None
