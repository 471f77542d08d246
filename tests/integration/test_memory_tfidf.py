"""The memory search's TF-IDF index is fitted once per set of memories and kept beside
the memory file: another process loads it, and gets the same hits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.clock import ManualClock
from app.memory import tfidf
from app.memory.store import MemoryStore
from app.memory.types import Memory
from app.policy.schema import Memory as MemoryPolicy

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
WEIGHTS = MemoryPolicy(
    weight_tfidf=0.4, weight_embedding=0.4, weight_dynamic=0.2, recency_half_life_days=7
)
TEXTS = (
    "The parser drops the trailing comma in parse_tokens",
    "Use bubblewrap to sandbox the test command without network",
    "The budget ledger reserves an estimate before a cloud call",
    "Парсер теряет последнюю запятую",
)


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many memories each TF-IDF fit was over."""
    seen: list[int] = []
    real = tfidf.fit

    def counted(memories: Sequence[Memory], fingerprint: str) -> tfidf.TfidfIndex:
        seen.append(len(memories))
        return real(memories, fingerprint)

    monkeypatch.setattr(tfidf, "fit", counted)
    return seen


async def search(db: Path, query: str, **kwargs: Any) -> list[dict[str, Any]]:
    """A search as a new process makes it (a store of its own: nothing in memory)."""
    async with MemoryStore.open(db, clock=ManualClock(T0), weights=WEIGHTS) as store:
        return [h.to_json() for h in await store.search(query, **kwargs)]


async def stored(db: Path, texts: Sequence[str]) -> None:
    async with MemoryStore.open(db, clock=ManualClock(T0), weights=WEIGHTS) as store:
        for text in texts:
            await store.add(text)


async def test_another_process_loads_the_kept_index_and_finds_the_same(
    tmp_path: Path, fits: list[int]
) -> None:
    db = tmp_path / "memory.sqlite3"
    await stored(db, TEXTS)
    first = await search(db, "parser comma")
    assert fits == [4] and (tmp_path / "memory.tfidf.npz").is_file()
    assert await search(db, "parser comma") == first
    assert await search(db, "запятую") != [] and fits == [4]  # no fit again
    assert [h["text"] for h in first] == [TEXTS[0]]


async def test_a_change_to_the_memories_or_the_analyzer_refits(
    tmp_path: Path, fits: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "memory.sqlite3"
    await stored(db, TEXTS[:2])
    await search(db, "parser")
    async with MemoryStore.open(db, clock=ManualClock(T0), weights=WEIGHTS) as store:
        await store.add("A second parser bug: the closing bracket", kind="commit")
    hits = await search(db, "parser")
    assert fits == [2, 3] and len(hits) == 2
    assert len(await search(db, "parser", kinds=["note"])) == 1  # another set: a fit
    assert await search(db, "parser") == hits and fits == [2, 3, 2, 3]  # one index kept
    monkeypatch.setattr(tfidf, "_code", lambda: ("an edited analyzer", "1.0"))
    assert await search(db, "parser") == hits and fits == [2, 3, 2, 3, 3]


async def test_a_damaged_or_unwritable_index_file_is_only_a_refit(
    tmp_path: Path, fits: list[int]
) -> None:
    db = tmp_path / "memory.sqlite3"
    await stored(db, TEXTS)
    first = await search(db, "budget ledger")
    kept = tmp_path / "memory.tfidf.npz"
    kept.write_bytes(kept.read_bytes()[:100])  # cut short
    assert await search(db, "budget ledger") == first and fits == [4, 4]
    kept.unlink()
    kept.mkdir()  # nothing can be written there
    assert await search(db, "budget ledger") == first and fits == [4, 4, 4]
    assert temp_files(tmp_path) == []


def temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
