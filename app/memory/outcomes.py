"""Session outcomes: how each run ended, kept once per run and turned into an ``outcome``
memory that a later brief can recall. A summary is masked before it is stored (see
:mod:`app.memory.memories`)."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from app.audit.masking import Masker
from app.clock import Clock, iso
from app.errors import SwitchyardError, UsageError
from app.memory.db import MemoryDB, small
from app.memory.memories import Memories
from app.memory.types import NewMemory, clean_tags, clean_text


class Outcomes:
    """The ``outcomes`` table and the memories made from it."""

    def __init__(self, db: MemoryDB, *, clock: Clock, memories: Memories) -> None:
        self._db = db
        self._clock = clock
        self._memories = memories

    async def record_outcome(
        self, run_id: str, summary: str, success: bool, tags: Iterable[str] = ()
    ) -> int:
        """Record how a run ended and keep it as an ``outcome`` memory; returns its id.

        Idempotent per ``run_id``: recording the same run again changes nothing and
        returns the memory made the first time.
        """
        self._db.check_open()
        run_id = run_id.strip()
        if not run_id:
            raise UsageError("an outcome needs a run id")
        masker = Masker.from_environment()  # the memory made from it is masked again
        row = (
            run_id,
            clean_text(masker.text(summary)),
            int(success),
            json.dumps(sorted({masker.text(t) for t in clean_tags(tags)})),
            iso(self._clock.now()),
        )
        await self._db.write(functools.partial(_insert, row=row))
        await self.harvest_outcomes(run_ids=[run_id])
        memory_id = await self._db.read(functools.partial(_memory_of, run_id=run_id))
        if memory_id is None:  # pragma: no cover - a concurrent delete
            raise SwitchyardError(f"outcome of run {run_id} was not kept")
        return memory_id

    async def harvest_outcomes(self, *, run_ids: Sequence[str] | None = None) -> list[int]:
        """Turn recorded outcomes that have no memory yet into memories; returns new ids."""
        self._db.check_open()
        if run_ids is not None and not run_ids:
            return []
        rows = await self._db.read(
            functools.partial(_unharvested, run_ids=run_ids),
            inline=run_ids is not None and small(len(run_ids)),
        )
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
        ids = await self._memories.add_many(items)
        links = [(str(item.source_key), str(item.meta["run_id"])) for item in items]
        if links:
            await self._db.write(functools.partial(_link, links=links), inline=small(len(links)))
        return [i for i in ids if i is not None]


def _insert(conn: sqlite3.Connection, *, row: tuple[str, str, int, str, str]) -> None:
    conn.execute(
        "INSERT INTO outcomes (run_id, summary, success, tags, recorded) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
        row,
    )


def _unharvested(conn: sqlite3.Connection, *, run_ids: Sequence[str] | None) -> list[Any]:
    sql = (
        "SELECT o.run_id, o.summary, o.success, o.tags, o.recorded FROM outcomes o "
        "LEFT JOIN memories m ON m.id = o.memory_id WHERE m.id IS NULL"
    )
    params: list[Any] = []
    if run_ids is not None:
        sql += f" AND o.run_id IN ({','.join('?' * len(run_ids))})"
        params.extend(run_ids)
    return conn.execute(sql + " ORDER BY o.recorded, o.run_id", params).fetchall()


def _link(conn: sqlite3.Connection, *, links: Sequence[tuple[str, str]]) -> None:
    """Point each outcome (by run id) at the memory holding its source key."""
    for source_key, run_id in links:
        conn.execute(
            "UPDATE outcomes SET memory_id = "
            "(SELECT id FROM memories WHERE source_key = ?) WHERE run_id = ?",
            (source_key, run_id),
        )


def _memory_of(conn: sqlite3.Connection, *, run_id: str) -> int | None:
    row = conn.execute("SELECT memory_id FROM outcomes WHERE run_id = ?", (run_id,)).fetchone()
    return int(row[0]) if row is not None and row[0] is not None else None
