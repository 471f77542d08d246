"""The file lane (a file's best chunk and what it defines, blended into its chunks'
relevance) and the similarity rows MMR reads one at a time."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from app.stage0.filelane import DEFINITIONS_SHARE, FILE_TERM, FileLane
from app.stage0.index import ChunkRef, Index, path_terms
from app.stage0.tokenize import tokenize
from app.stage0.weights import SimilarityRows


def _index(chunks: list[tuple[str, str]], **kwargs: float) -> Index:
    """An index over ``(path, text)`` chunks, counted the way a build counts them."""
    texts = [Counter(tokenize(text)) for _, text in chunks]
    paths = [Counter(path_terms(path)) for path, _ in chunks]
    terms = sorted(set().union(*texts, *paths))
    col = {t: i for i, t in enumerate(terms)}

    def matrix(rows: list[Counter[str]]) -> csr_matrix:
        data, ind, ptr = [], [], [0]
        for counts in rows:
            for t in sorted(counts, key=col.__getitem__):
                ind.append(col[t])
                data.append(float(counts[t]))
            ptr.append(len(ind))
        return csr_matrix((data, ind, ptr), shape=(len(rows), len(terms)))

    def symbol(text: str) -> str | None:
        m = re.match(r"def (\w+)", text)
        return m.group(1) if m else None

    refs = [
        ChunkRef(
            f"id{i}", path, i * 10 + 1, i * 10 + 9, "function", symbol(text), 10, f"k{path}", i
        )
        for i, (path, text) in enumerate(chunks)
    ]
    return Index(refs, terms, matrix(texts), matrix(paths), "hybrid", **kwargs)


# Chunk by chunk, b.py's is the best match (its one chunk says two of the three words)
# and a.py's second (each of its chunks says one). a.py defines all three words
# (retry(), timeout(), pool()), b.py one of them (retry_timeout() splits into two).
CHUNKS = [
    ("pkg/a.py", "def retry(): backoff"),
    ("pkg/a.py", "def timeout(): limit"),
    ("pkg/a.py", "def pool(): connections"),
    ("pkg/a.py", "def unrelated(): nothing here"),
    ("pkg/b.py", "def retry_timeout(): retry timeout seconds"),
    ("pkg/b.py", "def helper(): alpha beta gamma delta epsilon zeta theta iota kappa lambda"),
    ("pkg/c.py", "def other(): words"),
    ("pkg/e.py", "def first(): retry alpha beta gamma delta epsilon"),
    ("pkg/e.py", "def second(): timeout zeta theta iota kappa"),
    ("pkg/e.py", "def third(): pool lambda sigma omega upsilon"),
]
QUERY = "retry timeout pool"


def _files_by_best_chunk(index: Index, rel: np.ndarray) -> list[str]:
    best: dict[str, float] = {}
    for ref, score in zip(index.refs, rel.tolist(), strict=True):
        best[ref.path] = max(best.get(ref.path, 0.0), score)
    return [p for p, s in sorted(best.items(), key=lambda kv: (-kv[1], kv[0])) if s > 0]


def test_a_file_scores_its_best_chunk_plus_its_definitions_over_the_best_file():
    index = _index(CHUNKS, file_share=1.0)
    counts = index.query_counts(QUERY)
    from app.stage0.weights import tfidf_query

    field = index.field
    cosines = field.scores(field.tfidf, tfidf_query(field, counts))
    lane = index.files
    defs = lane.definitions_match(counts)
    assert defs.max() == pytest.approx(1.0) and defs[lane.n_files - 2] == 0.0  # c.py
    best = [
        max(c for c, f in zip(cosines, lane.file_of_row, strict=True) if f == file)
        for file in range(lane.n_files)
    ]
    expected = np.array(best) + DEFINITIONS_SHARE * defs
    got = lane.relevance(counts, lane.file_of_row, cosines)
    assert got == pytest.approx(expected / expected.max())


def test_a_file_that_defines_what_the_query_names_ranks_above_one_that_only_uses_it():
    chunks = [
        ("pkg/a.py", "def parse(): return load_cookie(value)"),
        ("pkg/b.py", "def load_cookie(): return parse(value)"),
    ]
    alone = _index(chunks, file_share=0.0)
    assert alone.relevance("load cookie")[0] == pytest.approx(alone.relevance("load cookie")[1])
    fused = _index(chunks)
    assert _files_by_best_chunk(fused, fused.relevance("load cookie")) == ["pkg/b.py", "pkg/a.py"]


def test_the_file_lane_ranks_files_by_their_best_chunk_and_definitions():
    alone = _index(CHUNKS, file_share=0.0)
    files_only = _index(CHUNKS, file_share=1.0)
    assert _files_by_best_chunk(alone, alone.relevance(QUERY)) == [
        "pkg/b.py",
        "pkg/a.py",
        "pkg/e.py",
    ]
    fused = files_only.relevance(QUERY)
    assert _files_by_best_chunk(files_only, fused) == ["pkg/b.py", "pkg/a.py", "pkg/e.py"]
    # a.py defines all three words: its file lane narrows b.py's lead
    chunks = alone.relevance(QUERY)
    assert fused[:3].max() / fused[4] > chunks[:3].max() / chunks[4]


def test_the_default_share_lies_between_the_chunks_alone_and_the_files_alone():
    alone = _index(CHUNKS, file_share=0.0).relevance(QUERY)
    files_only = _index(CHUNKS, file_share=1.0).relevance(QUERY)
    share = 0.8
    fused = _index(CHUNKS, file_share=share).relevance(QUERY)
    assert fused == pytest.approx((1 - share) * alone + share * files_only, abs=1e-12)


def test_the_file_lane_keeps_the_order_of_chunks_within_a_file():
    alone = _index(CHUNKS, file_share=0.0).relevance(QUERY)
    fused = _index(CHUNKS).relevance(QUERY)
    rows = [7, 8, 9]  # e.py's matching chunks
    assert sorted(rows, key=lambda r: -alone[r]) == sorted(rows, key=lambda r: -fused[r])


def test_a_chunk_that_matches_nothing_stays_at_zero_in_the_best_file():
    fused = _index(CHUNKS).relevance("retry backoff")
    # a.py's unrelated chunk shares no word with the query (nor does its path)
    assert fused[3] == 0.0
    assert fused[0] > 0.0
    assert fused.max() <= 1.0 + 1e-12


def test_contributions_name_the_file_lane_and_still_add_up():
    index = _index(CHUNKS)
    rel = index.relevance(QUERY)
    for row in range(len(index)):
        parts = index.contributions(QUERY, row)
        assert sum(w for _, w in parts) == pytest.approx(rel[row], abs=1e-12)
        assert (FILE_TERM in dict(parts)) == (rel[row] > 0)


def test_a_query_with_no_known_word_scores_nothing():
    assert not _index(CHUNKS).relevance("zebra quagga").any()


def test_a_files_definitions_are_the_names_its_chunks_define():
    index = _index(CHUNKS)
    lane = index.files
    assert lane.n_files == 4 and bool(np.all(np.diff(lane.file_of_row) >= 0))  # path order
    b = lane.definitions.counts.getrow(1).toarray().ravel()
    col = index.vocab
    # retry_timeout() and helper(): the whole name and its parts; not its body's words
    assert b[col["retry_timeout"]] == 1 and b[col["retry"]] == 1 and b[col["timeout"]] == 1
    assert b[col["helper"]] == 1 and b[col["seconds"]] == 0 and b[col["pkg"]] == 0
    assert lane.file_of_row.tolist() == [0, 0, 0, 0, 1, 1, 2, 3, 3, 3]


def test_a_files_best_chunk_is_the_same_whether_rows_are_grouped_by_file_or_not():
    index = _index(CHUNKS)
    paths = [r.path for r in index.refs]
    order = [4, 0, 6, 1, 7, 2, 5, 3, 9, 8]  # not grouped by file
    shuffled = FileLane.build([paths[i] for i in order], index.definitions[order])
    assert not bool(np.all(np.diff(shuffled.file_of_row) >= 0))
    scores = np.array([0.1, 0.7, 0.3, 0.0, 0.5, 0.6, 0.2, 0.0, 0.4, 0.1])
    nothing = index.query_counts("zebra quagga")  # no definition matches: the best chunks
    grouped = index.files.relevance(nothing, index.files.file_of_row, scores)
    assert grouped.tolist() == pytest.approx([1.0, 0.6 / 0.7, 0.2 / 0.7, 0.4 / 0.7])
    mixed = shuffled.relevance(nothing, shuffled.file_of_row, scores[order])
    assert mixed.tolist() == grouped.tolist()


def test_similarity_rows_are_the_rows_of_the_dense_similarity():
    index = _index(CHUNKS)
    rows = [4, 0, 2, 9]
    dense = index.similarity(rows)
    lazy = index.similarity_rows(rows)
    assert len(lazy) == 4
    for i in range(4):
        assert lazy[i] == pytest.approx(dense[i], abs=1e-12)
    assert len(SimilarityRows(index.plain.tfidf, [])) == 0


def test_a_chunks_own_relevance_is_the_relevance_without_the_file_lane():
    index = _index(CHUNKS)
    alone = _index(CHUNKS, file_share=0.0).relevance(QUERY)
    own = index.own_relevance(QUERY)
    assert own == pytest.approx(alone, abs=1e-12)
    assert not np.allclose(own, index.relevance(QUERY))
    for row in range(len(index)):
        parts = index.contributions(QUERY, row, own=True)
        assert FILE_TERM not in dict(parts)
        assert sum(w for _, w in parts) == pytest.approx(own[row], abs=1e-12)


def test_tests_and_stubs_beside_their_module_define_nothing():
    from app.stage0.filelane import defines

    present = {"pkg/a.py", "pkg/a.pyi", "stubs/only.pyi", "tests/test_a.py"}
    assert defines("pkg/a.py", present)
    assert not defines("pkg/a.pyi", present)  # a.py defines what it declares
    assert defines("stubs/only.pyi", present)  # no module beside it
    for path in ("tests/test_a.py", "pkg/tests/helpers.py", "Testing/util.py"):
        assert not defines(path, present)
    for path in ("pkg/test_a.py", "pkg/a_test.py", "conftest.py"):
        assert not defines(path, present)
    assert defines("pkg/testclient.py", present) and defines("pkg/latest.py", present)


def test_a_test_does_not_define_what_it_exercises():
    chunks = [
        ("pkg/cookies.py", "def load_cookie(): return parse(value)"),
        ("pkg/cookies.py", "def test_load_cookie_inline(): load_cookie()"),
        ("tests/test_cookies.py", "def load_cookie_fixture(): return load_cookie()"),
    ]
    index = _index(chunks)
    rows = index.definitions.toarray()
    col = index.vocab
    assert rows[0][col["load_cookie"]] == 1
    assert not rows[1].any()  # test_... defines nothing, even in a module
    assert not rows[2].any()  # nor does anything in a test file
    lane = index.files
    assert lane.definitions_match(index.query_counts("load cookie")).tolist() == [1.0, 0.0]


def _whole_array_relevance(index: Index, query: str) -> tuple[np.ndarray, np.ndarray]:
    """Relevance and own relevance summed over every row, as the index did before it
    summed over the rows holding a query term alone: the values must be the same bits."""
    from app.stage0.weights import field_parts, tfidf_query

    counts = index.query_counts(query)
    field = index.field
    parts, raws = field_parts(
        field, counts, index.weighting, 1.0, lambda: tfidf_query(field, counts)
    )
    own = np.zeros(len(index))
    for part, raw in zip(parts, raws, strict=True):
        own = own + part.scale * raw
    lane = index.file_share if counts.nnz else 0.0
    if not lane:
        return own, own
    cosines = field.scores(field.tfidf, tfidf_query(field, counts))
    files = index.files
    every = lane * files.relevance(counts, files.file_of_row, cosines)  # every row, zeros too
    by_file = np.take(every, files.file_of_row) * (own > 0)
    return own * (1.0 - lane) + by_file, own


@pytest.mark.parametrize("weighting", ["tfidf", "bm25", "hybrid"])
@pytest.mark.parametrize("share", [0.0, 0.8, 1.0])
@pytest.mark.parametrize("query", [QUERY, "retry backoff", "alpha pool", "zebra quagga", ""])
def test_relevance_over_the_matching_rows_alone_is_the_whole_arrays_to_the_bit(
    weighting: str, share: float, query: str
) -> None:
    base = _index(CHUNKS, file_share=share)
    index = Index(
        base.refs, base.terms, base.text_counts, base.path_counts, weighting, file_share=share
    )
    relevance, own = _whole_array_relevance(index, query)
    assert index.relevance(query).tolist() == relevance.tolist()
    assert index.own_relevance(query).tolist() == own.tolist()
    rows, at_rows, own_at_rows = index.matched(query)
    assert rows.tolist() == np.flatnonzero(relevance > 0).tolist()
    assert at_rows.tolist() == relevance[rows].tolist()
    assert own_at_rows.tolist() == own[rows].tolist()


def test_a_files_relevance_from_its_matching_chunks_is_the_same_as_from_all():
    index = _index(CHUNKS)
    counts = index.query_counts(QUERY)
    from app.stage0.weights import tfidf_query

    field = index.field
    cosines = field.scores(field.tfidf, tfidf_query(field, counts))
    held = np.flatnonzero(cosines > 0)
    lane = index.files
    at = lane.relevance(counts, lane.file_of_row[held], cosines[held])
    assert at.tolist() == lane.relevance(counts, lane.file_of_row, cosines).tolist()
    # and with rows not grouped by file
    paths = [r.path for r in index.refs]
    order = [4, 0, 6, 1, 7, 2, 5, 3, 9, 8]
    shuffled = FileLane.build([paths[i] for i in order], index.definitions[order])
    mixed = cosines[order]
    held = np.flatnonzero(mixed > 0)
    assert (
        shuffled.relevance(counts, shuffled.file_of_row[held], mixed[held]).tolist()
        == shuffled.relevance(counts, shuffled.file_of_row, mixed).tolist()
    )


def test_similarity_rows_without_scipys_own_loop_are_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.stage0 import weights

    index = _index(CHUNKS)
    rows = [4, 0, 2, 9, 3]
    quick = index.similarity_rows(rows)
    assert quick._rows is None  # scipy's loop called directly
    monkeypatch.setattr(weights, "_csr_matvec", lambda: None)
    public = index.similarity_rows(rows)
    assert public._rows is not None
    for i in range(len(rows)):
        assert quick[i].tolist() == public[i].tolist()


def test_similarity_rows_share_one_scratch_per_thread_and_leave_it_zero() -> None:
    import threading

    index = _index(CHUNKS)
    matrix = index.plain.tfidf
    a, b = index.similarity_rows([4, 0, 2]), index.similarity_rows([9, 3, 0])
    assert a._spread is b._spread
    read = [a[0].tolist(), b[0].tolist(), a[2].tolist(), b[1].tolist()]
    alone = [
        SimilarityRows(matrix, [4, 0, 2])[0].tolist(),
        SimilarityRows(matrix, [9, 3, 0])[0].tolist(),
        SimilarityRows(matrix, [4, 0, 2])[2].tolist(),
        SimilarityRows(matrix, [9, 3, 0])[1].tolist(),
    ]
    assert read == alone
    assert not a._spread.any()
    other: list[np.ndarray] = []
    thread = threading.Thread(target=lambda: other.append(index.similarity_rows([1])._spread))
    thread.start()
    thread.join()
    assert other[0] is not a._spread
