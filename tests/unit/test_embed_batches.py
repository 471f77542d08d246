"""Texts are encoded in batches of like length in tokens, and come back in their order."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.memory.embeddings import encode_by_length


class FakeModel:
    """A sentence-transformers look-alike: a token is a word; a vector says its text."""

    max_seq_length = 4

    def __init__(self, texts: list[str]) -> None:
        self.index = {t: i for i, t in enumerate(texts)}
        self.batches: list[list[str]] = []
        self.tokenized: list[list[str]] = []

    def tokenizer(self, texts: list[str], *, truncation: bool, max_length: int) -> Any:
        assert truncation
        self.tokenized.append(list(texts))
        return {"input_ids": [t.split()[:max_length] for t in texts]}

    def encode(self, texts: list[str], *, batch_size: int, **_: Any) -> Any:
        assert batch_size == len(texts)  # one call, one batch
        self.batches.append(list(texts))
        return np.array([[float(self.index[t]), 1.0] for t in texts], dtype=np.float32)


def test_batches_hold_texts_of_like_length_and_rows_keep_their_order() -> None:
    # tokens: 5 (the model reads 4 of them), 1, 4, 2, 3, 1
    texts = ["a b c d e", "f", "g h i j", "k l", "m n o", "p"]
    model = FakeModel(texts)
    out = encode_by_length(model, texts, 2)
    assert model.batches == [["f", "p"], ["k l", "m n o"], ["a b c d e", "g h i j"]]
    assert out[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert out.dtype == np.float32


def test_one_batch_is_encoded_as_given_without_counting_tokens() -> None:
    texts = ["the query", "x"]
    model = FakeModel(texts)
    out = encode_by_length(model, texts, 2)
    assert model.batches == [texts] and model.tokenized == []
    assert out[:, 0].tolist() == [0.0, 1.0]
