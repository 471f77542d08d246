"""A released migration is never edited: a database it already ran on keeps what it
made, and only a later migration changes that (the team ledger's v3 was edited after it
shipped, and databases migrated before the edit kept its first function: an upgrade
audit). Each migration's statements are pinned by digest here; a new migration adds its
own digest, and an edited one fails."""

from __future__ import annotations

import hashlib

import pytest

from app.audit import pg_schema as audit_pg
from app.memory import migrations as memory
from app.router.ledger import pg_schema as ledger_pg
from app.router.ledger import schema as ledger_sqlite

PINNED: dict[str, tuple[tuple[tuple[str, ...], ...], list[str]]] = {
    "team ledger (PostgreSQL)": (
        ledger_pg.MIGRATIONS,
        [
            "8e10a7bb9b32d1d3",
            "cbdda46508692369",
            "487a77cc540bf2f2",
            "487a77cc540bf2f2",
            "73c6c89055b8ab51",
            "3b4f79f77ec4e6f4",
            "64af40f1cef3c733",
            "b303b083de963399",
            "095b50c130872a11",
            "99672dcf76156288",
        ],
    ),
    "team audit (PostgreSQL)": (
        audit_pg.MIGRATIONS,
        ["aeaeceb04a91d994", "be60fa43433692a1", "bf619f98c4cdb8ea", "e04d12922a0371a0"],
    ),
    "ledger (SQLite)": (
        ledger_sqlite.MIGRATIONS,
        [
            "80d2f9d4b7eb65ee",
            "a4403cc7ca97826a",
            "edce20dc18cc2810",
            "18c098d5722f6a79",
            "ba8df4fa0d44e8f8",
        ],
    ),
    "memory (SQLite)": (
        memory.MIGRATIONS,
        ["dad64eac3cefbc1c", "6bf2bcc147fb294f", "d17bece76000c933", "d2fc45dfe7d1f69b"],
    ),
}


def digest(statements: tuple[str, ...]) -> str:
    return hashlib.sha256("\0".join(statements).encode()).hexdigest()[:16]


@pytest.mark.parametrize("store", sorted(PINNED))
def test_released_migrations_are_never_edited(store: str) -> None:
    migrations, pinned = PINNED[store]
    found = [digest(tuple(m)) for m in migrations]
    assert found[: len(pinned)] == pinned, (
        f"{store}: a released migration changed; add a new one instead"
    )
    assert len(found) == len(pinned), (
        f"{store}: pin the new migration's digest {found[len(pinned) :]}"
    )
