"""Tier2's pure parts: the brief hash, the prompt, clipping, the cache's paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.pipeline.tier2 import (
    Tier2Result,
    brief_sha,
    cache_path,
    read_cached,
    synthesis_messages,
    write_synthesis,
)
from app.stage0.brief import Brief, BriefMetadata
from app.stage0.citations import Claim, Synthesis
from app.stage0.result import CorpusInfo, QueryParams, SelectedChunk
from app.tokens import count_text


def _chunk(cid: str, text: str, path: str = "pkg/ledger.py", start: int = 10) -> SelectedChunk:
    return SelectedChunk(
        id=cid,
        path=path,
        start=start,
        end=start + 2,
        kind="method",
        symbol="Ledger.reserve",
        lane="chunks",
        relevance=1.0,
        redundancy=0.0,
        mmr=0.7,
        tokens=20,
        text=text,
    )


def make_brief(
    chunks: list[SelectedChunk] | None = None,
    memories: tuple[str, ...] = ("Settling twice was a bug.",),
    task: str = "reserve budget",
    budget_used: int = 40,
) -> Brief:
    chunks = chunks if chunks is not None else [_chunk("aaaaaaaaaaaa", "def reserve(): pass")]
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
    corpus = CorpusInfo(hash="0" * 16, files=1, chunks=len(chunks), code_units=1, skipped={})
    return Brief(
        task=task,
        constitution=None,
        spec=None,
        memories=list(memories),
        code=chunks,
        docs=[],
        risks=[],
        approach=[],
        metadata=BriefMetadata(
            query=task,
            params=params,
            corpus_hash=corpus.hash,
            corpus=corpus,
            chunk_ids=[c.id for c in chunks],
            budget_used=budget_used,
            reserved_tokens=5,
        ),
    )


def test_brief_sha_is_deterministic_over_content_not_metadata() -> None:
    base = make_brief()
    assert brief_sha(base) == brief_sha(make_brief())
    assert len(brief_sha(base)) == 64
    assert brief_sha(make_brief(budget_used=999)) == brief_sha(base)
    assert brief_sha(make_brief(task="other task")) != brief_sha(base)
    assert brief_sha(make_brief(memories=())) != brief_sha(base)
    changed = [_chunk("aaaaaaaaaaaa", "def reserve(): return 1")]
    assert brief_sha(make_brief(changed)) != brief_sha(base)
    moved = [_chunk("aaaaaaaaaaaa", "def reserve(): pass", start=11)]
    assert brief_sha(make_brief(moved)) != brief_sha(base)


def test_the_prompt_lists_every_citable_source_with_its_location() -> None:
    brief = make_brief(
        [
            _chunk("aaaaaaaaaaaa", "def reserve(): pass"),
            _chunk("bbbbbbbbbbbb", "Reserve, then settle.", "docs/ledger.md", 1),
        ],
        memories=("first memory", "second memory"),
    )
    system, user = synthesis_messages(brief)
    assert system.role == "system" and "cites" in system.content
    assert user.content.startswith("Task: reserve budget")
    for needle in (
        "=== source aaaaaaaaaaaa · pkg/ledger.py:10-12 (method Ledger.reserve) ===\n"
        "def reserve(): pass\n=== end ===",
        "source bbbbbbbbbbbb · docs/ledger.md:1-3",
        "=== source memory:1 · a memory of earlier work ===\nfirst memory",
        "source memory:2",
    ):
        assert needle in user.content


def test_an_empty_brief_says_so() -> None:
    _, user = synthesis_messages(make_brief([], memories=()))
    assert "(the brief holds no citable source)" in user.content


@pytest.mark.parametrize("budget", [0, 50, 400, 2000])
def test_sources_are_clipped_to_the_budget_but_every_id_stays(budget: int) -> None:
    chunks = [_chunk(f"{i:012x}", "word " * 400) for i in range(10)]
    brief = make_brief(chunks)
    _, user = synthesis_messages(brief, source_tokens=budget)
    sources = user.content.split("Sources:\n\n", 1)[1]
    # every id is listed; the headers and markers alone may exceed a tiny budget
    assert all(f"source {c.id} ·" in sources for c in chunks)
    assert "source memory:1" in sources
    full = sum(count_text(c.text) for c in chunks)
    assert count_text(sources) < full
    markers = 11 * count_text("(left out to fit the window)\n=== end ===\n\n")
    headers = sum(count_text(h) + 4 for h in sources.splitlines() if h.startswith("=== so"))
    assert count_text(sources) <= max(budget, headers) + markers


def test_a_large_budget_keeps_every_source_whole() -> None:
    chunks = [_chunk(f"{i:012x}", "word " * 100) for i in range(3)]
    _, user = synthesis_messages(make_brief(chunks))
    assert "clipped" not in user.content and "left out" not in user.content
    assert user.content.count("word " * 99) == 3


def test_cache_path_uses_the_session_id_and_hashes_unsafe_ones(tmp_path: Path) -> None:
    assert cache_path(tmp_path, "abc123", "f" * 64) == tmp_path / "abc123" / f"{'f' * 64}.json"
    unsafe = cache_path(tmp_path, "../../etc", "f" * 64)
    assert unsafe.parent.parent == tmp_path and unsafe.parent.name.startswith("s-")


def _result(synthesis: Synthesis | None) -> Tier2Result:
    return Tier2Result(
        status="accepted" if synthesis else "dropped",
        synthesis=synthesis,
        session="s1",
        brief_sha="0" * 64,
        attempts=1,
        model="llama-3.1-8b",
    )


def test_write_synthesis_is_only_for_an_accepted_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_synthesis(_result(None), tmp_path)
    syn = Synthesis(claims=[Claim(text="x", cites=["aaaaaaaaaaaa"])])
    path = write_synthesis(_result(syn), tmp_path)
    data = json.loads(path.read_text())
    assert data["synthesis"] == syn.model_dump(mode="json") and data["model"] == "llama-3.1-8b"
    assert [p.name for p in tmp_path.iterdir()] == ["synthesis.json"]  # no temp file left


def test_read_cached_misses_on_another_brief_or_a_broken_file(tmp_path: Path) -> None:
    brief = make_brief()
    sha = brief_sha(brief)
    path = cache_path(tmp_path, "s1", sha)
    path.parent.mkdir(parents=True)
    syn = Synthesis(claims=[Claim(text="x", cites=["aaaaaaaaaaaa"])])
    entry = {"brief_sha": sha, "model": "m", "synthesis": syn.model_dump(mode="json")}
    path.write_text(json.dumps(entry))
    hit = read_cached(tmp_path, "s1", brief)
    assert hit is not None and hit["synthesis"] == syn
    assert read_cached(tmp_path, "s2", brief) is None
    path.write_text(json.dumps({**entry, "brief_sha": "1" * 64}))
    assert read_cached(tmp_path, "s1", brief) is None
    path.write_text("{not json")
    assert read_cached(tmp_path, "s1", brief) is None
