"""The ledger's tables and their migrations.

``reservations`` and ``calls`` hold the rows; ``totals`` holds the running sums the cap
checks read (session, day, provider-day), kept by triggers in the same transaction as the
rows they sum, whoever writes, so a check costs the same with ten calls on file or a
million.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from app.router.ledger.errors import LedgerUnreadable

SCHEMA_VERSION = 5


def _add_totals(row: str, column: str, amount: str) -> str:
    """An upsert adding ``amount`` to the session, day and provider-day totals of ``row``."""
    return (
        f"INSERT INTO totals (scope, key, provider, {column}) VALUES"
        f" ('session', {row}.session, '', {amount}), ('day', {row}.day, '', {amount}),"
        f" ('provider_day', {row}.day, {row}.provider, {amount})"
        f" ON CONFLICT (scope, key, provider)"
        f" DO UPDATE SET {column} = {column} + excluded.{column};"
    )


def _sub_totals(row: str, column: str, amount: str) -> str:
    return " ".join(
        f"UPDATE totals SET {column} = {column} - {amount}"
        f" WHERE scope = '{scope}' AND key = {row}.{key} AND provider = {provider};"
        for scope, key, provider in (
            ("session", "session", "''"),
            ("day", "day", "''"),
            ("provider_day", "day", f"{row}.provider"),
        )
    )


def _trigger(name: str, event: str, table: str, when: str, *statements: str) -> str:
    when_sql = f" WHEN {when}" if when else ""
    return (
        f"CREATE TRIGGER {name} AFTER {event} ON {table}{when_sql} BEGIN {' '.join(statements)} END"
    )


_TOTAL_SCOPES = (
    ("session", "session", "''", "session"),
    ("day", "day", "''", "day"),
    ("provider_day", "day", "provider", "day, provider"),
)

_TOTALS_TRIGGERS = (
    _trigger(
        "calls_totals_ins",
        "INSERT",
        "calls",
        "",
        _add_totals("NEW", "spent_nusd", "NEW.cost_nusd"),
    ),
    _trigger(
        "calls_totals_del",
        "DELETE",
        "calls",
        "",
        _sub_totals("OLD", "spent_nusd", "OLD.cost_nusd"),
    ),
    _trigger(
        "calls_totals_upd",
        "UPDATE",
        "calls",
        "",
        _sub_totals("OLD", "spent_nusd", "OLD.cost_nusd"),
        _add_totals("NEW", "spent_nusd", "NEW.cost_nusd"),
    ),
    _trigger(
        "reservations_totals_ins",
        "INSERT",
        "reservations",
        "NEW.status = 'live'",
        _add_totals("NEW", "reserved_nusd", "NEW.amount_nusd"),
    ),
    _trigger(
        "reservations_totals_del",
        "DELETE",
        "reservations",
        "OLD.status = 'live'",
        _sub_totals("OLD", "reserved_nusd", "OLD.amount_nusd"),
    ),
    _trigger(
        "reservations_totals_upd_old",
        "UPDATE",
        "reservations",
        "OLD.status = 'live'",
        _sub_totals("OLD", "reserved_nusd", "OLD.amount_nusd"),
    ),
    _trigger(
        "reservations_totals_upd_new",
        "UPDATE",
        "reservations",
        "NEW.status = 'live'",
        _add_totals("NEW", "reserved_nusd", "NEW.amount_nusd"),
    ),
)
#: v3 drops them by these names before it rebuilds the tables they write to
_TRIGGER_NAMES = tuple(t.split()[2] for t in _TOTALS_TRIGGERS)
_FILL_TOTALS = (
    *(
        f"INSERT INTO totals (scope, key, provider, spent_nusd) SELECT '{scope}', {key},"
        f" {provider}, SUM(cost_nusd) FROM calls WHERE true GROUP BY {group}"
        for scope, key, provider, group in _TOTAL_SCOPES
    ),
    *(
        f"INSERT INTO totals (scope, key, provider, reserved_nusd) SELECT '{scope}', {key},"
        f" {provider}, SUM(amount_nusd) FROM reservations WHERE status = 'live'"
        f" GROUP BY {group} ON CONFLICT (scope, key, provider)"
        " DO UPDATE SET reserved_nusd = reserved_nusd + excluded.reserved_nusd"
        for scope, key, provider, group in _TOTAL_SCOPES
    ),
)
_STATUSES = ("live", "settled", "released", "expired")
_SCOPES = ("session", "day", "provider_day")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    """``column`` is one of ``values``, spelled without an IN list (see v3 below)."""
    return " OR ".join(f"{column} = '{v}'" for v in values)


_RESERVATIONS = """CREATE TABLE {name} (
            id TEXT PRIMARY KEY,
            session TEXT NOT NULL,
            run TEXT NOT NULL DEFAULT '',
            provider TEXT NOT NULL,
            role TEXT NOT NULL,
            model TEXT NOT NULL,
            amount_nusd INTEGER NOT NULL CHECK (amount_nusd >= 0),
            day TEXT NOT NULL,
            created TEXT NOT NULL,
            expires TEXT NOT NULL,
            expires_at REAL NOT NULL,
            status TEXT NOT NULL
                CHECK ({status}),
            closed TEXT
        )"""
_RESERVATIONS_LIVE = (
    "CREATE INDEX reservations_live ON reservations(expires_at) WHERE status = 'live'"
)
_TOTALS = """CREATE TABLE totals (
            scope TEXT NOT NULL CHECK ({scope}),
            key TEXT NOT NULL,
            provider TEXT NOT NULL DEFAULT '',
            spent_nusd INTEGER NOT NULL DEFAULT 0,
            reserved_nusd INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (scope, key, provider)
        ) WITHOUT ROWID"""

# Each entry migrates the schema from version i to i + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # v1 and v2 spelled the constraints with IN lists (v3 below replaces them)
        _RESERVATIONS.format(
            name="reservations", status="status IN ('live', 'settled', 'released', 'expired')"
        ),
        _RESERVATIONS_LIVE,
        """CREATE TABLE calls (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts TEXT NOT NULL,
            day TEXT NOT NULL,
            session TEXT NOT NULL,
            run TEXT NOT NULL DEFAULT '',
            role TEXT NOT NULL,
            model TEXT NOT NULL,
            provider TEXT NOT NULL,
            tokens_in INTEGER NOT NULL,
            tokens_out INTEGER NOT NULL,
            latency_ms REAL NOT NULL,
            cost_nusd INTEGER NOT NULL CHECK (cost_nusd >= 0),
            outcome TEXT NOT NULL,
            reservation_id TEXT
        )""",
        "CREATE INDEX calls_day_provider ON calls(day, provider)",
        "CREATE INDEX calls_session ON calls(session)",
    ),
    # v2: running totals for the cap checks, kept by triggers in the writing transaction
    # (whoever writes), and filled from the rows already on file.
    (
        _TOTALS.format(scope="scope IN ('session', 'day', 'provider_day')"),
        *_TOTALS_TRIGGERS,
        *_FILL_TOTALS,
    ),
    # v3: the same constraints without IN lists. SQLite builds an ephemeral table for an
    # IN list each time it checks one (~30k instructions and a zeroed page); a routed
    # request checked ~10 of them (a reservation's status, every totals row its triggers
    # upserted), 12 % of the request's instructions. Both tables are rebuilt with OR in
    # place of IN, which allows exactly the same values: the triggers are dropped first
    # (none may point at a table that is being replaced), the reservations copied over,
    # the totals refilled from the rows as v2 filled them.
    (
        *(f"DROP TRIGGER {name}" for name in _TRIGGER_NAMES),
        _RESERVATIONS.format(name="reservations_v3", status=_one_of("status", _STATUSES)),
        "INSERT INTO reservations_v3 (id, session, run, provider, role, model, amount_nusd,"
        " day, created, expires, expires_at, status, closed) SELECT id, session, run,"
        " provider, role, model, amount_nusd, day, created, expires, expires_at, status,"
        " closed FROM reservations",
        "DROP TABLE reservations",
        "ALTER TABLE reservations_v3 RENAME TO reservations",
        _RESERVATIONS_LIVE,
        "DROP TABLE totals",
        _TOTALS.format(scope=_one_of("scope", _SCOPES)),
        *_TOTALS_TRIGGERS,
        *_FILL_TOTALS,
    ),
    # v4: the request path's writes go to a spool first (ledger.db-spool, see .spooled)
    # and are folded into the tables; this says how far. A v3 Switchyard would write
    # around the spool (its cap checks blind to the records not yet folded): refused.
    (
        "CREATE TABLE ledger_spool (id INTEGER PRIMARY KEY CHECK (id = 1),"
        " spool TEXT NOT NULL, folded INTEGER NOT NULL)",
    ),
    # v5: of a call's tokens_in, those the provider read from its prompt cache (priced at
    # the cache's rate, a tenth of the input's for most): the spend report says what a
    # cost came from. The rows already on file read 0 (none was told apart then). A
    # column added with a constant default rewrites no row.
    ("ALTER TABLE calls ADD COLUMN tokens_cached INTEGER NOT NULL DEFAULT 0",),
)


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the file at ``path`` to :data:`SCHEMA_VERSION`, in one transaction."""
    # IMMEDIATE: two processes opening a fresh file must not both create the tables.
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = int(row[0] or 0) if row is not None else 0
        if current > SCHEMA_VERSION:
            raise LedgerUnreadable(
                f"{path}: ledger schema version {current} is newer than this Switchyard "
                f"understands ({SCHEMA_VERSION}); upgrade Switchyard on this machine"
            )
        for version in range(current, SCHEMA_VERSION):
            for stmt in MIGRATIONS[version]:
                db.execute(stmt)
        if current < SCHEMA_VERSION:
            # One row: the version the file is at now.
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
