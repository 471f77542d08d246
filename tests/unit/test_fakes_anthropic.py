"""FakeAnthropicServer speaks the Messages API: the event sequence, auth, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.script import Scripted

pytest_plugins = ["tests.fakes.fixtures"]

HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
BODY: dict[str, Any] = {
    "model": "claude-opus-4-7",
    "max_tokens": 100,
    "system": "be brief",
    "messages": [{"role": "user", "content": "say hello please"}],
}


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=2.0, trust_env=False) as c:
        yield c


def _stream(client: httpx.Client, server: FakeAnthropicServer) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    name = ""
    with client.stream(
        "POST", server.url + "/v1/messages", json={**BODY, "stream": True}, headers=HEADERS
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return events


def test_stream_event_sequence(fake_anthropic: FakeAnthropicServer, client: httpx.Client) -> None:
    fake_anthropic.script.queue("Hi there friend")
    events = _stream(client, fake_anthropic)
    names = [n for n, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["usage"]["input_tokens"] == 2 + 3 + 3  # system words + framing + words
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "Hi there friend"
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn" and delta["usage"]["output_tokens"] == 3


def test_thinking_block_comes_first(
    fake_anthropic: FakeAnthropicServer, client: httpx.Client
) -> None:
    fake_anthropic.script.queue(Scripted("answer", reasoning="hmm ok"))
    events = _stream(client, fake_anthropic)
    deltas = [d["delta"]["type"] for n, d in events if n == "content_block_delta"]
    assert deltas == ["thinking_delta", "thinking_delta", "signature_delta", "text_delta"]


def test_non_stream_message(fake_anthropic: FakeAnthropicServer, client: httpx.Client) -> None:
    fake_anthropic.script.queue("one two")
    reply = client.post(fake_anthropic.url + "/v1/messages", json=BODY, headers=HEADERS).json()
    assert reply["type"] == "message" and reply["content"] == [{"type": "text", "text": "one two"}]
    assert reply["stop_reason"] == "end_turn"
    assert reply["usage"] == {"input_tokens": 8, "output_tokens": 2}


def test_max_tokens_stops_early(fake_anthropic: FakeAnthropicServer, client: httpx.Client) -> None:
    fake_anthropic.script.queue("a b c d")
    body = {**BODY, "max_tokens": 2}
    reply = client.post(fake_anthropic.url + "/v1/messages", json=body, headers=HEADERS).json()
    assert reply["stop_reason"] == "max_tokens" and reply["content"][0]["text"] == "a b "


def test_key_is_required(fake_anthropic: FakeAnthropicServer, client: httpx.Client) -> None:
    r = client.post(
        fake_anthropic.url + "/v1/messages",
        json=BODY,
        headers={"anthropic-version": "2023-06-01"},
    )
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"


def test_bearer_key_accepted_unless_x_api_key_is_insisted_on(
    fake_anthropic_factory: Any, client: httpx.Client
) -> None:
    headers = {"Authorization": "Bearer sk-ant-test", "anthropic-version": "2023-06-01"}
    lenient = fake_anthropic_factory()
    strict = fake_anthropic_factory(accept_bearer=False)
    assert client.post(lenient.url + "/v1/messages", json=BODY, headers=headers).status_code == 200
    assert client.post(strict.url + "/v1/messages", json=BODY, headers=headers).status_code == 401


def test_version_header_is_required(
    fake_anthropic: FakeAnthropicServer, client: httpx.Client
) -> None:
    r = client.post(
        fake_anthropic.url + "/v1/messages", json=BODY, headers={"x-api-key": "sk-ant-test"}
    )
    assert r.status_code == 400 and "anthropic-version" in r.json()["error"]["message"]


def test_system_role_in_messages_is_refused(
    fake_anthropic: FakeAnthropicServer, client: httpx.Client
) -> None:
    body = {**BODY, "messages": [{"role": "system", "content": "x"}, *BODY["messages"]]}
    r = client.post(fake_anthropic.url + "/v1/messages", json=body, headers=HEADERS)
    assert r.status_code == 400


def test_models_list(fake_anthropic: FakeAnthropicServer, client: httpx.Client) -> None:
    data = client.get(fake_anthropic.url + "/v1/models", headers=HEADERS).json()["data"]
    assert [m["id"] for m in data] == fake_anthropic.models


@pytest.mark.parametrize(
    ("code", "type_"),
    [("429", "rate_limit_error"), ("500", "api_error"), ("529", "overloaded_error")],
)
def test_error_bodies(
    fake_anthropic: FakeAnthropicServer, client: httpx.Client, code: str, type_: str
) -> None:
    fake_anthropic.fail_next(code, retry_after=3)
    r = client.post(fake_anthropic.url + "/v1/messages", json=BODY, headers=HEADERS)
    assert r.status_code == int(code)
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == type_
    if code == "429":
        assert r.headers["retry-after"] == "3"


def test_context_length_wording(fake_anthropic: FakeAnthropicServer, client: httpx.Client) -> None:
    fake_anthropic.fail_next("context_length")
    r = client.post(fake_anthropic.url + "/v1/messages", json=BODY, headers=HEADERS)
    assert r.status_code == 400
    assert r.json()["type"] == "error"
    assert r.json()["error"] == {
        "type": "invalid_request_error",
        "message": "prompt is too long: 210000 tokens > 200000 maximum",
    }


def test_error_event_mid_stream(fake_anthropic: FakeAnthropicServer, client: httpx.Client) -> None:
    fake_anthropic.fail_next("error_event", after=2)
    events = _stream(client, fake_anthropic)
    assert [n for n, _ in events] == ["message_start", "content_block_start", "error"]
    assert events[-1][1]["error"]["type"] == "overloaded_error"


def test_invalid_json_event(fake_anthropic: FakeAnthropicServer, client: httpx.Client) -> None:
    fake_anthropic.fail_next("invalid_json", after=3)
    with client.stream(
        "POST", fake_anthropic.url + "/v1/messages", json={**BODY, "stream": True}, headers=HEADERS
    ) as r:
        data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    with pytest.raises(json.JSONDecodeError):
        json.loads(data[3])
