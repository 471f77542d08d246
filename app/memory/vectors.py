"""The vector cache: each memory's embedding, per model, derived from its present text.

Vectors live in their own table, keyed by (memory, model id, revision, dim). Only vectors
of the current embedder's key, made from the memory's present text, are ever compared;
other models' vectors stay in the file untouched. What lacks a current vector is
embedded on open and before each search, so a change of model re-embeds what the index
holds; :meth:`VectorCache.reembed_all` redoes all of them on demand.

Filling is the slow part of the memory: MiniLM's own arithmetic, ~25 ms a harvested
commit on 2 cores (88 s for a store of 3.8k). It goes in batches of :data:`EMBED_BATCH`
memories, each stored in a transaction of its own: an interrupted fill keeps what it
finished, and the next one goes on from there.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from app.errors import SwitchyardError, UsageError
from app.memory.db import MemoryDB, small
from app.memory.embeddings import EmbeddingKey, TextEmbedder, Vectors
from app.memory.rows import chunks
from app.memory.text import text_hash

#: memories embedded and stored together (one model call, one transaction) while filling
#: or rebuilding the cache: ~3 s of MiniLM on 2 cores, the most an interruption loses
EMBED_BATCH = 128
#: the phase :data:`Progress` is told while the cache fills
EMBED_PHASE = "embed"

#: ``progress(phase, done, total)``, told after each stored batch (as Stage0's is)
Progress = Callable[[str, int, int], None]


class VectorCache:
    """The current embedder and the vectors it made (a cache: it can always be rebuilt)."""

    def __init__(
        self, db: MemoryDB, embedder: TextEmbedder | None, *, progress: Progress | None = None
    ) -> None:
        self._db = db
        self.embedder = embedder
        self.progress = progress

    async def embed(self, texts: Sequence[str]) -> tuple[Vectors | None, EmbeddingKey | None]:
        """``texts``' vectors and their key, or ``(None, None)`` without an embedder."""
        embedder = self.embedder
        if embedder is None or not texts:
            return None, None
        vectors = await asyncio.to_thread(embedder.embed, list(texts))
        return vectors, embedder.key

    async def ensure(self) -> int:
        """Embed every memory lacking a current vector of the current model; returns how many.

        "Current" means made from the memory's present text (a merged bullet whose text
        changed is re-embedded). Without an embedder this does nothing.
        """
        self._db.check_open()
        if self.embedder is None:
            return 0
        key = self.embedder.key
        rows = await self._db.read(functools.partial(_vector_hashes, key=key), inline=False)
        stale = [(int(r[0]), str(r[1])) for r in rows if r[2] != text_hash(str(r[1]))]
        return await self.embed_and_store(stale)

    async def reembed_all(self, *, drop_other_models: bool = False) -> int:
        """Recompute every memory's vector with the current model; optionally drop the rest."""
        self._db.check_open()
        if self.embedder is None:
            raise UsageError("no embedding model to re-embed with")
        key = self.embedder.key
        rows = await self._db.read(_all_texts, inline=False)
        done = await self.embed_and_store(rows)
        if drop_other_models:
            await self._db.write(functools.partial(_drop_others, key=key), inline=False)
        return done

    async def put_vectors(self, key: EmbeddingKey, vectors: Mapping[int, Vectors]) -> int:
        """Store vectors made elsewhere (under ``key``) for the memories' present text."""
        self._db.check_open()
        items = sorted(vectors.items())

        def body(conn: sqlite3.Connection) -> int:
            stored = 0
            for memory_id, vector in items:
                row = conn.execute("SELECT text FROM memories WHERE id = ?", (memory_id,))
                found = row.fetchone()
                if found is None:
                    continue
                put_vector(conn, memory_id, key, text_hash(str(found[0])), vector)
                stored += 1
            return stored

        return await self._db.write(body, inline=small(len(items)))

    async def counts(self) -> dict[EmbeddingKey, int]:
        """How many vectors the file holds per (model, revision, dim)."""
        self._db.check_open()
        rows = await self._db.read(_counts, inline=False)
        return {EmbeddingKey(str(r[0]), str(r[1]), int(r[2])): int(r[3]) for r in rows}

    async def embed_and_store(self, rows: Sequence[tuple[int, str]]) -> int:
        """Embed ``(memory id, text)`` rows and store their vectors, a batch at a time;
        returns how many were stored (none without an embedder)."""
        if self.embedder is None or not rows:
            return 0
        # Texts of like length go together: a batch is padded to its longest text.
        ordered = sorted(rows, key=lambda row: (len(row[1]), row[0]))
        done = 0
        self._tell(done, len(ordered))
        for chunk in chunks(ordered, EMBED_BATCH):
            vectors, key = await self.embed([text for _, text in chunk])
            if vectors is None or key is None:
                return done
            batch = [
                (memory_id, text_hash(text), vector)
                for (memory_id, text), vector in zip(chunk, vectors, strict=True)
            ]
            await self._db.write(
                functools.partial(_put_batch, key=key, batch=batch), inline=small(len(batch))
            )
            done += len(chunk)
            self._tell(done, len(ordered))
        return done

    def _tell(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(EMBED_PHASE, done, total)


def put_vector(
    conn: sqlite3.Connection, memory_id: int, key: EmbeddingKey, hashed: str, vector: Vectors
) -> None:
    """Store one vector (inside a write transaction); a deleted memory gets none."""
    arr = np.asarray(vector, dtype="<f4").ravel()
    if arr.shape != (key.dim,):
        raise SwitchyardError(
            f"vector for memory {memory_id} has {arr.size} values, {key.label()} needs {key.dim}"
        )
    conn.execute(
        "INSERT OR REPLACE INTO embeddings (memory_id, model_id, revision, dim, text_hash, "
        "vector) SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM memories WHERE id = ?)",
        (memory_id, key.model_id, key.revision, key.dim, hashed, arr.tobytes(), memory_id),
    )


def current_vectors(conn: sqlite3.Connection, key: EmbeddingKey) -> dict[int, NDArray[np.float32]]:
    """The ``key`` model's vectors whose text is still the memory's text."""
    out: dict[int, NDArray[np.float32]] = {}
    rows = conn.execute(
        "SELECT e.memory_id, e.vector, e.text_hash, m.text FROM embeddings e "
        "JOIN memories m ON m.id = e.memory_id "
        "WHERE e.model_id = ? AND e.revision = ? AND e.dim = ?",
        (key.model_id, key.revision, key.dim),
    ).fetchall()
    for memory_id, blob, hashed, text in rows:
        if hashed != text_hash(str(text)) or len(blob) != key.dim * 4:
            continue  # stale or damaged: never compared
        out[int(memory_id)] = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    return out


def _put_batch(
    conn: sqlite3.Connection, *, key: EmbeddingKey, batch: Sequence[tuple[int, str, Vectors]]
) -> None:
    for memory_id, hashed, vector in batch:
        put_vector(conn, memory_id, key, hashed, vector)


def _vector_hashes(conn: sqlite3.Connection, *, key: EmbeddingKey) -> list[tuple[int, str, str]]:
    """Every memory's (id, text, hash of the text its ``key`` vector was made from)."""
    return conn.execute(
        "SELECT m.id, m.text, e.text_hash FROM memories m LEFT JOIN embeddings e "
        "ON e.memory_id = m.id AND e.model_id = ? AND e.revision = ? AND e.dim = ? "
        "ORDER BY m.id",
        (key.model_id, key.revision, key.dim),
    ).fetchall()


def _all_texts(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    rows = conn.execute("SELECT id, text FROM memories ORDER BY id").fetchall()
    return [(int(r[0]), str(r[1])) for r in rows]


def _drop_others(conn: sqlite3.Connection, *, key: EmbeddingKey) -> None:
    conn.execute(
        "DELETE FROM embeddings WHERE NOT (model_id = ? AND revision = ? AND dim = ?)",
        (key.model_id, key.revision, key.dim),
    )


def _counts(conn: sqlite3.Connection) -> list[tuple[str, str, int, int]]:
    return conn.execute(
        "SELECT model_id, revision, dim, COUNT(*) FROM embeddings "
        "GROUP BY model_id, revision, dim ORDER BY model_id, revision, dim"
    ).fetchall()
