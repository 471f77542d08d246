"""The TF-IDF index: per-content term counts, assembled into one sparse matrix.

Building: every file's content is chunked and tokenized once (``analyze``) and cached
by content; a build assembles the cached counts of the current files into count
matrices (rows: chunks in path/line order; columns: the sorted vocabulary) and
weights them. Editing one file re-tokenizes that file only; the matrices and the idf
are recomputed from counts, which is quick.

A chunk's document is its text plus its path's tokens (directories and file stem)
counted :data:`PATH_WEIGHT` times. The weighting (chosen by measurement with
``bench/retrieval_quality.py``; the figures are in the comment above
:data:`DEFAULT_WEIGHTING`) is one of:

- ``tfidf``: scikit-learn's ``TfidfTransformer(sublinear_tf=True)`` over the counts
  (1 + ln tf, smooth idf, l2 norm); a query's counts (the code tokenizer's) go through
  the same steps with the same idf; relevance is the cosine.
- ``bm25``: Okapi BM25 (k1 1.2, b 0.75, Lucene's idf) over the same counts; relevance
  is the sum over the query's distinct terms, divided by the query's best score.
- ``hybrid`` (the default): the mean of the two.

That is a chunk's own relevance; the file lane (:mod:`app.stage0.filelane`) then
blends in how its whole file matches (its best chunk's TF-IDF and what it defines),
``file_share`` of the total (0: chunks alone).

Whatever the weighting, explain's "top terms" are the largest sublinear TF-IDF
weights of a chunk's text (its path left out), and redundancy (MMR) is the cosine
between the TF-IDF vectors of the chunks' texts: two chunks are not redundant because
they live in the same folder.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from app.audit.masking import mask_text
from app.stage0.cache import BlobData, PieceMeta
from app.stage0.chunker import (
    CHUNKER_VERSION,
    CODE_UNIT_KINDS,
    is_doc_path,
    make_pieces,
    normalize_newlines,
    text_digest,
)
from app.stage0.filelane import FILE_SHARE, FILE_TERM, FileLane, definition_counts
from app.stage0.tokenize import TOKENIZER_VERSION, split_identifier, tokenize
from app.stage0.weights import (
    Field,
    Part,
    QueryVector,
    SimilarityRows,
    canonical,
    field_parts,
    tfidf_query,
)
from app.tokens import count_text

if TYPE_CHECKING:
    import numpy as np
    from scipy.sparse import csr_matrix

WEIGHTINGS = ("tfidf", "bm25", "hybrid")
# Chosen with bench/retrieval_quality.py on the 200 most recent qualifying commits of
# four repositories (click, requests, attrs, httpx); same chunks and queries for every
# variant. Means over the four: file-level MRR (the benchmark's headline), chunk-level
# MRR (first chunk overlapping a changed line) and "brief": the share of commits where
# query() (MMR, both lanes, 8000 tokens) picked a changed chunk: what a brief is for.
#
#   path tokens ×8 in each chunk   file MRR  chunk MRR  brief
#   tfidf  (sublinear, l2, cosine)    0.433      0.205  0.505
#   bm25   (k1 1.2, b 0.75)           0.391      0.240  0.543
#   hybrid (mean of the two)          0.404      0.241  0.561   ← chosen
#
#   path weight: file / chunk MRR  ×0 (no path)     ×1             ×3             ×8
#   tfidf                           0.345 / 0.176  0.387 / 0.186  0.420 / 0.198  0.433 / 0.205
#   bm25                            0.359 / 0.225  0.380 / 0.234  0.388 / 0.237  0.391 / 0.240
#
# Hybrid picks a changed chunk most often (best or within 0.005 of the best on each
# repository) and ranks chunks as well as BM25; TF-IDF alone ranks files best but
# chunks worst. Path weights past 8 gain less than the noise at file level (tfidf ×16
# 0.439, ×24 0.441) and would let the path drown the text. Scoring the path as a
# separate field, (text + w·path) / (1 + w), did worse for both weightings (best: tfidf
# w 0.5 0.379 / 0.189, bm25 w 0.25 0.376 / 0.230). BM25's k1 1.5-2.0 and b 0.3-0.9
# moved its file MRR by at most 0.02; counting a unit's symbol a second time, by
# less than 0.01, so it is counted once (in its text).
DEFAULT_WEIGHTING = "hybrid"
#: How many times a chunk's path tokens (directories, file stem) count in it.
PATH_WEIGHT = 8
#: How many extra times a unit's symbol tokens are counted (they are in its text once).
SYMBOL_WEIGHT = 0
FEATURES_VERSION = f"s{SYMBOL_WEIGHT}"


def blob_key(blob: str, mode: str, chunk_lines: int, overlap: int) -> str:
    """Cache key of one content under one chunker configuration."""
    return (
        f"{blob}:{mode}:{chunk_lines}:{overlap}:"
        f"c{CHUNKER_VERSION}t{TOKENIZER_VERSION}{FEATURES_VERSION}"
    )


def analyze(data: bytes, mode: str, chunk_lines: int, overlap: int) -> tuple[BlobData, list[str]]:
    """Chunk and tokenize one file's content (binary content gives no chunks)."""
    import numpy as np

    from app.stage0.corpus import decode, is_binary

    empty = np.zeros(0, dtype=np.int32)
    if is_binary(data):
        return BlobData(True, (), (), np.zeros(1, dtype=np.int32), empty, empty), []
    # Masked before anything is chunked or counted: the cache (a file under .switchyard)
    # then holds no secret in its texts nor in its vocabulary, and a brief cannot quote
    # one. Lines are kept, so chunks cite the file's own line numbers.
    text, _ = mask_text(normalize_newlines(decode(data)))
    pieces = make_pieces(mode, text, chunk_lines, overlap)
    per_piece: list[Counter[str]] = []
    for p in pieces:
        counts = Counter(tokenize(p.text))
        if p.symbol and SYMBOL_WEIGHT:
            for tok in split_identifier(p.symbol.rpartition(".")[2]):
                counts[tok] += SYMBOL_WEIGHT
        per_piece.append(counts)
    terms = sorted(set().union(*per_piece)) if per_piece else []
    local = {t: i for i, t in enumerate(terms)}
    indptr = [0]
    indices: list[int] = []
    values: list[int] = []
    for counts in per_piece:
        for t in sorted(counts, key=local.__getitem__):
            indices.append(local[t])
            values.append(counts[t])
        indptr.append(len(indices))
    meta = tuple(
        PieceMeta(p.start, p.end, p.kind, p.symbol, count_text(p.text), text_digest(p.text))
        for p in pieces
    )
    return (
        BlobData(
            False,
            meta,
            tuple(terms),
            np.asarray(indptr, dtype=np.int32),
            np.asarray(indices, dtype=np.int32),
            np.asarray(values, dtype=np.int32),
        ),
        [p.text for p in pieces],
    )


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """A chunk in the index, without its text (see :meth:`Index.texts`)."""

    id: str
    path: str
    start: int
    end: int
    kind: str
    symbol: str | None
    tokens: int
    key: str  # blob key of its file's content
    ordinal: int  # position among its file's pieces

    @property
    def is_code_unit(self) -> bool:
        return self.kind in CODE_UNIT_KINDS

    @property
    def is_doc(self) -> bool:
        return is_doc_path(self.path)

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.path, self.start, self.end, self.id)


def path_terms(path: str) -> list[str]:
    """Tokens of a path: directories and the file's stem (not its suffix)."""
    stem = path.rsplit(".", 1)[0] if "." in path.rsplit("/", 1)[-1] else path
    return tokenize(stem)


class SortedVocab(Mapping[str, int]):
    """term → column over a sorted list of terms, by binary search (no dict to build
    for a vocabulary of a hundred thousand terms when a query needs a handful)."""

    def __init__(self, terms: list[str]) -> None:
        self.terms = terms

    def __getitem__(self, term: str) -> int:
        i = bisect_left(self.terms, term)
        if i < len(self.terms) and self.terms[i] == term:
            return i
        raise KeyError(term)

    def get(self, term: str, default: int | None = None) -> int | None:  # type: ignore[override]
        """The term's column, or ``default`` (one binary search)."""
        i = bisect_left(self.terms, term)
        return i if i < len(self.terms) and self.terms[i] == term else default

    def __contains__(self, term: object) -> bool:
        if not isinstance(term, str):
            return False
        i = bisect_left(self.terms, term)
        return i < len(self.terms) and self.terms[i] == term

    def __iter__(self) -> Iterator[str]:
        return iter(self.terms)

    def __len__(self) -> int:
        return len(self.terms)


@dataclass(frozen=True)
class _Scored:
    """A query's scores, kept for the rows holding one of its terms (every other row
    scores 0); the arrays over every row are made when first asked for."""

    parts: tuple[Part, ...]  # of the chunks' own relevance
    lane: float  # the file lane's share
    n: int  # rows in the index
    held: np.ndarray  # the rows holding a query term (ascending)
    own_held: np.ndarray  # their own relevance in [0, 1], without the file lane
    relevance_held: np.ndarray  # their relevance
    by_file_held: np.ndarray | None  # the file lane's share of their relevance

    @cached_property
    def relevance(self) -> np.ndarray:
        return self._spread(self.relevance_held)

    @cached_property
    def own(self) -> np.ndarray:
        """Each chunk's own relevance in [0, 1], without the file lane."""
        return self._spread(self.own_held)

    def _spread(self, held_values: np.ndarray) -> np.ndarray:
        import numpy as np

        out = np.zeros(self.n)
        out[self.held] = held_values
        return out

    @cached_property
    def above(self) -> np.ndarray:
        """Of the held rows, those whose relevance is above zero (a boolean mask)."""
        out: np.ndarray = self.relevance_held > 0
        return out

    @cached_property
    def matched(self) -> np.ndarray:
        """The rows whose relevance is above zero, ascending."""
        out: np.ndarray = self.held[self.above]
        return out

    def by_file(self, row: int) -> float:
        """The file lane's share of ``row``'s relevance."""
        import numpy as np

        if self.by_file_held is None:
            return 0.0
        at = int(np.searchsorted(self.held, row))
        if at < len(self.held) and int(self.held[at]) == row:
            return float(self.by_file_held[at])
        return 0.0


class Index:
    """Chunks, vocabulary and weighted matrices; built by :func:`assemble`.

    A chunk's document is its text plus its path's tokens (directories, file stem)
    counted ``path_weight`` times (:data:`PATH_WEIGHT`). Relevance is the cosine with
    the query for TF-IDF, the score divided by the query's best score for BM25, and
    the mean of the two for hybrid, so it lies in [0, 1]; ``file_share`` of it is the
    file lane's (:data:`FILE_SHARE` unless given). The texts alone (no path) give
    redundancy and the top terms.
    """

    def __init__(
        self,
        refs: list[ChunkRef],
        terms: list[str],
        text_counts: csr_matrix,
        path_counts: csr_matrix | None = None,
        weighting: str = DEFAULT_WEIGHTING,
        path_weight: float | None = None,
        file_share: float | None = None,
        definitions: Callable[[], csr_matrix] | None = None,
    ) -> None:
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r} (known: {', '.join(WEIGHTINGS)})")
        from scipy.sparse import csr_matrix

        self.refs = refs
        self.terms = terms
        self.vocab = SortedVocab(terms)
        if path_counts is None or path_counts.shape != text_counts.shape:
            path_counts = csr_matrix(text_counts.shape, dtype="float64")
        self.text_counts = text_counts
        self.path_counts = path_counts
        self.weighting = weighting
        self.path_weight = PATH_WEIGHT if path_weight is None else path_weight
        self.file_share = FILE_SHARE if file_share is None else file_share
        if self.path_weight and path_counts.nnz:
            self.field = Field(text_counts + self.path_weight * path_counts)
            self.plain = Field(text_counts)
        else:
            self.field = Field(text_counts)
            self.plain = self.field
        self._last: tuple[str, _Scored] | None = None
        self._definitions_from = definitions  # a subset's: sliced from its parent's
        #: row → what the chunk costs in a brief, filled as queries weigh candidates (the
        #: engine's ``chunk_cost``, counted once per chunk, not once per query)
        self.costs: dict[int, int] = {}
        self._scratch = threading.local()  # see similarity_rows

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def tfidf(self) -> csr_matrix:
        """The texts' sublinear TF-IDF rows (paths left out), l2-normalized."""
        return self.plain.tfidf

    # ── queries ──────────────────────────────────────────────────────────────────────
    def query_counts(self, text: str) -> QueryVector:
        """The query's term counts over the vocabulary (unknown words left out)."""
        import numpy as np

        counts: Counter[int] = Counter()
        get = self.vocab.get
        for t in tokenize(text):
            col = get(t)
            if col is not None:
                counts[col] += 1
        cols = sorted(counts)
        return QueryVector(
            np.asarray(cols, dtype=np.int32), np.asarray([float(counts[c]) for c in cols])
        )

    @cached_property
    def definitions(self) -> csr_matrix:
        """Each chunk's defined name's term counts (see :mod:`app.stage0.filelane`)."""
        if self._definitions_from is not None:
            return self._definitions_from()
        return definition_counts(
            [r.path for r in self.refs], [r.symbol for r in self.refs], self.vocab
        )

    @cached_property
    def files(self) -> FileLane:
        """The file lane's files (see :mod:`app.stage0.filelane`)."""
        return FileLane.build([r.path for r in self.refs], self.definitions)

    def _score(self, text: str) -> _Scored:
        import numpy as np

        if self._last is not None and self._last[0] == text:
            return self._last[1]
        counts = self.query_counts(text)
        field = self.field
        n = len(self.refs)
        lane = self.file_share if n and counts.nnz else 0.0
        own_parts, raws = field_parts(
            field, counts, self.weighting, 1.0, lambda: tfidf_query(field, counts)
        )
        # Every part is above zero on the same rows, those holding a query term: a few
        # thousand of ~70k in a large repository. The sums run over those rows alone (an
        # operation over every row costs ~30 µs here), the same values in the same order.
        # (``> 0`` first: numpy's nonzero over floats is ~7× slower than over booleans.)
        held = np.flatnonzero(raws[0] > 0) if raws else np.zeros(0, dtype=np.intp)
        own_held = np.zeros(len(held))
        for part, raw in zip(own_parts, raws, strict=True):
            if part.scale:
                own_held += part.scale * raw[held]
        relevance_held = own_held
        by_file_held = None
        if lane:
            # the TF-IDF cosine is the first part for tfidf and hybrid
            chunk_tfidf = (
                raws[0]
                if self.weighting != "bm25"
                else field.scores(field.tfidf, tfidf_query(field, counts))
            )
            files = self.files
            files_held = files.file_of_row[held]
            by_file = lane * files.relevance(counts, files_held, chunk_tfidf[held])
            by_file_held = by_file[files_held]
            by_file_held *= own_held > 0  # a chunk matching nothing stays out
            relevance_held = own_held * (1.0 - lane)
            relevance_held += by_file_held
        scored = _Scored(tuple(own_parts), lane, n, held, own_held, relevance_held, by_file_held)
        self._last = (text, scored)
        return scored

    def relevance(self, text: str) -> np.ndarray:
        """Relevance of every chunk to ``text``, in [0, 1]."""
        import numpy as np

        if not len(self.refs):
            return np.zeros(0)
        return self._score(text).relevance

    def matched(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rows whose :meth:`relevance` to ``text`` is above zero (ascending), with
        their relevance and their own relevance: a query's ranking needs nothing else,
        and no array over every row."""
        import numpy as np

        if not len(self.refs):
            return np.zeros(0, dtype=np.intp), np.zeros(0), np.zeros(0)
        scored = self._score(text)
        above = scored.above
        return scored.matched, scored.relevance_held[above], scored.own_held[above]

    def own_relevance(self, text: str) -> np.ndarray:
        """Each chunk's relevance to ``text`` without the file lane, in [0, 1]: what MMR
        weighs against redundancy (the file lane orders the candidates, not the picks)."""
        import numpy as np

        if not len(self.refs):
            return np.zeros(0)
        return self._score(text).own

    def contributions(self, text: str, row: int, *, own: bool = False) -> list[tuple[str, float]]:
        """Each query term's share of a chunk's relevance, and the file lane's share as
        :data:`FILE_TERM` (they add up to it); ``own``: of its own relevance (no file
        lane)."""
        share: dict[int, float] = {}
        if self.field.empty:
            return []
        scored = self._score(text)
        scale = 1.0 if own else 1.0 - scored.lane
        for part in scored.parts:
            doc = part.matrix.getrow(row)
            weights = dict(zip(doc.indices.tolist(), doc.data.tolist(), strict=True))
            for c, v in zip(part.q.indices.tolist(), part.q.data.tolist(), strict=True):
                if c in weights:
                    share[c] = share.get(c, 0.0) + scale * part.scale * v * weights[c]
        pairs = [(self.terms[c], v) for c, v in share.items() if v]
        by_file = 0.0 if own else scored.by_file(row)
        if by_file > 0:
            pairs.append((FILE_TERM, by_file))
        return sorted(pairs, key=lambda p: (-p[1], p[0]))

    def top_terms(self, row: int, n: int = 8) -> list[tuple[str, float]]:
        """The chunk's text's largest TF-IDF weights."""
        doc = self.plain.tfidf.getrow(row)
        pairs = [
            (self.terms[c], w) for c, w in zip(doc.indices.tolist(), doc.data.tolist(), strict=True)
        ]
        return sorted(pairs, key=lambda p: (-p[1], p[0]))[:n]

    def similarity(self, rows: Sequence[int]) -> np.ndarray:
        """Cosine similarity between the given chunks' texts (dense, len(rows)²).

        Paths are left out: two chunks are not redundant because they share a folder.
        """
        import numpy as np

        if not rows:
            return np.zeros((0, 0))
        sub = self.plain.tfidf[list(rows)]
        return np.asarray((sub @ sub.T).todense())

    def similarity_rows(self, rows: Sequence[int]) -> SimilarityRows:
        """:meth:`similarity`'s rows, each computed when read (what MMR needs)."""
        import numpy as np

        # One vocabulary-wide scratch vector per thread, kept: zeroing a fresh one (1.6 MB
        # for 200k terms) and faulting its pages in cost more than MMR's products.
        matrix = self.plain.tfidf
        spread = getattr(self._scratch, "spread", None)
        if spread is None or len(spread) != matrix.shape[1]:
            spread = self._scratch.spread = np.zeros(matrix.shape[1])
        return SimilarityRows(matrix, rows, spread=spread)

    def subset(self, rows: Sequence[int]) -> Index:
        """An index over some chunks only, with its own idf (the code-unit index)."""
        import numpy as np

        picked = np.asarray(rows, dtype=np.int64)
        text = self.text_counts[picked]
        path = self.path_counts[picked]
        used = np.unique(np.concatenate([text.indices, path.indices])).astype(np.int64)
        return Index(
            [self.refs[r] for r in rows],
            [self.terms[c] for c in used.tolist()],
            canonical(text[:, used]),
            canonical(path[:, used]),
            self.weighting,
            self.path_weight,
            self.file_share,
            lambda: canonical(self.definitions[picked][:, used]),
        )
