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
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ci import missing


@dataclass(frozen=True)
class PgServer:
    #: an admin URL (CREATE DATABASE allowed)
    admin_url: str
    host: str
    port: int
    user: str

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"


def pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return hits[-1] if hits else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def _start_cluster() -> tuple[PgServer, Path, str]:
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        missing("PostgreSQL is not installed (initdb/pg_ctl; Debian package `postgresql`)")
    as_root = os.geteuid() == 0
    run_as: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="switchyard-pg-"))
    if as_root:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            missing("running as root and there is no `postgres` user to run initdb as")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    data, port = root / "data", _free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    common: dict[str, Any] = {"env": env, "cwd": root, "capture_output": True, "text": True}
    init = subprocess.run(
        [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
        **common,
        **run_as,
        timeout=120,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"initdb failed: {init.stderr.strip()[-500:]}", pytrace=False)
    opts = (
        f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off"
        " -c full_page_writes=off -c max_connections=200"
    )
    start = subprocess.run(
        [pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "-t", "60", "start"],
        **common,
        **run_as,
        timeout=90,
    )
    if start.returncode != 0:
        log = (root / "log").read_text(errors="replace")[-800:] if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"pg_ctl start failed: {start.stderr.strip()} {log}", pytrace=False)
    server = PgServer(
        f"postgresql://postgres@127.0.0.1:{port}/postgres", "127.0.0.1", port, "postgres"
    )
    return server, root, pg_ctl


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    given = os.environ.get("SWITCHYARD_TEST_PG_DSN", "").strip()
    if given:
        from app.store.url import parse_database_url

        url = parse_database_url(given)
        yield PgServer(given, url.host or "127.0.0.1", url.port, url.user or "postgres")
        return
    server, root, pg_ctl = _start_cluster()
    try:
        yield server
    finally:
        owner: dict[str, Any] = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            owner = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        subprocess.run(
            [pg_ctl, "-D", str(root / "data"), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            cwd=root,
            timeout=60,
            **owner,
        )
        shutil.rmtree(root, ignore_errors=True)


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
