"""The file lane: whole files ranked beside the chunks, fused by reciprocal rank.

A commit message or a task names what a file is about more often than the words of
one of its functions, so a file is ranked twice:

- by its best chunk: the largest TF-IDF cosine among its chunks (TF-IDF ranks files
  best of the chunk weightings; hybrid ranks the chunks themselves best);
- as a whole: BM25 over the sum of its chunks' text counts plus its path's tokens
  :data:`FILE_PATH_WEIGHT` times (k1 :data:`FILE_BM25_K1`, b :data:`FILE_BM25_B`).

The two ranks are fused as ``1/(RRF_K + rank)`` each (reciprocal-rank fusion: no score
scales to reconcile), scaled to [0, 1] (1: first in both). A chunk's relevance is then
``(1 − FILE_SHARE) · its own + FILE_SHARE · its file's``, for a chunk that matches the
query at all: a chunk matching nothing stays out, whatever its file. That relevance
ranks files and orders the candidates (the pre-filter, explain's ranks); MMR weighs a
candidate's own relevance against its redundancy, since the file lane squeezes
relevances into a narrow band where redundancy would decide every pick: with MMR on
the fused relevance, "brief" (a changed chunk picked) fell from 0.535 / 0.600 (click /
requests, before the file lane) to 0.495 / 0.555; on the own relevance it is 0.540 /
0.590.

Chosen with ``bench/retrieval_quality.py`` on click and requests only (``TUNED_ON``
there); the other repositories it reports were not looked at. On those two (200
commits each; file MRR / chunk MRR, mean of the two):

    chunks alone (hybrid)                              0.411 / 0.243
    + score fusion with whole-file BM25 (×0.2-0.35)     0.413-0.415 / 0.229 or less
    + RRF(best TF-IDF chunk, whole-file BM25) ×0.5      0.431 / 0.245
                                              ×0.8      0.444 / 0.236   ← chosen
                                              ×0.95     0.447 / 0.215
    RRF of the files alone (×1: chunks tied in a file)  0.452 / 0.096

Whole-file BM25 with the path ×16 and k1 2.0 beat the path ×8 and k1 1.2 by 0.001 to
0.013 file MRR; a third RRF lane (the best chunk's BM25) did worse. A smaller RRF
constant (5 or 20 for 60) gains up to 0.004 file MRR and loses 0.011 to 0.027 chunk MRR.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.stage0.weights import Field

if TYPE_CHECKING:
    import numpy as np
    from scipy.sparse import csr_matrix

FILE_SHARE = 0.8
FILE_PATH_WEIGHT = 16
FILE_BM25_K1 = 2.0
FILE_BM25_B = 0.75
RRF_K = 60
#: How explain names the file lane's share of a chunk's relevance among its terms.
FILE_TERM = "[file lane]"


def reciprocal_ranks(scores: np.ndarray) -> np.ndarray:
    """``1 / (RRF_K + rank)`` of each score (rank 1: the highest; ties by position);
    0 for a score of 0 or less (not ranked)."""
    import numpy as np

    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    return np.where(scores > 0, 1.0 / (RRF_K + ranks), 0.0)


@dataclass(frozen=True)
class FileLane:
    """Whole files: one row per path, and the file of each chunk row."""

    field: Field
    file_of_row: np.ndarray
    #: first row of each file when rows are grouped by file (they are, in path order)
    starts: np.ndarray | None

    @classmethod
    def build(
        cls, paths: Sequence[str], text_counts: csr_matrix, path_counts: csr_matrix
    ) -> FileLane:
        import numpy as np
        from scipy.sparse import csr_matrix

        n = len(paths)
        names, first, file_of_row = np.unique(
            np.asarray(paths, dtype=object), return_index=True, return_inverse=True
        )
        file_of_row = np.asarray(file_of_row, dtype=np.int64).ravel()
        sum_rows = csr_matrix(
            (np.ones(n), (file_of_row, np.arange(n))), shape=(len(names), n), dtype="float64"
        )
        counts = sum_rows @ text_counts + FILE_PATH_WEIGHT * path_counts[first]
        grouped = n > 0 and bool(np.all(np.diff(file_of_row) >= 0))
        return cls(
            Field(counts, k1=FILE_BM25_K1, b=FILE_BM25_B),
            file_of_row,
            np.asarray(first, dtype=np.int64) if grouped else None,
        )

    def best_chunk(self, chunk_scores: np.ndarray) -> np.ndarray:
        """Each file's largest chunk score."""
        import numpy as np

        if self.starts is not None:
            best: np.ndarray = np.maximum.reduceat(chunk_scores, self.starts)
            return best
        out = np.zeros(self.field.counts.shape[0])
        np.maximum.at(out, self.file_of_row, chunk_scores)
        return out

    def relevance(self, counts: csr_matrix, chunk_tfidf: np.ndarray) -> np.ndarray:
        """Each file's fused rank in [0, 1], by file row, for a query's ``counts``."""
        field = self.field
        whole = field.scores(field.bm25, field.query_bm25(counts))
        fused: np.ndarray = reciprocal_ranks(self.best_chunk(chunk_tfidf)) + reciprocal_ranks(whole)
        return fused * ((RRF_K + 1) / 2)
