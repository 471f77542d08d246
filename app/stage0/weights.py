"""Weighted term matrices: one field's counts as TF-IDF and BM25, and query scoring.

A field is a count matrix (rows: chunks, or whole files for the file lane; columns:
the index's vocabulary). Its weights are computed lazily, once per index build:

- TF-IDF: what scikit-learn's ``TfidfTransformer(sublinear_tf=True)`` computes (1 + ln
  tf, smooth idf, l2 norm), in numpy; a query's counts go through the same steps with
  the same idf;
- BM25: Okapi BM25 (k1 1.2, b 0.75, Lucene's idf); a query's distinct terms count once.

:func:`field_parts` turns a query into the terms of a relevance in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from scipy.sparse import csr_matrix

BM25_K1 = 1.2
BM25_B = 0.75


class Field:
    """Counts and their TF-IDF and BM25 weights, computed lazily."""

    def __init__(self, counts: csr_matrix, k1: float = BM25_K1, b: float = BM25_B) -> None:
        self.k1 = k1
        self.b = b
        counts = canonical(counts)
        counts.eliminate_zeros()
        self.counts = counts
        self.empty = counts.shape[0] == 0 or counts.nnz == 0
        self._csc: dict[int, tuple[csr_matrix, Any]] = {}

    @cached_property
    def idf(self) -> np.ndarray:
        """Smooth idf, as scikit-learn's ``TfidfTransformer``: ln((1 + n) / (1 + df)) + 1."""
        import numpy as np

        n, n_terms = self.counts.shape
        df = np.bincount(self.counts.indices, minlength=n_terms).astype(np.float64)
        out: np.ndarray = np.log((1.0 + n) / (1.0 + df)) + 1.0
        return out

    @cached_property
    def tfidf(self) -> csr_matrix:
        """Sublinear TF-IDF rows, l2-normalized (cosine = dot product): what scikit-learn's
        ``TfidfTransformer(sublinear_tf=True)`` gives, without its per-call validation."""
        import numpy as np

        out = self.counts.astype(np.float64)
        if self.empty:
            return out
        data = (np.log(out.data) + 1.0) * self.idf[out.indices]
        lengths = np.diff(out.indptr)
        row = np.repeat(np.arange(out.shape[0]), lengths)
        norms = np.sqrt(np.bincount(row, weights=data * data, minlength=out.shape[0]))
        norms[norms == 0.0] = 1.0
        out.data = data / norms[row]
        return out

    @cached_property
    def bm25(self) -> csr_matrix:
        import numpy as np

        counts = self.counts.astype(np.float64)
        n = counts.shape[0]
        df = np.bincount(counts.indices, minlength=counts.shape[1]).astype(np.float64)
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        lengths = np.asarray(counts.sum(axis=1)).ravel()
        avg = float(lengths.mean()) if n else 1.0
        norm = self.k1 * (1 - self.b + self.b * lengths / (avg or 1.0))
        tf = counts.data
        row_norm = np.repeat(norm, np.diff(counts.indptr))
        counts.data = idf[counts.indices] * tf * (self.k1 + 1) / (tf + row_norm)
        return canonical(counts)

    @staticmethod
    def query_bm25(counts: QueryVector) -> QueryVector:
        """The query for BM25: each distinct term once."""
        import numpy as np

        return QueryVector(counts.indices, np.ones(len(counts.indices)))

    def scores(self, matrix: csr_matrix, q: QueryVector) -> np.ndarray:
        """``matrix @ q`` for a sparse query: the query terms' columns, added up in
        column order (a query has a handful of terms; the corpus has many rows)."""
        import numpy as np

        n = self.counts.shape[0]
        if self.empty or not q.nnz:
            return np.zeros(n)
        csc = self._columns(matrix)
        rows, values = [], []
        for col, weight in zip(q.indices.tolist(), q.data.tolist(), strict=True):
            lo, hi = csc.indptr[col], csc.indptr[col + 1]
            rows.append(csc.indices[lo:hi])
            values.append(weight * csc.data[lo:hi])
        # bincount adds each row's terms in the order given: column order, as one by one
        out: np.ndarray = np.bincount(
            np.concatenate(rows), weights=np.concatenate(values), minlength=n
        )
        return out

    def _columns(self, matrix: csr_matrix) -> Any:
        key = id(matrix)
        hit = self._csc.get(key)
        if hit is None or hit[0] is not matrix:
            hit = self._csc[key] = (matrix, matrix.tocsc())
        return hit[1]


@dataclass(frozen=True)
class QueryVector:
    """A query as one sparse row over the vocabulary: its columns (sorted, distinct) and
    their values (a plain pair of arrays: a query is scored once, a scipy matrix costs
    more to make than to use)."""

    indices: np.ndarray
    data: np.ndarray

    @property
    def nnz(self) -> int:
        return len(self.indices)


def tfidf_query(field: Field, counts: QueryVector) -> QueryVector:
    """The query's sublinear TF-IDF vector in ``field``'s idf, l2-normalized (what
    ``TfidfVectorizer.transform`` gives, from the counts already made)."""
    import numpy as np

    data = np.asarray(counts.data, dtype=np.float64)
    if field.empty or not len(data):
        return QueryVector(counts.indices, data)
    data = (1.0 + np.log(data)) * field.idf[counts.indices]
    norm = float(np.sqrt((data**2).sum()))
    if norm:
        data /= norm
    return QueryVector(counts.indices, data)


def canonical(m: csr_matrix) -> csr_matrix:
    from scipy.sparse import csr_matrix

    out = csr_matrix(m)
    out.sum_duplicates()
    out.sort_indices()
    return out


@dataclass(frozen=True)
class Part:
    """One term of a relevance sum: ``scale · (matrix @ q)``."""

    matrix: csr_matrix
    q: QueryVector
    scale: float


def field_parts(
    field: Field, counts: QueryVector, weighting: str, share: float, tfidf_q: Any
) -> tuple[list[Part], list[np.ndarray]]:
    """The parts of a relevance in [0, 1] by ``weighting`` over ``field``, times ``share``:
    the cosine (TF-IDF), the score over the best score (BM25), or the mean of the two.
    ``tfidf_q()`` gives the query's TF-IDF vector in this field's idf."""
    parts: list[Part] = []
    raws: list[np.ndarray] = []
    if weighting == "hybrid":
        share /= 2
    if weighting in ("tfidf", "hybrid"):
        q = tfidf_q()
        parts.append(Part(field.tfidf, q, share))
        raws.append(field.scores(field.tfidf, q))
    if weighting in ("bm25", "hybrid"):
        q = field.query_bm25(counts)
        raw = field.scores(field.bm25, q)
        top = float(raw.max()) if len(raw) else 0.0
        parts.append(Part(field.bm25, q, share / top if top > 0 else 0.0))
        raws.append(raw)
    return parts, raws


class SimilarityRows:
    """Cosines between some l2-normalized rows of a matrix, one row at a time.

    MMR reads only the rows of the candidates it picks (``top_k`` of ``prefilter``),
    so a row is computed when asked: the picked row's weights are spread over the
    vocabulary, and every candidate's dot product with it is one sparse-times-dense
    product of the candidates' rows.
    """

    def __init__(
        self, matrix: csr_matrix, rows: Sequence[int], *, spread: np.ndarray | None = None
    ) -> None:
        """``spread``: a zero vector as long as a row, to use as scratch (it is zero again
        after each row is read); one of its own when None."""
        import numpy as np

        # the rows' slices of the CSR arrays, gathered (what ``matrix[rows]`` gives, without
        # building a matrix)
        picked = np.asarray(rows, dtype=np.int64)
        starts = matrix.indptr[picked].astype(np.int64)
        lengths = matrix.indptr[picked + 1] - starts
        indptr = np.zeros(len(picked) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        take = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        self.n = len(rows)
        self._cols = int(matrix.shape[1])
        self._indices = matrix.indices[take]
        self._indptr = indptr.astype(self._indices.dtype)
        self._data = np.asarray(matrix.data[take], dtype=np.float64)
        self._spread = np.zeros(self._cols) if spread is None else spread
        # A row's cosines are one product of the picked rows with it: scipy's C loop
        # itself, about 4× a numpy gather and bincount over every candidate. Called
        # directly: making a csr_matrix of these arrays costs ~250 µs of format checks,
        # as much as MMR's whole loop. Without that private function, the public way.
        self._matvec = _csr_matvec()
        self._rows: Any = None
        if self._matvec is None:
            self._rows = type(matrix)(
                (self._data, self._indices, self._indptr), shape=(self.n, self._cols)
            )

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        import numpy as np

        lo, hi = int(self._indptr[i]), int(self._indptr[i + 1])
        cols = self._indices[lo:hi]
        self._spread[cols] = self._data[lo:hi]
        try:
            if self._rows is not None:
                out: np.ndarray = self._rows @ self._spread
            else:
                out = np.zeros(self.n)
                self._matvec(
                    self.n, self._cols, self._indptr, self._indices, self._data, self._spread, out
                )
        finally:
            self._spread[cols] = 0.0  # zero again, whatever happened: the scratch is shared
        return out


@cache
def _csr_matvec() -> Any:
    """scipy's own CSR × vector loop (looked up on first use: scipy loads lazily)."""
    try:
        from scipy.sparse._sparsetools import csr_matvec
    except ImportError:  # a scipy that moved it: SimilarityRows builds a matrix instead
        return None
    return csr_matvec
