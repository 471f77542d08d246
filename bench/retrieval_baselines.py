"""The bm25s baselines ``bench/retrieval_quality.py`` measures Stage0 against.

- ``bm25s``: Stage0's chunks, ``bm25s.tokenize(stopwords="en")``, as bm25s's README
  shows it (optionally with each chunk's path prepended);
- ``bm25s files``: whole files, the path prepended, a code-aware tokenizer (Stage0's:
  snake_case and camelCase split, the whole identifier kept too, so the baseline
  tokenizes exactly as well as Stage0 does);
- ``bm25s chunks``: Stage0's chunks, the path prepended, the same code-aware tokenizer;
  a file ranks as its best chunk (max-pooled).

Every side is ``bm25s.BM25()`` with its defaults (Lucene BM25, k1 1.5, b 0.75), indexed
again for each commit's tree; tokens are remembered by content so a tree only
tokenizes what changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Tokenizer = Callable[[str], list[str]]


def code_tokens(text: str) -> list[str]:
    from app.stage0.tokenize import tokenize

    return tokenize(text)


def _as_ids(corpus: list[list[str]]) -> Any:
    """Token lists as the ``Tokenized`` (ids + vocab) that ``BM25.index`` takes."""
    from bm25s.tokenization import Tokenized

    vocab: dict[str, int] = {}
    ids = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in corpus]
    return Tokenized(ids=ids, vocab=vocab)


def bm25s_scores(corpus: list[list[str]], query: list[str]) -> Any:
    """bm25s's score of every document of ``corpus`` (token lists) for ``query``."""
    import bm25s
    import numpy as np

    if not any(corpus):
        return np.zeros(len(corpus))  # bm25s cannot index an empty vocabulary
    retriever = bm25s.BM25()
    retriever.index(_as_ids(corpus), show_progress=False)
    vocab = retriever.vocab_dict
    q = [t for t in query if t in vocab]
    if not q:
        return np.zeros(len(corpus))
    return np.asarray(retriever.get_scores(q), dtype=np.float64)


def _default_tokens(texts: list[str]) -> list[list[str]]:
    import bm25s

    out: list[list[str]] = bm25s.tokenize(
        texts, stopwords="en", return_ids=False, show_progress=False
    )
    return out


class ChunkRanker:
    """bm25s over Stage0's chunks; ``code=True``: the code-aware tokenizer."""

    def __init__(self, with_path: bool = False, code: bool = False) -> None:
        self.with_path = with_path
        self.code = code
        self._tokens: dict[str, list[str]] = {}  # chunk id -> tokens (stable per content)

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        return [code_tokens(t) for t in texts] if self.code else _default_tokens(texts)

    def scores(
        self, ids: Sequence[str], paths: Sequence[str], texts: Sequence[str], query: str
    ) -> Any:
        """bm25s's score of every chunk for ``query``."""
        todo = [i for i, cid in enumerate(ids) if cid not in self._tokens]
        if todo:
            docs = [(f"{paths[i]}\n{texts[i]}" if self.with_path else texts[i]) for i in todo]
            for i, t in zip(todo, self._tokenize(docs), strict=True):
                self._tokens[ids[i]] = t
        corpus = [self._tokens[cid] for cid in ids]
        return bm25s_scores(corpus, self._tokenize([query])[0])


class FileRanker:
    """bm25s over whole files (path prepended, code-aware tokens), read through git."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self._text: dict[str, list[str]] = {}  # blob id -> its text's tokens
        self._path: dict[str, list[str]] = {}  # path -> its tokens

    def scores(self, files: Sequence[tuple[str, str]], query: str) -> Any:
        """bm25s's score of every file (``(path, blob id)``, in order) for ``query``."""
        from app.stage0.corpus import decode, read_blobs

        missing = sorted({b for _, b in files if b not in self._text})
        for blob, data in read_blobs(self.repo, missing).items():
            self._text[blob] = code_tokens(decode(data))
        corpus = []
        for path, blob in files:
            if path not in self._path:
                self._path[path] = code_tokens(path)
            corpus.append(self._path[path] + self._text.get(blob, []))
        return bm25s_scores(corpus, code_tokens(query))
