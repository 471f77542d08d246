"""GR-008: a synthesis cites only what the brief holds and quotes it verbatim."""

from __future__ import annotations

import json

import pytest

from app.stage0.brief import Brief, BriefMetadata
from app.stage0.citations import (
    Claim,
    Synthesis,
    contradictions_detected,
    validate_synthesis,
)
from app.stage0.context import context_estimate
from app.stage0.result import CorpusInfo, QueryParams, SelectedChunk
from app.tokens import count_text

CODE = 'def reserve(self, amount):\n    """Hold   amount until settled."""\n    return amount'


def _chunk(cid: str, text: str, path: str = "pkg/ledger.py") -> SelectedChunk:
    return SelectedChunk(
        id=cid,
        path=path,
        start=10,
        end=12,
        kind="method",
        symbol="Ledger.reserve",
        lane="chunks",
        relevance=1.0,
        redundancy=0.0,
        mmr=0.7,
        tokens=20,
        text=text,
    )


@pytest.fixture
def brief() -> Brief:
    params = QueryParams(
        weighting="tfidf",
        mmr_lambda=0.7,
        prefilter=150,
        top_k=15,
        code_top_k=10,
        token_budget=8000,
        budget_tokens=8000,
        context_window=None,
        chunk_lines=60,
        chunk_overlap=10,
    )
    corpus = CorpusInfo(hash="0" * 16, files=1, chunks=2, code_units=1, skipped={})
    return Brief(
        task="reserve budget",
        constitution=None,
        spec=None,
        memories=["Settling twice was a bug in March."],
        code=[_chunk("aaaaaaaaaaaa", CODE)],
        docs=[_chunk("bbbbbbbbbbbb", "# Ledger\nReserve, then settle.", "docs/ledger.md")],
        risks=[],
        approach=[],
        metadata=BriefMetadata(
            query="reserve budget",
            params=params,
            corpus_hash=corpus.hash,
            corpus=corpus,
            chunk_ids=["aaaaaaaaaaaa", "bbbbbbbbbbbb"],
            budget_used=40,
            reserved_tokens=5,
        ),
    )


def test_a_grounded_synthesis_passes(brief: Brief) -> None:
    syn = Synthesis(
        claims=[
            Claim(text="reserve holds the amount", cites=["aaaaaaaaaaaa"], quote="Hold amount"),
            Claim(text="settle follows reserve", cites=["bbbbbbbbbbbb", "aaaaaaaaaaaa"]),
            Claim(text="double settle bit us", cites=["memory:1"], quote="Settling twice"),
        ]
    )
    assert validate_synthesis(syn, brief).model_dump() == {"ok": True, "problems": []}


def test_a_fabricated_id_is_rejected(brief: Brief) -> None:
    syn = [Claim(text="it retries", cites=["deadbeef0000"])]
    report = validate_synthesis(syn, brief)
    assert not report.ok
    assert report.problems == ["claim 1: cites 'deadbeef0000', which is not in the brief"]


def test_a_misquoted_span_is_rejected(brief: Brief) -> None:
    syn = [Claim(text="x", cites=["aaaaaaaaaaaa"], quote="Hold the amount until settled")]
    report = validate_synthesis(syn, brief)
    assert not report.ok
    assert report.problems == [
        "claim 1: quote 'Hold the amount until settled' is not found verbatim in aaaaaaaaaaaa"
    ]


def test_a_quote_from_another_chunk_than_the_cited_one_is_rejected(brief: Brief) -> None:
    syn = [Claim(text="x", cites=["bbbbbbbbbbbb"], quote="return amount")]
    assert not validate_synthesis(syn, brief).ok


def test_whitespace_runs_and_line_breaks_match_one_space(brief: Brief) -> None:
    syn = [Claim(text="x", cites=["aaaaaaaaaaaa"], quote='(self, amount):\n  """Hold amount')]
    assert validate_synthesis(syn, brief).ok


def test_a_claim_without_citation_and_an_empty_quote_are_rejected(brief: Brief) -> None:
    syn = [Claim(text="trust me"), Claim(text="y", cites=["aaaaaaaaaaaa"], quote="  ")]
    assert validate_synthesis(syn, brief).problems == [
        "claim 1: cites nothing",
        "claim 2: empty quote",
    ]


def test_json_text_and_plain_dicts_are_accepted(brief: Brief) -> None:
    text = json.dumps({"claims": [{"text": "x", "cites": ["aaaaaaaaaaaa"], "quote": "amount"}]})
    assert validate_synthesis(text, brief).ok
    assert validate_synthesis([{"text": "x", "cites": ["nope"]}], brief).ok is False


@pytest.mark.parametrize(
    ("raw", "start"),
    [
        ("{not json", "synthesis: not valid JSON"),
        ('{"claims": [{"cites": "aaaaaaaaaaaa"}]}', "synthesis: does not match the schema"),
        ('{"claims": []}', "synthesis: no claims"),
    ],
)
def test_malformed_synthesis_is_a_problem_not_a_crash(brief: Brief, raw: str, start: str) -> None:
    report = validate_synthesis(raw, brief)
    assert not report.ok and report.problems[0].startswith(start)


def test_contradictions_are_checked_and_detected(brief: Brief) -> None:
    claims = [{"text": "x", "cites": ["aaaaaaaaaaaa"]}]
    good = {"claims": claims, "contradictions": [{"a": "aaaaaaaaaaaa", "b": "memory:1"}]}
    bad = {"claims": claims, "contradictions": [{"a": "aaaaaaaaaaaa", "b": "zzz"}]}
    none = {"claims": claims}
    assert contradictions_detected(json.dumps(good), brief) is True
    assert contradictions_detected(json.dumps(none), brief) is False
    assert validate_synthesis(json.dumps(bad), brief).problems == [
        "contradiction 1: 'zzz' is not in the brief"
    ]
    assert contradictions_detected(json.dumps(bad), brief) is False


def test_context_estimate_sums_the_shared_counter() -> None:
    assert context_estimate([]) == 0
    assert context_estimate(["", ""]) == 0
    # one shared counter (app.tokens): a 7-letter word is 2 tokens, a 14-letter one 3
    assert context_estimate(["x" * 7, "y" * 14]) == count_text("x" * 7) + count_text("y" * 14)
    assert context_estimate(["x" * 7, "y" * 14]) == 2 + 3
