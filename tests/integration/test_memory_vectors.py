"""Filling the vector cache a batch at a time, each batch kept once stored (real SQLite,
a fake embedder: what is asserted is which memories get a vector, not what it says)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from app.clock import ManualClock
from app.errors import SwitchyardError
from app.memory import vectors
from app.memory.embeddings import EmbeddingKey, Vectors, normalize_rows
from app.memory.store import MemoryStore
from app.memory.types import NewMemory

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
DIM = 8


class Interrupted(BaseException):
    """What the fake embedder raises where a Ctrl-C would have stopped the fill (a
    KeyboardInterrupt: no Exception, so nothing takes it for a failed embedding)."""


class Hashed:
    """Vectors from a hash of each word; stops once ``stop_after`` texts are embedded."""

    def __init__(self, *, stop_after: int | None = None) -> None:
        self.calls: list[list[str]] = []
        self.stop_after = stop_after

    @property
    def key(self) -> EmbeddingKey:
        return EmbeddingKey("hashed-words", "test-1", DIM)

    @property
    def embedded(self) -> int:
        return sum(len(c) for c in self.calls)

    def embed(self, texts: Sequence[str]) -> Vectors:
        if self.stop_after is not None and self.embedded + len(texts) > self.stop_after:
            raise Interrupted(f"stopped after {self.embedded} texts")
        self.calls.append(list(texts))
        rows = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                rows[row, hashlib.sha256(word.encode()).digest()[0] % DIM] += 1.0
        return normalize_rows(rows)


@pytest.fixture(autouse=True)
def _small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectors, "EMBED_BATCH", 3)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "memory.sqlite3"


def commits(n: int) -> list[NewMemory]:
    return [
        NewMemory(text=f"commit {i} " + "word " * i, kind="commit", source_key=f"git:{i}")
        for i in range(n)
    ]


async def vector_count(db: Path) -> int:
    async with MemoryStore.open(db, clock=ManualClock(T0)) as store:
        return sum((await store.embedding_counts()).values())


async def test_an_interrupted_first_search_keeps_the_vectors_it_stored(db: Path) -> None:
    async with MemoryStore.open(db, clock=ManualClock(T0)) as store:  # harvest --no-embed
        await store.add_many(commits(10))
    # The first search opens the store with a model: it embeds what has no vector, and
    # is stopped in its third batch.
    with pytest.raises(Interrupted):
        await MemoryStore.open(db, clock=ManualClock(T0), embedder=Hashed(stop_after=7))
    assert await vector_count(db) == 6
    again = Hashed()
    async with MemoryStore.open(db, clock=ManualClock(T0), embedder=again) as store:
        assert again.embedded == 4  # only what the stopped search had not stored
        assert await store.embedding_counts() == {again.key: 10}


async def test_an_interrupted_harvest_keeps_its_memories_and_the_batches_embedded(
    db: Path,
) -> None:
    stopped = Hashed(stop_after=7)
    async with MemoryStore.open(db, clock=ManualClock(T0), embedder=stopped) as store:
        with pytest.raises(Interrupted):
            await store.add_many(commits(10))
        # Every memory was stored before the first was embedded: none is lost, and the
        # vectors of the batches that finished are kept.
        assert await store.count() == 10
        assert await store.embedding_counts() == {stopped.key: 6}
    again = Hashed()
    async with MemoryStore.open(db, clock=ManualClock(T0), embedder=again) as store:
        assert again.embedded == 4
        assert await store.add_many(commits(10)) == [None] * 10  # harvested once
        assert again.embedded == 4 and await store.embedding_counts() == {again.key: 10}


async def test_a_memory_added_later_is_embedded_at_the_next_search(db: Path) -> None:
    embedder = Hashed()
    async with MemoryStore.open(db, clock=ManualClock(T0), embedder=embedder) as store:
        await store.add_many(commits(4))
        # Another process adds a memory without a model (`memory add --no-embed`, a run's
        # outcome) while this store is open.
        async with MemoryStore.open(db, clock=ManualClock(T0)) as other:
            late = await other.add("zebra crossing on the parser", kind="note")
        assert await store.embedding_counts() == {embedder.key: 4}
        hits = await store.search("zebra crossing")
        assert await store.embedding_counts() == {embedder.key: 5}
        (hit,) = [h for h in hits if h.memory.id == late]
        assert hit.embedding_model == embedder.key.label() and hit.embedding > 0.3
        assert embedder.calls[-2:] == [["zebra crossing on the parser"], ["zebra crossing"]]


async def test_each_stored_batch_is_told_and_like_lengths_go_together(db: Path) -> None:
    told: list[tuple[str, int, int]] = []
    embedder = Hashed()
    async with MemoryStore.open(
        db,
        clock=ManualClock(T0),
        embedder=embedder,
        progress=lambda phase, done, total: told.append((phase, done, total)),
    ) as store:
        items = commits(7)
        await store.add_many(items[::-1])  # longest first: the order they are given in
    assert told == [("embed", 0, 7), ("embed", 3, 7), ("embed", 6, 7), ("embed", 7, 7)]
    lengths = [len(text) for call in embedder.calls for text in call]
    assert lengths == sorted(lengths) and len(embedder.calls) == 3


class Broken(Hashed):
    def embed(self, texts: Sequence[str]) -> Vectors:
        raise RuntimeError("the model's arithmetic failed")


async def test_a_memory_whose_embedding_fails_is_kept_and_said_so(db: Path) -> None:
    """`memory add` exited with the embedder's error and said nothing of the memory it had
    stored: run again, it added it twice."""
    async with MemoryStore.open(db, clock=ManualClock(T0), embedder=Broken()) as store:
        with pytest.raises(SwitchyardError) as failed:
            await store.add("keep the parser's last token", kind="note")
        assert await store.count() == 1
    said = str(failed.value)
    assert said.startswith("memory 1 kept, not all embedded (RuntimeError: the model's")
    assert "embedded at the next search" in said
    again = Hashed()
    async with MemoryStore.open(db, clock=ManualClock(T0), embedder=again) as store:
        assert again.embedded == 1 and await store.embedding_counts() == {again.key: 1}
