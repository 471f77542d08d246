"""FakeOpenAIServer speaks each flavor's dialect, as the real servers do."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.openai_server import FLAVORS, FakeOpenAIServer, embedding_for
from tests.fakes.script import Scripted

pytest_plugins = ["tests.fakes.fixtures"]

KEY = {"Authorization": "Bearer sk-test"}


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=2.0, trust_env=False, headers=KEY) as c:
        yield c


def _body(server: FakeOpenAIServer, **extra: Any) -> dict[str, Any]:
    return {
        "model": server.models[0],
        "messages": [{"role": "user", "content": "say hello"}],
        **extra,
    }


def _events(client: httpx.Client, server: FakeOpenAIServer, **extra: Any) -> list[Any]:
    body = _body(server, stream=True, **extra)
    with client.stream("POST", server.base_url + "/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def _text(events: list[Any]) -> str:
    return "".join(
        c["delta"].get("content") or "" for e in events for c in e["choices"] if "delta" in c
    )


@pytest.mark.parametrize("flavor", FLAVORS)
def test_non_stream_completion(fake_openai_factory: Any, client: httpx.Client, flavor: str) -> None:
    server = fake_openai_factory(flavor, replies=["two words"])
    reply = client.post(server.base_url + "/chat/completions", json=_body(server)).json()
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"] == {"role": "assistant", "content": "two words"}
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize("flavor", ["vllm", "openai", "deepseek"])
def test_stream_with_include_usage_ends_with_a_usage_chunk(
    fake_openai_factory: Any, client: httpx.Client, flavor: str
) -> None:
    server = fake_openai_factory(flavor, replies=["one two three"])
    events = _events(client, server, stream_options={"include_usage": True})
    assert _text(events) == "one two three"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 3
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    without = _events(client, server)
    assert all("usage" not in e for e in without)


def test_llamacpp_stream_never_sends_usage(
    fake_llamacpp: FakeOpenAIServer, client: httpx.Client
) -> None:
    events = _events(client, fake_llamacpp, stream_options={"include_usage": True})
    assert all(e.get("usage") is None for e in events)
    assert _text(events) == "Hello from the fake."


def test_moonshot_puts_usage_in_the_last_choice(
    fake_moonshot: FakeOpenAIServer, client: httpx.Client
) -> None:
    events = _events(client, fake_moonshot, stream_options={"include_usage": True})
    last = events[-1]["choices"][0]
    assert last["finish_reason"] == "stop" and last["usage"]["completion_tokens"] == 4


def test_deepseek_reasoner_streams_reasoning_before_content(
    fake_deepseek: FakeOpenAIServer, client: httpx.Client
) -> None:
    fake_deepseek.script.queue(Scripted("the answer", reasoning="think hard"))
    events = _events(client, fake_deepseek, model="deepseek-reasoner")
    kinds = [
        "r" if c["delta"].get("reasoning_content") else "c"
        for e in events
        for c in e["choices"]
        if c["delta"].get("reasoning_content") or c["delta"].get("content")
    ]
    assert kinds == ["r", "r", "c", "c"]
    plain = _events(client, fake_deepseek, model="deepseek-chat")
    assert not any(c["delta"].get("reasoning_content") for e in plain for c in e["choices"])


def test_deepseek_api_lives_at_the_root(fake_deepseek: FakeOpenAIServer) -> None:
    assert fake_deepseek.base_url == fake_deepseek.url
    r = httpx.post(
        fake_deepseek.url + "/chat/completions",
        json=_body(fake_deepseek),
        headers=KEY,
        trust_env=False,
    )
    assert r.status_code == 200


def test_max_tokens_truncates_with_finish_length(
    fake_vllm: FakeOpenAIServer, client: httpx.Client
) -> None:
    fake_vllm.script.queue("a b c d e")
    reply = client.post(
        fake_vllm.base_url + "/chat/completions", json=_body(fake_vllm, max_tokens=2)
    ).json()
    assert reply["choices"][0]["message"]["content"] == "a b "
    assert reply["choices"][0]["finish_reason"] == "length"


def test_script_queue_then_responder_then_default(
    fake_vllm: FakeOpenAIServer, client: httpx.Client
) -> None:
    fake_vllm.script.queue("first")
    fake_vllm.script.respond_with(lambda body: f"echo {body['messages'][-1]['content']}")
    url = fake_vllm.base_url + "/chat/completions"
    texts = [client.post(url, json=_body(fake_vllm)).json()["choices"][0]["message"]["content"]]
    texts.append(client.post(url, json=_body(fake_vllm)).json()["choices"][0]["message"]["content"])
    fake_vllm.script.respond_with(None)
    texts.append(client.post(url, json=_body(fake_vllm)).json()["choices"][0]["message"]["content"])
    assert texts == ["first", "echo say hello", "Hello from the fake."]


# ── models, health, props ─────────────────────────────────────────────────────────────


def test_vllm_models_carry_max_model_len(fake_openai_factory: Any, client: httpx.Client) -> None:
    server = fake_openai_factory("vllm", max_model_len=16384)
    data = client.get(server.base_url + "/models").json()["data"]
    assert data[0]["id"] == server.models[0] and data[0]["max_model_len"] == 16384


def test_cloud_models_have_no_max_model_len(
    fake_openai: FakeOpenAIServer, client: httpx.Client
) -> None:
    data = client.get(fake_openai.base_url + "/models").json()["data"]
    assert {m["id"] for m in data} == set(fake_openai.models)
    assert all("max_model_len" not in m for m in data)


def test_health_per_flavor(fake_openai_factory: Any, client: httpx.Client) -> None:
    vllm, llama, cloud = (fake_openai_factory(f) for f in ("vllm", "llamacpp", "openai"))
    assert client.get(vllm.url + "/health").status_code == 200
    assert client.get(llama.url + "/health").json() == {"status": "ok"}
    assert client.get(cloud.url + "/health").status_code == 404
    llama.healthy = False
    r = client.get(llama.url + "/health")
    assert r.status_code == 503 and r.json()["error"]["type"] == "unavailable_error"


def test_llamacpp_props_has_n_ctx(fake_openai_factory: Any, client: httpx.Client) -> None:
    server = fake_openai_factory("llamacpp", n_ctx=4096)
    props = client.get(server.url + "/props").json()
    assert props["default_generation_settings"]["n_ctx"] == 4096


# ── structured output ─────────────────────────────────────────────────────────────────

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


@pytest.mark.parametrize("field", ["structured_outputs", "guided_json"])
def test_vllm_structured_fields_are_accepted_and_recorded(
    fake_vllm: FakeOpenAIServer, client: httpx.Client, field: str
) -> None:
    fake_vllm.script.queue('{"ok": true}')
    value = {"json": SCHEMA} if field == "structured_outputs" else SCHEMA
    reply = client.post(
        fake_vllm.base_url + "/chat/completions", json=_body(fake_vllm, **{field: value})
    )
    assert json.loads(reply.json()["choices"][0]["message"]["content"]) == {"ok": True}
    assert fake_vllm.last.json[field] == value


def test_llamacpp_json_object_ok_json_schema_500(
    fake_llamacpp: FakeOpenAIServer, client: httpx.Client
) -> None:
    url = fake_llamacpp.base_url + "/chat/completions"
    ok = client.post(
        url, json=_body(fake_llamacpp, response_format={"type": "json_object", "schema": SCHEMA})
    )
    assert ok.status_code == 200
    refused = client.post(
        url,
        json=_body(
            fake_llamacpp,
            response_format={"type": "json_schema", "json_schema": {"schema": SCHEMA}},
        ),
    )
    assert refused.status_code == 500
    assert "json_schema" in refused.json()["error"]["message"]


@pytest.mark.parametrize("flavor", ["openai", "deepseek", "moonshot"])
def test_cloud_json_object(fake_openai_factory: Any, client: httpx.Client, flavor: str) -> None:
    server = fake_openai_factory(flavor)
    r = client.post(
        server.base_url + "/chat/completions",
        json=_body(server, response_format={"type": "json_object"}),
    )
    assert r.status_code == 200


# ── auth ──────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("flavor", ["openai", "deepseek", "moonshot"])
def test_cloud_flavors_need_a_key(fake_openai_factory: Any, flavor: str) -> None:
    server = fake_openai_factory(flavor)
    r = httpx.post(server.base_url + "/chat/completions", json=_body(server), trust_env=False)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"


def test_a_set_key_must_match(fake_openai_factory: Any) -> None:
    server = fake_openai_factory("openai", api_key="sk-right")
    url = server.base_url + "/models"
    wrong = httpx.get(url, headers={"Authorization": "Bearer sk-wrong"}, trust_env=False)
    right = httpx.get(url, headers={"Authorization": "Bearer sk-right"}, trust_env=False)
    assert (wrong.status_code, right.status_code) == (401, 200)


def test_local_flavors_need_no_key(fake_vllm: FakeOpenAIServer) -> None:
    assert httpx.get(fake_vllm.base_url + "/models", trust_env=False).status_code == 200


def test_vllm_unknown_model_is_404(fake_vllm: FakeOpenAIServer, client: httpx.Client) -> None:
    body = {**_body(fake_vllm), "model": "nope"}
    r = client.post(fake_vllm.base_url + "/chat/completions", json=body)
    assert r.status_code == 404 and "does not exist" in r.json()["message"]


# ── embeddings ────────────────────────────────────────────────────────────────────────


def test_embeddings_are_deterministic_unit_vectors(
    fake_openai_factory: Any, client: httpx.Client
) -> None:
    server = fake_openai_factory("vllm", embedding_dim=16)
    body = {"model": "m", "input": ["alpha", "beta", "alpha"]}
    data = client.post(server.base_url + "/embeddings", json=body).json()["data"]
    vectors = [d["embedding"] for d in data]
    assert [d["index"] for d in data] == [0, 1, 2]
    assert vectors[0] == vectors[2] != vectors[1]
    assert vectors[0] == embedding_for("alpha", 16)
    assert abs(sum(v * v for v in vectors[0]) - 1.0) < 1e-5


def test_embeddings_base64(fake_vllm: FakeOpenAIServer, client: httpx.Client) -> None:
    body = {"model": "m", "input": "alpha", "encoding_format": "base64"}
    raw = client.post(fake_vllm.base_url + "/embeddings", json=body).json()["data"][0]
    packed = base64.b64decode(raw["embedding"])
    assert list(struct.unpack(f"<{len(packed) // 4}f", packed)) == embedding_for("alpha")


# ── context-length wording, per server ───────────────────────────────────────────────


def _context_error(server: FakeOpenAIServer, client: httpx.Client) -> Any:
    server.fail_next("context_length")
    r = client.post(server.base_url + "/chat/completions", json=_body(server))
    assert r.status_code == 400
    return r.json()


def test_context_length_vllm(fake_vllm: FakeOpenAIServer, client: httpx.Client) -> None:
    body = _context_error(fake_vllm, client)
    assert body["object"] == "error" and body["type"] == "BadRequestError" and body["code"] == 400
    assert body["message"].startswith("This model's maximum context length is 32768 tokens.")
    assert "However, you requested 40000 tokens" in body["message"]


def test_context_length_llamacpp(fake_llamacpp: FakeOpenAIServer, client: httpx.Client) -> None:
    err = _context_error(fake_llamacpp, client)["error"]
    assert err["type"] == "exceed_context_size_error" and err["code"] == 400
    assert err["message"] == "the request exceeds the available context size, try increasing it"
    assert err["n_ctx"] == fake_llamacpp.n_ctx and err["n_prompt_tokens"] > err["n_ctx"]


def test_context_length_openai(fake_openai: FakeOpenAIServer, client: httpx.Client) -> None:
    err = _context_error(fake_openai, client)["error"]
    assert err == {
        "message": (
            "This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in 130000 tokens. Please reduce the length of the messages."
        ),
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }


def test_context_length_deepseek_and_moonshot(
    fake_deepseek: FakeOpenAIServer, fake_moonshot: FakeOpenAIServer, client: httpx.Client
) -> None:
    assert "maximum context length" in _context_error(fake_deepseek, client)["error"]["message"]
    assert "exceeded model token limit" in _context_error(fake_moonshot, client)["error"]["message"]
