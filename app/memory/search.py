"""Search: TF-IDF and embedding similarity blended with a dynamic score (recency, use,
priority), over the active memories.

Read-only for memories: it never changes a memory's ``used`` time or use count (recording
a use is :meth:`app.memory.memories.Memories.mark_used`); it may fill the vector cache for
the current model, and keeps its TF-IDF index beside the file (:mod:`app.memory.tfidf`).
Time comes from the injected clock and ties go by id, so a search is deterministic.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from app.clock import Clock
from app.errors import UsageError
from app.memory import scoring
from app.memory.db import MemoryDB, tfidf_index_path
from app.memory.embeddings import EmbeddingKey
from app.memory.rows import fetch_memories, filters
from app.memory.tfidf import TfidfScorer
from app.memory.types import STATUS_ACTIVE, Memory, MemoryHit, check_kind
from app.memory.vectors import VectorCache, current_vectors
from app.policy.schema import Memory as MemoryPolicy

#: the least cosine that makes a memory a match with no word in common: any cosine
#: above 0 did, so every memory matched every query ("xyzzy plugh" found three, by
#: recency); MiniLM puts unrelated sentences near 0.0-0.2 and paraphrases above 0.4
EMBEDDING_FLOOR = 0.3


class Search:
    """Ranks the active memories for a query (see the module docstring)."""

    def __init__(self, db: MemoryDB, *, clock: Clock, vectors: VectorCache) -> None:
        self._db = db
        self._clock = clock
        self._vectors = vectors
        self._tfidf = TfidfScorer(tfidf_index_path(db.path))

    async def search(
        self,
        query: str,
        k: int = 10,
        *,
        weights: MemoryPolicy,
        kinds: Sequence[str] | None = None,
        use_embeddings: bool = True,
    ) -> list[MemoryHit]:
        """The ``k`` best active memories for ``query``, best first, ties by id.

        A memory with neither TF-IDF nor embedding similarity is no match, whatever its
        dynamic score.
        """
        self._db.check_open()
        query = query.strip()
        if not query:
            raise UsageError("an empty query")
        if k < 1:
            raise UsageError(f"k must be >= 1, got {k}")
        for kind in kinds or ():
            check_kind(kind)
        embedder = self._vectors.embedder if use_embeddings else None
        query_vector: NDArray[np.float32] | None = None
        key: EmbeddingKey | None = None
        if embedder is not None:
            await self._vectors.ensure()
            key = embedder.key
            query_vector = (await asyncio.to_thread(embedder.embed, [query]))[0]

        where, params = filters(kinds=kinds, status=STATUS_ACTIVE)

        def candidates(
            conn: sqlite3.Connection,
        ) -> tuple[list[Memory], dict[int, NDArray[np.float32]]]:
            memories = fetch_memories(conn, where, params)
            return memories, current_vectors(conn, key) if key is not None else {}

        # One snapshot for both; its cost grows with the store: off the event loop.
        memories, vectors = await self._db.read(candidates, inline=False)
        if not memories:
            return []

        # a fit, or reading the kept index: off the event loop too
        tfidf = await asyncio.to_thread(self._tfidf.scores, memories, query)
        now = self._clock.now()
        label = key.label() if key is not None else None
        hits: list[MemoryHit] = []
        for m, t in zip(memories, tfidf, strict=True):
            t_score = round(min(1.0, max(0.0, float(t))), scoring.DECIMALS)
            vec = vectors.get(m.id)
            e_score = 0.0
            if vec is not None and query_vector is not None:
                e_score = round(min(1.0, max(0.0, float(vec @ query_vector))), scoring.DECIMALS)
            if t_score <= 0.0 and e_score < EMBEDDING_FLOOR:
                continue
            dyn = scoring.dynamic(
                now=now,
                created=m.created,
                used=m.used,
                use_count=m.use_count,
                priority_value=m.priority,
                half_life_days=weights.recency_half_life_days,
            )
            hits.append(
                MemoryHit(
                    memory=m,
                    score=scoring.blend(
                        weights, tfidf=t_score, embedding=e_score, dynamic_score=dyn.score
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
