"""Stage0 on a real git repo: retrieval, the per-content cache, explain, budget, lanes."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.policy.schema import Policy
from app.stage0.engine import Stage0
from tests.integration.test_stage0_corpus import PARSER, backdate, make_repo, write

STATUSES = {"picked", "budget", "redundancy", "rank", "below_prefilter"}


def _with(policy: Policy, **stage0: object) -> Policy:
    return policy.model_copy(update={"stage0": policy.stage0.model_copy(update=stage0)})


def test_the_right_method_comes_first(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        result = s0.query("reserve an amount before the cloud call")
        top = result.chunks[0]
        assert (top.path, top.symbol, top.kind) == (
            "pkg/ledger.py",
            "BudgetLedger.reserve",
            "method",
        )
        lines = (repo / top.path).read_text().split("\n")
        assert top.text == "\n".join(lines[top.start - 1 : top.end])
        top = s0.query("retry backoff delay").chunks[0]
        assert top.symbol == "HTTPClient.retry_backoff"


def test_editing_one_file_reindexes_that_file_only(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        cold = s0.refresh()
    assert len(cold.read) == len(cold.tokenized) == 7  # every text file once
    with Stage0(repo, policy) as s0:  # a new process would do the same: all from disk
        warm = s0.refresh()
        ids_before = {r.path: r.id for r in s0.index.refs if r.path == "pkg/ledger.py"}
    assert (warm.read, warm.tokenized) == ([], [])
    write(repo, {"pkg/parser.py": PARSER.replace("unbalanced", "mismatched")})
    with Stage0(repo, policy) as s0:
        edited = s0.refresh()
        assert (edited.read, edited.tokenized) == (["pkg/parser.py"], ["pkg/parser.py"])
        assert s0.query("mismatched parenthesis").chunks[0].symbol == "parse_tokens"
        ids_after = {r.path: r.id for r in s0.index.refs if r.path == "pkg/ledger.py"}
    assert ids_after == ids_before
    backdate(repo, "pkg/parser.py")
    with Stage0(repo, policy) as s0:
        again = s0.refresh()  # re-read once (its stat changed), never re-tokenized
    assert again.read == ["pkg/parser.py"] and again.tokenized == []


def test_a_file_restored_to_old_content_is_not_tokenized_again(
    tmp_path: Path, policy: Policy
) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        s0.refresh()
    write(repo, {"pkg/parser.py": "X = 1\n"})
    with Stage0(repo, policy) as s0:
        assert s0.refresh().tokenized == ["pkg/parser.py"]
    write(repo, {"pkg/parser.py": PARSER})
    with Stage0(repo, policy) as s0:
        report = s0.refresh()
    assert report.read == ["pkg/parser.py"] and report.tokenized == []


def test_a_broken_cache_file_is_rebuilt(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path)
    cache = repo / ".switchyard" / "stage0" / "cache.sqlite"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"this is not sqlite" * 100)
    with Stage0(repo, policy) as s0:
        assert s0.query("budget ledger").chunks


def test_results_are_identical_cold_and_warm(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        cold = s0.query("parse tokens", explain=True).model_dump_json()
    with Stage0(repo, policy) as s0:
        warm = s0.query("parse tokens", explain=True).model_dump_json()
    assert cold == warm


def test_explain_says_why_each_candidate_was_picked_or_dropped(
    tmp_path: Path, policy: Policy
) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, _with(policy, prefilter=3)) as s0:
        result = s0.query("reservation budget ledger settle release", k=2, explain=True)
    assert result.explain is not None
    main = result.explain[0]
    assert (main.lane, main.k, main.candidates) == ("chunks", 2, 3)
    assert main.matched == main.candidates + main.below_prefilter
    statuses = [e.status for e in main.entries]
    assert statuses.count("picked") == 2 and "below_prefilter" in statuses
    assert set(statuses) <= STATUSES
    for e in main.entries:
        assert e.top_terms and e.matched_terms and e.reason
        assert e.top_terms == sorted(e.top_terms, key=lambda t: (-t.weight, t.term))
        assert 0 < e.relevance <= 1
        if e.status == "below_prefilter":
            assert e.mmr is None and e.rank > 3
        else:
            assert e.mmr == pytest.approx(0.7 * e.relevance - 0.3 * e.redundancy, abs=1e-5)
    picked = [e for e in main.entries if e.status == "picked"]
    assert [e.id for e in picked] == [c.id for c in result.chunks]
    assert picked[0].redundancy == 0.0


def test_the_budget_shrinks_to_the_readers_window(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        wide = s0.query("budget ledger reserve settle release parse tokens request")
        narrow = s0.query(
            "budget ledger reserve settle release parse tokens request",
            context_window=400,
            explain=True,
        )
    assert wide.params.budget_tokens == 8000
    assert narrow.params.budget_tokens == 200 and narrow.params.context_window == 400
    assert 0 < narrow.budget_used <= 200 < wide.budget_used
    assert sum(c.tokens for c in narrow.selected) == narrow.budget_used
    assert narrow.explain is not None
    assert any(e.status == "budget" for lane in narrow.explain for e in lane.entries)


def test_the_code_lane_holds_code_units_the_main_lane_did_not_take(
    tmp_path: Path, policy: Policy
) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        result = s0.query("budget ledger reserve settle release", k=1)
        assert s0.report.files == 7 and len(s0.code_index) < len(s0.index)
    assert len(result.chunks) == 1
    assert result.code_units
    assert {c.kind for c in result.code_units} <= {"function", "method", "class"}
    assert not {c.id for c in result.code_units} & {c.id for c in result.chunks}
    assert all(c.lane == "code" for c in result.code_units)


def test_both_weightings_rank_the_obvious_match_first(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path)
    for weighting in ("tfidf", "bm25", "hybrid"):
        with Stage0(repo, policy, weighting=weighting) as s0:
            top = s0.query("tokenize arithmetic expression operator").chunks[0]
        assert top.symbol == "tokenize_expression", weighting


def test_a_query_that_matches_nothing_selects_nothing(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        result = s0.query("zzzz qqqq", explain=True)
    assert result.chunks == [] and result.code_units == [] and result.budget_used == 0


def test_contents_no_file_has_any_more_are_pruned(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        s0.refresh()
    for i in range(12):  # 12 dead versions of one file: more than the 7 live contents
        write(repo, {"pkg/parser.py": f"VERSION = {i}\n"})
        with Stage0(repo, policy) as s0:
            s0.refresh()
            (rows,) = s0.cache._db.execute("SELECT COUNT(*) FROM blob").fetchone()
        assert rows <= 2 * 7 + 1
    assert rows < 7 + 12


def test_new_chunker_settings_reread_files_whose_stat_did_not_change(
    tmp_path: Path, policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.stage0.index as index_mod

    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        s0.refresh()
    monkeypatch.setattr(index_mod, "FEATURES_VERSION", "test-bump")
    with Stage0(repo, policy) as s0:
        report = s0.refresh()
        assert s0.query("parse tokens").chunks
    assert len(report.read) == len(report.tokenized) == 7 and not report.skipped


def test_a_stat_row_that_lies_is_dropped_and_the_file_read_next_time(
    tmp_path: Path, policy: Policy
) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        s0.refresh()
        with s0.cache._db as db:  # as if the file changed without its stat changing
            db.execute("UPDATE stat SET blob = ? WHERE path = 'pkg/parser.py'", ("0" * 40,))
    with Stage0(repo, policy) as s0:
        report = s0.refresh()
        assert report.unread == ["pkg/parser.py"] and report.skipped == {"unreadable": 1}
        assert "pkg/parser.py" not in {r.path for r in s0.index.refs}
    with Stage0(repo, policy) as s0:
        report = s0.refresh()
        assert report.read == ["pkg/parser.py"] and not report.skipped
        assert "pkg/parser.py" in {r.path for r in s0.index.refs}


def test_term_contributions_add_up_to_the_relevance(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path)
    for weighting in ("tfidf", "bm25", "hybrid"):
        with Stage0(repo, policy, weighting=weighting) as s0:
            query = "ledger reserve settle parse tokens"
            rel = s0.index.relevance(query)
            assert rel.min() >= 0 and rel.max() <= 1 + 1e-9
            for row in range(len(s0.index)):
                total = sum(w for _, w in s0.index.contributions(query, row))
                assert total == pytest.approx(rel[row], abs=1e-9), (weighting, row)


def test_path_tokens_count_for_every_chunk_of_the_file(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        refs = s0.index.refs
        rel = s0.index.relevance("ledger release")
    best = max(range(len(refs)), key=lambda r: rel[r])
    assert refs[best].symbol == "BudgetLedger.release"  # path "ledger" + text "release"
    in_file = sorted(
        (r for r in range(len(refs)) if refs[r].path == "pkg/ledger.py"), key=lambda r: -rel[r]
    )
    assert all(rel[r] > 0 for r in in_file)  # every chunk of the file shares its path


def _same_index(a: Stage0, b: Stage0) -> None:
    ia, ib = a.index, b.index
    assert ia.terms == ib.terms
    assert ia.refs == ib.refs
    for name in ("text_counts", "path_counts"):
        ma, mb = getattr(ia, name), getattr(ib, name)
        assert (ma != mb).nnz == 0 and ma.shape == mb.shape
        assert ma.indices.tolist() == mb.indices.tolist()


def test_an_incremental_build_equals_a_build_from_scratch(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        s0.refresh()
    write(repo, {"pkg/parser.py": "def brand_new_function(zeta):\n    return zeta\n"})
    write(repo, {"pkg/extra.py": "class Fresh:\n    '''Quux widget.'''\n"})
    (repo / "docs" / "guide.md").unlink()
    query = "brand new quux widget ledger"
    with Stage0(repo, policy) as warm:
        report = warm.refresh()
        assert report.tokenized == ["pkg/extra.py", "pkg/parser.py"]
        with Stage0(repo, policy, cache_dir=tmp_path / "scratch") as cold:
            _same_index(warm, cold)
            assert "tokens" not in warm.index.vocab  # parse_tokens is gone with its file
            explained = warm.query(query, explain=True).model_dump_json()
            assert explained == cold.query(query, explain=True).model_dump_json()


def test_a_stale_or_broken_snapshot_is_ignored(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        s0.refresh()
        expected = s0.query("ledger").model_dump_json()
    snap = repo / ".switchyard" / "stage0" / "index.npz"
    assert snap.exists()
    snap.write_bytes(b"garbage")
    with Stage0(repo, policy) as s0:
        assert s0.query("ledger").model_dump_json() == expected
    small = _with(policy, chunk_lines=20)  # other chunker settings: snapshot not used
    with Stage0(repo, small) as s0:
        s0.refresh()
        assert s0.cache.snapshot.params.startswith("20:")


def test_each_chunk_text_is_read_on_its_own() -> None:
    from app.stage0.cache import pack_texts, unpack_text, unpack_texts

    texts = ["def a():\n    return 1\n", "", "ünïcödé ✓\n" * 50, "x"]
    packed = pack_texts(texts)
    assert unpack_texts(packed) == texts
    assert [unpack_text(packed, i) for i in (3, 0, 2)] == [texts[3], texts[0], texts[2]]
    with pytest.raises(IndexError):
        unpack_text(packed, 4)
    assert unpack_texts(pack_texts([])) == []


def test_a_cache_of_another_schema_is_emptied_with_its_snapshot(
    tmp_path: Path, policy: Policy
) -> None:
    import sqlite3

    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        s0.refresh()
        expected = s0.query("ledger").model_dump_json()
    state = repo / ".switchyard" / "stage0"
    db = sqlite3.connect(state / "cache.sqlite")
    with db:
        db.execute("UPDATE meta SET value = 'old' WHERE key = 'schema'")
        db.execute("UPDATE blob SET texts = x'00'")  # what an older layout would hold
    db.close()
    assert (state / "index.npz").exists()
    with Stage0(repo, policy) as s0:
        report = s0.refresh()
        assert {r.path for r in s0.index.refs} <= set(report.tokenized)  # all read again
        assert s0.query("ledger").model_dump_json() == expected


def test_files_that_hold_no_term_are_indexed_new_or_edited(tmp_path: Path, policy: Policy) -> None:
    """``def f(): pass`` is stopwords and a one-letter name: a fresh repository of that one
    file (and an edit that left the only changed file so) crashed the index build on an
    assertion, so `stage0 brief` ended in a traceback."""
    repo = make_repo(tmp_path, {"a.py": "def f(): pass\n"})
    with Stage0(repo, policy) as s0:
        report = s0.refresh()
        assert report.files == 1
        assert s0.query("f").chunks == []
    write(repo, {"b.py": "def reserve_budget(amount):\n    return amount\n"})
    with Stage0(repo, policy) as s0:
        s0.refresh()
        assert s0.query("reserve budget").chunks[0].path == "b.py"
    write(repo, {"b.py": "def g(): pass\n"})
    with Stage0(repo, policy) as s0:
        s0.refresh()
        assert s0.query("reserve budget").chunks == []
