"""The team ledger when its database does not answer as a call ends: the settlement (the
usage known only to this process) is kept and written once the database answers again,
told to the session (a ``budget`` line); an expiry meanwhile charged the estimate and the
rest is a row apart; a reservation whose answer was lost is let go. It was dropped: the
reservation expired at its estimate and a billed overrun was never counted (an audit with
``pg_ctl stop`` mid-call). Real PostgreSQL (tests/pg.py); the database refuses connections
and drops its open ones, as a restart does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app.audit.log import AuditLog
from app.audit.pg_log import PgAuditLog
from app.policy.schema import Budget
from app.router.ledger import pg_ledger
from app.router.ledger.errors import LedgerError
from app.router.ledger.pg_ledger import PgBudgetLedger
from app.router.ledger.records import LateClose, Reservation
from app.router.stores import audit_late
from tests.integration.test_gateway_store_down import _connections
from tests.pg import PgServer, expire_all_now

BUDGET = Budget(session_usd=5.0, day_usd=20.0, reservation_ttl_s=900)


@pytest.fixture
async def ledger(pg_url: str) -> AsyncIterator[tuple[PgBudgetLedger, list[LateClose]]]:
    led = await PgBudgetLedger.open(pg_url, BUDGET, team="t", user="alice")
    told = _told(led)
    try:
        yield led, told
    finally:
        await led.close()


async def _until(ready: Callable[[], bool]) -> None:
    for _ in range(400):
        if ready():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not within 20 s")


def _told(led: PgBudgetLedger) -> list[LateClose]:
    """The closes ``led`` tells of as written late, as they come."""
    told: list[LateClose] = []

    async def tell(late: LateClose) -> None:
        told.append(late)

    led.on_late = tell
    return told


async def _settled_while_away(
    led: PgBudgetLedger,
    pg_url: str,
    pg_server: PgServer,
    reserved: float = 0.10,
    actual: float = 0.25,
    cached: int = 8,
) -> str:
    """A $0.10 reservation settled at $0.25 (or ``reserved`` at ``actual``) while the
    database refuses every connection (the settlement fails, kept); the database back
    after. Its id. (``cached`` of its 10 prompt tokens were read from the provider's
    cache: kept with it.)"""
    rid = await _reserve(led, reserved)
    _connections(pg_server, _database(pg_url), allowed=False)
    try:
        with pytest.raises(LedgerError, match="kept: written when it answers"):
            await led.settle(
                rid,
                actual_usd=actual,
                tokens_in=10,
                tokens_out=20,
                latency_ms=1,
                tokens_cached=cached,
            )
    finally:
        _connections(pg_server, _database(pg_url), allowed=True)
    return rid


def _database(pg_url: str) -> str:
    return pg_url.rsplit("/", 1)[1]


async def _reserve(led: PgBudgetLedger, usd: float) -> str:
    r = await led.reserve(
        session="s1", provider="deepseek", role="implementer", model="deepseek-chat", amount_usd=usd
    )
    return r.id


async def test_a_settlement_the_database_missed_is_written_when_it_answers(
    ledger: tuple[PgBudgetLedger, list[LateClose]],
    pg_url: str,
    pg_server: PgServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    led, told = ledger
    monkeypatch.setattr(pg_ledger, "OWED_FIRST_S", 0.05)
    rid = await _settled_while_away(led, pg_url, pg_server)
    await _until(lambda: bool(told))  # the retry's own clock: it comes by itself
    assert [(t.reservation, t.status, t.cost_usd, t.expired) for t in told] == [
        (rid, "settled", 0.25, False)
    ]
    snap = await led.snapshot("s1")
    assert snap.per_session.spent_usd == pytest.approx(0.25) and snap.reserved_usd == 0
    total = (await led.report(session="s1"))["total"]
    assert (total["tokens_in"], total["tokens_cached"]) == (10, 8)


async def test_an_expiry_meanwhile_charges_the_estimate_and_the_rest_is_kept(
    pg_url: str, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database came back after the reservation's TTL: another process's expiry
    charged its amount; the settlement written late adds what the call cost past it."""
    monkeypatch.setattr(pg_ledger, "OWED_FIRST_S", 2.5)  # (well past the TTL: the expiry first)
    short = BUDGET.model_copy(update={"reservation_ttl_s": 0.5})
    led = await PgBudgetLedger.open(pg_url, short, team="t", user="alice")
    told = _told(led)
    try:
        await _settled_while_away(led, pg_url, pg_server)
        await asyncio.sleep(0.6)
        assert await led.expire_stale() == 1  # charged at its 0.10
        await _until(lambda: bool(told))  # the retry, off any request's path
        assert [(t.status, t.cost_usd, t.expired) for t in told] == [("settled", 0.25, True)]
        snap = await led.snapshot("s1")
        assert snap.per_session.spent_usd == pytest.approx(0.25)
    finally:
        await led.close()


async def test_a_reservation_the_database_may_have_taken_is_let_go(
    ledger: tuple[PgBudgetLedger, list[LateClose]],
    pg_url: str,
    pg_server: PgServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reservation refused by a database gone away may have committed with its answer
    lost: its release is kept too (here it never was made: nothing to let go, nothing
    told, nothing owed after)."""
    led, told = ledger
    monkeypatch.setattr(pg_ledger, "OWED_FIRST_S", 0.05)
    _connections(pg_server, _database(pg_url), allowed=False)
    try:
        with pytest.raises(LedgerError):
            await _reserve(led, 0.10)
        assert len(led._owed) == 1
    finally:
        _connections(pg_server, _database(pg_url), allowed=True)
    await _until(lambda: not led._owed)
    assert told == []
    await _reserve(led, 0.01)
    snap = await led.snapshot("s1")
    assert snap.reserved_usd == pytest.approx(0.01) and snap.per_session.spent_usd == 0


async def test_a_close_written_late_is_a_budget_line(tmp_path: Path) -> None:
    """The session's ``on_late``: the line says what the call cost and why it is late."""
    audit = await AuditLog.open(tmp_path / "audit.db")
    try:
        late = LateClose(
            reservation="r1",
            session="s1",
            run="",
            role="implementer",
            model="deepseek-chat",
            provider="deepseek",
            status="settled",
            outcome="ok",
            cost_usd=0.25,
            expired=True,
        )
        await audit_late(audit)(late)
        (line,) = await audit.lines(session="s1")
        assert line.kind == "budget" and line.to == "deepseek-chat"
        assert line.reason_codes == ["SETTLED_LATE", "RESERVATION_EXPIRED"]
        assert line.values["cost_usd"] == 0.25 and line.values["reservation"] == "r1"
        assert "did not answer when its call ended" in line.detail
    finally:
        await audit.close()


async def test_an_expiry_whose_line_failed_is_told_by_the_next_writer(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The expiry's charge committed and its audit line failed (the audit's database
    locked, the process interrupted): nothing ever wrote it, and the audit's charges no
    longer added up to the ledger's (a chaos audit). The line is owed in the charge's own
    transaction, and told by the next writer that expires, past the first's grace."""
    short = BUDGET.model_copy(update={"reservation_ttl_s": 0.3})
    first = await PgBudgetLedger.open(pg_url, short, team="t", user="alice")
    second = await PgBudgetLedger.open(pg_url, short, team="t", user="bob")
    told: list[str] = []

    async def fails(expired: Sequence[Reservation]) -> None:
        raise RuntimeError("the audit log did not answer")

    async def tells(expired: Sequence[Reservation]) -> None:
        told.extend(r.id for r in expired)

    first.on_expired, second.on_expired = fails, tells
    try:
        rid = await _reserve(first, 0.10)
        await asyncio.sleep(0.4)
        assert await first.expire_stale() == 1  # charged; its line failed
        assert await second.expire_stale() == 0 and told == []  # (within the grace)
        monkeypatch.setattr(pg_ledger, "UNTOLD_GRACE_S", 0.0)
        assert await second.expire_stale() == 0  # nothing newly charged, one line owed
        assert told == [rid]
        assert await second.expire_stale() == 0 and told == [rid]  # told once
        snap = await second.snapshot("s1")
        assert snap.per_session.spent_usd == pytest.approx(0.10)  # charged once
    finally:
        await first.close()
        await second.close()


class _Watched:
    """A pooled connection whose ``fetchrow`` tells ``before`` and ``after`` of each
    statement (``after`` once it answered: committed)."""

    def __init__(
        self, conn: Any, before: Callable[[str], None], after: Callable[[str], None]
    ) -> None:
        self._conn, self._before, self._after = conn, before, after

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def fetchrow(self, query: str, *args: Any, **kw: Any) -> Any:
        self._before(query)
        row = await self._conn.fetchrow(query, *args, **kw)
        self._after(query)
        return row


def _watch(
    led: PgBudgetLedger,
    before: Callable[[str], None] = lambda q: None,
    after: Callable[[str], None] = lambda q: None,
) -> None:
    """Each statement ``led`` runs, watched (:class:`_Watched`)."""
    real = led._with_now

    async def with_now(fn: Callable[[Any], Any]) -> Any:
        return await real(lambda conn: fn(_Watched(conn, before, after)))

    led._with_now = with_now  # type: ignore[method-assign]


def _past_the_close() -> Callable[[str], bool]:
    """Whether a statement is the ledger's first write after ``sy_ledger_close``'s: the
    row past an expired estimate, whatever function writes it."""
    seen: set[str] = set()

    def is_it(query: str) -> bool:
        if "sy_ledger_close" in query:
            seen.add("close")
            return False
        if seen == {"close"} and "sy_ledger_" in query:
            seen.add("past")
            return True
        return False

    return is_it


async def test_a_late_close_cut_short_resumes_where_it_stopped(
    pg_url: str, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The close was written late, then the row past the expired estimate failed (the
    database gone again): the next round writes that row alone (a close taken again read
    as settled, and its row and its line were lost: a review)."""
    monkeypatch.setattr(pg_ledger, "OWED_FIRST_S", 2.5)  # (well past the TTL: the expiry first)
    short = BUDGET.model_copy(update={"reservation_ttl_s": 0.5})
    led = await PgBudgetLedger.open(pg_url, short, team="t", user="alice")
    told = _told(led)
    failed: list[bool] = []
    past = _past_the_close()

    def once_away(query: str) -> None:
        if past(query) and not failed:
            failed.append(True)
            raise pg_ledger._Away("team ledger unavailable: gone again")

    _watch(led, before=once_away)
    try:
        await _settled_while_away(led, pg_url, pg_server)
        await asyncio.sleep(0.6)
        assert await led.expire_stale() == 1  # charged at its 0.10
        await _until(lambda: bool(told))
        assert failed and [(t.cost_usd, t.expired) for t in told] == [(0.25, True)]
        snap = await led.snapshot("s1")
        assert snap.per_session.spent_usd == pytest.approx(0.25)
    finally:
        await led.close()


@pytest.mark.parametrize("expired", [False, True])
async def test_a_close_written_late_that_crosses_a_cap_says_so(
    pg_url: str,
    pg_server: PgServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    expired: bool,
) -> None:
    """The settlement the database missed, written once it answered, carried the spend
    past the session cap (or, the reservation charged by its expiry meanwhile at its
    estimate, within the cap, the row past the estimate did): its SETTLED_LATE line was
    written and no GR011 line, which the same settlement written at once has."""
    monkeypatch.setattr(pg_ledger, "OWED_FIRST_S", 3600.0)  # (written when the test says)
    led = await PgBudgetLedger.open(pg_url, BUDGET, team="t", user="alice")
    audit = await AuditLog.open(tmp_path / "audit.db")
    led.on_late = audit_late(audit)
    try:
        # (a $4 reservation of the session's $5, settled at $6 while the database is away)
        await _settled_while_away(led, pg_url, pg_server, 4.0, 6.0, cached=0)
        if expired:
            await expire_all_now(pg_url)
            assert await led.expire_stale() == 1  # charged at its $4: within the cap
        await led._pay()
        assert not led._owed
        lines = [ln for ln in await audit.lines(session="s1") if ln.kind == "budget"]
    finally:
        await led.close()
        await audit.close()
    late = ["SETTLED_LATE", *(["RESERVATION_EXPIRED"] if expired else [])]
    assert [ln.reason_codes for ln in lines] == [late, ["GR011_CAP_CROSSED"]]
    line = lines[1]
    assert (line.to, line.role) == ("deepseek-chat", "implementer")
    assert line.values == {
        "caps": [{"cap": "session", "cap_usd": 5.0, "spent_usd": 6.0}],
        "cost_usd": 6.0,
    }
    assert line.detail == (
        "deepseek-chat was settled late"
        + (", past its reservation's expiry" if expired else "")
        + ": past the session cap ($6.00 of $5.00)"
    )


async def _calls(pg_url: str, session: str) -> tuple[int, int]:
    """How many call rows ``session`` has on the team ledger, and their cost (nano-$)."""
    conn = await asyncpg.connect(pg_url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, coalesce(sum(cost_nusd), 0) AS cost FROM ledger_calls"
            " WHERE session = $1",
            session,
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row["n"]), int(row["cost"])


@pytest.mark.parametrize(
    ("cut", "expired"),
    [("close", False), ("close", True), ("excess", True), ("line", False), ("line", True)],
)
async def test_a_late_close_cut_short_by_a_cancel_is_written_and_told_once(
    pg_url: str,
    pg_server: PgServer,
    monkeypatch: pytest.MonkeyPatch,
    cut: str,
    expired: bool,
) -> None:
    """A cancel of the round (the process closing, a task cancelled) that lands once a
    step of a close written late has committed: the close (``close``), the row past the
    expired estimate (``excess``), its first audit line (``line``). Each step's mark was
    set after the await, so the cancel lost it: the round resumed took the close again,
    found it settled and told nothing (no SETTLED_LATE, no GR011); wrote the row past the
    estimate again ($2 counted twice); or told the lines again. Each once, resumed. (The
    team's audit log, as a session on the team store tells them.)"""
    monkeypatch.setattr(pg_ledger, "OWED_FIRST_S", 3600.0)  # (written when the test says)
    led = await PgBudgetLedger.open(pg_url, BUDGET, team="t", user="alice")
    audit = await PgAuditLog.open(pg_url, team="t", user="alice", host="box")
    led.on_late = audit_late(audit)
    pay: list[asyncio.Task[None]] = []
    past = _past_the_close()

    def cancel_after(query: str) -> None:
        if (cut == "close" and "sy_ledger_close" in query) or (cut == "excess" and past(query)):
            pay[0].cancel()  # (the statement committed and answered)

    appended = audit._with_now

    async def append_then_cancel(fn: Callable[[Any], Any]) -> Any:
        out = await appended(fn)
        if cut == "line" and pay and not pay[0].cancelling() and not pay[0].done():
            pay[0].cancel()  # (the SETTLED_LATE line committed, the GR011 one to come)
        return out

    audit._with_now = append_then_cancel  # type: ignore[method-assign]
    try:
        # (a $4 reservation of the session's $5, settled at $6 while the database is away)
        rid = await _settled_while_away(led, pg_url, pg_server, 4.0, 6.0, cached=0)
        if expired:
            await expire_all_now(pg_url)
            assert await led.expire_stale() == 1  # charged at its $4: within the cap
        _watch(led, after=cancel_after)
        pay.append(asyncio.create_task(led._pay()))
        with pytest.raises(asyncio.CancelledError):
            await pay[0]
        assert len(led._owed) == 1  # cut short: still owed
        await led._pay()  # resumed
        assert not led._owed
        snap = await led.snapshot("s1")
        lines = [ln for ln in await audit.lines(session="s1") if ln.kind == "budget"]
    finally:
        await led.close()
        await audit.close()
    assert snap.per_session.spent_usd == pytest.approx(6.0) and snap.reserved_usd == 0
    # the close's row (or the expiry's at $4 and the row past it, $2), once each
    assert await _calls(pg_url, "s1") == ((2, 6_000_000_000) if expired else (1, 6_000_000_000))
    late = ["SETTLED_LATE", *(["RESERVATION_EXPIRED"] if expired else [])]
    assert [ln.reason_codes for ln in lines] == [late, ["GR011_CAP_CROSSED"]]
    assert lines[0].values["reservation"] == rid and lines[0].values["cost_usd"] == 6.0
    assert lines[1].values["caps"] == [{"cap": "session", "cap_usd": 5.0, "spent_usd": 6.0}]


async def test_the_row_past_an_estimate_whose_answer_was_lost_is_not_written_again(
    pg_url: str, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row past the expired estimate committed and its answer was lost (the database
    broke the connection then): the round is tried again later, and wrote the row again,
    the process's flag never set. The database finds it written, and answers with the
    totals that write left: its GR011 line is said from them, once."""
    monkeypatch.setattr(pg_ledger, "OWED_FIRST_S", 3600.0)  # (written when the test says)
    led = await PgBudgetLedger.open(pg_url, BUDGET, team="t", user="alice")
    audit = await PgAuditLog.open(pg_url, team="t", user="alice", host="box")
    led.on_late = audit_late(audit)
    past = _past_the_close()

    def answer_lost(query: str) -> None:
        if past(query):
            raise pg_ledger._Away("team ledger unavailable: connection was closed")

    try:
        # (a $4 reservation of the session's $5, settled at $6 while the database is away)
        await _settled_while_away(led, pg_url, pg_server, 4.0, 6.0, cached=0)
        await expire_all_now(pg_url)
        assert await led.expire_stale() == 1  # charged at its $4: within the cap
        _watch(led, after=answer_lost)
        await led._pay()
        assert len(led._owed) == 1  # (kept: to be tried again)
        await led._pay()
        assert not led._owed
        snap = await led.snapshot("s1")
        lines = [ln for ln in await audit.lines(session="s1") if ln.kind == "budget"]
    finally:
        await led.close()
        await audit.close()
    assert snap.per_session.spent_usd == pytest.approx(6.0)
    assert await _calls(pg_url, "s1") == (2, 6_000_000_000)
    codes = [ln.reason_codes for ln in lines]
    assert codes == [["SETTLED_LATE", "RESERVATION_EXPIRED"], ["GR011_CAP_CROSSED"]]
    assert lines[1].values["caps"] == [{"cap": "session", "cap_usd": 5.0, "spent_usd": 6.0}]


async def test_the_row_past_an_expired_estimate_is_the_databases_to_write_once(
    pg_url: str,
) -> None:
    """Two writers of the row past an expired estimate at once (a close resumed after its
    answer was lost, in this process or another): the second waits for the first, writes
    nothing, and is answered the totals the first write left (to decide from them which
    caps that write crossed, as the first does)."""
    led = await PgBudgetLedger.open(pg_url, BUDGET, team="t", user="alice")
    try:
        rid = await _reserve(led, 4.0)
    finally:
        await led.close()
    await expire_all_now(pg_url)
    async with await PgBudgetLedger.open(pg_url, BUDGET, team="t", user="alice") as led:
        assert await led.expire_stale() == 1  # charged at its $4
    excess = "SELECT * FROM sy_ledger_late_excess($1, $2, 'alice', 'h')"
    first, second = await asyncpg.connect(pg_url), await asyncpg.connect(pg_url)
    try:
        tx = first.transaction()
        await tx.start()
        one = await first.fetchrow(excess, rid, 6_000_000_000)
        waiting = asyncio.ensure_future(second.fetchrow(excess, rid, 6_000_000_000))
        pid = second.get_server_pid()
        await _until_waiting(pg_url, pid)  # (on the first's note, not yet committed)
        await tx.commit()
        two = await waiting
        again = await second.fetchrow(excess, rid, 6_000_000_000)
        within = await second.fetchrow(excess, rid, 3_000_000_000)  # (nothing past $4)
    finally:
        await first.close()
        await second.close()
    assert one is not None and two is not None and again is not None
    assert (one["written"], two["written"], again["written"]) == (True, False, False)
    assert one["spent"] == two["spent"] == again["spent"]
    assert one["spent"][0] == 6_000_000_000  # the session's row, as that write left it
    assert within is None
    assert await _calls(pg_url, "s1") == (2, 6_000_000_000)  # the expiry's and one past it


async def _until_waiting(pg_url: str, pid: int) -> None:
    """Until the backend ``pid`` waits on a lock (read on a connection of its own, out of
    any transaction: one caches what it read of pg_stat_activity)."""
    conn = await asyncpg.connect(pg_url)
    try:
        for _ in range(400):
            waits = await conn.fetchval(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid
            )
            if waits == "Lock":
                return
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise AssertionError("not within 20 s")


async def test_a_late_close_whose_answer_was_lost_is_told_once(
    pg_url: str, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The close written late committed and its answer was lost (the database broke the
    connection then): the round tried again found the reservation settled and told
    nothing, the $6 on the $5 session cap counted with no SETTLED_LATE line and no GR011
    one (a review). The database keeps that close's totals for the process that wrote it
    late: the close tried again is answered them, and its lines are said once."""
    monkeypatch.setattr(pg_ledger, "OWED_FIRST_S", 3600.0)  # (written when the test says)
    led = await PgBudgetLedger.open(pg_url, BUDGET, team="t", user="alice")
    audit = await PgAuditLog.open(pg_url, team="t", user="alice", host="box")
    led.on_late = audit_late(audit)
    lost: list[bool] = []

    def answer_lost(query: str) -> None:
        if "sy_ledger_close" in query and not lost:
            lost.append(True)
            raise pg_ledger._Away("team ledger unavailable: connection was closed")

    try:
        # (a $4 reservation of the session's $5, settled at $6 while the database is away)
        rid = await _settled_while_away(led, pg_url, pg_server, 4.0, 6.0, cached=0)
        _watch(led, after=answer_lost)
        await led._pay()
        assert lost and len(led._owed) == 1  # (committed, its answer lost: tried again)
        await led._pay()
        assert not led._owed
        await led._pay()  # (nothing owed: nothing told again)
        snap = await led.snapshot("s1")
        lines = [ln for ln in await audit.lines(session="s1") if ln.kind == "budget"]
    finally:
        await led.close()
        await audit.close()
    assert snap.per_session.spent_usd == pytest.approx(6.0) and snap.reserved_usd == 0
    assert await _calls(pg_url, "s1") == (1, 6_000_000_000)
    assert [ln.reason_codes for ln in lines] == [["SETTLED_LATE"], ["GR011_CAP_CROSSED"]]
    assert lines[0].values["reservation"] == rid and lines[0].values["cost_usd"] == 6.0
    assert lines[1].values["caps"] == [{"cap": "session", "cap_usd": 5.0, "spent_usd": 6.0}]


async def test_a_close_another_closer_made_is_not_told_as_this_ones(pg_url: str) -> None:
    """The database keeps a late close's totals for the close that wrote it alone: the
    same close from another closer (or the close made at once, whose answer was lost)
    finds the reservation settled, as before, and is told nothing of it."""
    async with await PgBudgetLedger.open(pg_url, BUDGET, team="t", user="alice") as led:
        rid = await _reserve(led, 4.0)
    late = "SELECT * FROM sy_ledger_close_late($1, $2, 'settled', $3, 'ok', 1, 2, 0, 1.0)"
    conn = await asyncpg.connect(pg_url)
    try:
        one = await conn.fetchrow(late, "closer-1", rid, 6_000_000_000)
        again = await conn.fetchrow(late, "closer-1", rid, 6_000_000_000)
        other = await conn.fetchrow(late, "closer-2", rid, 6_000_000_000)
        plain = await conn.fetchrow(
            "SELECT * FROM sy_ledger_close($1, 'settled', $2, 'ok', 1, 2, 0, 1.0)",
            rid,
            6_000_000_000,
        )
        none = await conn.fetchrow(late, "closer-1", "no-such", 6_000_000_000)
    finally:
        await conn.close()
    assert one is not None and again is not None and other is not None and plain is not None
    assert (one["was"], again["was"], other["was"], plain["was"]) == (
        "live",
        "live",
        "settled",
        "settled",
    )
    assert one["spent"] == again["spent"] and one["spent"][0] == 6_000_000_000
    assert other["spent"] is None and none is None
    assert await _calls(pg_url, "s1") == (1, 6_000_000_000)  # written once
