"""``/v1/embeddings`` in OpenAI's shape: the request read and checked, and the reply
written (pure).

Every field that would change what the client gets back is read or refused, never
dropped: a client that asked for base64 and decoded floats got garbage, and one that
asked for 64 dimensions got 384 without a word (a user audit). The openai SDK asks for
base64 whenever its caller names no format, and decodes it itself.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from app.gateway.inbound import bad, model_of, unsendable

Encoding = Literal["float", "base64"]
_ENCODINGS: tuple[Encoding, ...] = ("float", "base64")


class EmbeddingsRequest(BaseModel):
    """An embeddings request as the gateway serves it."""

    model_config = ConfigDict(frozen=True)

    #: the id asked for, as sent (any id is served: the embedding model is the memory's)
    model: str
    texts: tuple[str, ...]
    encoding_format: Encoding = "float"
    #: the vector size asked for, or None; checked against the loaded model's own
    dimensions: int | None = None


def parse_embeddings(body: Any) -> EmbeddingsRequest:
    """``body`` read, or a 400 naming the field that cannot be served."""
    if not isinstance(body, dict):
        raise bad("request: expected a JSON object")
    problem = unsendable(body)
    if problem:
        raise bad(problem)
    model = model_of(body)
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise bad("input: a string or a list of strings")
    if not texts:
        # OpenAI refuses it too; a 200 with no data made the openai SDK raise "No
        # embedding data received", far from the request that caused it
        raise bad("input: an empty list: send at least one string")
    fmt = body.get("encoding_format")
    if fmt is None:
        fmt = "float"  # (OpenAI's default)
    if fmt not in _ENCODINGS:
        raise bad(f"encoding_format: expected 'float' or 'base64', got {_shown(fmt)}")
    dimensions = body.get("dimensions")
    # (bool is an int to Python, not to a client)
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1
    ):
        raise bad(f"dimensions: expected a positive integer, got {_shown(dimensions)}")
    return EmbeddingsRequest(
        model=model, texts=tuple(texts), encoding_format=fmt, dimensions=dimensions
    )


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_dimensions(asked: int | None, model_id: str, dim: int) -> None:
    """A 400 when ``asked`` is not the model's own size. The local models are not trained
    to be cut short (OpenAI's text-embedding-3 are), and a vector of another size than
    asked for breaks an index built for it: refused, rather than named in a header the
    SDKs never read."""
    if asked is not None and asked != dim:
        raise bad(
            f"dimensions: {asked} cannot be served: the local embedding model {model_id} "
            f"makes {dim}-dimension vectors only (send dimensions {dim}, or leave it out)"
        )


def encoded(vector: Iterable[float], fmt: Encoding) -> list[float] | str:
    """One vector as ``fmt`` asks: a list of floats, or OpenAI's base64 of its
    little-endian float32 bytes."""
    floats = [float(x) for x in vector]
    if fmt == "float":
        return floats
    return base64.b64encode(struct.pack(f"<{len(floats)}f", *floats)).decode("ascii")


def embeddings_reply(
    vectors: Iterable[Iterable[float]], fmt: Encoding, model: str, tokens: int
) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encoded(v, fmt)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
