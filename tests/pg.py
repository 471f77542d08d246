"""A throwaway PostgreSQL for the team store's tests (a pytest plugin).

``pg_server`` (session): a cluster made for this run in a ``mkdtemp`` folder, by
``initdb`` run as the ``postgres`` user when the suite runs as root (initdb refuses
root; pytest's own tmp folder is mode 0700, so the folder is chowned), started by
``pg_ctl`` on a free loopback port with its socket in that folder and fsync off, and
stopped at the end. ``SWITCHYARD_TEST_PG_DSN`` points the suite at an existing server
instead (a role that may CREATE DATABASE). Without PostgreSQL the tests that need it
skip, and fail under ``CI=true`` (``make test`` installs it).

``pg_url`` (function): a fresh database on that server, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ci import missing
from tests.pg_cluster import ClusterUnavailable, start_cluster


@dataclass(frozen=True)
class PgServer:
    #: an admin URL (CREATE DATABASE allowed)
    admin_url: str
    host: str
    port: int
    user: str

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"


def run_sync(coro: Any) -> Any:
    """Run ``coro`` to the end on a loop of its own (safe inside a running loop too)."""
    box: dict[str, Any] = {}

    def go() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # handed back to the caller
            box["error"] = exc

    worker = threading.Thread(target=go)
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    given = os.environ.get("SWITCHYARD_TEST_PG_DSN", "").strip()
    if given:
        from app.store.url import parse_database_url

        url = parse_database_url(given)
        yield PgServer(given, url.host or "127.0.0.1", url.port, url.user or "postgres")
        return
    try:
        cluster = start_cluster(fsync=False)
    except ClusterUnavailable as exc:
        missing(str(exc))
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield PgServer(cluster.admin_url, cluster.host, cluster.port, cluster.user)
    finally:
        cluster.stop()


async def _admin(server: PgServer, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(server.admin_url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(server: PgServer) -> str:
    name = f"sy_{uuid.uuid4().hex[:12]}"
    run_sync(_admin(server, f"CREATE DATABASE {name}"))
    return name


def drop_database(server: PgServer, name: str) -> None:
    with contextlib.suppress(Exception):
        run_sync(_admin(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database: its URL."""
    name = create_database(pg_server)
    try:
        yield pg_server.url_for(name)
    finally:
        drop_database(pg_server, name)


# ── the same store tests on both backends ────────────────────────────────────────────────


@dataclass(frozen=True)
class StoreUnderTest:
    """Where a test's ledger and audit log live: a SQLite path or a PostgreSQL URL."""

    kind: str  # "sqlite" | "postgres"
    location: str
    #: a team of its own, so tests (and hypothesis examples) sharing a database never meet
    team: str = "team"

    @property
    def shared(self) -> bool:
        return self.kind == "postgres"

    def with_team(self, team: str) -> StoreUnderTest:
        return StoreUnderTest(self.kind, self.location, team)

    async def ledger(self, budget: Any, clock: Any = None, *, user: str = "alice") -> Any:
        return await ledger_at(self.location, budget, clock=clock, team=self.team, user=user)

    async def audit(self, clock: Any = None, *, user: str = "alice", host: str = "box-a") -> Any:
        if not self.shared:
            from app.audit.log import AuditLog

            return await AuditLog.open(Path(self.location).with_name("audit.sqlite3"), clock=clock)
        from app.audit.pg_log import PgAuditLog

        return await PgAuditLog.open(
            self.location, team=self.team, user=user, host=host, clock=clock
        )


async def expire_all_now(url: str) -> None:
    """Every live reservation of the team ledger at ``url`` past its TTL by the database's
    clock, which its expiry reads (set, not waited for)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "UPDATE ledger_reservations SET expires_at = now() WHERE status = 'live'"
        )
    finally:
        await conn.close()


async def ledger_at(
    location: str, budget: Any, *, clock: Any = None, team: str = "team", user: str = "alice"
) -> Any:
    """A ledger at ``location`` (a path, or a postgresql:// URL): for tests and their
    child processes alike."""
    if location.startswith("postgresql://"):
        from app.router.ledger.pg_ledger import PgBudgetLedger

        return await PgBudgetLedger.open(location, budget, team=team, user=user, clock=clock)
    from app.router.ledger import BudgetLedger

    return await BudgetLedger.open(location, budget, clock=clock)


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreUnderTest:
    """The store tests run once on a SQLite file and once on PostgreSQL."""
    if request.param == "postgres":
        return StoreUnderTest("postgres", request.getfixturevalue("pg_url"))
    return StoreUnderTest("sqlite", str(tmp_path / "ledger.db"))
