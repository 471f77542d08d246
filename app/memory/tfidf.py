"""The TF-IDF lane of memory search, fitted once per set of memories and kept beside the
memory file, so that the next process loads it instead of fitting it again.

Fitting runs the memory's analyzer over every memory: 0.18 s for this project's 894
harvested commits, 0.67 s at four times as many, in every process that searches (the
CLI, each run's recall). The kept index is a ``.npz`` of arrays only
(``numpy.load(allow_pickle=False)``: nothing in it can run code), keyed by the memories
it was fitted on, the analyzer's source and scikit-learn's version. It is derived data:
absent, stale or unreadable, it is fitted again and written over, atomically. One index
is kept: searches over different kinds of memories take turns refitting it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.memory import text
from app.memory.text import analyze
from app.memory.types import Memory
from app.replacing import temp_beside

log = logging.getLogger(__name__)

FORMAT = "memory-tfidf-1"


@dataclass(frozen=True)
class TfidfIndex:
    fingerprint: str
    vectorizer: Any  # sklearn TfidfVectorizer, or None for an empty vocabulary
    matrix: Any  # scipy sparse (n_docs × n_terms)


class TfidfScorer:
    """TF-IDF similarity of a query to memories; the index is refitted only when they
    change (kept in memory, and in ``cache_file`` when one is given)."""

    def __init__(self, cache_file: Path | None = None) -> None:
        self._file = cache_file
        self._index: TfidfIndex | None = None

    def scores(self, memories: Sequence[Memory], query: str) -> NDArray[np.float64]:
        index = self._fit(memories)
        if index.vectorizer is None:
            return np.zeros(len(memories), dtype=np.float64)
        q = index.vectorizer.transform([query])
        scores: NDArray[np.float64] = np.asarray((index.matrix @ q.T).toarray(), dtype=np.float64)
        return scores.ravel()

    def _fit(self, memories: Sequence[Memory]) -> TfidfIndex:
        fingerprint = _fingerprint(memories)
        if self._index is not None and self._index.fingerprint == fingerprint:
            return self._index
        index = load(self._file, fingerprint) if self._file is not None else None
        if index is None:
            index = fit(memories, fingerprint)
            if self._file is not None and index.vectorizer is not None:
                save(index, self._file)
        self._index = index
        return index


def fit(memories: Sequence[Memory], fingerprint: str) -> TfidfIndex:
    vectorizer = _vectorizer()
    try:
        matrix = vectorizer.fit_transform([m.text for m in memories])
    except ValueError:  # empty vocabulary: no text has a token
        return TfidfIndex(fingerprint, None, None)
    return TfidfIndex(fingerprint, vectorizer, matrix)


def _vectorizer(**fixed: Any) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        analyzer=analyze, sublinear_tf=True, norm="l2", dtype=np.float64, **fixed
    )


def _fingerprint(memories: Sequence[Memory]) -> str:
    digest = hashlib.sha256()
    for m in memories:
        digest.update(f"{m.id}\x00{m.text}\x01".encode())
    return digest.hexdigest()


def _key(fingerprint: str) -> str:
    """What a kept index must have been made from: these memories and this code."""
    return json.dumps([FORMAT, fingerprint, *_code()])


@functools.cache
def _code() -> tuple[str, str]:
    """The analyzer's and this module's source (an edit to either, the vectorizer's
    settings among them, is never answered by an old index), and the versions of
    scikit-learn and of Python's Unicode tables (what ``\\w`` matches)."""
    import sklearn

    digest = hashlib.sha256()
    for source in (text.__file__, __file__):
        digest.update(Path(source).read_bytes())
    return digest.hexdigest(), f"{sklearn.__version__} unicode {unicodedata.unidata_version}"


# ── on disk ──────────────────────────────────────────────────────────────────────────────


def save(index: TfidfIndex, file: Path) -> None:
    """Write atomically (a reader sees the old index or the new one); a failure to write
    costs the next process a fit, nothing else."""
    vocabulary: dict[str, int] = index.vectorizer.vocabulary_
    terms = sorted(vocabulary, key=vocabulary.__getitem__)
    matrix = index.matrix.tocsr()
    tmp = temp_beside(file)
    try:
        with tmp.open("wb") as fh:
            np.savez(
                fh,
                key=np.frombuffer(_key(index.fingerprint).encode("utf-8"), dtype=np.uint8),
                # analyzer tokens are \w runs: never a NUL
                terms=np.frombuffer("\x00".join(terms).encode("utf-8"), dtype=np.uint8),
                idf=np.asarray(index.vectorizer.idf_, dtype=np.float64),
                data=matrix.data,
                indices=matrix.indices,
                indptr=matrix.indptr,
                shape=np.asarray(matrix.shape, dtype=np.int64),
            )
        os.replace(tmp, file)
    except OSError as exc:  # a read-only or full disk
        log.debug("cannot keep the memory TF-IDF index in %s: %s", file, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()


def load(file: Path, fingerprint: str) -> TfidfIndex | None:
    """The index kept in ``file`` if it was fitted on these memories, else None."""
    try:
        with np.load(file, allow_pickle=False) as z:
            if z["key"].tobytes().decode("utf-8") != _key(fingerprint):
                return None
            terms = z["terms"].tobytes().decode("utf-8").split("\x00")
            idf, data, indices, indptr = z["idf"], z["data"], z["indices"], z["indptr"]
            shape = tuple(int(n) for n in z["shape"])
    except Exception:  # derived data: absent, cut or odd (OSError, BadZipFile, KeyError …)
        return None
    from scipy.sparse import csr_matrix

    try:
        if len(terms) != len(idf) or shape[1] != len(terms):
            return None
        matrix = csr_matrix((data, indices, indptr), shape=shape)
        vectorizer = _vectorizer(vocabulary={t: i for i, t in enumerate(terms)})
        vectorizer.idf_ = idf
    except Exception:  # arrays that do not fit together
        return None
    return TfidfIndex(fingerprint, vectorizer, matrix)
