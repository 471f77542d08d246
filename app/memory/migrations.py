"""The memory DB's schema, as forward migrations.

``MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1``. Each step runs in its
own ``BEGIN IMMEDIATE`` transaction together with its row in ``schema_version``, so a
crash leaves the file at a whole version, and two processes opening an old file at once
migrate it once. Never edit a released step: append a new one.
"""

from __future__ import annotations

import contextlib
import sqlite3

import aiosqlite

from app.clock import Clock, iso
from app.errors import SwitchyardError

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # v1: memories and their vectors, one row per (memory, model, revision, dim)
    (
        """CREATE TABLE memories (
            id        INTEGER PRIMARY KEY AUTOINCREMENT,
            text      TEXT NOT NULL,
            kind      TEXT NOT NULL,
            tags      TEXT NOT NULL DEFAULT '[]',
            source    TEXT NOT NULL DEFAULT '',
            created   TEXT NOT NULL,
            used      TEXT,
            use_count INTEGER NOT NULL DEFAULT 0,
            priority  INTEGER NOT NULL DEFAULT 0,
            meta      TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX memories_kind ON memories (kind, id)",
        """CREATE TABLE embeddings (
            memory_id INTEGER NOT NULL REFERENCES memories (id) ON DELETE CASCADE,
            model_id  TEXT NOT NULL,
            revision  TEXT NOT NULL,
            dim       INTEGER NOT NULL,
            text_hash TEXT NOT NULL,
            vector    BLOB NOT NULL,
            PRIMARY KEY (memory_id, model_id, revision, dim)
        )""",
        "CREATE INDEX embeddings_model ON embeddings (model_id, revision, dim, memory_id)",
    ),
    # v2: idempotent harvesting: one memory per source key (git:<sha>, outcome:<run id>)
    (
        "ALTER TABLE memories ADD COLUMN source_key TEXT",
        "CREATE UNIQUE INDEX memories_source_key ON memories (source_key)",
    ),
    # v3: playbook bullets for the ACE curator
    (
        "ALTER TABLE memories ADD COLUMN helpful INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE memories ADD COLUMN harmful INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE memories ADD COLUMN status TEXT NOT NULL DEFAULT 'active'",
        "ALTER TABLE memories ADD COLUMN merged_into INTEGER REFERENCES memories (id)",
        "CREATE INDEX memories_status ON memories (status, kind, id)",
    ),
    # v4: session outcomes as the pipeline records them; each becomes an "outcome" memory
    (
        """CREATE TABLE outcomes (
            run_id    TEXT PRIMARY KEY,
            summary   TEXT NOT NULL,
            success   INTEGER NOT NULL,
            tags      TEXT NOT NULL DEFAULT '[]',
            recorded  TEXT NOT NULL,
            memory_id INTEGER REFERENCES memories (id)
        )""",
    ),
)

CURRENT_VERSION = len(MIGRATIONS)

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied TEXT NOT NULL
)"""


async def schema_version(db: aiosqlite.Connection) -> int:
    async with db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ) as cur:
        if await cur.fetchone() is None:
            return 0
    async with db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def migrate(
    db: aiosqlite.Connection, *, clock: Clock, target: int = CURRENT_VERSION
) -> list[int]:
    """Bring the schema up to ``target``; return the versions applied (oldest first).

    ``db`` must be in autocommit mode (``isolation_level=None``): each step is its own
    transaction.
    """
    if not 0 <= target <= CURRENT_VERSION:
        raise ValueError(f"target schema version {target} outside 0…{CURRENT_VERSION}")
    await db.execute(_VERSION_TABLE)
    applied: list[int] = []
    while True:
        await db.execute("BEGIN IMMEDIATE")
        try:
            version = await schema_version(db)
            if version > CURRENT_VERSION:
                raise SwitchyardError(
                    f"the memory DB has schema v{version}, newer than this Switchyard "
                    f"understands (v{CURRENT_VERSION}); upgrade Switchyard"
                )
            if version >= target:
                await db.execute("COMMIT")
                return applied
            for statement in MIGRATIONS[version]:
                await db.execute(statement)
            await db.execute(
                "INSERT INTO schema_version (version, applied) VALUES (?, ?)",
                (version + 1, iso(clock.now())),
            )
            await db.execute("COMMIT")
            applied.append(version + 1)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                await db.execute("ROLLBACK")
            raise
