"""``/v1/embeddings``' request and reply as OpenAI's API has them (app/gateway/embeddings.py):
a user audit with the openai SDK and curl got floats for ``encoding_format: "base64"``,
384 floats for ``dimensions: 64`` and a 200 with no data for ``input: []``."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from app.gateway.embeddings import (
    check_dimensions,
    embeddings_reply,
    encoded,
    parse_embeddings,
)
from app.gateway.errors import GatewayError


def refused(body: Any) -> str:
    with pytest.raises(GatewayError) as exc:
        parse_embeddings(body)
    assert exc.value.status == 400 and exc.value.kind == "invalid_request"
    return exc.value.message


def test_the_fields_that_change_the_reply_are_read() -> None:
    asked = parse_embeddings(
        {"model": "auto", "input": "hi", "encoding_format": "base64", "dimensions": 384}
    )
    assert (asked.model, asked.texts, asked.encoding_format, asked.dimensions) == (
        "auto",
        ("hi",),
        "base64",
        384,
    )
    plain = parse_embeddings({"model": "auto", "input": ["a", "b"], "encoding_format": None})
    assert (plain.texts, plain.encoding_format, plain.dimensions) == (("a", "b"), "float", None)


def test_an_empty_input_list_is_refused_as_openai_does() -> None:
    assert refused({"model": "auto", "input": []}).startswith("input: an empty list")


@pytest.mark.parametrize("fmt", ["binary", "FLOAT", "", 5, ["base64"]])
def test_an_unknown_encoding_format_is_refused_naming_the_field(fmt: Any) -> None:
    said = refused({"model": "auto", "input": "hi", "encoding_format": fmt})
    assert said == f"encoding_format: expected 'float' or 'base64', got {fmt!r}"


@pytest.mark.parametrize("dims", [0, -3, 1.5, "64", True])
def test_dimensions_must_be_a_positive_integer(dims: Any) -> None:
    said = refused({"model": "auto", "input": "hi", "dimensions": dims})
    assert said == f"dimensions: expected a positive integer, got {dims!r}"


def test_dimensions_other_than_the_models_own_are_refused_naming_its_size() -> None:
    check_dimensions(None, "all-MiniLM-L6-v2", 384)
    check_dimensions(384, "all-MiniLM-L6-v2", 384)
    with pytest.raises(GatewayError) as exc:
        check_dimensions(64, "all-MiniLM-L6-v2", 384)
    assert exc.value.status == 400
    assert exc.value.message.startswith("dimensions: 64 cannot be served")
    assert "all-MiniLM-L6-v2 makes 384-dimension vectors" in exc.value.message


def test_base64_is_the_little_endian_float32_bytes_of_the_floats() -> None:
    vector = [0.5, -1.25, 3.0e-8, 1 / 3]
    text = encoded(vector, "base64")
    assert isinstance(text, str)
    raw = base64.b64decode(text)
    assert len(raw) == 4 * len(vector)
    # the float32 values the float form carries, in the order sent
    assert list(struct.unpack("<4f", raw)) == [
        struct.unpack("<f", struct.pack("<f", x))[0] for x in vector
    ]
    assert encoded(vector, "float") == vector
    reply = embeddings_reply([vector, vector], "base64", "m", 3)
    assert [d["embedding"] for d in reply["data"]] == [text, text]
    assert [d["index"] for d in reply["data"]] == [0, 1]
    assert reply["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
