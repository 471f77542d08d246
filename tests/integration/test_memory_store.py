"""The memory store over a real SQLite file (no embedding model: see test_embeddings.py)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite
import pytest

from app.clock import ManualClock, iso
from app.errors import SwitchyardError, UsageError
from app.memory.migrations import CURRENT_VERSION, migrate, schema_version
from app.memory.store import MemoryStore
from app.memory.types import NewMemory
from app.policy.schema import Memory as MemoryPolicy

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
DAY = 86_400.0
WEIGHTS = MemoryPolicy(
    weight_tfidf=0.4, weight_embedding=0.4, weight_dynamic=0.2, recency_half_life_days=7
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "memory.sqlite3"


async def test_add_get_and_the_file_is_wal(db_path: Path, clock: ManualClock) -> None:
    async with MemoryStore.open(db_path, clock=clock, weights=WEIGHTS) as store:
        mid = await store.add(
            "  Retry 429s with backoff  ", tags=["http", "retry", "http"], priority=3
        )
        m = await store.get(mid)
        assert m is not None
        assert (m.text, m.kind, m.tags, m.priority) == (
            "Retry 429s with backoff",
            "note",
            ("http", "retry"),
            3,
        )
        assert m.created == T0 and m.used is None and m.use_count == 0
        assert m.status == "active" and await store.count() == 1
        assert await store.get(999) is None
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": "   "}, "needs some text"),
        ({"text": "x", "kind": "Bad Kind"}, "memory kind"),
        ({"text": "x", "priority": 11}, "priority 11"),
        ({"text": "x", "tags": [" "]}, "empty tag"),
    ],
)
async def test_bad_input_is_a_usage_error(
    db_path: Path, clock: ManualClock, kwargs: dict[str, object], message: str
) -> None:
    async with MemoryStore.open(db_path, clock=clock, weights=WEIGHTS) as store:
        with pytest.raises(UsageError, match=message):
            await store.add(**kwargs)  # type: ignore[arg-type]
        with pytest.raises(UsageError):
            await store.search("   ")
        with pytest.raises(UsageError):
            await store.search("x", k=0)
        assert await store.count() == 0


async def test_source_keys_make_adds_idempotent(db_path: Path, clock: ManualClock) -> None:
    async with MemoryStore.open(db_path, clock=clock, weights=WEIGHTS) as store:
        items = [
            NewMemory("a", source_key="k:1"),
            NewMemory("b", source_key="k:2"),
            NewMemory("b again", source_key="k:2"),
            NewMemory("no key"),
        ]
        first = await store.add_many(items)
        assert first == [1, 2, None, 3]
        assert await store.add_many(items) == [None, None, None, 4]
        assert await store.add("a", source_key="k:1") == 1
        assert await store.count() == 4


async def test_search_is_deterministic_and_ties_go_by_id(db_path: Path, clock: ManualClock) -> None:
    async with MemoryStore.open(db_path, clock=clock, weights=WEIGHTS) as store:
        for _ in range(3):
            await store.add("sandbox bubblewrap network off")
        await store.add("budget ledger reserve settle")
        await store.add("bubblewrap sandbox needs user namespaces", priority=10)
        hits = await store.search("bubblewrap sandbox", k=10)
        first = [h.to_json() for h in hits]
        # 1-3 score the same: by id; 4 shares no term and there is no embedder: no match
        assert [h.memory.id for h in hits] == [1, 2, 3, 5]
        assert hits[0].score == hits[1].score == hits[2].score > hits[3].score
        assert [h.to_json() for h in await store.search("bubblewrap sandbox")] == first
    async with MemoryStore.open(db_path, clock=clock, weights=WEIGHTS) as store:
        assert [h.to_json() for h in await store.search("bubblewrap sandbox")] == first


async def test_hits_report_their_components_and_no_embedding(
    db_path: Path, clock: ManualClock
) -> None:
    async with MemoryStore.open(db_path, clock=clock, weights=WEIGHTS) as store:
        await store.add("parse_tokens drops the trailing comma", priority=5)
        (hit,) = await store.search("parse tokens comma")
        assert hit.embedding == 0.0 and not hit.embedding_used and hit.embedding_model is None
        assert 0 < hit.tfidf <= 1
        assert hit.recency == 1.0 and hit.usage == 0.0 and hit.priority == 0.5
        assert hit.dynamic == pytest.approx(0.5 * 1.0 + 0.2 * 0.5)
        assert hit.score == pytest.approx(0.4 * hit.tfidf + 0.2 * hit.dynamic, abs=1e-6)
        j = hit.to_json()
        assert j["embedding_used"] is False and j["embedding_model"] is None
        assert set(j["components"]) == {"tfidf", "embedding", "dynamic"}


async def test_search_is_read_only_and_mark_used_records_use(
    db_path: Path, clock: ManualClock
) -> None:
    async with MemoryStore.open(db_path, clock=clock, weights=WEIGHTS) as store:
        a = await store.add("vLLM health check timeout")
        b = await store.add("vLLM structured outputs")
        clock.advance(7 * DAY)
        before = [await store.get(i) for i in (a, b)]
        for _ in range(3):
            hits = await store.search("vLLM")
        assert [await store.get(i) for i in (a, b)] == before
        assert all(h.recency == pytest.approx(0.5) for h in hits)

        assert await store.mark_used([a, a, 12345]) == 1
        m = await store.get(a)
        assert m is not None and m.used == clock.now() and m.use_count == 1
        untouched = await store.get(b)
        assert untouched == before[1]
        by_id = {h.memory.id: h for h in await store.search("vLLM")}
        assert by_id[a].recency == 1.0 and by_id[a].usage == pytest.approx(0.25)
        assert by_id[b].recency == pytest.approx(0.5)
        assert (await store.search("vLLM"))[0].memory.id == a


async def test_recency_half_life_comes_from_the_weights(db_path: Path, clock: ManualClock) -> None:
    one_day = WEIGHTS.model_copy(update={"recency_half_life_days": 1.0})
    async with MemoryStore.open(db_path, clock=clock, weights=one_day) as store:
        await store.add("llama.cpp grammar")
        for days, expected in ((0, 1.0), (1, 0.5), (2, 0.25), (3, 0.125)):
            (hit,) = await store.search("grammar")
            assert hit.recency == pytest.approx(expected), days
            clock.advance(DAY)


async def test_kind_filter_and_deprecated_bullets_leave_search(
    db_path: Path, clock: ManualClock
) -> None:
    async with MemoryStore.open(db_path, clock=clock, weights=WEIGHTS) as store:
        note = await store.add("prefer small diffs")
        bullet = await store.add_bullet("prefer small diffs in the implementer")
        assert {h.memory.id for h in await store.search("small diffs")} == {note, bullet}
        assert [h.memory.id for h in await store.search("diffs", kinds=["playbook"])] == [bullet]
        await store.deprecate(bullet, reason="superseded")
        assert [h.memory.id for h in await store.search("small diffs")] == [note]
        gone = await store.get(bullet)
        assert gone is not None and gone.status == "deprecated"
        assert gone.meta["deprecated_reason"] == "superseded"


async def test_playbook_rate_merge_and_list(db_path: Path, clock: ManualClock) -> None:
    async with MemoryStore.open(db_path, clock=clock, weights=WEIGHTS) as store:
        a = await store.add_bullet("run the tests before the diff", tags=["tests"], priority=2)
        b = await store.add_bullet("tests first, then the diff", tags=["loop"], priority=6)
        c = await store.add_bullet("keep commits small", source_key="ace:small-commits")
        assert await store.add_bullet("keep commits small", source_key="ace:small-commits") == c
        await store.rate_bullet(a, helpful=3, harmful=1)
        await store.rate_bullet(b, helpful=1)
        await store.rate_bullet(c, helpful=5)
        clock.advance(60)
        await store.mark_used([b])
        assert [m.id for m in await store.playbook()] == [c, a, b]

        merged = await store.merge(a, [b], text="Run the tests first, then write the diff")
        assert merged.text == "Run the tests first, then write the diff"
        assert (merged.helpful, merged.harmful, merged.use_count) == (4, 1, 1)
        assert merged.tags == ("loop", "tests") and merged.priority == 6
        assert merged.used == clock.now() and merged.meta["merged_from"] == [b]
        folded = await store.get(b)
        assert folded is not None and folded.status == "deprecated" and folded.merged_into == a
        assert [m.id for m in await store.playbook()] == [c, a]
        assert [m.id for m in await store.playbook(status="deprecated")] == [b]

        with pytest.raises(UsageError, match="deprecated"):
            await store.merge(c, [b])
        with pytest.raises(UsageError, match="itself"):
            await store.merge(c, [c])
        note = await store.add("not a bullet")
        with pytest.raises(UsageError, match="no playbook bullet"):
            await store.rate_bullet(note, helpful=1)
        with pytest.raises(UsageError):
            await store.rate_bullet(c, harmful=-1)


async def test_record_outcome_is_idempotent_per_run(db_path: Path, clock: ManualClock) -> None:
    async with MemoryStore.open(db_path, clock=clock, weights=WEIGHTS) as store:
        mid = await store.record_outcome("run-1", "fixed the off-by-one", True, ["parser"])
        assert await store.record_outcome("run-1", "something else", False) == mid
        m = await store.get(mid)
        assert m is not None and m.kind == "outcome"
        assert m.text == "Run run-1 succeeded: fixed the off-by-one"
        assert m.tags == ("outcome", "parser", "success")
        assert m.source_key == "outcome:run-1" and m.meta == {"run_id": "run-1", "success": True}
        failed = await store.record_outcome("run-2", "tests still red", False)
        assert failed != mid and await store.harvest_outcomes() == []
        assert await store.count() == 2


async def test_migrates_a_v1_file_to_the_current_schema(db_path: Path, clock: ManualClock) -> None:
    async with aiosqlite.connect(db_path, isolation_level=None) as db:
        assert await migrate(db, clock=clock, target=1) == [1]
        await db.execute(
            "INSERT INTO memories (text, kind, tags, source, created, used, use_count, priority)"
            " VALUES ('old lesson', 'note', '[\"legacy\"]', 'v1', ?, NULL, 2, 4)",
            (iso(T0),),
        )
        await db.execute(
            "INSERT INTO embeddings VALUES (1, 'some-model', 'r1', 2, 'h', x'0000803f00000000')"
        )
        assert await schema_version(db) == 1
    clock.advance(DAY)
    async with MemoryStore.open(db_path, clock=clock, weights=WEIGHTS) as store:
        m = await store.get(1)
        assert m is not None
        assert (m.text, m.tags, m.use_count, m.priority) == ("old lesson", ("legacy",), 2, 4)
        assert (m.status, m.helpful, m.harmful, m.source_key, m.merged_into) == (
            "active",
            0,
            0,
            None,
            None,
        )
        assert sum((await store.embedding_counts()).values()) == 1
        assert await store.record_outcome("r", "works on v4", True) == 2  # v4 table is there
    with sqlite3.connect(db_path) as raw:
        rows = raw.execute(
            "SELECT version, applied FROM schema_version ORDER BY version"
        ).fetchall()
    assert [v for v, _ in rows] == list(range(1, CURRENT_VERSION + 1))
    assert rows[0][1] == iso(T0) and rows[-1][1] == iso(clock.now())
    # Opening again applies nothing.
    async with MemoryStore.open(db_path, clock=clock, weights=WEIGHTS):
        pass
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == CURRENT_VERSION


async def test_a_newer_schema_is_refused(db_path: Path, clock: ManualClock) -> None:
    async with MemoryStore.open(db_path, clock=clock, weights=WEIGHTS):
        pass
    with sqlite3.connect(db_path) as raw:
        raw.execute("INSERT INTO schema_version VALUES (?, 'future')", (CURRENT_VERSION + 1,))
    with pytest.raises(SwitchyardError, match="newer than this Switchyard"):
        await MemoryStore.open(db_path, clock=clock, weights=WEIGHTS)


async def test_an_unopenable_file_is_one_clear_error(tmp_path: Path, clock: ManualClock) -> None:
    with pytest.raises(SwitchyardError, match="cannot open the memory DB"):
        await MemoryStore.open(tmp_path / "missing-dir" / "m.sqlite3", clock=clock)


async def test_default_weights_are_the_shipped_policy(db_path: Path, clock: ManualClock) -> None:
    async with MemoryStore.open(db_path, clock=clock) as store:
        assert store.weights == WEIGHTS
