"""``database_fallback`` and a team database that goes silent mid-run: the host stops
answering, its TCP kept open, every statement timing out. Only a database gone (the
connection refused, broken, shut down) had switched, and a timeout never was: the
fallback never switched and every request failed closed for as long as it lasted. A
timeout cannot tell a slow or locked server from a silent one, so it asks a probe (a new
connection's ``SELECT 1``): no answer there either is the database gone, and the session
moves to this machine's files with the line that says so; an answer is a server alive
but slow, and the request fails closed as before, on the team's store still.

Real PostgreSQL behind a loopback TCP proxy of this module's, which forwards and then
swallows everything (old connections and new ones kept open, nothing passed either way);
real SQLite."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from app.config import Settings, load_settings
from app.errors import SwitchyardError
from app.policy.schema import Budget
from app.router.ledger.errors import LedgerError
from app.router.stores import open_stores
from app.store import postgres
from app.store.errors import StoreUnavailable
from app.store.url import parse_database_url
from tests.pg import PgServer
from tests.ports import closed_port

BUDGET = Budget(session_usd=1.0, day_usd=20.0, reservation_ttl_s=900)
CALL = {"session": "s1", "provider": "anthropic", "role": "tutor", "model": "claude-haiku-4.5"}


class BlackHole:
    """A loopback TCP proxy in front of ``upstream`` that forwards until :meth:`swallow`:
    from then on every connection, open or new, is kept open and nothing is passed on
    either way (a host that stopped answering, as a partition that drops packets does)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._silent = threading.Event()
        self._socks: list[socket.socket] = [self._listener]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def swallow(self) -> None:
        self._silent.set()

    def close(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # (wakes a thread blocked on it)
            s.close()

    def _keep(self, s: socket.socket) -> bool:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if not self._socks:  # closed meanwhile
                s.close()
                return False
            self._socks.append(s)
        return True

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._keep(client):
                return
            if self._silent.is_set():  # accepted, read, never answered
                self._pump(client, None)
                continue
            upstream = socket.create_connection(self.upstream)
            if not self._keep(upstream):
                return
            self._pump(client, upstream)
            self._pump(upstream, client)

    def _pump(self, src: socket.socket, dst: socket.socket | None) -> None:
        def run() -> None:
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    return
                if self._silent.is_set() or dst is None:
                    if not data:
                        return
                    continue  # swallowed, the connection kept open
                try:
                    if not data:
                        dst.shutdown(socket.SHUT_WR)
                        return
                    dst.sendall(data)
                except OSError:
                    return

        threading.Thread(target=run, daemon=True).start()


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Timeouts of a second (the defaults are 15 s a statement, 5 s a connection)."""
    monkeypatch.setattr(postgres, "STATEMENT_TIMEOUT_S", 1.0)
    monkeypatch.setattr(postgres, "CONNECT_TIMEOUT_S", 1.0)


@pytest.fixture
def proxy(pg_server: PgServer) -> Iterator[BlackHole]:
    made = BlackHole((pg_server.host, pg_server.port))
    try:
        yield made
    finally:
        made.close()


def _through(proxy: BlackHole, pg_url: str) -> str:
    parsed = parse_database_url(pg_url)
    return f"postgresql://{parsed.user}@127.0.0.1:{proxy.port}/{parsed.database}"


def _settings(url: str) -> Settings:
    return load_settings(database_url=url, database_fallback=True, team="t", user="alice")


def _stores(settings: Settings) -> Any:
    return open_stores(
        settings,
        BUDGET,
        session="s1",
        policy_version="1.0.0",
        local_only=False,
        named=frozenset(),
    )


async def _team_lines(url: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT line::json->>'kind' AS k, line::json->>'detail' AS d"
            " FROM audit_lines ORDER BY chain, seq"
        )
    finally:
        await conn.close()
    return [(r["k"], r["d"]) for r in rows]


# ── a database gone silent: the fallback switches ────────────────────────────────────────


async def test_a_silent_database_met_by_an_append_moves_the_session_here(
    proxy: BlackHole, pg_url: str, fast: None
) -> None:
    url = _through(proxy, pg_url)
    settings = _settings(url)
    async with _stores(settings) as stores:
        await stores.audit.append("route", session="s1", detail="before the silence")
        await stores.ledger.reserve(**CALL, amount_usd=0.40)  # held on the team's
        proxy.swallow()
        await stores.audit.append("route", session="s1", detail="after the silence")
        here = await stores.ledger.reserve(**CALL, amount_usd=0.30)  # here, at once
        snap = await stores.ledger.snapshot("s1")
        mine = await stores.audit.lines(session="s1")
    codes = [ln.reason_codes for ln in mine]
    assert codes[:2] == [["GR005_STORE_FALLBACK"], ["TEAM_SPEND_CARRIED"]]
    first = mine[0]
    assert first.values == {"store": "sqlite", "database": url, "mid_session": True}
    assert "team audit log" in first.detail and "no answer (timed out)" in first.detail
    assert mine[1].values["cost_usd"] == pytest.approx(0.40)
    assert [(ln.kind, ln.detail) for ln in mine[2:]] == [("route", "after the silence")]
    assert here.amount_usd == pytest.approx(0.30)
    assert snap.team is None  # this machine's ledger: the team's row carried at its estimate
    assert snap.per_session.spent_usd == pytest.approx(0.40)
    assert snap.reserved_usd == pytest.approx(0.30)
    assert [d for _, d in await _team_lines(pg_url)][-1] == "before the silence"


async def test_a_silent_database_met_by_a_reservation_moves_the_session_here(
    proxy: BlackHole, pg_url: str, fast: None
) -> None:
    settings = _settings(_through(proxy, pg_url))
    async with _stores(settings) as stores:
        proxy.swallow()
        made = await stores.ledger.reserve(**CALL, amount_usd=0.30)
        assert (await stores.ledger.snapshot("s1")).reserved_usd == pytest.approx(0.30)
        await stores.ledger.release(made.id)
        mine = await stores.audit.lines(session="s1")
    (first,) = mine
    assert first.reason_codes == ["GR005_STORE_FALLBACK"] and first.values["mid_session"]
    assert "team ledger" in first.detail and "no answer (timed out)" in first.detail
    assert settings.ledger_db.exists()


# ── a database slow but there: fail closed, no switch ────────────────────────────────────


async def test_a_statement_held_by_a_lock_fails_closed_and_the_session_stays_on_the_team(
    pg_url: str, fast: None
) -> None:
    """The statement times out as a silent database's would; a new connection answers:
    the database is there, busy, and the team's caps stay the ones that count."""
    settings = _settings(pg_url)
    async with _stores(settings) as stores:
        await stores.audit.append("route", session="s1", detail="before the lock")
        locker = await asyncpg.connect(pg_url, timeout=10)
        try:
            async with locker.transaction():
                await locker.execute(
                    "LOCK TABLE audit_chains, audit_lines, ledger_usage, ledger_reservations"
                    " IN ACCESS EXCLUSIVE MODE"
                )
                with pytest.raises(SwitchyardError, match="no answer") as audited:
                    await stores.audit.append("route", session="s1", detail="while locked")
                assert not isinstance(audited.value, StoreUnavailable)
                with pytest.raises(LedgerError, match="no answer") as reserved:
                    await stores.ledger.reserve(**CALL, amount_usd=0.30)
                assert not isinstance(reserved.value, StoreUnavailable)
        finally:
            await locker.close()
        await stores.audit.append("route", session="s1", detail="after the lock")
    assert not settings.audit_db.exists() and not settings.ledger_db.exists()
    details = [d for k, d in await _team_lines(pg_url) if k == "route"]
    assert details == ["before the lock", "after the lock"]


async def test_a_statement_past_its_timeout_on_a_database_that_answers_is_not_gone(
    pg_url: str, fast: None
) -> None:
    from app.router.ledger.pg_ledger import PgBudgetLedger

    async with await PgBudgetLedger.open(pg_url, BUDGET, team="t", user="u") as led:
        with pytest.raises(LedgerError, match="no answer") as slow:
            await led._with(lambda c: c.execute("SELECT pg_sleep(30)"))
        assert not isinstance(slow.value, StoreUnavailable)


# ── the probe itself, over real TCP ──────────────────────────────────────────────────────


async def test_the_probe_tells_an_answer_from_a_refusal_and_from_silence(
    pg_url: str, fast: None
) -> None:
    def probe_of(url: str) -> postgres.Probe:
        return postgres.Probe(parse_database_url(url), local_only=True, named=frozenset())

    timed_out = TimeoutError()
    assert await probe_of(pg_url)() is None
    assert not await postgres.gone_or_silent(timed_out, probe_of(pg_url))

    refused = f"postgresql://u@127.0.0.1:{closed_port()}/db"
    assert isinstance(await probe_of(refused)(), ConnectionRefusedError)
    assert await postgres.gone_or_silent(timed_out, probe_of(refused))

    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; no one answers
    try:
        quiet = f"postgresql://u@127.0.0.1:{silent.getsockname()[1]}/db"
        assert isinstance(await probe_of(quiet)(), TimeoutError)
        assert await postgres.gone_or_silent(timed_out, probe_of(quiet))
    finally:
        silent.close()


class Pooler(BlackHole):
    """A proxy that takes every connection's start-up and password as a pooler does, and
    then holds each query (``Q``, ``P``) unanswered: PgBouncer with every server
    connection held by a lock. Its connections are made; their statements wait."""

    def _pump(self, src: socket.socket, dst: socket.socket | None) -> None:
        if dst is None or src.getpeername()[1] == self.upstream[1]:
            return super()._pump(src, dst)  # (the server's side is passed on as it is)

        def run() -> None:
            buf, untyped, held = b"", True, False
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                if held:
                    continue
                buf += data
                out = b""
                while True:  # whole messages only: an untyped start-up, then typed ones
                    head = 4 if untyped else 5
                    if len(buf) < head:
                        break
                    size = int.from_bytes(buf[head - 4 : head], "big") + head - 4
                    if len(buf) < size:
                        break
                    message, buf = buf[:size], buf[size:]
                    if untyped:
                        code = int.from_bytes(message[4:8], "big")
                        untyped = code in (80877103, 80877104)  # an SSL/GSS request first
                    elif message[:1] in (b"Q", b"P"):
                        held = True
                        break
                    out += message
                try:
                    dst.sendall(out)
                except OSError:
                    return

        threading.Thread(target=run, daemon=True).start()


async def test_a_pooler_that_takes_the_connection_and_queues_the_query_is_not_gone(
    pg_server: PgServer, pg_url: str, fast: None
) -> None:
    """A busy database behind a pooler: the probe's connection is made and its ``SELECT
    1`` waits in the queue. The server is there: the request fails closed and the
    session stays on the team (timed as one, the probe had said gone)."""
    pooler = Pooler((pg_server.host, pg_server.port))
    try:
        url = parse_database_url(_through(pooler, pg_url))
        probe = postgres.Probe(url, local_only=True, named=frozenset())
        assert await probe() is None
        assert not await postgres.gone_or_silent(TimeoutError(), probe)
    finally:
        pooler.close()
