"""``database_fallback = true`` when the team database stops answering mid-run: the
process moves to this machine's SQLite files for the rest of its life, the first line
there the ``GR005_STORE_FALLBACK`` that says so; what it owes the team ledger is still
written there once it answers. It had no effect once a process ran: every request
failed closed (503) until the database came back, with no fallback line (a user's audit
of the team store). With the setting off, nothing changes: fail closed.

A real PostgreSQL cluster of this module's own, stopped as a crash does (``pg_ctl stop
-m immediate``) and started again; real SQLite; the gateway as a subprocess over
loopback fakes."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.audit.log import AuditLog
from app.clock import SystemClock
from app.config import Settings, load_settings
from app.policy.schema import Budget
from app.router.ledger import BudgetLedger, pg_ledger
from app.router.ledger.errors import CapExceeded, LedgerError
from app.router.ledger.pg_ledger import PgBudgetLedger
from app.router.store_fallback import StoreFallback
from app.router.stores import open_stores
from app.store.errors import StoreUnavailable
from tests.ci import missing
from tests.integration.test_gateway import Gateway, _gateway, fakes  # noqa: F401
from tests.pg import PgServer, create_database, drop_database
from tests.pg_cluster import Cluster, ClusterUnavailable, start_cluster
from tests.reliability.kit import audit_lines

BUDGET = Budget(session_usd=1.0, day_usd=20.0, reservation_ttl_s=900)
PASSWORD = "s3cret-pw-never-shown"


class Database:
    """A fresh database on the module's cluster, which a test may stop and start."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster, self.name = cluster, name
        self.down = False

    @property
    def url(self) -> str:
        """Its URL, with a password (the cluster trusts loopback: never asked for)."""
        c = self.cluster
        return f"postgresql://{c.user}:{PASSWORD}@{c.host}:{c.port}/{self.name}"

    @property
    def shown(self) -> str:
        c = self.cluster
        return f"postgresql://{c.user}@{c.host}:{c.port}/{self.name}"

    def stop(self) -> None:
        self.cluster.halt()
        self.down = True

    def start(self) -> None:
        self.cluster.restart()
        self.down = False


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    try:
        made = start_cluster(fsync=False)
    except ClusterUnavailable as exc:
        missing(str(exc))
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
def db(cluster: Cluster) -> Iterator[Database]:
    server = PgServer(cluster.admin_url, cluster.host, cluster.port, cluster.user)
    database = Database(cluster, create_database(server))
    try:
        yield database
    finally:
        if database.down:
            database.start()
        drop_database(server, database.name)


def _settings(db: Database, *, fallback: bool) -> Settings:
    return load_settings(database_url=db.url, database_fallback=fallback, team="t", user="alice")


def _stores(settings: Settings, session: str = "s1") -> Any:
    return open_stores(
        settings,
        BUDGET,
        session=session,
        policy_version="1.0.0",
        local_only=False,
        named=frozenset(),
    )


async def _team_lines(url: str) -> list[dict[str, Any]]:
    """Every line of the team audit, in each chain's order."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        rows = await conn.fetch("SELECT line FROM audit_lines ORDER BY chain, seq")
    finally:
        await conn.close()
    return [json.loads(r["line"]) for r in rows]


async def _until(ready: Callable[[], Any]) -> None:
    for _ in range(600):
        if await ready():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not within 30 s")


# ── in process: open_stores as every face opens it ───────────────────────────────────────


async def test_with_fallback_on_a_line_after_the_stop_is_written_here_after_the_gr005_line(
    db: Database,
) -> None:
    settings = _settings(db, fallback=True)
    async with _stores(settings) as stores:
        await stores.audit.append("route", session="s1", detail="before the stop")
        db.stop()
        await stores.audit.append("route", session="s1", detail="after the stop")
        mine = await stores.audit.lines(session="s1")  # (read where it writes now)
    assert [(ln.kind, ln.detail) for ln in mine][1:] == [("route", "after the stop")]
    first = mine[0]
    assert first.kind == "degradation" and first.reason_codes == ["GR005_STORE_FALLBACK"]
    assert first.values == {"store": "sqlite", "database": db.shown, "mid_session": True}
    assert "stopped answering mid-session" in first.detail and db.shown in first.detail
    assert "team audit log" in first.detail and "unavailable" in first.detail  # (why)
    text = json.dumps([ln.model_dump(mode="json") for ln in mine])
    assert PASSWORD not in text
    db.start()
    team = await _team_lines(db.url)  # the team's chain: what it took before the stop
    assert [ln["kind"] for ln in team] == ["run", "route"]
    assert team[1]["detail"] == "before the stop"


async def test_with_fallback_on_a_reservation_after_the_stop_is_made_here_under_its_caps(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session's cap counts what the team holds for it (its spend is not started
    afresh); the call in flight at the stop is settled on the team ledger once it
    answers, and its reservation that met the stop there is let go: counted once."""
    monkeypatch.setattr(pg_ledger, "OWED_FIRST_S", 0.05)
    settings = _settings(db, fallback=True)
    call = {"session": "s1", "provider": "anthropic", "role": "tutor", "model": "claude-haiku-4.5"}
    async with _stores(settings) as stores:
        led = stores.ledger
        in_flight = await led.reserve(**call, amount_usd=0.60)  # on the team's
        db.stop()
        with pytest.raises(CapExceeded) as refused:  # 0.60 held + 0.60 > the 1.00 cap
            await led.reserve(**call, amount_usd=0.60)
        assert refused.value.cap == "session"
        here = await led.reserve(**call, amount_usd=0.30)
        snap = await led.snapshot("s1")  # this machine's ledger
        assert snap.team is None
        assert snap.per_session.spent_usd == pytest.approx(0.60)  # (carried, at its estimate)
        assert snap.reserved_usd == pytest.approx(0.30)
        await led.settle(here.id, actual_usd=0.20, tokens_in=10, tokens_out=20, latency_ms=1)
        with pytest.raises(LedgerError, match="kept: written when it answers"):
            await led.settle(in_flight.id, actual_usd=0.45, tokens_in=9, tokens_out=9, latency_ms=1)
        assert (await led.left_usd("s1", "anthropic")) == pytest.approx(0.20)
        db.start()

        async def settled_late() -> bool:
            lines = await _team_lines(db.url)
            return any("SETTLED_LATE" in ln["reason_codes"] for ln in lines)

        await _until(settled_late)  # (the team ledger's own retry, off the request path)
        mine = await stores.audit.lines(session="s1")
    codes = [ln.reason_codes for ln in mine]
    assert codes[:2] == [["GR005_STORE_FALLBACK"], ["TEAM_SPEND_CARRIED"]]
    assert mine[1].values["cost_usd"] == pytest.approx(0.60)
    async with await BudgetLedger.open(settings.ledger_db, BUDGET) as local:
        assert (await local.snapshot("s1")).per_session.spent_usd == pytest.approx(0.80)
    async with await PgBudgetLedger.open(db.url, BUDGET, team="t", user="alice") as team:
        on_team = await team.snapshot("s1")
    assert on_team.per_session.spent_usd == pytest.approx(0.45)  # settled late, there
    assert on_team.reserved_usd == 0  # nothing held: the reservation that met the stop let go
    (late,) = [ln for ln in await _team_lines(db.url) if "SETTLED_LATE" in ln["reason_codes"]]
    assert late["values"]["reservation"] == in_flight.id and late["values"]["cost_usd"] == 0.45


async def test_with_fallback_on_team_spend_carried_past_a_cap_says_so(db: Database) -> None:
    """The team's spend for the session already past its cap here (a call billed past its
    estimate): carried, it refuses the next reservation here, and the carry's write said
    nothing of the cap it crossed (its totals dropped): the refusal came with no line
    before it. The GR011 line follows the carry's, from that write's own totals."""
    settings = _settings(db, fallback=True)
    call = {"session": "s1", "provider": "anthropic", "role": "tutor", "model": "claude-haiku-4.5"}
    async with _stores(settings) as stores:
        led = stores.ledger
        made = await led.reserve(**call, amount_usd=0.60)
        await led.settle(made.id, actual_usd=1.20, tokens_in=10, tokens_out=20, latency_ms=1)
        db.stop()
        with pytest.raises(CapExceeded) as refused:  # (1.20 carried, of the 1.00 cap)
            await led.reserve(**call, amount_usd=0.10)
        assert refused.value.cap == "session"
        mine = await stores.audit.lines(session="s1")
    codes = [ln.reason_codes for ln in mine]
    assert codes == [["GR005_STORE_FALLBACK"], ["TEAM_SPEND_CARRIED"], ["GR011_CAP_CROSSED"]]
    line = mine[2]
    assert (line.kind, line.to, line.role) == ("budget", "claude-haiku-4.5", "tutor")
    assert line.values == {
        "caps": [{"cap": "session", "cap_usd": 1.0, "spent_usd": 1.2}],
        "cost_usd": 1.2,
    }
    assert line.detail == (
        "claude-haiku-4.5 was carried from the team database, spent or reserved there:"
        " past the session cap ($1.20 of $1.00)"
    )


async def test_of_the_rows_carried_the_one_that_crosses_a_cap_says_so_once(
    tmp_path: Path,
) -> None:
    """Two rows carried into this machine's SQLite ledger, each within the session cap,
    the two past it: the second's write crossed it, and only its line says so."""
    audit = await AuditLog.open(tmp_path / "audit.db")
    ledger = await BudgetLedger.open(tmp_path / "ledger.db", BUDGET)

    async def open_local() -> tuple[Any, Any]:
        return audit, ledger

    fb = StoreFallback(
        None,  # type: ignore[arg-type]  # (the team's pair: the switch uses neither)
        None,  # type: ignore[arg-type]
        session="s1",
        database="postgresql://u@127.0.0.1/db",
        clock=SystemClock(),
        open_local=open_local,
    )
    fb.held = {
        ("s1", "", "deepseek", "architect", "a"): 600_000_000,
        ("s1", "", "deepseek", "architect", "b"): 600_000_000,
    }
    try:
        await fb.switch(StoreUnavailable("team ledger: connection refused"))
        lines = await audit.lines(session="s1")
        snap = await ledger.snapshot("s1")
    finally:
        await ledger.close()
        await audit.close()
    assert snap.per_session.spent_usd == pytest.approx(1.2)
    assert [(ln.reason_codes, ln.to) for ln in lines] == [
        (["GR005_STORE_FALLBACK"], None),
        (["TEAM_SPEND_CARRIED"], "a"),
        (["TEAM_SPEND_CARRIED"], "b"),
        (["GR011_CAP_CROSSED"], "b"),
    ]
    assert lines[3].values == {
        "caps": [{"cap": "session", "cap_usd": 1.0, "spent_usd": 1.2}],
        "cost_usd": 0.6,
    }


async def test_with_fallback_off_a_stopped_database_still_fails_closed(db: Database) -> None:
    settings = _settings(db, fallback=False)
    async with _stores(settings) as stores:
        assert isinstance(stores.ledger, PgBudgetLedger)
        db.stop()
        with pytest.raises(StoreUnavailable, match=r"team audit log .* unavailable"):
            await stores.audit.append("route", session="s1", detail="after the stop")
        with pytest.raises(StoreUnavailable):
            await stores.ledger.reserve(
                session="s1", provider="anthropic", role="tutor", model="m", amount_usd=0.1
            )
    assert not settings.audit_db.exists() and not settings.ledger_db.exists()


# ── the gateway: the user's repro ────────────────────────────────────────────────────────


def _serve(tmp_path: Path, fakes: Any, db: Database, fallback: bool) -> Iterator[Gateway]:  # noqa: F811
    env = {
        "SWITCHYARD_DATABASE_URL": db.url,
        "SWITCHYARD_DATABASE_FALLBACK": str(fallback).lower(),
    }
    return _gateway(tmp_path, fakes, "--approve", "allow", env=env)


def _ended(gw: Gateway) -> str:
    gw.proc.terminate()
    try:
        _, err = gw.proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        gw.proc.kill()
        _, err = gw.proc.communicate()
    return str(err)


TUTOR = {"model": "tutor", "messages": [{"role": "user", "content": "what is a closure?"}]}


def test_serve_with_fallback_on_goes_on_on_this_machines_files_after_a_stop(
    tmp_path: Path,
    fakes: tuple[Any, Any, Any],  # noqa: F811
    db: Database,
) -> None:
    for gw in _serve(tmp_path, fakes, db, fallback=True):
        with httpx.Client(base_url=gw.url, timeout=60) as http:
            assert http.post("/v1/chat/completions", json=TUTOR).status_code == 200
            db.stop()
            local = http.post("/v1/chat/completions", json=TUTOR)
            cloud = http.post("/v1/chat/completions", json={**TUTOR, "model": "tutor+escalate"})
            db.start()
            again = http.post("/v1/chat/completions", json=TUTOR)  # here for good
        err = _ended(gw)
        assert local.status_code == 200, local.text
        assert cloud.status_code == 200, cloud.text
        assert cloud.json()["choices"][0]["message"]["content"] == "Advice from Claude."
        assert again.status_code == 200, again.text
        assert "Traceback" not in err, err
    lines = audit_lines()  # this machine's file (verified)
    first = lines[0]
    assert first["reason_codes"] == ["GR005_STORE_FALLBACK"] and first["values"]["mid_session"]
    assert {ln["session"] for ln in lines} == {first["session"]}
    calls = [ln for ln in lines if ln["kind"] == "call"]
    assert [c["to"] for c in calls if c["values"].get("provider") == "anthropic"] == [
        "claude-haiku-4.5"
    ]
    assert sum(ln["kind"] == "request" for ln in lines) == 3 * 2  # opened and closed, each
    assert PASSWORD not in json.dumps(lines)

    async def spent() -> tuple[float, float]:
        async with await BudgetLedger.open(load_settings().ledger_db, BUDGET) as local:
            here = (await local.snapshot(first["session"])).by_provider.get("anthropic", 0.0)
        async with await PgBudgetLedger.open(db.url, BUDGET, team="default", user="u") as team:
            there = (await team.snapshot(first["session"])).by_provider.get("anthropic", 0.0)
        return here, there

    here, there = asyncio.run(spent())
    assert here > 0 and there == 0  # reserved and settled here, nothing on the team's
    team_lines = asyncio.run(_team_lines(db.url))
    assert [ln["kind"] for ln in team_lines][:1] == ["run"]  # before the stop only
    assert not any(ln["kind"] == "call" and ln["to"] == "claude-haiku-4.5" for ln in team_lines)


def test_serve_with_fallback_off_answers_503_while_the_database_is_stopped(
    tmp_path: Path,
    fakes: tuple[Any, Any, Any],  # noqa: F811
    db: Database,
) -> None:
    for gw in _serve(tmp_path, fakes, db, fallback=False):
        with httpx.Client(base_url=gw.url, timeout=60) as http:
            assert http.post("/v1/chat/completions", json=TUTOR).status_code == 200
            db.stop()
            down = http.post("/v1/chat/completions", json=TUTOR)
            db.start()
            back = http.post("/v1/chat/completions", json=TUTOR)
        err = _ended(gw)
        assert down.status_code == 503, down.text
        assert "the request cannot be recorded" in down.json()["error"]["message"]
        assert back.status_code == 200, back.text
        assert "Traceback" not in err, err
    assert not load_settings().audit_db.exists()  # nothing written on this machine
