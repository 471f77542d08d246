"""The file lane: how a chunk's whole file matches, blended into the chunk's relevance.

A commit message or a task names what a file is about, and often the functions and
classes it defines, more than the words of any one of its chunks. So a file scores:

- its best chunk: the largest TF-IDF cosine among its chunks (text and path; TF-IDF
  ranks files best of the chunk weightings, hybrid ranks the chunks themselves best);
- plus :data:`DEFINITIONS_SHARE` × its definitions' match: BM25 (k1 1.2, b 0.75) over
  the names of what the file defines (the symbol of each of its chunks: functions,
  methods, classes, tokenized like text), divided by the best file's. A test file
  defines nothing (``test_parse`` exercises ``parse``, defined elsewhere), nor does a
  ``test_...`` function anywhere, nor a stub beside its module (:func:`defines`).

Those file scores are divided by the best one (so they lie in [0, 1]), and a chunk's
relevance is ``(1 − FILE_SHARE) · its own + FILE_SHARE · its file's``, for a chunk that
matches the query at all: a chunk matching nothing stays out, whatever its file. That
relevance ranks files and orders the candidates (the pre-filter, explain's ranks); MMR
weighs a candidate's own relevance against its redundancy, since the file lane squeezes
relevances into a narrow band where redundancy would decide every pick.

Chosen with ``bench/retrieval_quality.py`` (``TUNED_ON`` there says where) in two
rounds. The first, on click, requests, httpx and starlette; file MRR ÷ the best bm25s
baseline's, 200 commits each (click / requests / httpx / starlette):

    before: RRF(best chunk TF-IDF, whole-file BM25), ×0.8       1.13 / 1.12 / 1.02 / 0.98
    best chunk TF-IDF alone (×1)                                1.08 / 1.17 / 1.17 / 1.22
      + 0.1 × whole-file BM25 / max                             1.12 / 1.13 / 1.16 / 1.16
      + definitions' BM25 / max  ×0.05                          1.14 / 1.21 / 1.22 / 1.27
                                 ×0.1                           1.19 / 1.24 / 1.20 / 1.25
                                 ×0.2                           1.26 / 1.22 / 1.16 / 1.23
    chosen: + definitions ×0.15, file share 0.8                 1.22 / 1.25 / 1.19 / 1.20
      (share 0.7 or 0.9: within ±0.03 on each)

The whole-file BM25 lane (of the version before) ranked httpx's and starlette's files
worse than their best chunks did and, beside the definitions, moved no repository by
more than 0.01, so it is gone; reciprocal-rank fusion of the best chunk and the
definitions did worse (1.06 to 1.15) than adding their scores.

Measured once after that round, jinja (0.99×) and more-itertools (0.90×) fell short:
test files ranked first, by their ``test_<name>`` functions, and so did the ``.pyi``
stubs beside more-itertools' modules. They joined the tuned set for the second round
(click / requests / httpx / starlette / jinja / more-itertools):

    definitions of every file (first round)       1.22 / 1.25 / 1.19 / 1.20 / 0.99 / 0.90
    not tests' by name (test*, Test*, *Tests)     1.47 / 1.27 / 1.36 / 1.26 / 1.05 / 0.99
      and not stubs'                              1.47 / 1.27 / 1.36 / 1.26 / 1.05 / 1.17
    not test files', test_ names nor stubs'       1.48 / 1.33 / 1.40 / 1.29 / 1.10 / 1.21
      (definitions ×0.2: 1.50 / 1.33 / 1.41 / 1.29 / 1.09 / 1.27; ×0.3: jinja 1.11)

The share stayed 0.15. Excluding by name alone misses test files' helpers and fixtures
and wrongly drops a real ``TestClient``; by path is what pytest's discovery uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from typing import TYPE_CHECKING

from app.stage0.tokenize import tokenize
from app.stage0.weights import Field, QueryVector

if TYPE_CHECKING:
    import numpy as np
    from scipy.sparse import csr_matrix

FILE_SHARE = 0.8
#: Weight of a file's definitions' match (over the best file's) beside its best chunk.
DEFINITIONS_SHARE = 0.15
#: How explain names the file lane's share of a chunk's relevance among its terms.
FILE_TERM = "[file lane]"
#: Directories whose files are tests (pytest's and unittest's usual layouts).
_TEST_DIRS = frozenset({"test", "tests", "testing"})


def definition_counts(
    paths: Sequence[str], symbols: Sequence[str | None], vocab: Mapping[str, int]
) -> csr_matrix:
    """Each chunk row's defined name (its symbol: ``Class.method`` gives ``class`` and
    ``method``), tokenized like text, as term counts over ``vocab``'s columns; none for
    what defines nothing (:func:`defines`)."""
    import numpy as np
    from scipy.sparse import csr_matrix

    present = set(paths)
    kept = {p: defines(p, present) for p in present}
    # each distinct name is tokenized once (and remembered), each distinct term looked up once
    ids: dict[str, int] = {"": 0}
    of_row = np.fromiter(
        (
            ids.setdefault(s, len(ids)) if s and kept[p] and not is_test_name(s) else 0
            for p, s in zip(paths, symbols, strict=True)
        ),
        dtype=np.int64,
        count=len(symbols),
    )
    per_name = [name_terms(name) for name in ids]
    flat = list(chain.from_iterable(per_name))
    cols = {t: vocab.get(t, -1) for t in dict.fromkeys(flat)}
    flat_cols = np.fromiter((cols[t] for t in flat), dtype=np.int64, count=len(flat))
    name_of = np.repeat(np.arange(len(per_name)), [len(t) for t in per_name])
    known = flat_cols >= 0
    by_name = csr_matrix(
        (np.ones(int(known.sum())), (name_of[known], flat_cols[known])),
        shape=(len(ids), len(vocab)),
        dtype="float64",
    )
    out: csr_matrix = by_name[of_row]
    return out


def defines(path: str, present: set[str]) -> bool:
    """Whether a file's functions and classes count as definitions: not a test file's
    (they exercise names defined elsewhere: ``test_parse`` does not define ``parse``),
    nor a stub's beside its module (``x.pyi`` declares what ``x.py`` defines)."""
    parts = path.split("/")
    if any(d.lower() in _TEST_DIRS for d in parts[:-1]):
        return False
    name = parts[-1].lower()
    if name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py":
        return False
    return not (path.endswith(".pyi") and path[:-1] in present)


def is_test_name(symbol: str) -> bool:
    """A test function's or method's name (``test_...``), wherever it lives."""
    return symbol.rpartition(".")[2].startswith("test_")


@lru_cache(maxsize=1 << 16)
def name_terms(name: str) -> tuple[str, ...]:
    """The terms of a defined name, as the code tokenizer gives them."""
    return tuple(tokenize(name))


@dataclass(frozen=True)
class FileLane:
    """Files: one row per path, the file of each chunk row, and the files' definitions."""

    definitions: Field
    file_of_row: np.ndarray

    @classmethod
    def build(cls, paths: Sequence[str], definitions: csr_matrix) -> FileLane:
        """``paths``: of each chunk row; ``definitions``: each row's defined names' term
        counts (:func:`definition_counts`)."""
        import numpy as np
        from scipy.sparse import csr_matrix

        n = len(paths)
        names, file_of_row = np.unique(np.asarray(paths, dtype=object), return_inverse=True)
        file_of_row = np.asarray(file_of_row, dtype=np.int64).ravel()
        sum_rows = csr_matrix(
            (np.ones(n), (file_of_row, np.arange(n))), shape=(len(names), n), dtype="float64"
        )
        return cls(Field(sum_rows @ definitions), file_of_row)

    @property
    def n_files(self) -> int:
        return int(self.definitions.counts.shape[0])

    def definitions_match(self, counts: QueryVector) -> np.ndarray:
        """Each file's definitions' BM25 for a query's ``counts``, over the best file's."""
        field = self.definitions
        raw = field.scores(field.bm25, field.query_bm25(counts))
        top = float(raw.max()) if len(raw) else 0.0
        return raw / top if top > 0 else raw

    def relevance(
        self, counts: QueryVector, files: np.ndarray, chunk_tfidf: np.ndarray
    ) -> np.ndarray:
        """Each file's score in [0, 1] (1: the best file), by file row, for a query's
        ``counts``: its best chunk's TF-IDF cosine plus its definitions' match. The chunks
        are given by their files and cosines; those above zero suffice (a file with none
        scores 0 there), so a query never passes over every chunk."""
        import numpy as np

        best = np.zeros(self.n_files)
        np.maximum.at(best, files, chunk_tfidf)
        score = best + DEFINITIONS_SHARE * self.definitions_match(counts)
        top = float(score.max()) if len(score) else 0.0
        out: np.ndarray = score / top if top > 0 else score
        return out
