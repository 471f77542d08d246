"""The local memory overlay over one SQLite file (aiosqlite, WAL).

``store = await MemoryStore.open(path, clock=clock, embedder=embedder)`` … ``await
store.close()``, or ``async with MemoryStore.open(...) as store:``.

- Searching is read-only for memories: it never changes a memory's ``used`` time or use
  count. Recording a use is the separate, explicit :meth:`MemoryStore.mark_used`. (A
  search may fill the derived vector cache for the current model; see below.)
- Vectors live in their own table, keyed by (memory, model id, revision, dim). Search
  compares the query only with vectors of the current embedder's key; vectors of other
  models stay in the file and are never compared. On open and before each search, the
  store embeds every memory that has no vector (or a stale one) for the current key, so a
  change of model re-embeds what the index holds; :meth:`MemoryStore.reembed_all` redoes
  all of them on demand.
- Time comes from the injected clock; ties are broken by id, so a search is deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite
import numpy as np
from numpy.typing import NDArray

from app.clock import Clock, iso
from app.errors import SwitchyardError, UsageError
from app.memory import scoring
from app.memory.embeddings import EmbeddingKey, TextEmbedder, Vectors
from app.memory.migrations import migrate
from app.memory.text import analyze, text_hash
from app.memory.types import (
    STATUS_ACTIVE,
    STATUS_DEPRECATED,
    STATUSES,
    Memory,
    MemoryHit,
    NewMemory,
    check_kind,
    check_priority,
    clean_tags,
    clean_text,
)
from app.opener import ClosedOnExit, Opener
from app.policy.schema import Memory as MemoryPolicy

BUSY_TIMEOUT_MS = 30_000
#: memories embedded per model call while filling or rebuilding the vector cache
EMBED_BATCH = 256
_IN_CHUNK = 500  # ids per "IN (…)" clause

_COLUMNS = (
    "id, text, kind, tags, source, source_key, created, used, use_count, priority, "
    "helpful, harmful, status, merged_into, meta"
)


def default_weights() -> MemoryPolicy:
    """The ``[memory]`` table of the shipped policy."""
    from app.policy import load_policy

    return load_policy().policy.memory


@dataclass(frozen=True)
class _TfidfIndex:
    fingerprint: str
    vectorizer: Any  # sklearn TfidfVectorizer, or None for an empty vocabulary
    matrix: Any  # scipy sparse (n_docs × n_terms)


class MemoryStore(ClosedOnExit):
    """Memories, their vectors, playbook bullets and session outcomes in one SQLite file."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        path: Path,
        *,
        clock: Clock,
        embedder: TextEmbedder | None,
        weights: MemoryPolicy,
    ) -> None:
        self._db = db
        self.path = path
        self._clock = clock
        self._embedder = embedder
        self.weights = weights
        # One connection cannot nest transactions: coroutines sharing it take turns.
        self._lock = asyncio.Lock()
        self._closed = False
        self._tfidf: _TfidfIndex | None = None

    # ── lifecycle ────────────────────────────────────────────────────────────────────────

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        clock: Clock,
        embedder: TextEmbedder | None = None,
        weights: MemoryPolicy | None = None,
    ) -> MemoryStoreOpener:
        """Open (creating and migrating if needed) the store. Await it or ``async with`` it.

        ``weights`` default to the shipped policy's ``[memory]`` table. With an embedder,
        memories lacking a vector of its model are embedded before this returns.
        """
        return MemoryStoreOpener(cls._open(Path(path), clock, embedder, weights))

    @classmethod
    async def _open(
        cls,
        path: Path,
        clock: Clock,
        embedder: TextEmbedder | None,
        weights: MemoryPolicy | None,
    ) -> MemoryStore:
        try:
            db = await aiosqlite.connect(path, isolation_level=None)  # we BEGIN ourselves
        except (OSError, sqlite3.Error) as exc:
            raise SwitchyardError(f"cannot open the memory DB {path}: {exc}") from None
        try:
            await _setup(db)
            await migrate(db, clock=clock)
        except sqlite3.Error as exc:
            await db.close()
            raise SwitchyardError(f"cannot open the memory DB {path}: {exc}") from None
        except BaseException:
            await db.close()
            raise
        store = cls(db, path, clock=clock, embedder=embedder, weights=weights or default_weights())
        try:
            await store.ensure_embeddings()
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._db.close()

    @property
    def embedder(self) -> TextEmbedder | None:
        return self._embedder

    async def set_embedder(self, embedder: TextEmbedder | None) -> int:
        """Switch models; embeds what has no vector of the new one. Returns how many."""
        self._embedder = embedder
        return await self.ensure_embeddings()

    # ── adding ───────────────────────────────────────────────────────────────────────────

    async def add(
        self,
        text: str,
        *,
        kind: str = "note",
        tags: Iterable[str] = (),
        source: str = "",
        priority: int = 0,
        meta: Mapping[str, Any] | None = None,
        source_key: str | None = None,
        created: datetime | None = None,
    ) -> int:
        """Add one memory and return its id (embedded now when there is an embedder).

        With a ``source_key`` that is already stored, nothing is added and the existing
        memory's id is returned.
        """
        item = NewMemory(
            text=text,
            kind=kind,
            tags=tuple(tags),
            source=source,
            priority=priority,
            source_key=source_key,
            created=created,
            meta=dict(meta or {}),
        )
        (new_id,) = await self.add_many([item])
        if new_id is not None:
            return new_id
        assert source_key is not None
        existing = await self._id_for_source_key(source_key)
        if existing is None:  # pragma: no cover - a concurrent delete
            raise SwitchyardError(f"memory with source key {source_key!r} vanished")
        return existing

    async def add_many(self, items: Sequence[NewMemory]) -> list[int | None]:
        """Add memories in one transaction, embedding them in one batch.

        Returns each item's new id, or None where its ``source_key`` was already stored
        (or repeated earlier in ``items``): harvesting twice adds nothing.
        """
        self._check_open()
        now = self._clock.now()
        prepared = [_prepare(item, now) for item in items]
        keys = [p.source_key for p in prepared if p.source_key is not None]
        present = await self.existing_source_keys(keys)
        seen: set[str] = set()
        todo: list[int] = []  # indexes into prepared
        for i, p in enumerate(prepared):
            if p.source_key is not None:
                if p.source_key in present or p.source_key in seen:
                    continue
                seen.add(p.source_key)
            todo.append(i)
        vectors, key = await self._embed([prepared[i].text for i in todo])
        result: list[int | None] = [None] * len(prepared)
        async with self._lock, self._transaction():
            for row, i in enumerate(todo):
                p = prepared[i]
                cur = await self._db.execute(
                    "INSERT INTO memories (text, kind, tags, source, source_key, created, "
                    "priority, meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (source_key) DO NOTHING",
                    (
                        p.text,
                        p.kind,
                        json.dumps(list(p.tags)),
                        p.source,
                        p.source_key,
                        iso(p.created or now),
                        p.priority,
                        _dumps(p.meta),
                    ),
                )
                if cur.rowcount != 1 or cur.lastrowid is None:
                    continue  # a concurrent writer stored the same key first
                memory_id = int(cur.lastrowid)
                result[i] = memory_id
                if vectors is not None and key is not None:
                    await self._put_vector(memory_id, key, text_hash(p.text), vectors[row])
        return result

    async def existing_source_keys(self, keys: Iterable[str]) -> set[str]:
        found: set[str] = set()
        wanted = sorted(set(keys))
        for chunk in _chunks(wanted, _IN_CHUNK):
            marks = ",".join("?" * len(chunk))
            async with self._db.execute(
                f"SELECT source_key FROM memories WHERE source_key IN ({marks})", chunk
            ) as cur:
                found.update(str(r[0]) for r in await cur.fetchall())
        return found

    async def _id_for_source_key(self, source_key: str) -> int | None:
        async with self._db.execute(
            "SELECT id FROM memories WHERE source_key = ?", (source_key,)
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else None

    # ── reading ──────────────────────────────────────────────────────────────────────────

    async def get(self, memory_id: int) -> Memory | None:
        self._check_open()
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM memories WHERE id = ?", (memory_id,)
        ) as cur:
            row = await cur.fetchone()
        return _memory(row) if row else None

    async def list_memories(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[Memory]:
        """Memories by id, optionally of one kind and status."""
        self._check_open()
        where, params = _filters(kinds=[kind] if kind else None, status=status)
        sql = f"SELECT {_COLUMNS} FROM memories{where} ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        async with self._db.execute(sql, params) as cur:
            return [_memory(r) for r in await cur.fetchall()]

    async def count(self) -> int:
        self._check_open()
        async with self._db.execute("SELECT COUNT(*) FROM memories") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # ── search ───────────────────────────────────────────────────────────────────────────

    async def search(
        self,
        query: str,
        k: int = 10,
        *,
        kinds: Sequence[str] | None = None,
        use_embeddings: bool = True,
    ) -> list[MemoryHit]:
        """The ``k`` best active memories for ``query``, best first, ties by id.

        Read-only for memories: ``used`` and ``use_count`` do not change (call
        :meth:`mark_used` for the ones you use). A memory with neither TF-IDF nor
        embedding similarity is no match, whatever its dynamic score.
        """
        self._check_open()
        query = query.strip()
        if not query:
            raise UsageError("an empty query")
        if k < 1:
            raise UsageError(f"k must be >= 1, got {k}")
        for kind in kinds or ():
            check_kind(kind)
        embedder = self._embedder if use_embeddings else None
        query_vector: NDArray[np.float32] | None = None
        key: EmbeddingKey | None = None
        if embedder is not None:
            await self.ensure_embeddings()
            key = embedder.key
            query_vector = (await asyncio.to_thread(embedder.embed, [query]))[0]

        where, params = _filters(kinds=kinds, status=STATUS_ACTIVE)
        async with self._lock:
            async with self._db.execute(
                f"SELECT {_COLUMNS} FROM memories{where} ORDER BY id", params
            ) as cur:
                memories = [_memory(r) for r in await cur.fetchall()]
            vectors = await self._vectors(key) if key is not None else {}
        if not memories:
            return []

        tfidf = self._tfidf_scores(memories, query)
        now = self._clock.now()
        label = key.label() if key is not None else None
        hits: list[MemoryHit] = []
        for m, t in zip(memories, tfidf, strict=True):
            t_score = round(min(1.0, max(0.0, float(t))), scoring.DECIMALS)
            vec = vectors.get(m.id)
            e_score = 0.0
            if vec is not None and query_vector is not None:
                e_score = round(min(1.0, max(0.0, float(vec @ query_vector))), scoring.DECIMALS)
            if t_score <= 0.0 and e_score <= 0.0:
                continue
            dyn = scoring.dynamic(
                now=now,
                created=m.created,
                used=m.used,
                use_count=m.use_count,
                priority_value=m.priority,
                half_life_days=self.weights.recency_half_life_days,
            )
            hits.append(
                MemoryHit(
                    memory=m,
                    score=scoring.blend(
                        self.weights, tfidf=t_score, embedding=e_score, dynamic_score=dyn.score
                    ),
                    tfidf=t_score,
                    embedding=e_score,
                    dynamic=dyn.score,
                    recency=dyn.recency,
                    usage=dyn.usage,
                    priority=dyn.priority,
                    embedding_model=label if vec is not None else None,
                )
            )
        hits.sort(key=lambda h: (-h.score, h.memory.id))
        return hits[:k]

    async def mark_used(self, ids: Iterable[int]) -> int:
        """Record that these memories were used now; returns how many exist and were marked."""
        self._check_open()
        wanted = sorted(set(ids))
        if not wanted:
            return 0
        now = iso(self._clock.now())
        marked = 0
        async with self._lock, self._transaction():
            for chunk in _chunks(wanted, _IN_CHUNK):
                marks = ",".join("?" * len(chunk))
                cur = await self._db.execute(
                    f"UPDATE memories SET used = ?, use_count = use_count + 1 "
                    f"WHERE id IN ({marks})",
                    [now, *chunk],
                )
                marked += max(0, cur.rowcount)
        return marked

    def _tfidf_scores(self, memories: Sequence[Memory], query: str) -> NDArray[np.float64]:
        index = self._tfidf_index(memories)
        if index.vectorizer is None:
            return np.zeros(len(memories), dtype=np.float64)
        q = index.vectorizer.transform([query])
        scores: NDArray[np.float64] = np.asarray((index.matrix @ q.T).toarray(), dtype=np.float64)
        return scores.ravel()

    def _tfidf_index(self, memories: Sequence[Memory]) -> _TfidfIndex:
        digest = hashlib.sha256()
        for m in memories:
            digest.update(f"{m.id}\x00{m.text}\x01".encode())
        fingerprint = digest.hexdigest()
        if self._tfidf is not None and self._tfidf.fingerprint == fingerprint:
            return self._tfidf
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(
            analyzer=analyze, sublinear_tf=True, norm="l2", dtype=np.float64
        )
        try:
            matrix = vectorizer.fit_transform([m.text for m in memories])
            index = _TfidfIndex(fingerprint, vectorizer, matrix)
        except ValueError:  # empty vocabulary: no text has a token
            index = _TfidfIndex(fingerprint, None, None)
        self._tfidf = index
        return index

    # ── vectors ──────────────────────────────────────────────────────────────────────────

    async def ensure_embeddings(self) -> int:
        """Embed every memory lacking a current vector of the current model; returns how many.

        "Current" means made from the memory's present text (a merged bullet whose text
        changed is re-embedded). Without an embedder this does nothing.
        """
        self._check_open()
        if self._embedder is None:
            return 0
        key = self._embedder.key
        async with (
            self._lock,
            self._db.execute(
                "SELECT m.id, m.text, e.text_hash FROM memories m LEFT JOIN embeddings e "
                "ON e.memory_id = m.id AND e.model_id = ? AND e.revision = ? AND e.dim = ? "
                "ORDER BY m.id",
                (key.model_id, key.revision, key.dim),
            ) as cur,
        ):
            rows = await cur.fetchall()
        stale = [(int(r[0]), str(r[1])) for r in rows if r[2] != text_hash(str(r[1]))]
        return await self._embed_and_store(stale)

    async def reembed_all(self, *, drop_other_models: bool = False) -> int:
        """Recompute every memory's vector with the current model; optionally drop the rest."""
        self._check_open()
        if self._embedder is None:
            raise UsageError("no embedding model to re-embed with")
        key = self._embedder.key
        async with self._db.execute("SELECT id, text FROM memories ORDER BY id") as cur:
            rows = [(int(r[0]), str(r[1])) for r in await cur.fetchall()]
        done = await self._embed_and_store(rows)
        if drop_other_models:
            async with self._lock, self._transaction():
                await self._db.execute(
                    "DELETE FROM embeddings WHERE NOT (model_id = ? AND revision = ? AND dim = ?)",
                    (key.model_id, key.revision, key.dim),
                )
        return done

    async def put_vectors(self, key: EmbeddingKey, vectors: Mapping[int, Vectors]) -> int:
        """Store vectors made elsewhere (under ``key``) for the memories' present text."""
        self._check_open()
        stored = 0
        async with self._lock, self._transaction():
            for memory_id, vector in sorted(vectors.items()):
                async with self._db.execute(
                    "SELECT text FROM memories WHERE id = ?", (memory_id,)
                ) as cur:
                    row = await cur.fetchone()
                if row is None:
                    continue
                await self._put_vector(memory_id, key, text_hash(str(row[0])), vector)
                stored += 1
        return stored

    async def embedding_counts(self) -> dict[EmbeddingKey, int]:
        """How many vectors the file holds per (model, revision, dim)."""
        self._check_open()
        async with self._db.execute(
            "SELECT model_id, revision, dim, COUNT(*) FROM embeddings "
            "GROUP BY model_id, revision, dim ORDER BY model_id, revision, dim"
        ) as cur:
            return {
                EmbeddingKey(str(r[0]), str(r[1]), int(r[2])): int(r[3])
                for r in await cur.fetchall()
            }

    async def _embed(
        self, texts: Sequence[str]
    ) -> tuple[NDArray[np.float32] | None, EmbeddingKey | None]:
        embedder = self._embedder
        if embedder is None or not texts:
            return None, None
        vectors = await asyncio.to_thread(embedder.embed, list(texts))
        return vectors, embedder.key

    async def _embed_and_store(self, rows: Sequence[tuple[int, str]]) -> int:
        done = 0
        for chunk in _chunks(list(rows), EMBED_BATCH):
            vectors, key = await self._embed([text for _, text in chunk])
            if vectors is None or key is None:
                return done
            async with self._lock, self._transaction():
                for (memory_id, text), vector in zip(chunk, vectors, strict=True):
                    await self._put_vector(memory_id, key, text_hash(text), vector)
            done += len(chunk)
        return done

    async def _put_vector(
        self, memory_id: int, key: EmbeddingKey, hashed: str, vector: Vectors
    ) -> None:
        arr = np.asarray(vector, dtype="<f4").ravel()
        if arr.shape != (key.dim,):
            raise SwitchyardError(
                f"vector for memory {memory_id} has {arr.size} values, {key.label()} needs "
                f"{key.dim}"
            )
        await self._db.execute(
            "INSERT OR REPLACE INTO embeddings (memory_id, model_id, revision, dim, text_hash, "
            "vector) SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM memories WHERE id = ?)",
            (memory_id, key.model_id, key.revision, key.dim, hashed, arr.tobytes(), memory_id),
        )

    async def _vectors(self, key: EmbeddingKey) -> dict[int, NDArray[np.float32]]:
        """The current model's vectors whose text is still the memory's text."""
        out: dict[int, NDArray[np.float32]] = {}
        async with self._db.execute(
            "SELECT e.memory_id, e.vector, e.text_hash, m.text FROM embeddings e "
            "JOIN memories m ON m.id = e.memory_id "
            "WHERE e.model_id = ? AND e.revision = ? AND e.dim = ?",
            (key.model_id, key.revision, key.dim),
        ) as cur:
            for memory_id, blob, hashed, text in await cur.fetchall():
                if hashed != text_hash(str(text)) or len(blob) != key.dim * 4:
                    continue  # stale or damaged: never compared
                out[int(memory_id)] = np.frombuffer(blob, dtype="<f4").astype(np.float32)
        return out

    # ── playbook bullets (for the ACE curator) ───────────────────────────────────────────

    async def add_bullet(
        self,
        text: str,
        *,
        tags: Iterable[str] = (),
        source: str = "",
        priority: int = 0,
        source_key: str | None = None,
    ) -> int:
        """A new active playbook bullet (with a ``source_key``: at most one per key)."""
        return await self.add(
            text,
            kind="playbook",
            tags=tags,
            source=source,
            priority=priority,
            source_key=source_key,
        )

    async def rate_bullet(self, bullet_id: int, *, helpful: int = 0, harmful: int = 0) -> Memory:
        """Count a bullet as helpful and/or harmful ``n`` more times."""
        if helpful < 0 or harmful < 0:
            raise UsageError("helpful and harmful counts only grow")
        async with self._lock, self._transaction():
            await self._bullet(bullet_id)
            await self._db.execute(
                "UPDATE memories SET helpful = helpful + ?, harmful = harmful + ? WHERE id = ?",
                (helpful, harmful, bullet_id),
            )
        return await self._must_get(bullet_id)

    async def deprecate(self, bullet_id: int, *, reason: str = "") -> Memory:
        """Retire a bullet: it stays in the file but no longer shows in search."""
        async with self._lock, self._transaction():
            bullet = await self._bullet(bullet_id)
            meta = dict(bullet.meta)
            if reason:
                meta["deprecated_reason"] = reason
            await self._db.execute(
                "UPDATE memories SET status = ?, meta = ? WHERE id = ?",
                (STATUS_DEPRECATED, _dumps(meta), bullet_id),
            )
        return await self._must_get(bullet_id)

    async def merge(self, into: int, others: Sequence[int], *, text: str | None = None) -> Memory:
        """Fold active bullets ``others`` into active bullet ``into``.

        ``into`` gains their helpful, harmful and use counts and tags, the highest
        priority and the latest use, and optionally a new text (then it is re-embedded).
        Each of ``others`` is deprecated with ``merged_into = into``.
        """
        merged = sorted(set(others))
        if not merged:
            raise UsageError("merge needs at least one other bullet")
        if into in merged:
            raise UsageError(f"cannot merge bullet {into} into itself")
        new_text = clean_text(text) if text is not None else None
        async with self._lock, self._transaction():
            target = await self._bullet(into, active=True)
            sources = [await self._bullet(i, active=True) for i in merged]
            group = [target, *sources]
            tags = clean_tags(t for b in group for t in b.tags)
            used = [b.used for b in group if b.used is not None]
            await self._db.execute(
                "UPDATE memories SET text = ?, tags = ?, helpful = ?, harmful = ?, "
                "use_count = ?, priority = ?, used = ?, meta = ? WHERE id = ?",
                (
                    new_text if new_text is not None else target.text,
                    json.dumps(list(tags)),
                    sum(b.helpful for b in group),
                    sum(b.harmful for b in group),
                    sum(b.use_count for b in group),
                    max(b.priority for b in group),
                    iso(max(used)) if used else None,
                    _dumps({**target.meta, "merged_from": _merged_from(target, merged)}),
                    into,
                ),
            )
            marks = ",".join("?" * len(merged))
            await self._db.execute(
                f"UPDATE memories SET status = ?, merged_into = ? WHERE id IN ({marks})",
                [STATUS_DEPRECATED, into, *merged],
            )
        if new_text is not None:
            await self.ensure_embeddings()
        return await self._must_get(into)

    async def playbook(self, *, status: str | None = STATUS_ACTIVE) -> list[Memory]:
        """Bullets, most net-helpful first (ties by id)."""
        if status is not None and status not in STATUSES:
            raise UsageError(f"status {status!r}: expected one of {', '.join(STATUSES)}")
        bullets = await self.list_memories(kind="playbook", status=status)
        return sorted(bullets, key=lambda b: (-(b.helpful - b.harmful), b.id))

    async def _bullet(self, bullet_id: int, *, active: bool = False) -> Memory:
        memory = await self.get(bullet_id)
        if memory is None or memory.kind != "playbook":
            raise UsageError(f"no playbook bullet {bullet_id}")
        if active and memory.status != STATUS_ACTIVE:
            raise UsageError(f"playbook bullet {bullet_id} is {memory.status}")
        return memory

    async def _must_get(self, memory_id: int) -> Memory:
        memory = await self.get(memory_id)
        if memory is None:  # pragma: no cover - a concurrent delete
            raise SwitchyardError(f"memory {memory_id} vanished")
        return memory

    # ── session outcomes ─────────────────────────────────────────────────────────────────

    async def record_outcome(
        self, run_id: str, summary: str, success: bool, tags: Iterable[str] = ()
    ) -> int:
        """Record how a run ended and keep it as an ``outcome`` memory; returns its id.

        Idempotent per ``run_id``: recording the same run again changes nothing and
        returns the memory made the first time.
        """
        self._check_open()
        run_id = run_id.strip()
        if not run_id:
            raise UsageError("an outcome needs a run id")
        summary = clean_text(summary)
        tag_list = clean_tags(tags)
        async with self._lock, self._transaction():
            await self._db.execute(
                "INSERT INTO outcomes (run_id, summary, success, tags, recorded) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
                (run_id, summary, int(success), json.dumps(list(tag_list)), iso(self._clock.now())),
            )
        await self.harvest_outcomes(run_ids=[run_id])
        async with self._db.execute(
            "SELECT memory_id FROM outcomes WHERE run_id = ?", (run_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is None or row[0] is None:  # pragma: no cover - a concurrent delete
            raise SwitchyardError(f"outcome of run {run_id} was not kept")
        return int(row[0])

    async def harvest_outcomes(self, *, run_ids: Sequence[str] | None = None) -> list[int]:
        """Turn recorded outcomes that have no memory yet into memories; returns new ids."""
        self._check_open()
        sql = (
            "SELECT o.run_id, o.summary, o.success, o.tags, o.recorded FROM outcomes o "
            "LEFT JOIN memories m ON m.id = o.memory_id WHERE m.id IS NULL"
        )
        params: list[Any] = []
        if run_ids is not None:
            if not run_ids:
                return []
            sql += f" AND o.run_id IN ({','.join('?' * len(run_ids))})"
            params.extend(run_ids)
        async with self._db.execute(sql + " ORDER BY o.recorded, o.run_id", params) as cur:
            rows = await cur.fetchall()
        items = [
            NewMemory(
                text=f"Run {run_id} {'succeeded' if success else 'failed'}: {summary}",
                kind="outcome",
                tags=("outcome", "success" if success else "failure", *json.loads(tags)),
                source=f"run:{run_id}",
                source_key=f"outcome:{run_id}",
                created=datetime.fromisoformat(str(recorded)),
                meta={"run_id": run_id, "success": bool(success)},
            )
            for run_id, summary, success, tags, recorded in rows
        ]
        ids = await self.add_many(items)
        async with self._lock, self._transaction():
            for item in items:
                await self._db.execute(
                    "UPDATE outcomes SET memory_id = "
                    "(SELECT id FROM memories WHERE source_key = ?) WHERE run_id = ?",
                    (item.source_key, item.meta["run_id"]),
                )
        return [i for i in ids if i is not None]

    # ── plumbing ─────────────────────────────────────────────────────────────────────────

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the memory store is closed")

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                await self._db.execute("ROLLBACK")
            raise
        else:
            await self._db.execute("COMMIT")


#: what :meth:`MemoryStore.open` returns: awaitable, and an async context manager
MemoryStoreOpener = Opener[MemoryStore]


async def _setup(db: aiosqlite.Connection) -> None:
    await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    for attempt in range(50):  # WAL needs a moment alone with a new file
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.05)
    await db.execute("PRAGMA synchronous = NORMAL")  # derived knowledge, not a record
    await db.execute("PRAGMA foreign_keys = ON")


def _prepare(item: NewMemory, now: datetime) -> NewMemory:
    created = item.created
    if created is not None:
        if created.tzinfo is None:
            raise UsageError("a memory's created time must be timezone-aware")
        created = min(created, now)  # a clock skewed ahead never makes a memory "newer"
    return replace(
        item,
        text=clean_text(item.text),
        kind=check_kind(item.kind),
        tags=clean_tags(item.tags),
        priority=check_priority(item.priority),
        created=created,
    )


def _filters(*, kinds: Sequence[str] | None, status: str | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if kinds:
        clauses.append(f"kind IN ({','.join('?' * len(kinds))})")
        params.extend(kinds)
    if status is not None:
        clauses.append("status = ?")
        params.append(status)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _memory(row: Any) -> Memory:
    (
        memory_id,
        text,
        kind,
        tags,
        source,
        source_key,
        created,
        used,
        use_count,
        priority,
        helpful,
        harmful,
        status,
        merged_into,
        meta,
    ) = row
    return Memory(
        id=int(memory_id),
        text=str(text),
        kind=str(kind),
        tags=tuple(json.loads(tags)),
        source=str(source),
        source_key=source_key,
        created=datetime.fromisoformat(str(created)),
        used=datetime.fromisoformat(str(used)) if used is not None else None,
        use_count=int(use_count),
        priority=int(priority),
        helpful=int(helpful),
        harmful=int(harmful),
        status=str(status),
        merged_into=int(merged_into) if merged_into is not None else None,
        meta=json.loads(meta),
    )


def _merged_from(target: Memory, merged: Sequence[int]) -> list[int]:
    earlier = target.meta.get("merged_from", [])
    return sorted({*(int(i) for i in earlier), *merged})


def _dumps(meta: Mapping[str, Any]) -> str:
    return json.dumps(dict(meta), sort_keys=True, default=str)


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
