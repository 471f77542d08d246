"""Playbook bullets for the ACE curator: ``playbook`` memories rated helpful or harmful,
retired (deprecated) or folded into one another (merged). Every text is masked before
it is stored (see :mod:`app.memory.memories`)."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterable, Sequence

from app.audit.masking import mask_text
from app.clock import iso
from app.errors import SwitchyardError, UsageError
from app.memory.db import MemoryDB, small
from app.memory.memories import Memories
from app.memory.rows import dumps, fetch_memory
from app.memory.types import (
    STATUS_ACTIVE,
    STATUS_DEPRECATED,
    STATUSES,
    Memory,
    clean_tags,
    clean_text,
)
from app.memory.vectors import VectorCache


class Playbook:
    """Bullets are memories of kind ``playbook``; this is what only bullets can do."""

    def __init__(self, db: MemoryDB, *, memories: Memories, vectors: VectorCache) -> None:
        self._db = db
        self._memories = memories
        self._vectors = vectors

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
        return await self._memories.add(
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
        return await self._db.write(
            functools.partial(_rate, bullet_id=bullet_id, helpful=helpful, harmful=harmful)
        )

    async def deprecate(self, bullet_id: int, *, reason: str = "") -> Memory:
        """Retire a bullet: it stays in the file but no longer shows in search."""
        return await self._db.write(
            functools.partial(_deprecate, bullet_id=bullet_id, reason=reason)
        )

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
        new_text = clean_text(mask_text(text)[0]) if text is not None else None
        result = await self._db.write(
            functools.partial(_merge, into=into, merged=merged, new_text=new_text),
            inline=small(len(merged) + 1),
        )
        if new_text is not None:
            await self._vectors.ensure()
        return result

    async def playbook(self, *, status: str | None = STATUS_ACTIVE) -> list[Memory]:
        """Bullets, most net-helpful first (ties by id)."""
        if status is not None and status not in STATUSES:
            raise UsageError(f"status {status!r}: expected one of {', '.join(STATUSES)}")
        bullets = await self._memories.list_memories(kind="playbook", status=status)
        return sorted(bullets, key=lambda b: (-(b.helpful - b.harmful), b.id))


# ── transactions ─────────────────────────────────────────────────────────────────────────


def _rate(conn: sqlite3.Connection, *, bullet_id: int, helpful: int, harmful: int) -> Memory:
    _bullet(conn, bullet_id)
    conn.execute(
        "UPDATE memories SET helpful = helpful + ?, harmful = harmful + ? WHERE id = ?",
        (helpful, harmful, bullet_id),
    )
    return _must_get(conn, bullet_id)


def _deprecate(conn: sqlite3.Connection, *, bullet_id: int, reason: str) -> Memory:
    bullet = _bullet(conn, bullet_id)
    meta = dict(bullet.meta)
    if reason:
        meta["deprecated_reason"] = mask_text(reason)[0]
    conn.execute(
        "UPDATE memories SET status = ?, meta = ? WHERE id = ?",
        (STATUS_DEPRECATED, dumps(meta), bullet_id),
    )
    return _must_get(conn, bullet_id)


def _merge(
    conn: sqlite3.Connection, *, into: int, merged: Sequence[int], new_text: str | None
) -> Memory:
    target = _bullet(conn, into, active=True)
    sources = [_bullet(conn, i, active=True) for i in merged]
    group = [target, *sources]
    tags = clean_tags(t for b in group for t in b.tags)
    used = [b.used for b in group if b.used is not None]
    conn.execute(
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
            dumps({**target.meta, "merged_from": _merged_from(target, merged)}),
            into,
        ),
    )
    marks = ",".join("?" * len(merged))
    conn.execute(
        f"UPDATE memories SET status = ?, merged_into = ? WHERE id IN ({marks})",
        [STATUS_DEPRECATED, into, *merged],
    )
    return _must_get(conn, into)


def _bullet(conn: sqlite3.Connection, bullet_id: int, *, active: bool = False) -> Memory:
    memory = fetch_memory(conn, bullet_id)
    if memory is None or memory.kind != "playbook":
        raise UsageError(f"no playbook bullet {bullet_id}")
    if active and memory.status != STATUS_ACTIVE:
        raise UsageError(f"playbook bullet {bullet_id} is {memory.status}")
    return memory


def _must_get(conn: sqlite3.Connection, memory_id: int) -> Memory:
    memory = fetch_memory(conn, memory_id)
    if memory is None:  # pragma: no cover - the transaction just read it
        raise SwitchyardError(f"memory {memory_id} vanished")
    return memory


def _merged_from(target: Memory, merged: Sequence[int]) -> list[int]:
    earlier = target.meta.get("merged_from", [])
    return sorted({*(int(i) for i in earlier), *merged})
