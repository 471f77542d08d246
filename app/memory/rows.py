"""Rows of the ``memories`` table and the records they stand for (run inside a transaction
that :class:`app.memory.db.MemoryDB` holds)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from app.memory.types import Memory

#: ids per "IN (…)" clause
IN_CHUNK = 500

COLUMNS = (
    "id, text, kind, tags, source, source_key, created, used, use_count, priority, "
    "helpful, harmful, status, merged_into, meta"
)


def fetch_memory(conn: sqlite3.Connection, memory_id: int) -> Memory | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM memories WHERE id = ?", (memory_id,)).fetchone()
    return to_memory(row) if row else None


def fetch_memories(
    conn: sqlite3.Connection, where: str, params: Sequence[Any], *, limit: int | None = None
) -> list[Memory]:
    """Memories by id (the first ``limit``), ``where`` as :func:`filters` makes it."""
    sql = f"SELECT {COLUMNS} FROM memories{where} ORDER BY id"
    if limit is not None:
        sql += " LIMIT ?"
        params = [*params, limit]
    return [to_memory(r) for r in conn.execute(sql, params).fetchall()]


def filters(*, kinds: Sequence[str] | None, status: str | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if kinds:
        clauses.append(f"kind IN ({','.join('?' * len(kinds))})")
        params.extend(kinds)
    if status is not None:
        clauses.append("status = ?")
        params.append(status)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def to_memory(row: Any) -> Memory:
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


def dumps(meta: Mapping[str, Any]) -> str:
    return json.dumps(dict(meta), sort_keys=True, default=str)


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
