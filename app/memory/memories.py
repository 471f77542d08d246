"""Memories themselves: adding (idempotent per source key), reading, recording a use.

Every memory is masked before it is stored or embedded (DESIGN decision 3): its text,
tags, source, source key and meta lose the values of the key variables and the common
key shapes (:mod:`app.audit.masking`). Masking is deterministic, so a source key still
makes an add idempotent: the key is looked up as it is stored, masked.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from app.audit.masking import Masker, mask_text
from app.clock import Clock, iso
from app.errors import SwitchyardError, UsageError
from app.memory.db import MemoryDB, small
from app.memory.rows import (
    IN_CHUNK,
    chunks,
    dumps,
    fetch_memories,
    fetch_memory,
    filters,
)
from app.memory.types import (
    Memory,
    NewMemory,
    check_kind,
    check_priority,
    clean_tags,
    clean_text,
)
from app.memory.vectors import VectorCache


class Memories:
    """The ``memories`` table: add (with vectors, when there is an embedder), get, list."""

    def __init__(self, db: MemoryDB, *, clock: Clock, vectors: VectorCache) -> None:
        self._db = db
        self._clock = clock
        self._vectors = vectors

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
        stored_key = mask_text(source_key)[0]
        existing = await self._db.read(functools.partial(_id_for_source_key, key=stored_key))
        if existing is None:  # pragma: no cover - a concurrent delete
            raise SwitchyardError(f"memory with source key {source_key!r} vanished")
        return existing

    async def add_many(self, items: Sequence[NewMemory]) -> list[int | None]:
        """Add memories in one transaction, then embed them (when there is an embedder).

        Returns each item's new id, or None where its ``source_key`` was already stored
        (or repeated earlier in ``items``): harvesting twice adds nothing.

        The memories are stored before any is embedded, and their vectors a batch at a
        time (:meth:`VectorCache.embed_and_store`): a first harvest of a long history
        embeds for minutes, and one interrupted keeps its memories and the vectors it
        made; what is left is embedded at the next open or search.
        """
        self._db.check_open()
        now = self._clock.now()
        prepared = [_prepare(item, now) for item in items]
        keys = [p.source_key for p in prepared if p.source_key is not None]
        present = await self.existing_source_keys(keys)
        seen: set[str] = set()
        todo: list[NewMemory] = []
        slots: list[int] = []  # each todo's index in prepared
        for i, p in enumerate(prepared):
            if p.source_key is not None:
                if p.source_key in present or p.source_key in seen:
                    continue
                seen.add(p.source_key)
            todo.append(p)
            slots.append(i)
        if not todo:
            return [None] * len(prepared)
        ids = await self._db.write(
            functools.partial(_insert, items=todo, now=now), inline=small(len(todo))
        )
        try:
            await self._vectors.embed_and_store(
                [(i, p.text) for i, p in zip(ids, todo, strict=True) if i is not None]
            )
        except Exception as exc:
            # stored already, and embedded at the next open or search: said, so that a
            # `memory add` run again does not add the memory a second time
            added = [i for i in ids if i is not None]
            what = f"memory {added[0]}" if len(added) == 1 else f"{len(added)} memories"
            raise SwitchyardError(
                f"{what} kept, not all embedded ({type(exc).__name__}: {exc}); what has no "
                "vector is embedded at the next search"
            ) from exc
        result: list[int | None] = [None] * len(prepared)
        for slot, memory_id in zip(slots, ids, strict=True):
            result[slot] = memory_id
        return result

    async def existing_source_keys(self, keys: Iterable[str]) -> set[str]:
        """Those of ``keys`` that are stored (each looked up masked, as it is stored)."""
        stored: dict[str, list[str]] = {}
        for key in set(keys):
            stored.setdefault(mask_text(key)[0], []).append(key)
        wanted = sorted(stored)
        if not wanted:
            return set()
        found = await self._db.read(
            functools.partial(_source_keys_in, wanted=wanted), inline=small(len(wanted))
        )
        return {key for masked in found for key in stored[masked]}

    async def get(self, memory_id: int) -> Memory | None:
        self._db.check_open()
        return await self._db.read(lambda conn: fetch_memory(conn, memory_id))

    async def list_memories(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[Memory]:
        """Memories by id, optionally of one kind and status."""
        self._db.check_open()
        where, params = filters(kinds=[kind] if kind else None, status=status)
        return await self._db.read(
            lambda conn: fetch_memories(conn, where, params, limit=limit),
            inline=limit is not None and small(limit),
        )

    async def count(self) -> int:
        self._db.check_open()
        row = await self._db.read(
            lambda conn: conn.execute("SELECT COUNT(*) FROM memories").fetchone(), inline=False
        )
        return int(row[0]) if row else 0

    async def mark_used(self, ids: Iterable[int]) -> int:
        """Record that these memories were used now; returns how many exist and were marked."""
        self._db.check_open()
        wanted = sorted(set(ids))
        if not wanted:
            return 0
        now = iso(self._clock.now())
        return await self._db.write(
            functools.partial(_mark_used, wanted=wanted, now=now), inline=small(len(wanted))
        )


def _prepare(item: NewMemory, now: datetime) -> NewMemory:
    created = item.created
    if created is not None:
        if created.tzinfo is None:
            raise UsageError("a memory's created time must be timezone-aware")
        created = min(created, now)  # a clock skewed ahead never makes a memory "newer"
    masker = Masker.from_environment()
    source_key = item.source_key
    return replace(
        item,
        text=clean_text(masker.text(item.text)),
        kind=check_kind(item.kind),
        tags=tuple(sorted({masker.text(t) for t in clean_tags(item.tags)})),
        source=masker.text(item.source),
        source_key=masker.text(source_key) if source_key is not None else None,
        priority=check_priority(item.priority),
        created=created,
        meta=masker.walk(dict(item.meta)),
    )


def _insert(
    conn: sqlite3.Connection, *, items: Sequence[NewMemory], now: datetime
) -> list[int | None]:
    """Insert prepared memories; None where the key was taken."""
    ids: list[int | None] = []
    for p in items:
        cur = conn.execute(
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
                dumps(p.meta),
            ),
        )
        if cur.rowcount != 1 or cur.lastrowid is None:
            ids.append(None)  # a concurrent writer stored the same key first
            continue
        ids.append(int(cur.lastrowid))
    return ids


def _source_keys_in(conn: sqlite3.Connection, *, wanted: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in chunks(wanted, IN_CHUNK):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT source_key FROM memories WHERE source_key IN ({marks})", chunk
        ).fetchall()
        found.update(str(r[0]) for r in rows)
    return found


def _id_for_source_key(conn: sqlite3.Connection, *, key: str) -> int | None:
    row = conn.execute("SELECT id FROM memories WHERE source_key = ?", (key,)).fetchone()
    return int(row[0]) if row else None


def _mark_used(conn: sqlite3.Connection, *, wanted: Sequence[int], now: str) -> int:
    marked = 0
    for chunk in chunks(wanted, IN_CHUNK):
        marks = ",".join("?" * len(chunk))
        cur = conn.execute(
            f"UPDATE memories SET used = ?, use_count = use_count + 1 WHERE id IN ({marks})",
            [now, *chunk],
        )
        marked += max(0, cur.rowcount)
    return marked
