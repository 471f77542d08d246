"""The local memory overlay over one SQLite file: the one door callers use.

``store = await MemoryStore.open(path, clock=clock, embedder=embedder)`` … ``await
store.close()``, or ``async with MemoryStore.open(...) as store:``.

:class:`MemoryStore` holds no logic of its own: it opens the file and hands each call to
the module of its concern, all of them sharing one connection (:mod:`app.memory.db`):

- :mod:`app.memory.memories`: adding (idempotent per source key), reading, marking used;
- :mod:`app.memory.search`: TF-IDF + embeddings + dynamic score; read-only for memories;
- :mod:`app.memory.vectors`: the vector cache, per embedding model;
- :mod:`app.memory.playbook`: the ACE curator's bullets;
- :mod:`app.memory.outcomes`: how runs ended, kept as memories.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from app.audit.masking import mask_text
from app.clock import Clock
from app.memory.db import MemoryDB
from app.memory.embeddings import EmbeddingKey, TextEmbedder, Vectors
from app.memory.memories import Memories
from app.memory.outcomes import Outcomes
from app.memory.playbook import Playbook
from app.memory.search import Search
from app.memory.types import STATUS_ACTIVE, Memory, MemoryHit, NewMemory
from app.memory.vectors import Progress, VectorCache
from app.opener import ClosedOnExit, Opener
from app.policy.schema import Memory as MemoryPolicy


def default_weights() -> MemoryPolicy:
    """The ``[memory]`` table of the shipped policy."""
    from app.policy import load_policy

    return load_policy().policy.memory


class MemoryStore(ClosedOnExit):
    """Memories, their vectors, playbook bullets and session outcomes in one SQLite file."""

    def __init__(
        self,
        db: MemoryDB,
        *,
        clock: Clock,
        embedder: TextEmbedder | None,
        weights: MemoryPolicy,
        progress: Progress | None = None,
    ) -> None:
        self._db = db
        self.path = db.path
        self.weights = weights
        self._vectors = VectorCache(db, embedder, progress=progress)
        self._memories = Memories(db, clock=clock, vectors=self._vectors)
        self._search = Search(db, clock=clock, vectors=self._vectors)
        self._playbook = Playbook(db, memories=self._memories, vectors=self._vectors)
        self._outcomes = Outcomes(db, clock=clock, memories=self._memories)

    # ── lifecycle ────────────────────────────────────────────────────────────────────────

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        clock: Clock,
        embedder: TextEmbedder | None = None,
        weights: MemoryPolicy | None = None,
        progress: Progress | None = None,
    ) -> MemoryStoreOpener:
        """Open (creating and migrating if needed) the store. Await it or ``async with`` it.

        ``weights`` default to the shipped policy's ``[memory]`` table. With an embedder,
        memories lacking a vector of its model are embedded before this returns; each
        batch stored is told to ``progress`` (here and whenever memories are embedded).
        """
        return MemoryStoreOpener(cls._open(Path(path), clock, embedder, weights, progress))

    @classmethod
    async def _open(
        cls,
        path: Path,
        clock: Clock,
        embedder: TextEmbedder | None,
        weights: MemoryPolicy | None,
        progress: Progress | None,
    ) -> MemoryStore:
        db = await MemoryDB.open(path, clock=clock)
        store = cls(
            db,
            clock=clock,
            embedder=embedder,
            weights=weights or default_weights(),
            progress=progress,
        )
        try:
            await store.ensure_embeddings()
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        await self._db.close()

    @property
    def embedder(self) -> TextEmbedder | None:
        return self._vectors.embedder

    async def set_embedder(self, embedder: TextEmbedder | None) -> int:
        """Switch models; embeds what has no vector of the new one. Returns how many."""
        self._vectors.embedder = embedder
        return await self._vectors.ensure()

    # ── memories ─────────────────────────────────────────────────────────────────────────

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
        """See :meth:`app.memory.memories.Memories.add`."""
        return await self._memories.add(
            text,
            kind=kind,
            tags=tags,
            source=source,
            priority=priority,
            meta=meta,
            source_key=source_key,
            created=created,
        )

    async def add_many(self, items: Sequence[NewMemory]) -> list[int | None]:
        """See :meth:`app.memory.memories.Memories.add_many`."""
        return await self._memories.add_many(items)

    async def existing_source_keys(self, keys: Iterable[str]) -> set[str]:
        return await self._memories.existing_source_keys(keys)

    async def get(self, memory_id: int) -> Memory | None:
        return await self._memories.get(memory_id)

    async def list_memories(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[Memory]:
        """Memories by id, optionally of one kind and status."""
        return await self._memories.list_memories(kind=kind, status=status, limit=limit)

    async def count(self) -> int:
        return await self._memories.count()

    async def mark_used(self, ids: Iterable[int]) -> int:
        """Record that these memories were used now; returns how many exist and were marked."""
        return await self._memories.mark_used(ids)

    # ── search ───────────────────────────────────────────────────────────────────────────

    async def search(
        self,
        query: str,
        k: int = 10,
        *,
        kinds: Sequence[str] | None = None,
        use_embeddings: bool = True,
    ) -> list[MemoryHit]:
        """See :meth:`app.memory.search.Search.search` (weighted by :attr:`weights`); the
        query masked first, as every memory was when stored."""
        return await self._search.search(
            mask_text(query)[0], k, weights=self.weights, kinds=kinds, use_embeddings=use_embeddings
        )

    # ── vectors ──────────────────────────────────────────────────────────────────────────

    async def ensure_embeddings(self) -> int:
        """See :meth:`app.memory.vectors.VectorCache.ensure`."""
        return await self._vectors.ensure()

    async def reembed_all(self, *, drop_other_models: bool = False) -> int:
        """Recompute every memory's vector with the current model; optionally drop the rest."""
        return await self._vectors.reembed_all(drop_other_models=drop_other_models)

    async def put_vectors(self, key: EmbeddingKey, vectors: Mapping[int, Vectors]) -> int:
        """Store vectors made elsewhere (under ``key``) for the memories' present text."""
        return await self._vectors.put_vectors(key, vectors)

    async def embedding_counts(self) -> dict[EmbeddingKey, int]:
        """How many vectors the file holds per (model, revision, dim)."""
        return await self._vectors.counts()

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
        return await self._playbook.add_bullet(
            text, tags=tags, source=source, priority=priority, source_key=source_key
        )

    async def rate_bullet(self, bullet_id: int, *, helpful: int = 0, harmful: int = 0) -> Memory:
        """Count a bullet as helpful and/or harmful ``n`` more times."""
        return await self._playbook.rate_bullet(bullet_id, helpful=helpful, harmful=harmful)

    async def deprecate(self, bullet_id: int, *, reason: str = "") -> Memory:
        """Retire a bullet: it stays in the file but no longer shows in search."""
        return await self._playbook.deprecate(bullet_id, reason=reason)

    async def merge(self, into: int, others: Sequence[int], *, text: str | None = None) -> Memory:
        """See :meth:`app.memory.playbook.Playbook.merge`."""
        return await self._playbook.merge(into, others, text=text)

    async def playbook(self, *, status: str | None = STATUS_ACTIVE) -> list[Memory]:
        """Bullets, most net-helpful first (ties by id)."""
        return await self._playbook.playbook(status=status)

    # ── session outcomes ─────────────────────────────────────────────────────────────────

    async def record_outcome(
        self, run_id: str, summary: str, success: bool, tags: Iterable[str] = ()
    ) -> int:
        """See :meth:`app.memory.outcomes.Outcomes.record_outcome`."""
        return await self._outcomes.record_outcome(run_id, summary, success, tags)

    async def harvest_outcomes(self, *, run_ids: Sequence[str] | None = None) -> list[int]:
        """Turn recorded outcomes that have no memory yet into memories; returns new ids."""
        return await self._outcomes.harvest_outcomes(run_ids=run_ids)


#: what :meth:`MemoryStore.open` returns: awaitable, and an async context manager
MemoryStoreOpener = Opener[MemoryStore]
